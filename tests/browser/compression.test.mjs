// permessage-deflate (issue 17) with the clients users have: Node's ws
// (roomcast.js on top, and raw) and headless Chromium (the demo page).
// Members that negotiated compression and members that did not get the
// same messages; the broker counts the compressed deliveries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Roomcast } from '../../clients/js/roomcast.js';
import { startBroker, launchChromium, openDemo, eventually, metric, TIMEOUT } from './harness.mjs';

/** A raw ws client on /ws, with or without permessage-deflate; resolves after the welcome. */
function raw(broker, perMessageDeflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${broker.addr}/ws`, { perMessageDeflate });
    const timer = setTimeout(() => reject(new Error('no welcome')), TIMEOUT);
    ws.once('error', reject);
    ws.once('upgrade', (res) => (ws.agreed = res.headers['sec-websocket-extensions'] ?? ''));
    ws.once('message', (data) => {
      clearTimeout(timer);
      assert.equal(JSON.parse(data).op, 'welcome');
      resolve(ws);
    });
  });
}

/** Sends an op and resolves with the next message that satisfies `want`. */
function next(ws, want = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message')), TIMEOUT);
    const on = (data) => {
      const v = JSON.parse(data);
      if (!want(v)) return;
      clearTimeout(timer);
      ws.off('message', on);
      resolve(v);
    };
    ws.on('message', on);
  });
}

async function join(ws, room) {
  const ack = next(ws, (v) => v.op === 'ack');
  ws.send(JSON.stringify({ op: 'join', room, id: 1 }));
  await ack;
}

test('Node ws with and without compression get the same messages', async (t) => {
  const broker = await startBroker({ args: ['--compression'] });
  t.after(() => broker.kill());
  const [zipped, plain] = await Promise.all([raw(broker, true), raw(broker, false)]);
  t.after(() => (zipped.close(), plain.close()));
  assert.equal(zipped.extensions, 'permessage-deflate');
  assert.equal(
    zipped.agreed,
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
  );
  assert.equal(plain.extensions, '');
  await Promise.all([join(zipped, 'z'), join(plain, 'z')]);

  // ws compresses what it sends past its 1 KiB threshold: the broker
  // inflates it; both members get the message, one compressed.
  const text = 'roomcast compresses each room message once. '.repeat(40);
  const atZipped = next(zipped, (v) => v.op === 'message');
  const atPlain = next(plain, (v) => v.op === 'message');
  zipped.send(JSON.stringify({ op: 'publish', room: 'z', data: { text } }));
  const [a, b] = await Promise.all([atZipped, atPlain]);
  assert.deepEqual(a, b);
  assert.equal(a.data.text, text);
  assert.equal(await metric(broker, 'roomcast_compressed_deliveries_total'), 1);

  // roomcast.js over ws (compression on by default in ws) reads it too.
  const rc = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket });
  t.after(() => rc.close());
  await new Promise((resolve) => rc.on('open', resolve));
  await rc.join('z');
  const atRc = new Promise((resolve) => rc.on('message', resolve));
  plain.send(JSON.stringify({ op: 'publish', room: 'z', data: { text } }));
  assert.equal((await atRc).data.text, text);
  await eventually('two more compressed deliveries', async () =>
    (await metric(broker, 'roomcast_compressed_deliveries_total')) === 3,
  );
});

test('the demo page in Chromium negotiates compression and reads compressed messages', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker({ args: ['--compression'] });
  t.after(() => broker.kill());
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await openDemo(browser, broker, 'Alice');
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws));

  const bob = await raw(broker, false);
  t.after(() => bob.close());
  await join(bob, 'lobby');
  const long = 'a long line that compresses well, '.repeat(30);
  const before = await metric(broker, 'roomcast_compressed_deliveries_total');
  bob.send(JSON.stringify({ op: 'publish', room: 'lobby', data: { name: 'Bob', text: long } }));
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#log .msg')].some((e) => e.textContent.includes(t)),
    long.trim(),
  );
  // Chromium offered permessage-deflate; the page's copy went compressed.
  assert.equal(await metric(broker, 'roomcast_compressed_deliveries_total'), before + 1);
  assert.deepEqual(page.errors, []);
});
