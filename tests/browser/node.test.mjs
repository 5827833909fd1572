// The client in Node 20 (no global WebSocket: the ws package is injected)
// against the real broker: rooms, direct messages, error codes, tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { Roomcast } from '../../clients/js/roomcast.js';
import { startBroker, TIMEOUT } from './harness.mjs';

/** Resolves with the next `event` of `rc`, or rejects after TIMEOUT. */
function next(rc, event, filter = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${event}' event within ${TIMEOUT} ms`));
    }, TIMEOUT);
    const off = rc.on(event, (e) => {
      if (!filter(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

/** A connected client; `options` go to the constructor. */
async function client(broker, options = {}) {
  const rc = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket, ...options });
  await next(rc, 'open');
  return rc;
}

/** An HS256 JWT. */
function hs256(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

test('rooms, direct messages and error codes, in Node with the ws package', async (t) => {
  const broker = await startBroker();
  t.after(() => broker.kill());
  const [ann, bob] = await Promise.all([client(broker), client(broker)]);
  t.after(() => (ann.close(), bob.close()));
  assert.match(ann.user, /^anon-/);
  assert.notEqual(ann.user, bob.user);
  assert.equal(typeof ann.connId, 'number');

  await Promise.all([ann.join('lobby'), bob.join('lobby')]);
  const atBob = next(bob, 'message');
  const atAnn = next(ann, 'message');
  await ann.publish('lobby', { name: 'Ann', text: 'hi', exact: 1.5 });
  const expected = { room: 'lobby', from: ann.user, data: { name: 'Ann', text: 'hi', exact: 1.5 } };
  assert.deepEqual(await atBob, expected);
  assert.deepEqual(await atAnn, expected, 'a member gets its own publish');

  const direct = next(bob, 'direct');
  await ann.send(bob.user, ['psst']);
  assert.deepEqual(await direct, { from: ann.user, data: ['psst'] });

  const errors = await Promise.all([
    ann.join('').catch((e) => e),
    ann.publish('r'.repeat(129), 1).catch((e) => e),
    ann.send('', 1).catch((e) => e),
  ]);
  assert.deepEqual(
    errors.map((e) => e.code),
    ['invalid_room', 'invalid_room', 'bad_request'],
  );
  assert.ok(errors.every((e) => e instanceof Error && /^roomcast: \w+: ./.test(e.message)));
  assert.deepEqual(ann.rooms, ['lobby'], 'a refused join is forgotten');

  await bob.leave('lobby');
  const late = next(ann, 'message');
  let bobGotIt = false;
  bob.on('message', () => (bobGotIt = true));
  await ann.publish('lobby', 'after bob left');
  assert.equal((await late).data, 'after bob left');
  assert.equal(bobGotIt, false);
});

test('a refused token ends with 4001; a token function reconnects with a fresh one', async (t) => {
  const secret = 'a-test-secret-of-at-least-32-bytes!!';
  const broker = await startBroker({ args: ['--jwt-secret', secret, '--jwt-leeway-secs', '0'] });
  t.after(() => broker.kill());

  const refused = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket, token: 'not-a-jwt' });
  const close = await next(refused, 'close');
  assert.deepEqual(close, { code: 4001, reason: 'Unauthorized', willReconnect: false });
  assert.equal(refused.state, 'closed');
  assert.equal((await refused.publish('r', 1).catch((e) => e)).code, 'unauthorized');

  // The first token expires in 1-2 s (whole seconds); the function then gives a good one.
  const tokens = [hs256(secret, { sub: 'ann', exp: now() + 2 }), hs256(secret, { sub: 'ann', exp: now() + 3600 })];
  let calls = 0;
  const ann = new Roomcast(`ws://${broker.addr}/ws`, {
    WebSocket,
    token: async () => tokens[Math.min(calls++, 1)],
    backoffBaseMs: 50,
  });
  t.after(() => ann.close());
  const first = await next(ann, 'open');
  assert.equal(first.user, 'ann');
  await ann.join('news');
  const expired = await next(ann, 'close');
  assert.equal(expired.code, 4001);
  assert.equal(expired.willReconnect, true);
  const second = await next(ann, 'open');
  assert.equal(second.reconnected, true);
  assert.notEqual(second.conn, first.conn);
  assert.equal(calls, 2);

  // Re-joined: a publish from someone else reaches it.
  const bob = await client(broker, { token: hs256(secret, { sub: 'bob', exp: now() + 3600 }) });
  t.after(() => bob.close());
  const got = next(ann, 'message');
  await bob.publish('news', 'extra!');
  assert.deepEqual(await got, { room: 'news', from: 'bob', data: 'extra!' });
});
