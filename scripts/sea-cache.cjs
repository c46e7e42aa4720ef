'use strict';
// Writes the V8 code cache for the binary's main bundle: `node sea-cache.cjs WRAPPED_BUNDLE OUT`, run by
// scripts/build.mjs with the Node that the binary embeds and the binary's own V8 flags. It compiles the
// wrapped bundle exactly as scripts/sea-main.cjs will, runs it as `shoal --version` (which loads every
// module the CLI and agent import), and writes the cache when the bundle exits, so the cache also holds
// the functions that loading ran.
const { readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');

const [source, out] = process.argv.slice(2);
if (source === undefined || out === undefined) {
  process.stderr.write('usage: node sea-cache.cjs WRAPPED_BUNDLE OUT\n');
  process.exit(2);
}
const script = new Script(readFileSync(source, 'utf8'), { filename: 'shoal.cjs' });
const exit = process.exit.bind(process);
process.exit = (code) => {
  if (code !== 0 && code !== undefined) {
    process.stderr.write(`the bundle exited with ${code} while the code cache was being made\n`);
    exit(1);
  }
  writeFileSync(out, script.createCachedData());
  exit(0);
};
process.argv = [process.execPath, 'shoal', '--version'];
script.runInThisContext()(exports, require, module, __filename, __dirname);
