// Two people chat on the demo page in headless Chromium; the broker is
// killed and restarted on the same port; both pages reconnect and re-join
// by themselves, and the chat goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, launchChromium, openDemo, eventually, metric, TIMEOUT } from './harness.mjs';

/** Types a message and sends it. */
async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

/** Waits until the page shows `text` from `who` (a display name). */
async function sees(page, who, text) {
  await page.waitForFunction(
    ([who, text]) =>
      [...document.querySelectorAll('#log .msg')].some(
        (m) => m.querySelector('.who')?.textContent === who && m.querySelector('.text')?.textContent === text,
      ),
    [who, text],
    { timeout: TIMEOUT, polling: 50 },
  );
}

/** The page's connection state and number, from its status badge. */
const status = (page) =>
  page.$eval('#status', (s) => ({ state: s.dataset.state, conn: s.dataset.conn ?? null }));

test('two pages chat, survive a broker restart on the same port, and chat again', { timeout: 90_000 }, async (t) => {
  let broker = await startBroker();
  t.after(() => broker.kill());
  const browser = await launchChromium();
  t.after(() => browser.close());

  const alice = await openDemo(browser, broker, 'Alice');
  const bob = await openDemo(browser, broker, 'Bob');
  await say(alice, 'hello Bob');
  await Promise.all([sees(bob, 'Alice', 'hello Bob'), sees(alice, 'Alice', 'hello Bob')]);
  await say(bob, 'hi Alice');
  await sees(alice, 'Bob', 'hi Alice');
  assert.equal(await metric(broker, 'roomcast_connections'), 2);

  // Crash the broker: both pages notice and start reconnecting.
  const { addr } = broker;
  await broker.kill();
  for (const page of [alice, bob]) {
    await page.waitForSelector('#status[data-state="reconnecting"]');
  }
  // Sent while offline: queued, and delivered after the reconnection.
  await say(alice, 'are you still there?');

  broker = await startBroker({ listen: addr });
  assert.equal(broker.addr, addr);
  for (const page of [alice, bob]) {
    await page.waitForSelector('#status[data-state="open"][data-conn]', { timeout: TIMEOUT * 2 });
  }
  const after = await Promise.all([status(alice), status(bob)]);
  assert.deepEqual(after.map((s) => s.state), ['open', 'open']);
  await eventually('two connections on the new broker', async () => (await metric(broker, 'roomcast_connections')) === 2);
  await sees(alice, 'Alice', 'are you still there?'); // the queued publish, after Alice's re-join

  // Published after the restart: reaches both, so both re-joined the room on their own.
  await say(bob, 'back again');
  await Promise.all([sees(alice, 'Bob', 'back again'), sees(bob, 'Bob', 'back again')]);
  await say(alice, 'welcome back');
  await Promise.all([sees(alice, 'Alice', 'welcome back'), sees(bob, 'Alice', 'welcome back')]);

  // The live counters read /metrics.
  await alice.waitForFunction(() => document.querySelector('#m-connections').textContent === '2', null, {
    timeout: TIMEOUT,
  });
  assert.deepEqual([...alice.errors, ...bob.errors], [], 'no uncaught errors in the pages');
});

test('the client works from a bare page that imports /client.js', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker({ args: ['--demo', 'false'] });
  t.after(() => broker.kill());
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(broker.url('/healthz')); // any page of the broker's origin
  const result = await page.evaluate(async (timeout) => {
    const { Roomcast } = await import('/client.js');
    const within = (p, what) =>
      Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), timeout))]);
    const rc = new Roomcast('/ws');
    const opened = await within(new Promise((resolve) => rc.on('open', resolve)), 'open');
    await within(rc.join('bare'), 'join');
    const got = new Promise((resolve) => rc.on('message', resolve));
    await within(rc.publish('bare', { text: 'from a bare page' }), 'publish');
    const message = await within(got, 'message');
    const error = await rc.join('').catch((e) => ({ name: e.name, code: e.code }));
    rc.close();
    return { opened, message, error, user: rc.user, state: rc.state };
  }, TIMEOUT);
  assert.match(result.opened.user, /^anon-/);
  assert.equal(result.opened.reconnected, false);
  assert.deepEqual(result.message, { room: 'bare', from: result.user, data: { text: 'from a bare page' } });
  assert.deepEqual(result.error, { name: 'RoomcastError', code: 'invalid_room' });
  assert.equal(result.state, 'closed');
});
