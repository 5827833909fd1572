// Recovery in headless Chromium (issue 13): a page's connection to the
// broker is cut (a TCP forwarder drops it, as a network would) twice while
// a publisher keeps publishing into a room with history; the client
// reconnects, re-joins with `since` by itself, and the page ends up with
// every message exactly once, in order, with consecutive offsets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { Roomcast } from '../../clients/js/roomcast.js';
import { startBroker, launchChromium, openDemo, eventually, TIMEOUT } from './harness.mjs';

/** A TCP forwarder to `addr` whose connections a test can cut. */
async function forwarder(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const open = new Set();
  const server = net.createServer((down) => {
    const up = net.connect(port, host);
    const pair = [down, up];
    open.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
      open.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    addr: `127.0.0.1:${server.address().port}`,
    /** Cuts every forwarded connection at once (a reset, no close frame). */
    cut() {
      for (const [down, up] of [...open]) {
        down.resetAndDestroy();
        up.destroy();
      }
      return open.size;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test('a page recovers every message after its connection is cut, with no gap and no duplicate', { timeout: 90_000 }, async (t) => {
  const broker = await startBroker({ args: ['--history-size', '1000', '--rate-limit', '100000'] });
  t.after(() => broker.kill());
  const proxy = await forwarder(broker.addr);
  t.after(() => proxy.close());
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(broker.url('/healthz'));
  await page.evaluate(async ({ proxyAddr, timeout }) => {
    const { Roomcast } = await import('/client.js');
    const rc = new Roomcast(`ws://${proxyAddr}/ws`, { backoffBaseMs: 50, backoffCapMs: 200 });
    window.got = [];
    window.events = [];
    rc.on('message', (m) => window.got.push([m.offset, m.data]));
    for (const e of ['recovered', 'gap', 'open']) rc.on(e, (x) => window.events.push([e, x]));
    await Promise.race([rc.join('rec'), new Promise((_, no) => setTimeout(() => no(new Error('join timed out')), timeout))]);
    window.rc = rc;
  }, { proxyAddr: proxy.addr, timeout: TIMEOUT });

  const publisher = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket });
  t.after(() => publisher.close());
  await new Promise((resolve) => publisher.on('open', resolve));
  const total = 300;
  const publishing = (async () => {
    for (let n = 1; n <= total; n++) {
      const { offset } = await publisher.publish('rec', n);
      assert.equal(offset, n);
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
  })();
  for (const [i, after] of [80, 180].entries()) {
    await eventually(`the page to have ${after} messages`, () => page.evaluate((n) => window.got.length >= n, after));
    assert.ok(proxy.cut() >= 1, 'a connection was cut');
    await eventually('the page to recover', () =>
      page.evaluate((n) => window.events.filter(([e]) => e === 'recovered').length > n, i),
    );
  }
  await publishing;
  await eventually('every message on the page', () => page.evaluate((n) => window.got.length >= n, total));
  const { got, events } = await page.evaluate(() => ({ got: window.got, events: window.events }));
  assert.deepEqual(
    got.map(([offset]) => offset),
    Array.from({ length: total }, (_, i) => i + 1),
    'every offset once, in order',
  );
  assert.ok(got.every(([offset, data]) => offset === data));
  assert.equal(events.filter(([e]) => e === 'gap').length, 0, 'no gap');
  assert.equal(events.filter(([e]) => e === 'recovered').length, 2);
  await page.evaluate(() => window.rc.close());
});

test('the demo page shows the room history above the join, then live messages once', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker({ args: ['--history-size', '50'] });
  t.after(() => broker.kill());
  const publisher = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket });
  t.after(() => publisher.close());
  await new Promise((resolve) => publisher.on('open', resolve));
  for (const text of ['first', 'second', 'third']) await publisher.publish('lobby', { name: 'Bot', text });
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await openDemo(browser, broker, 'Alice');
  const texts = () => page.$$eval('#log .msg .text', (els) => els.map((e) => e.textContent));
  await eventually('the history on the page', async () => (await texts()).length === 3);
  await publisher.publish('lobby', { name: 'Bot', text: 'live' });
  await eventually('the live message', async () => (await texts()).length === 4);
  assert.deepEqual(await texts(), ['first', 'second', 'third', 'live']);
  const order = await page.$$eval('#log li', (els) => els.map((e) => e.textContent));
  const joinedAt = order.findIndex((t) => t.includes('you are in lobby'));
  assert.ok(order.findIndex((t) => t.includes('third')) < joinedAt, 'history above the join line');
  assert.ok(order.findIndex((t) => t.includes('live')) > joinedAt);
});
