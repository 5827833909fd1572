// Generated from roomcast.js by build-cjs.mjs: do not edit.
'use strict';
// roomcast.js — the JavaScript client of roomcast (browsers and Node >= 20).
// One dependency-free ES module; the wire contract is docs/protocol.md and
// the API is described in clients/js/README.md.

const DEFAULTS = {
  heartbeatSecs: 30,
  backoffBaseMs: 500,
  backoffCapMs: 30000,
  maxReconnectAttempts: Infinity,
  maxQueue: 100,
};

/** An error with a machine-readable `code`: the server's error code
 * (`invalid_room`, `forbidden`, ...) or one of the client's own
 * (`queue_full`, `disconnected`, `closed`, `cancelled`, `bad_data`,
 * `token`, `unauthorized`). */
class RoomcastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'RoomcastError';
    this.code = code;
  }
}

/**
 * Delay before reconnection attempt number `attempt` (0 for the first):
 * exponential backoff with full jitter, uniform in [0, min(cap, base * 2^attempt)).
 * @param {number} attempt
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/**
 * A roomcast connection that reconnects by itself.
 *
 * States: `connecting` (fetching a token, opening the socket, waiting for
 * the welcome, re-joining rooms), `open`, `reconnecting` (waiting out the
 * backoff) and `closed` (for good: after `close()`, a refused token, or
 * too many attempts).
 */
class Roomcast {
  /**
   * Connects at once (asynchronously: listeners added right after the
   * constructor see every event).
   * @param {string} url `ws://host:port/ws`; in a browser also `/ws` or an http(s) URL.
   * @param {object} [options]
   * @param {string | (() => string | Promise<string>)} [options.token] a JWT, or a function
   *   called before every connection attempt to fetch a fresh one.
   * @param {Function} [options.WebSocket] a WebSocket constructor (default: `globalThis.WebSocket`;
   *   Node 20 has none, pass e.g. the `ws` package's).
   * @param {number} [options.heartbeatSecs=30] the server's `--heartbeat-secs`: the connection is
   *   presumed dead after two of these without a frame.
   * @param {number} [options.backoffBaseMs=500] first reconnection delay bound.
   * @param {number} [options.backoffCapMs=30000] largest reconnection delay bound.
   * @param {number} [options.maxReconnectAttempts=Infinity] consecutive failed attempts before giving up.
   * @param {number} [options.maxQueue=100] publishes and sends held while offline.
   */
  constructor(url, options = {}) {
    this._opts = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError(
        'roomcast: no WebSocket implementation; pass one as { WebSocket } (Node 20 has none: use the ws package)',
      );
    }
    this._url = resolveUrl(url);
    /** The user the server says we are (from the welcome), or null. */
    this.user = null;
    /** This connection's number on its node (from the welcome), or null. */
    this.connId = null;
    this._state = 'connecting';
    this._listeners = new Map();
    this._rooms = new Set(); // rooms to be in, re-joined on every connection
    this._positions = new Map(); // room with history -> {offset, epoch} of the last message delivered
    this._joinWaiters = new Map(); // room -> [{resolve, reject}] until a join of it is acked
    this._pending = new Map(); // request id -> {resolve, reject}, sent on this socket
    this._queue = []; // [{body, resolve, reject}] publishes and sends made while not open
    this._nextId = 1;
    this._ws = null;
    this._welcomed = false;
    this._opened = false; // ever opened: later opens are reconnections
    this._attempt = 0;
    this._token = undefined; // the token of the current or last attempt
    this._freshToken = undefined; // a token fetched after a 4001, for the next attempt
    this._retryTimer = null;
    this._joinRetries = new Map(); // room -> consecutive `unavailable` answers
    this._joinTimers = new Set(); // timers of joins to try again
    this._heartbeatTimer = null;
    this._lastFrameAt = 0;
    this._probed = false;
    this._closeReason = null;
    this._retryTimer = setTimeout(() => this._connect(), 0);
  }

  /** `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this._state;
  }

  /** The rooms this client is in or will re-join on reconnection. */
  get rooms() {
    return [...this._rooms];
  }

  /**
   * Adds a listener. Events: `open` ({user, conn, reconnected}) once the
   * welcome has arrived and every room is re-joined; `message` ({room, from,
   * data}; binary publishes give {room, data: Uint8Array, binary: true});
   * `direct` ({from, data}); `close` ({code, reason, willReconnect, delayMs,
   * attempt}) whenever a socket closes or an attempt fails; `error`
   * (a RoomcastError not tied to a request); `unsubscribed` ({room,
   * reason}); in rooms with history, messages carry `offset`, and a
   * re-join after a reconnection emits `recovered` ({room, offset}: every
   * missed message was delivered, once) or `gap` ({room, offset, epoch,
   * since}: some are gone; reload the room, e.g. with `history()`); in
   * rooms with join/leave events, `joined` and `left` ({room, user}) when a
   * user's first connection comes in or its last one goes (never about
   * this client's own join).
   * @param {'open' | 'message' | 'direct' | 'close' | 'error' | 'unsubscribed' | 'recovered' | 'gap' | 'joined' | 'left'} event
   * @param {Function} fn
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  /**
   * Removes a listener added with `on`.
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /**
   * Joins a room, now and after every reconnection. Resolves when the
   * server acks the join (if offline, on the next connection); rejects with
   * the server's error (`invalid_room`, `forbidden`, `too_large`), and then
   * the room is forgotten. A join of a room with history that the server
   * answers `unavailable` (its Redis is unreachable) is tried again, with
   * backoff, keeping the room's position.
   * @param {string} room
   * @returns {Promise<void>}
   */
  join(room) {
    if (this._state === 'closed') return Promise.reject(this._closeReason);
    this._rooms.add(room);
    return new Promise((resolve, reject) => {
      if (!this._joinWaiters.has(room)) this._joinWaiters.set(room, []);
      this._joinWaiters.get(room).push({ resolve, reject });
      if (this._welcomed) this._sendJoin(room);
    });
  }

  /**
   * Leaves a room (leaving one you are not in is fine). A join of it still
   * waiting for a connection is rejected with `cancelled`.
   * @param {string} room
   * @returns {Promise<void>} resolved by the server's ack, or at once when offline
   */
  leave(room) {
    if (this._state === 'closed') return Promise.reject(this._closeReason);
    this._rooms.delete(room);
    this._positions.delete(room);
    this._settleJoin(room, new RoomcastError('cancelled', `join of room "${room}" cancelled by leave()`));
    if (!this._welcomed) return Promise.resolve();
    return this._request(JSON.stringify({ op: 'leave', room })).catch((err) => {
      // A lost connection leaves every room anyway.
      if (err.code !== 'disconnected') throw err;
    });
  }

  /**
   * Publishes `data` (any JSON value) to every member of `room`. While
   * offline it is queued (up to `maxQueue`) and sent after reconnection.
   * @param {string} room
   * @param {*} data
   * @returns {Promise<void>} resolved by the server's ack; rejected with its
   *   error code, `queue_full`, or `disconnected` when the connection was lost
   *   before the ack (the message may or may not have been delivered).
   */
  publish(room, data) {
    return this._data({ op: 'publish', room, data }, `room "${room}"`).then((ack) =>
      typeof ack?.offset === 'number' ? { offset: ack.offset } : undefined,
    );
  }

  /**
   * A room's recent messages (a room with history; else rejects with
   * `no_history`): the latest `limit`, or with `since` the first `limit`
   * after that position. Needs a connection (rejects with `disconnected`
   * while offline).
   * @param {string} room
   * @param {{limit?: number, since?: {offset: number, epoch: string}}} [options]
   * @returns {Promise<{room: string, epoch: string, offset: number,
   *   messages: {offset: number, from: string, data: *}[]}>}
   */
  history(room, options = {}) {
    if (this._state === 'closed') return Promise.reject(this._closeReason);
    if (this._state !== 'open') {
      return Promise.reject(new RoomcastError('disconnected', 'roomcast: history() needs a connection'));
    }
    const req = { op: 'history', room };
    if (options.limit !== undefined) req.limit = options.limit;
    if (options.since !== undefined) req.since = options.since;
    return this._request(JSON.stringify(req)).then(({ room: r, epoch, offset, messages }) => ({
      room: r,
      epoch,
      offset,
      messages,
    }));
  }

  /**
   * Who is in a room (a room with presence; else rejects with
   * `no_presence`): the number of distinct users and, unless `list` is
   * false, each user with their connections in the room (at most the
   * server's `--presence-max-users`, then `truncated` is true). Needs a
   * connection (rejects with `disconnected` while offline).
   * @param {string} room
   * @param {{list?: boolean}} [options]
   * @returns {Promise<{room: string, count: number, users?: {user: string, conns: number}[], truncated?: boolean}>}
   */
  presence(room, options = {}) {
    if (this._state === 'closed') return Promise.reject(this._closeReason);
    if (this._state !== 'open') {
      return Promise.reject(new RoomcastError('disconnected', 'roomcast: presence() needs a connection'));
    }
    const req = { op: 'presence', room };
    if (options.list === false) req.list = false;
    return this._request(JSON.stringify(req)).then(({ room: r, count, users, truncated }) => {
      const answer = { room: r, count };
      if (users !== undefined) answer.users = users;
      if (truncated) answer.truncated = true;
      return answer;
    });
  }

  /**
   * Where this client is in a room with history: the offset and epoch of
   * the last message delivered (or of the join), or undefined.
   * @param {string} room
   * @returns {{offset: number, epoch: string} | undefined}
   */
  position(room) {
    const pos = this._positions.get(room);
    return pos && { ...pos };
  }

  /**
   * Sends `data` (any JSON value) to every connection of `user`. Queued
   * while offline like `publish`. A user with no connection is acked too.
   * @param {string} user
   * @param {*} data
   * @returns {Promise<void>}
   */
  send(user, data) {
    return this._data({ op: 'send', user, data }, `user "${user}"`);
  }

  /**
   * Closes the connection for good: no reconnection; every request still
   * waiting is rejected with `closed`.
   * @param {number} [code=1000] 1000 or 3000-4999 (what browsers allow)
   * @param {string} [reason]
   */
  close(code = 1000, reason = 'client closed') {
    if (this._state === 'closed') return;
    const ws = this._ws;
    this._shutdown(code, reason, 'the client was closed');
    if (ws) ws.close(code, reason);
  }

  // -- connecting -----------------------------------------------------------

  async _connect() {
    this._retryTimer = null;
    this._state = 'connecting';
    let token;
    try {
      token = await this._nextToken();
    } catch (err) {
      if (this._state === 'closed') return;
      this._emit('error', new RoomcastError('token', `roomcast: the token function failed: ${err?.message ?? err}`));
      this._retry(1006, 'no token');
      return;
    }
    if (this._state === 'closed') return;
    this._token = token;
    let ws;
    try {
      ws = new this._WebSocket(withToken(this._url, token));
    } catch (err) {
      this._emit('error', new RoomcastError('connect', `roomcast: cannot open ${this._url}: ${err?.message ?? err}`));
      this._retry(1006, 'cannot open');
      return;
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    // Every handler checks that its socket is still the current one.
    ws.onmessage = (ev) => ws === this._ws && this._onFrame(ev.data);
    ws.onclose = (ev) => ws === this._ws && this._onSocketClosed(ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows with what little there is to know
    this._lastFrameAt = Date.now();
    this._probed = false;
    this._armHeartbeat(this._heartbeatMs());
  }

  async _nextToken() {
    const { token } = this._opts;
    if (this._freshToken !== undefined) {
      const fresh = this._freshToken;
      this._freshToken = undefined;
      return fresh;
    }
    return typeof token === 'function' ? await token() : token;
  }

  _onFrame(data) {
    this._lastFrameAt = Date.now();
    this._probed = false;
    if (typeof data !== 'string') {
      this._onBinary(data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      const err = new RoomcastError('bad_frame', `roomcast: the server sent invalid JSON: ${data.slice(0, 100)}`);
      this._emit('error', err);
      return;
    }
    switch (msg?.op) {
      case 'welcome':
        this._onWelcome(msg);
        break;
      case 'ack':
      case 'history':
      case 'presence':
        this._settle(msg.id, null, msg);
        break;
      case 'joined':
      case 'left':
        this._emit(msg.op, { room: msg.room, user: msg.user });
        break;
      case 'error': {
        const err = new RoomcastError(msg.code, `roomcast: ${msg.code}: ${msg.message}`);
        if (msg.id === undefined || !this._pending.has(msg.id)) this._emit('error', err);
        else this._settle(msg.id, err);
        break;
      }
      case 'message':
        if (typeof msg.offset === 'number') {
          // A room with history: deliver each offset once, and remember
          // the last one to recover from after a reconnection.
          const pos = this._positions.get(msg.room);
          if (pos && msg.offset <= pos.offset) break;
          if (pos) pos.offset = msg.offset;
          this._emit('message', { room: msg.room, from: msg.from, data: msg.data, offset: msg.offset });
          break;
        }
        this._emit('message', { room: msg.room, from: msg.from, data: msg.data });
        break;
      case 'direct':
        this._emit('direct', { from: msg.from, data: msg.data });
        break;
      case 'unsubscribed':
        // The server took us out (e.g. a refreshed token no longer allows
        // the room): do not re-join it on the next connection.
        this._rooms.delete(msg.room);
        this._positions.delete(msg.room);
        this._emit('unsubscribed', { room: msg.room, reason: msg.reason });
        break;
      default: // ops of a newer server are ignored
    }
  }

  _onBinary(data) {
    if (!(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) return;
    const bytes =
      data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const n = bytes[0] ?? 0;
    const room = new TextDecoder().decode(bytes.subarray(1, 1 + n));
    this._emit('message', { room, data: bytes.slice(1 + n), binary: true });
  }

  _onWelcome(msg) {
    const ws = this._ws;
    this.user = msg.user;
    this.connId = msg.conn;
    this._welcomed = true;
    this._attempt = 0;
    // Re-join every room, then send what was queued, then announce.
    Promise.all([...this._rooms].map((room) => this._sendJoin(room))).then(() => {
      if (ws !== this._ws || this._state === 'closed') return;
      this._state = 'open';
      const queued = this._queue.splice(0);
      for (const q of queued) this._request(q.body).then(q.resolve, q.reject);
      const reconnected = this._opened;
      this._opened = true;
      this._emit('open', { user: this.user, conn: this.connId, reconnected });
    });
  }

  // Sends a join (recovering from the last position in a room with
  // history); always resolves (the outcome goes to the room's waiters).
  _sendJoin(room) {
    const pos = this._positions.get(room);
    const req = pos ? { op: 'join', room, since: { offset: pos.offset, epoch: pos.epoch } } : { op: 'join', room };
    return this._request(JSON.stringify(req)).then(
      (ack) => {
        this._joinRetries.delete(room);
        if (typeof ack?.epoch === 'string') this._onPosition(room, ack, pos);
        this._settleJoin(room, null, ack);
      },
      (err) => {
        // Lost connection: the waiters wait for the next one. Closed: already rejected.
        if (err.code === 'disconnected' || this._state === 'closed') return;
        if (err.code === 'unavailable' && this._rooms.has(room)) {
          // The server's history store is briefly unreachable: the room,
          // its position and its waiters stay; the join is tried again.
          const tries = (this._joinRetries.get(room) ?? 0) + 1;
          this._joinRetries.set(room, tries);
          const timer = setTimeout(() => {
            this._joinTimers.delete(timer);
            if (this._welcomed && this._rooms.has(room)) this._sendJoin(room);
          }, backoffDelay(tries, this._opts.backoffBaseMs, this._opts.backoffCapMs));
          this._joinTimers.add(timer);
          return;
        }
        this._rooms.delete(room);
        // A failed re-join has no caller to reject: tell the 'error' listeners.
        if (!this._settleJoin(room, err)) this._emit('error', err);
      },
    );
  }

  // A join of a room with history was acked at `ack`'s position; `since`
  // is the position it asked to recover from, if any.
  _onPosition(room, ack, since) {
    const pos = this._positions.get(room);
    if (!since) {
      this._positions.set(room, { offset: ack.offset, epoch: ack.epoch });
      return;
    }
    if (ack.recovered) {
      // The replay came before the ack: the position is at least its top.
      if (!pos || pos.offset < ack.offset) this._positions.set(room, { offset: ack.offset, epoch: ack.epoch });
      this._emit('recovered', { room, offset: ack.offset });
      return;
    }
    // Not recoverable: start over from the current position; the app
    // reloads what it shows of the room.
    this._positions.set(room, { offset: ack.offset, epoch: ack.epoch });
    this._emit('gap', { room, offset: ack.offset, epoch: ack.epoch, since });
  }

  // Settles the room's waiting join promises; false if there were none.
  _settleJoin(room, err, ack) {
    const waiters = this._joinWaiters.get(room) ?? [];
    this._joinWaiters.delete(room);
    const position = typeof ack?.epoch === 'string' ? { offset: ack.offset, epoch: ack.epoch } : undefined;
    for (const w of waiters) (err ? w.reject(err) : w.resolve(position));
    return waiters.length > 0;
  }

  // -- closing and reconnecting ---------------------------------------------

  _onSocketClosed(code, reason) {
    this._state = 'reconnecting';
    this._dropSocket(
      new RoomcastError('disconnected', 'roomcast: the connection was lost before the server acknowledged the request'),
    );
    if (code === 4001) {
      this._onUnauthorized(reason);
      return;
    }
    this._retry(code, reason);
  }

  // Forgets the current socket and rejects what was in flight on it.
  _dropSocket(err) {
    clearTimeout(this._heartbeatTimer);
    this._ws = null;
    this._welcomed = false;
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) p.reject(err);
  }

  async _onUnauthorized(reason) {
    const refused = this._token;
    const stop = () => this._shutdown(4001, reason, 'the server refused the token (4001)', 'unauthorized');
    if (typeof this._opts.token !== 'function') return stop();
    let fresh;
    try {
      fresh = await this._opts.token();
    } catch (err) {
      if (this._state === 'closed') return;
      this._emit('error', new RoomcastError('token', `roomcast: the token function failed: ${err?.message ?? err}`));
      return stop();
    }
    if (this._state === 'closed') return;
    if (!fresh || fresh === refused) return stop();
    this._freshToken = fresh;
    this._retry(4001, reason);
  }

  _retry(code, reason) {
    if (this._attempt >= this._opts.maxReconnectAttempts) {
      this._shutdown(code, reason, `gave up after ${this._attempt} reconnection attempts`);
      return;
    }
    const delayMs = backoffDelay(this._attempt, this._opts.backoffBaseMs, this._opts.backoffCapMs);
    this._attempt += 1;
    this._state = 'reconnecting';
    this._emit('close', { code, reason, willReconnect: true, delayMs, attempt: this._attempt });
    this._retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  // Ends for good: rejects everything that waits and emits the last close.
  _shutdown(code, reason, why, errCode = 'closed') {
    this._state = 'closed';
    clearTimeout(this._retryTimer);
    for (const t of this._joinTimers) clearTimeout(t);
    this._joinTimers.clear();
    const err = new RoomcastError(errCode, `roomcast: closed: ${why}`);
    this._closeReason = err;
    this._dropSocket(err);
    for (const q of this._queue.splice(0)) q.reject(err);
    for (const room of [...this._joinWaiters.keys()]) this._settleJoin(room, err);
    this._emit('close', { code, reason, willReconnect: false });
  }

  // -- heartbeat ------------------------------------------------------------

  _heartbeatMs() {
    return this._opts.heartbeatSecs * 1000;
  }

  _armHeartbeat(ms) {
    clearTimeout(this._heartbeatTimer);
    this._heartbeatTimer = setTimeout(() => this._checkHeartbeat(), ms);
  }

  // After one interval of silence, asks the server for an answer (browsers
  // hide its pings); after two, the connection is presumed dead.
  _checkHeartbeat() {
    const interval = this._heartbeatMs();
    const idle = Date.now() - this._lastFrameAt;
    if (idle >= 2 * interval) {
      const ws = this._ws;
      this._onSocketClosed(1006, `no frame from the server for ${Math.round(idle / 1000)} s`);
      ws.close(4000, 'heartbeat timeout');
      return;
    }
    if (idle >= interval && !this._probed && this._welcomed) {
      this._probed = true;
      // The protocol's keepalive: acked, changes nothing.
      this._request(JSON.stringify({ op: 'ping' })).catch(() => {});
    }
    this._armHeartbeat((idle >= interval ? 2 : 1) * interval - idle);
  }

  // -- requests -------------------------------------------------------------

  _data(msg, target) {
    if (this._state === 'closed') return Promise.reject(this._closeReason);
    let body;
    try {
      if (msg.data === undefined) throw new Error('data is undefined');
      body = JSON.stringify(msg);
    } catch (err) {
      return Promise.reject(new RoomcastError('bad_data', `roomcast: data for ${target} is not JSON: ${err.message}`));
    }
    if (this._state === 'open') return this._request(body);
    if (this._queue.length >= this._opts.maxQueue) {
      const why = `offline queue full (${this._opts.maxQueue} messages); ${msg.op} to ${target} dropped`;
      return Promise.reject(new RoomcastError('queue_full', `roomcast: ${why}`));
    }
    return new Promise((resolve, reject) => this._queue.push({ body, resolve, reject }));
  }

  // Sends a JSON object (as text) with a fresh id; settled by its ack or error.
  _request(body) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this._ws.send(`${body.slice(0, -1)},"id":${id}}`);
    });
  }

  _settle(id, err, reply) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    if (err) p.reject(err);
    else p.resolve(reply);
  }

  // -- events ---------------------------------------------------------------

  _emit(event, arg) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) {
      try {
        fn(arg);
      } catch (err) {
        // A throwing listener must not break the connection: report it apart
        // (as EventTarget does: window.onerror in browsers, uncaughtException in Node).
        if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
        else
          queueMicrotask(() => {
            throw err;
          });
      }
    }
  }
}

function resolveUrl(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`roomcast: not a WebSocket URL: ${url}`);
  }
  return u.href;
}

function withToken(url, token) {
  if (token === undefined || token === null || token === '') return url;
  const u = new URL(url);
  u.searchParams.set('token', String(token));
  return u.href;
}

module.exports = { RoomcastError, backoffDelay, Roomcast };
