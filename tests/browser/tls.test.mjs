// TLS (issue 15): the demo page served over https:// talks to the broker
// over wss:// on the same port in headless Chromium, and Node's ws client
// trusting the test certificate does too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Roomcast } from '../../clients/js/roomcast.js';
import { startBroker, launchChromium, makeCertificate, openDemo } from './harness.mjs';

test('https:// page and wss:// messages in Chromium and Node', { timeout: 60_000 }, async (t) => {
  const tls = makeCertificate();
  const broker = await startBroker({ tls });
  t.after(() => broker.kill());
  const browser = await launchChromium(['--ignore-certificate-errors']);
  t.after(() => browser.close());
  const page = await openDemo(browser, broker, 'Alice');
  // An https:// page may only open wss:// (ws:// is mixed content): the
  // chat below works only if the page's client chose wss:// on this port.
  assert.equal(new URL(page.url()).protocol, 'https:');

  // Bob connects from Node over wss://, trusting the test certificate.
  const port = broker.addr.split(':').pop();
  const ca = tls.pem;
  class TrustingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { ca });
    }
  }
  const bob = new Roomcast(`wss://localhost:${port}/ws`, { WebSocket: TrustingWebSocket });
  t.after(() => bob.close());
  await new Promise((resolve) => bob.on('open', resolve));
  await bob.join('lobby');
  const atBob = new Promise((resolve) => bob.on('message', resolve));
  await page.fill('#text', 'over TLS');
  await page.click('#send');
  const got = await atBob;
  assert.equal(got.room, 'lobby');
  assert.equal(got.data.text, 'over TLS');

  await bob.publish('lobby', { name: 'Bob', text: 'back over TLS' });
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#log .msg')].some((e) => e.textContent.includes('back over TLS')),
  );
  assert.deepEqual(page.errors, []);
});
