// The client as an npm package (issue 18): clients/js/README.md's Node
// examples, as written, in a CommonJS project (what `npm init -y` makes)
// and in an ES module one, each with the package and `ws` in its
// node_modules, against the real broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBroker, TIMEOUT } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const clientDir = join(here, '..', '..', 'clients', 'js');
const readme = readFileSync(join(clientDir, 'README.md'), 'utf8');

/** The README's js code block that contains `marker`. */
function example(marker) {
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  const block = blocks.find((b) => b.includes(marker));
  assert.ok(block, `the README has an example with ${marker}`);
  return block;
}

/** A project of `type` with the package and ws installed, running `code`. */
function run(type, file, code, t) {
  const dir = mkdtempSync(join(tmpdir(), `roomcast-${type}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(clientDir, join(dir, 'node_modules', 'roomcast-client'), 'dir');
  symlinkSync(join(here, 'node_modules', 'ws'), join(dir, 'node_modules', 'ws'), 'dir');
  writeFileSync(join(dir, file), code);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [file], { cwd: dir, timeout: TIMEOUT }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

test('the README examples run as written, with require and with import', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker();
  t.after(() => broker.kill());
  const at = (code) => code.replaceAll('ws://127.0.0.1:8080/ws', `ws://${broker.addr}/ws`);
  const cjs = await run('commonjs', 'index.js', at(example("require('roomcast-client')")), t);
  assert.equal(cjs.trim(), "lobby { text: 'hi' }");
  const esm = await run('module', 'index.js', at(example("from 'roomcast-client'")), t);
  assert.equal(esm.trim(), "lobby { text: 'hi' }");
});
