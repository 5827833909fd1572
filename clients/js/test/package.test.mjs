// The package serves CommonJS too: roomcast.cjs is roomcast.js as
// CommonJS, up to date, with the same API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { toCommonJs } from '../build-cjs.mjs';
import * as esm from '../roomcast.js';

const require = createRequire(import.meta.url);

test('roomcast.cjs is generated from roomcast.js and up to date', () => {
  const source = readFileSync(new URL('../roomcast.js', import.meta.url), 'utf8');
  const cjs = readFileSync(new URL('../roomcast.cjs', import.meta.url), 'utf8');
  assert.equal(cjs, toCommonJs(source), 'run `node clients/js/build-cjs.mjs`');
});

test('require() and import give the same API', () => {
  const cjs = require('../roomcast.cjs');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  const methods = (c) => Object.getOwnPropertyNames(c.prototype).sort();
  assert.deepEqual(methods(cjs.Roomcast), methods(esm.Roomcast));
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.deepEqual(pkg.exports['.'], { types: './roomcast.d.ts', import: './roomcast.js', require: './roomcast.cjs' });
  assert.equal(new cjs.RoomcastError('x', 'y').code, 'x');
});
