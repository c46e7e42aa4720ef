'use strict';
// The single binary's entry point (sea-config's `main`). scripts/build.mjs embeds two bundles as assets:
// shoal.js (the CLI and agent, 3–4 MB) and shim.js (one exec task's supervisor, ~20 kB, which is also the
// docker driver's lease keeper: `shoal __lease-keeper DIR`), each wrapped as a CommonJS function. Node
// compiles the whole main script before running any of it, so were the big bundle the main script, every
// shim (one per running task) would pay to load code it never runs: ~37 ms of CPU against ~25 ms for the
// shim alone (perf stat), and on a 2-core host that CPU is taken from the next task's start. So this file
// only picks a bundle and runs it.
//
// shoal.js comes with a V8 code cache (shoal.cache) that build.mjs makes by running the bundle once
// (`shoal --version`), so it holds the code start-up runs, not only the top level. V8 checks it against
// the source, its own version and its flags; a cache it rejects (NODE_OPTIONS=--jitless, say) is ignored
// and the bundle is compiled from source, silently and correctly.
const { getAsset } = require('node:sea');
const { Script } = require('node:vm');

const asShim = process.argv[2] === '__shim' || process.argv[2] === '__lease-keeper';
const name = asShim ? 'shim' : 'shoal';
let cachedData;
if (!asShim) {
  try {
    cachedData = new Uint8Array(getAsset('shoal.cache'));
  } catch {
    // Built with --no-code-cache.
  }
}
// `filename` names the bundle in stack traces (shoal.cjs:LINE, lines as in dist/shoal.cjs).
const script = new Script(getAsset(`${name}.js`, 'utf8'), { filename: `${name}.cjs`, cachedData });
script.runInThisContext()(exports, require, module, __filename, __dirname);
