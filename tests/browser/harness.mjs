// Harness of the JS tests: the real roomcast binary, started like
// tests/util/mod.rs does for the Rust tests (ROOMCAST_BIN, default
// target/release/roomcast relative to the repository root; an ephemeral
// loopback port unless told otherwise; the address read from its
// "roomcast listening on ADDR" line), and Debian's headless Chromium.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** How long any single wait in these tests may take. */
export const TIMEOUT = 10_000;

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = path.resolve(root, process.env.ROOMCAST_BIN ?? 'target/release/roomcast');

/**
 * Starts roomcast; resolves once it listens. With `tls` (files from
 * `makeCertificate`), it speaks https:// and wss://.
 * @param {{listen?: string, args?: string[], tls?: {cert: string, key: string}}} [options]
 * @returns {Promise<{addr: string, url: (p: string) => string, kill: () => Promise<void>}>}
 */
export async function startBroker({ listen = '127.0.0.1:0', args = [], tls } = {}) {
  if (tls) args = ['--tls-cert', tls.cert, '--tls-key', tls.key, ...args];
  if (!existsSync(bin)) {
    throw new Error(`no roomcast binary at ${bin}: run \`cargo build --release --bin roomcast\` or set ROOMCAST_BIN`);
  }
  const child = spawn(bin, ['--listen', listen, '--log-level', 'error', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const addr = await new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => fail(`printed no address within ${TIMEOUT} ms`), TIMEOUT);
    function fail(why) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`roomcast ${why}${stderr ? `; stderr:\n${stderr}` : ''}`));
    }
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(/^roomcast listening on (\S+)$/);
      if (!m || settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(m[1]);
    });
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before listening`));
    child.once('error', (err) => fail(`could not start: ${err.message}`));
  });
  return {
    addr,
    url: (p) => (tls ? `https://localhost:${addr.split(':').pop()}${p}` : `http://${addr}${p}`),
    /** Kills the process (SIGKILL: a crash, no close frames) and waits for it. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * A self-signed certificate for localhost and 127.0.0.1 made with
 * openssl, in a temporary directory: `{cert, key, pem}`.
 */
export function makeCertificate() {
  const dir = mkdtempSync(path.join(tmpdir(), 'roomcast-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-addext', 'basicConstraints=critical,CA:FALSE', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { cert, key, pem: readFileSync(cert, 'utf8') };
}

/** Polls `fn` until it returns a truthy value or `ms` passes. */
export async function eventually(what, fn, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The value of an unlabelled series in the broker's /metrics. */
export async function metric(broker, name) {
  const text = await (await fetch(broker.url('/metrics'))).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  if (!m) throw new Error(`no series ${name} in /metrics`);
  return Number(m[1]);
}

/**
 * Debian's Chromium, flags that keep it off the (closed) network; with
 * `extraArgs`, e.g. `--ignore-certificate-errors` for a test certificate.
 */
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: [
      ...extraArgs,
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    timeout: TIMEOUT * 3,
  });
}

/** Opens the demo as `name`, joins `room`, resolves once the chat box is enabled. */
export async function openDemo(browser, broker, name, room = 'lobby') {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  await page.goto(broker.url(`/?name=${name}&room=${room}`));
  await page.waitForSelector('#status[data-state="open"]');
  await page.click('#join');
  await page.waitForSelector('#text:not([disabled])');
  return page;
}
