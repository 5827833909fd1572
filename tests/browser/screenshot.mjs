// Takes docs/demo.png: two people chatting on the demo page of a real broker.
// Run with `npm run screenshot` in tests/browser (after a release build).
import { fileURLToPath } from 'node:url';
import { startBroker, launchChromium, TIMEOUT } from './harness.mjs';

const out = fileURLToPath(new URL('../../docs/demo.png', import.meta.url));
const broker = await startBroker();
const browser = await launchChromium();
try {
  const page = async (name) => {
    const p = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    p.setDefaultTimeout(TIMEOUT);
    await p.goto(broker.url(`/?name=${name}&room=lobby`));
    await p.waitForSelector('#status[data-state="open"]');
    await p.click('#join');
    await p.waitForSelector('#text:not([disabled])');
    return p;
  };
  const alice = await page('Alice');
  const bob = await page('Bob');
  const lines = [
    [alice, 'Hi Bob! Is the new broker up?'],
    [bob, 'Yes, one binary, no Redis needed for a single node.'],
    [alice, 'And if it restarts?'],
    [bob, 'The client reconnects with backoff and re-joins the room.'],
    [alice, 'Nice. Shipping it.'],
  ];
  for (const [p, text] of lines) {
    await p.fill('#text', text);
    await p.click('#send');
    await alice.waitForFunction((t) => [...document.querySelectorAll('#log .text')].some((e) => e.textContent === t), text);
  }
  // Two polls of /metrics so the rates show numbers.
  await alice.waitForFunction(() => document.querySelector('#m-received').textContent !== '–');
  await alice.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await broker.kill();
}
