// Presence in headless Chromium (issue 14): the demo page lists who is in
// its room and keeps the list up to date from joined/left events; the
// client's presence() answers the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Roomcast } from '../../clients/js/roomcast.js';
import { startBroker, launchChromium, openDemo, eventually } from './harness.mjs';

test('the demo page shows who is online and updates live', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker({ args: ['--presence', '--join-leave'] });
  t.after(() => broker.kill());
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await openDemo(browser, broker, 'Alice');
  const online = () => page.$$eval('#online li', (els) => els.map((e) => e.textContent));
  await eventually('the page lists itself', async () => (await online()).length === 1);
  assert.match((await online())[0], /\(you\)$/);

  // Bob joins from Node (in dev mode each connection is its own user):
  // one entry and one `joined` line on the page; his leaving, one `left`.
  const bob = new Roomcast(`ws://${broker.addr}/ws`, { WebSocket });
  t.after(() => bob.close());
  await new Promise((resolve) => bob.on('open', resolve));
  await bob.join('lobby');
  await eventually('bob on the list', async () => (await online()).length === 2);
  const answer = await bob.presence('lobby');
  assert.equal(answer.count, 2);
  assert.deepEqual(answer.users.map((u) => u.conns), [1, 1]);
  assert.ok(answer.users.some((u) => u.user === bob.user));
  bob.close();
  await eventually('bob off the list', async () => (await online()).length === 1);
  const lines = await page.$$eval('#log .system', (els) => els.map((e) => e.textContent));
  assert.equal(lines.filter((l) => l.endsWith(' joined')).length, 1, lines.join('\n'));
  assert.equal(lines.filter((l) => l.endsWith(' left')).length, 1, lines.join('\n'));
});
