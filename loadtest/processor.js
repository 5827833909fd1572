// Steps for artillery's `ws` engine that speak roomcast's protocol
// (docs/protocol.md): join a room and publish to it, each waiting for its
// ack, and for a publish, for its own message to come back through the
// room. Artillery's own `match` reads only the first message after a step,
// and a room's traffic never stops: these steps read every message.
//
// Counters: roomcast.joined, roomcast.acked, roomcast.messages_received;
// histogram roomcast.echo_ms (publish to own message back, ms). A missing
// answer fails the virtual user with the reason.
'use strict';

const TIMEOUT_MS = 5000;

/** The virtual user's books, and its one listener for every message. */
function books(context, events) {
  if (context.roomcast) return context.roomcast;
  const rooms = Number(context.vars.rooms);
  const b = {
    // `rooms: N` picks one of room-1..room-N per virtual user, else `room`, else `load`.
    room: rooms > 0 ? `room-${1 + Math.floor(Math.random() * rooms)}` : context.vars.room || 'load',
    nextId: 1,
    tag: Math.random().toString(36).slice(2),
    acks: new Map(), // request id -> settle(answer)
    echoes: new Map(), // publish number -> settle()
  };
  context.ws.on('message', (raw) => {
    let m;
    try {
      m = JSON.parse(raw);
    } catch {
      return;
    }
    if ((m.op === 'ack' || m.op === 'error') && b.acks.has(m.id)) {
      const settle = b.acks.get(m.id);
      b.acks.delete(m.id);
      settle(m);
    } else if (m.op === 'message') {
      events.emit('counter', 'roomcast.messages_received', 1);
      const d = m.data;
      if (d && d.tag === b.tag && b.echoes.has(d.n)) {
        events.emit('histogram', 'roomcast.echo_ms', Date.now() - d.t);
        const settle = b.echoes.get(d.n);
        b.echoes.delete(d.n);
        settle();
      }
    }
  });
  context.roomcast = b;
  return b;
}

/** Resolves when `settle` is called, rejects with `why` after the timeout. */
function waitFor(map, key, why) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      map.delete(key);
      reject(new Error(why));
    }, TIMEOUT_MS);
    map.set(key, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Sends `body` with a fresh id; resolves with its ack, rejects on an error. */
async function request(b, ws, body) {
  const id = b.nextId++;
  const answer = waitFor(b.acks, id, `no answer to ${body.op}`);
  ws.send(JSON.stringify({ ...body, id }));
  const m = await answer;
  if (m.op !== 'ack') throw new Error(`${body.op}: ${m.code}`);
  return m;
}

/** Joins the virtual user's room. */
async function join(context, events) {
  const b = books(context, events);
  await request(b, context.ws, { op: 'join', room: b.room });
  events.emit('counter', 'roomcast.joined', 1);
}

/** Publishes one message and waits for its ack and for it to come back. */
async function publish(context, events) {
  const b = books(context, events);
  const n = b.nextId;
  const back = waitFor(b.echoes, n, 'own message never came back');
  const data = { tag: b.tag, n, t: Date.now(), text: 'hello' };
  await request(b, context.ws, { op: 'publish', room: b.room, data });
  events.emit('counter', 'roomcast.acked', 1);
  await back;
}

module.exports = { join, publish };
