// Writes roomcast.cjs, the CommonJS twin of roomcast.js (the source: edit
// that one), for `require('roomcast-client')` in projects that are not ES
// modules. Run after editing roomcast.js: `node build-cjs.mjs`; the unit
// tests fail while the two differ (`node build-cjs.mjs --check`).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = (name) => fileURLToPath(new URL(name, import.meta.url));

/** The CommonJS text for the ES module text `source`. */
export function toCommonJs(source) {
  const names = [];
  const body = source.replace(/^export (class|function|const) (\w+)/gm, (_, kind, name) => {
    names.push(name);
    return `${kind} ${name}`;
  });
  if (/^\s*(export|import)\b/m.test(body)) throw new Error('roomcast.js has an import or export build-cjs.mjs does not handle');
  return (
    '// Generated from roomcast.js by build-cjs.mjs: do not edit.\n' +
    "'use strict';\n" +
    body +
    `\nmodule.exports = { ${names.join(', ')} };\n`
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const want = toCommonJs(readFileSync(here('./roomcast.js'), 'utf8'));
  if (process.argv.includes('--check')) {
    const have = readFileSync(here('./roomcast.cjs'), 'utf8');
    if (have !== want) {
      console.error('roomcast.cjs is out of date: run `node clients/js/build-cjs.mjs`');
      process.exit(1);
    }
  } else {
    writeFileSync(here('./roomcast.cjs'), want);
  }
}
