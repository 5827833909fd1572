// Unit tests of the client without a browser or a broker: a fake WebSocket
// plays the server and node:test's mock timers play the clock.
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Roomcast, RoomcastError, backoffDelay } from '../roomcast.js';
import { fakeServer } from './fake-ws.mjs';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

/** Lets pending promise callbacks run (setImmediate is not mocked). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Moves the fake clock forward, then lets promise callbacks run. */
async function advance(ms) {
  mock.timers.tick(ms);
  await settle();
}

/** A client on a fake server, connected and welcomed. */
async function connected(options = {}) {
  const server = fakeServer();
  const rc = new Roomcast('ws://broker.test/ws', { WebSocket: server.WebSocket, ...options });
  const events = record(rc);
  await advance(0);
  server.sockets[0].welcome();
  await settle();
  return { rc, server, events, ws: server.sockets[0] };
}

/** Records every event the client emits, as [name, payload]. */
function record(rc) {
  const events = [];
  for (const name of ['open', 'close', 'message', 'direct', 'unsubscribed', 'recovered', 'gap', 'joined', 'left', 'error'])
    rc.on(name, (e) => events.push([name, e]));
  return events;
}

/** Tracks a promise's outcome without awaiting it. */
function track(promise) {
  const t = { state: 'pending', value: undefined };
  promise.then(
    (v) => Object.assign(t, { state: 'resolved', value: v }),
    (e) => Object.assign(t, { state: 'rejected', value: e }),
  );
  return t;
}

test('backoffDelay: full jitter below min(cap, base * 2^attempt)', () => {
  const almostOne = () => 0.999999;
  const bounds = [0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, 500, 30000, almostOne));
  assert.deepEqual(bounds, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  assert.equal(backoffDelay(3, 500, 30000, () => 0), 0);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(2, 100, 1000);
    assert.ok(d >= 0 && d < 400, `delay ${d} out of [0, 400)`);
  }
  assert.equal(backoffDelay(2000, 100, 1000, almostOne), 999, 'huge attempts stay at the cap');
});

test('a failing server gets exponentially spaced attempts, then the client gives up', async () => {
  mock.method(Math, 'random', () => 0.5);
  const server = fakeServer();
  const rc = new Roomcast('ws://broker.test/ws', {
    WebSocket: server.WebSocket,
    backoffBaseMs: 100,
    backoffCapMs: 1000,
    maxReconnectAttempts: 5,
  });
  const events = record(rc);
  const queued = track(rc.publish('lobby', 'hi'));
  await advance(0);
  for (const delay of [50, 100, 200, 400, 500]) {
    server.sockets.at(-1).serverClose(1006);
    const n = server.sockets.length;
    await advance(delay - 1);
    assert.equal(server.sockets.length, n, `no attempt before ${delay} ms`);
    await advance(1);
    assert.equal(server.sockets.length, n + 1, `an attempt after ${delay} ms`);
  }
  server.sockets.at(-1).serverClose(1006);
  await advance(60_000);
  assert.equal(server.sockets.length, 6, 'one first try and five reconnection attempts');
  const closes = events.filter(([name]) => name === 'close').map(([, e]) => e);
  assert.deepEqual(
    closes.map((e) => [e.willReconnect, e.delayMs, e.attempt]),
    [[true, 50, 1], [true, 100, 2], [true, 200, 3], [true, 400, 4], [true, 500, 5], [false, undefined, undefined]],
  );
  assert.equal(rc.state, 'closed');
  assert.equal(queued.state, 'rejected');
  assert.equal(queued.value.code, 'closed');
  assert.match(queued.value.message, /gave up after 5 reconnection attempts/);
});

test('on reconnection it re-joins every room, then sends what was queued, in order', async () => {
  const { rc, server, events, ws } = await connected();
  assert.equal(rc.user, 'ann');
  assert.equal(rc.connId, 1);
  assert.deepEqual(events, [['open', { user: 'ann', conn: 1, reconnected: false }]]);
  const joins = [track(rc.join('a')), track(rc.join('b'))];
  assert.deepEqual(ws.ackAll().map((r) => [r.op, r.room]), [['join', 'a'], ['join', 'b']]);
  await settle();
  assert.deepEqual(joins.map((j) => j.state), ['resolved', 'resolved']);

  ws.serverClose(1001, 'going away');
  assert.equal(rc.state, 'reconnecting');
  const p1 = track(rc.publish('a', { n: 1 }));
  const p2 = track(rc.send('bob', { n: 2 }));
  const p3 = track(rc.publish('b', { n: 3 }));
  await advance(30_000);
  const ws2 = server.sockets[1];
  ws2.welcome('ann', 7);
  await settle();
  assert.deepEqual(ws2.sent.map((r) => [r.op, r.room]), [['join', 'a'], ['join', 'b']], 'joins first, alone');
  assert.equal(rc.state, 'connecting', 'not open before the rooms are back');
  ws2.ackAll();
  await settle();
  assert.deepEqual(
    ws2.sent.slice(2).map(({ id, ...r }) => r),
    [
      { op: 'publish', room: 'a', data: { n: 1 } },
      { op: 'send', user: 'bob', data: { n: 2 } },
      { op: 'publish', room: 'b', data: { n: 3 } },
    ],
  );
  assert.equal(rc.state, 'open');
  assert.deepEqual(events.at(-1), ['open', { user: 'ann', conn: 7, reconnected: true }]);
  assert.deepEqual([p1.state, p2.state, p3.state], ['pending', 'pending', 'pending'], 'settled by acks');
  ws2.ackAll();
  await settle();
  assert.deepEqual([p1.state, p2.state, p3.state], ['resolved', 'resolved', 'resolved']);
  assert.deepEqual(rc.rooms, ['a', 'b']);
  const ids = ws2.sent.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length, 'request ids are unique');
});

test('the offline queue is bounded: overflow is rejected with queue_full', async () => {
  const server = fakeServer();
  const rc = new Roomcast('ws://broker.test/ws', { WebSocket: server.WebSocket, maxQueue: 2 });
  const a = track(rc.publish('r', 1));
  const b = track(rc.publish('r', 2));
  const c = track(rc.send('bob', 3));
  await settle();
  assert.equal(c.state, 'rejected');
  assert.ok(c.value instanceof RoomcastError);
  assert.equal(c.value.code, 'queue_full');
  assert.match(c.value.message, /offline queue full \(2 messages\); send to user "bob" dropped/);
  await advance(0);
  server.sockets[0].welcome();
  await settle();
  assert.deepEqual(server.sockets[0].ackAll().map((r) => r.data), [1, 2]);
  await settle();
  assert.deepEqual([a.state, b.state], ['resolved', 'resolved']);
  rc.close();
});

test('acks are matched by id; a server error rejects with its code', async () => {
  const { rc, ws, events } = await connected();
  const first = track(rc.publish('r', 'one'));
  const second = track(rc.publish('r', 'two'));
  const [r1, r2] = ws.sent;
  ws.receive({ op: 'ack', id: r2.id });
  await settle();
  assert.deepEqual([first.state, second.state], ['pending', 'resolved']);
  ws.receive({ op: 'error', id: r1.id, code: 'forbidden', message: 'room not allowed by token' });
  await settle();
  assert.equal(first.state, 'rejected');
  assert.equal(first.value.code, 'forbidden');
  assert.match(first.value.message, /forbidden: room not allowed by token/);

  const bad = track(rc.join('bad\nroom'));
  ws.receive({ op: 'error', id: ws.sent.at(-1).id, code: 'invalid_room', message: 'room names are ...' });
  await settle();
  assert.equal(bad.value.code, 'invalid_room');
  assert.deepEqual(rc.rooms, [], 'a refused room is not re-joined later');

  ws.receive({ op: 'error', code: 'rate_limited', message: 'rate limit exceeded; message dropped' });
  assert.equal(events.at(-1)[0], 'error', 'an error without id goes to the error listeners');
  assert.equal(events.at(-1)[1].code, 'rate_limited');

  const undef = track(rc.publish('r', undefined));
  await settle();
  assert.equal(undef.value.code, 'bad_data');
});

test('in flight when the connection drops: publishes fail with disconnected, joins wait', async () => {
  const { rc, server, ws } = await connected();
  const pub = track(rc.publish('r', 1));
  const join = track(rc.join('r'));
  ws.serverClose(1006);
  await settle();
  assert.equal(pub.state, 'rejected');
  assert.equal(pub.value.code, 'disconnected');
  assert.equal(join.state, 'pending');
  await advance(30_000);
  server.sockets[1].welcome();
  await settle();
  assert.deepEqual(server.sockets[1].ackAll().map((r) => [r.op, r.room]), [['join', 'r']]);
  await settle();
  assert.equal(join.state, 'resolved');
  rc.close();
});

test('leave: forgets the room, and cancels a join still waiting for a connection', async () => {
  const server = fakeServer();
  const rc = new Roomcast('ws://broker.test/ws', { WebSocket: server.WebSocket });
  const join = track(rc.join('r'));
  const left = track(rc.leave('r'));
  await settle();
  assert.equal(join.value.code, 'cancelled');
  assert.equal(left.state, 'resolved');
  await advance(0);
  server.sockets[0].welcome();
  await settle();
  assert.deepEqual(server.sockets[0].sent, [], 'nothing to re-join');
  const leave = track(rc.leave('x'));
  assert.deepEqual(server.sockets[0].ackAll().map((r) => [r.op, r.room]), [['leave', 'x']]);
  await settle();
  assert.equal(leave.state, 'resolved');
  rc.close();
});

test('rooms with history: offsets delivered once, re-joined with since, recovered or gap', async () => {
  const { rc, server, ws, events } = await connected();
  const joined = track(rc.join('h'));
  const [join] = ws.sent;
  ws.receive({ op: 'ack', id: join.id, offset: 4, epoch: 'e1' });
  await settle();
  assert.deepEqual(joined.value, { offset: 4, epoch: 'e1' });
  for (const offset of [5, 6, 6, 5, 7]) ws.receive({ op: 'message', room: 'h', from: 'bob', data: offset, offset });
  const delivered = () => events.filter(([e]) => e === 'message').map(([, m]) => m.offset);
  assert.deepEqual(delivered(), [5, 6, 7], 'each offset once');
  assert.deepEqual(rc.position('h'), { offset: 7, epoch: 'e1' });

  // Reconnect: the re-join asks for what came after 7; replay, then the ack.
  ws.serverClose(1006);
  await advance(60_000);
  const ws2 = server.sockets[1];
  ws2.welcome();
  await settle();
  const [rejoin] = ws2.sent;
  assert.deepEqual(rejoin.since, { offset: 7, epoch: 'e1' });
  for (const offset of [7, 8, 9]) ws2.receive({ op: 'message', room: 'h', from: 'bob', data: offset, offset });
  ws2.receive({ op: 'ack', id: rejoin.id, offset: 9, epoch: 'e1', recovered: true });
  await settle();
  assert.deepEqual(delivered(), [5, 6, 7, 8, 9], 'the replay, without the duplicate');
  assert.deepEqual(events.filter(([e]) => e === 'recovered'), [['recovered', { room: 'h', offset: 9 }]]);

  // The server restarted: a new epoch, nothing replayed, a gap to reload.
  ws2.serverClose(1006);
  await advance(60_000);
  const ws3 = server.sockets[2];
  ws3.welcome();
  await settle();
  const [third] = ws3.sent;
  assert.deepEqual(third.since, { offset: 9, epoch: 'e1' });
  ws3.receive({ op: 'ack', id: third.id, offset: 0, epoch: 'e2', recovered: false });
  await settle();
  assert.deepEqual(events.filter(([e]) => e === 'gap'), [
    ['gap', { room: 'h', offset: 0, epoch: 'e2', since: { offset: 9, epoch: 'e1' } }],
  ]);
  ws3.receive({ op: 'message', room: 'h', from: 'bob', data: 1, offset: 1 });
  await settle();
  assert.deepEqual(delivered().at(-1), 1, 'the new stream counts from its start');
  assert.deepEqual(rc.position('h'), { offset: 1, epoch: 'e2' });
  track(rc.leave('h'));
  assert.equal(rc.position('h'), undefined);
  rc.close();
});

test('a join answered unavailable is tried again, keeping the room and its position', async () => {
  const { rc, server, ws, events } = await connected();
  const joined = track(rc.join('h'));
  ws.receive({ op: 'ack', id: ws.sent[0].id, offset: 3, epoch: 'e1' });
  await settle();
  ws.serverClose(1006);
  await advance(60_000);
  const ws2 = server.sockets[1];
  ws2.welcome();
  await settle();
  // Twice the server's Redis is unreachable; the third try recovers.
  for (let i = 0; i < 2; i++) {
    const rejoin = ws2.sent.at(-1);
    assert.deepEqual([rejoin.op, rejoin.since], ['join', { offset: 3, epoch: 'e1' }]);
    ws2.receive({ op: 'error', id: rejoin.id, code: 'unavailable', message: 'the history store (Redis) is unreachable' });
    await settle();
    assert.deepEqual(rc.rooms, ['h'], 'still wanted');
    await advance(5_000); // past the backoff (base 500 ms), short of the heartbeat
  }
  const last = ws2.sent.at(-1);
  assert.equal(ws2.sent.filter((r) => r.op === 'join').length, 3);
  ws2.receive({ op: 'ack', id: last.id, offset: 3, epoch: 'e1', recovered: true });
  await settle();
  assert.equal(joined.state, 'resolved');
  assert.deepEqual(events.filter(([e]) => e === 'error'), [], 'no error event for a retried join');
  assert.deepEqual(events.filter(([e]) => e === 'recovered').length, 1);
  rc.close();
});

test('presence() asks the server; joined and left become events', async () => {
  const { rc, ws, events } = await connected();
  const full = track(rc.presence('lobby'));
  const [req] = ws.sent;
  assert.deepEqual([req.op, req.room, req.list], ['presence', 'lobby', undefined]);
  ws.receive({ op: 'presence', id: req.id, room: 'lobby', count: 2, users: [{ user: 'ann', conns: 2 }, { user: 'bob', conns: 1 }] });
  await settle();
  assert.deepEqual(full.value, { room: 'lobby', count: 2, users: [{ user: 'ann', conns: 2 }, { user: 'bob', conns: 1 }] });
  const count = track(rc.presence('lobby', { list: false }));
  const countReq = ws.sent.at(-1);
  assert.equal(countReq.list, false);
  ws.receive({ op: 'presence', id: countReq.id, room: 'lobby', count: 100000 });
  await settle();
  assert.deepEqual(count.value, { room: 'lobby', count: 100000 });
  const refused = track(rc.presence('plain'));
  ws.receive({ op: 'error', id: ws.sent.at(-1).id, code: 'no_presence', message: 'the room does not track presence' });
  await settle();
  assert.equal(refused.value.code, 'no_presence');
  ws.receive({ op: 'joined', room: 'lobby', user: 'cat' });
  ws.receive({ op: 'left', room: 'lobby', user: 'bob' });
  assert.deepEqual(events.filter(([e]) => e === 'joined' || e === 'left'), [
    ['joined', { room: 'lobby', user: 'cat' }],
    ['left', { room: 'lobby', user: 'bob' }],
  ]);
  rc.close();
});

test('history() asks the server and resolves with its answer', async () => {
  const { rc, ws } = await connected();
  const h = track(rc.history('h', { limit: 2 }));
  const [req] = ws.sent;
  assert.deepEqual({ ...req, id: undefined }, { op: 'history', room: 'h', limit: 2, id: undefined });
  const messages = [{ offset: 3, from: 'bob', data: 'x' }];
  ws.receive({ op: 'history', id: req.id, room: 'h', epoch: 'e', offset: 3, messages });
  await settle();
  assert.deepEqual(h.value, { room: 'h', epoch: 'e', offset: 3, messages });
  const p = track(rc.publish('h', 1));
  ws.receive({ op: 'ack', id: ws.sent[1].id, offset: 4 });
  await settle();
  assert.deepEqual(p.value, { offset: 4 });
  rc.close();
});

test('unsubscribed: an event, and the room is not re-joined', async () => {
  const { rc, server, ws, events } = await connected();
  rc.join('lobby');
  rc.join('secret');
  ws.ackAll();
  await settle();
  ws.receive({ op: 'unsubscribed', room: 'secret', reason: 'forbidden' });
  await settle();
  assert.deepEqual(events.at(-1), ['unsubscribed', { room: 'secret', reason: 'forbidden' }]);
  assert.deepEqual(rc.rooms, ['lobby']);
  ws.serverClose(1006);
  await advance(60_000);
  server.sockets[1].welcome();
  await settle();
  assert.deepEqual(server.sockets[1].sent.map((r) => r.room), ['lobby']);
  rc.close();
});

test('4001 with a fixed token: no reconnection', async () => {
  const server = fakeServer();
  const rc = new Roomcast('http://broker.test/ws', { WebSocket: server.WebSocket, token: 'tok.en-1' });
  const events = record(rc);
  await advance(0);
  assert.equal(server.sockets[0].url, 'ws://broker.test/ws?token=tok.en-1');
  server.sockets[0].serverClose(4001, 'Unauthorized');
  await advance(120_000);
  assert.equal(server.sockets.length, 1);
  assert.equal(rc.state, 'closed');
  assert.deepEqual(events, [['close', { code: 4001, reason: 'Unauthorized', willReconnect: false }]]);
  const later = track(rc.publish('r', 1));
  await settle();
  assert.equal(later.value.code, 'unauthorized');
});

test('4001 with a token function: reconnects only when it gives a new token', async () => {
  const tokens = ['t1', 't2', 't2'];
  const server = fakeServer();
  const fetchToken = mock.fn(async () => tokens.shift());
  const rc = new Roomcast('ws://broker.test/ws', { WebSocket: server.WebSocket, token: fetchToken });
  const events = record(rc);
  await advance(0);
  assert.equal(server.sockets[0].token, 't1');
  server.sockets[0].welcome();
  await settle();
  server.sockets[0].serverClose(4001, 'token expired');
  await settle();
  await advance(30_000);
  assert.equal(server.sockets.length, 2);
  assert.equal(server.sockets[1].token, 't2');
  assert.equal(fetchToken.mock.callCount(), 2, 'the token fetched after the 4001 is the one used');
  server.sockets[1].serverClose(4001, 'Unauthorized');
  await settle();
  await advance(120_000);
  assert.equal(server.sockets.length, 2, 'the same token again: no new attempt');
  assert.equal(rc.state, 'closed');
  assert.deepEqual(
    events.filter(([n]) => n === 'close').map(([, e]) => [e.code, e.willReconnect]),
    [[4001, true], [4001, false]],
  );
});

test('a failing token function is an error event and a failed attempt', async () => {
  mock.method(Math, 'random', () => 0);
  const server = fakeServer();
  let calls = 0;
  const rc = new Roomcast('ws://broker.test/ws', {
    WebSocket: server.WebSocket,
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error('auth server down');
      return 'ok';
    },
  });
  const events = record(rc);
  await advance(0);
  assert.equal(server.sockets.length, 0);
  assert.equal(events[0][0], 'error');
  assert.equal(events[0][1].code, 'token');
  assert.match(events[0][1].message, /auth server down/);
  assert.equal(events[1][1].willReconnect, true);
  await advance(0);
  assert.equal(server.sockets[0].token, 'ok');
  rc.close();
});

test('close(): closes the socket, rejects what waits, never reconnects', async () => {
  const { rc, server, ws, events } = await connected();
  const pub = track(rc.publish('r', 1));
  const join = track(rc.join('r'));
  rc.close();
  await settle();
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'client closed' });
  assert.equal(pub.value.code, 'closed');
  assert.equal(join.value.code, 'closed');
  ws.serverClose(1000);
  await advance(120_000);
  assert.equal(server.sockets.length, 1);
  assert.deepEqual(events.at(-1), ['close', { code: 1000, reason: 'client closed', willReconnect: false }]);
  assert.equal(events.filter(([n]) => n === 'close').length, 1);
  assert.equal((await rc.join('x').catch((e) => e)).code, 'closed');
});

test('close() before the first connection opens nothing', async () => {
  const server = fakeServer();
  const rc = new Roomcast('ws://broker.test/ws', { WebSocket: server.WebSocket });
  rc.close();
  await advance(60_000);
  assert.equal(server.sockets.length, 0);
});

test('heartbeat: a probe after one silent interval, a reconnection after two', async () => {
  mock.method(Math, 'random', () => 0);
  const { rc, server, ws, events } = await connected({ heartbeatSecs: 1 });
  await advance(999);
  ws.receive({ op: 'message', room: 'r', from: 'bob', data: 1 }); // any frame resets the clock
  await advance(999);
  assert.equal(ws.sent.length, 0, 'no probe while frames arrive');
  await advance(1);
  assert.deepEqual(ws.sent.map(({ id, ...r }) => r), [{ op: 'ping' }], 'one cheap probe');
  await advance(999);
  assert.equal(ws.closedByClient, null);
  assert.equal(server.sockets.length, 1);
  await advance(1);
  assert.deepEqual(ws.closedByClient, { code: 4000, reason: 'heartbeat timeout' });
  const close = events.find(([n]) => n === 'close')[1];
  assert.equal(close.code, 1006);
  assert.match(close.reason, /no frame from the server for 2 s/);
  assert.equal(close.willReconnect, true);
  await advance(0);
  assert.equal(server.sockets.length, 2);
  rc.close();
});

test('the probe answer keeps a quiet connection alive', async () => {
  const { rc, server, ws } = await connected({ heartbeatSecs: 1 });
  for (let i = 0; i < 5; i++) {
    await advance(1000);
    const probe = ws.sent.at(-1);
    ws.receive({ op: 'ack', id: probe.id });
  }
  assert.equal(ws.sent.length, 5);
  assert.equal(ws.closedByClient, null);
  assert.equal(server.sockets.length, 1);
  rc.close();
});

test('message, direct and binary frames become events; a throwing listener is isolated', async () => {
  const { rc, ws, events } = await connected();
  const thrown = [];
  globalThis.reportError = (err) => thrown.push(err); // as in browsers
  rc.on('message', () => {
    throw new Error('listener bug');
  });
  ws.receive({ op: 'message', room: 'lobby', from: 'bob', data: { name: 'Bob', text: 'hi' } });
  ws.receive({ op: 'direct', from: 'bob', data: [1, 2] });
  const frame = new Uint8Array([5, ...new TextEncoder().encode('lobby'), 0xde, 0xad]);
  ws.receive(frame.buffer);
  ws.receive('not json');
  await settle();
  delete globalThis.reportError;
  assert.deepEqual(events.slice(1, 4), [
    ['message', { room: 'lobby', from: 'bob', data: { name: 'Bob', text: 'hi' } }],
    ['direct', { from: 'bob', data: [1, 2] }],
    ['message', { room: 'lobby', data: new Uint8Array([0xde, 0xad]), binary: true }],
  ]);
  assert.equal(events[4][1].code, 'bad_frame');
  assert.deepEqual(thrown.map((e) => e.message), ['listener bug', 'listener bug'], 'reported, not swallowed');
  rc.close();
});

test('a clear error when there is no WebSocket implementation', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new Roomcast('ws://broker.test/ws'), /no WebSocket implementation; pass one as \{ WebSocket \}/);
    assert.throws(() => new Roomcast('ftp://x/ws', { WebSocket: class {} }), /not a WebSocket URL/);
  } finally {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
    else delete globalThis.WebSocket;
  }
});
