// Build shoal into one self-contained Linux executable: dist/shoal.
//
//   npm run build                          (= node scripts/build.mjs, on Node 24 from node_modules/.bin)
//   node scripts/build.mjs --entry PATH    bundle another entry instead of src/cli/main.ts
//   node scripts/build.mjs --bundle-only   only write dist/shoal.cjs (fast; run it with node)
//   node scripts/build.mjs --no-strip      keep the native symbols/debug info of the node binary
//   node scripts/build.mjs --no-code-cache byte-reproducible binary, slower start-up
//
// Steps: esbuild bundles the TypeScript ESM entry and all dependencies into ONE CommonJS file
// (dist/shoal.cjs; licence comments go to dist/shoal.cjs.LEGAL.txt), and the exec shim into another
// (dist/shim.cjs, one runs per task) → both are wrapped as CommonJS functions (dist/shoal.js, shim.js)
// and scripts/sea-cache.cjs makes the main bundle's V8 code cache (dist/shoal.cache) → `node
// --experimental-sea-config dist/sea-config.json` embeds them as assets beside the entry,
// scripts/sea-main.cjs, in dist/sea-prep.blob → `strip` writes a stripped copy of process.execPath,
// postject injects the blob → dist/shoal (755). The binary is built as
// dist/shoal.partial and renamed at the end, so a failed build never leaves a half-written binary;
// every run first deletes all the dist/ files listed in OUT, so a failed build leaves no stale one.
//
// Findings (Node 24.21.0, esbuild 0.28.2, postject 1.0.0-alpha.6, GNU strip 2.40, Debian 12, x86-64):
// - process.argv in the binary is [absolute path of the binary, argv[0] exactly as typed (e.g.
//   "./shoal" or "shoal" when found via $PATH), ...user args]. So user args start at argv[2] just as
//   with `node main.ts a b`, and `process.argv.slice(2)` works unchanged. Don't use argv[1] as a path
//   (it can be relative or a bare name); use process.execPath (= the binary) instead.
//   Node flags after the binary name (`shoal --inspect`) are NOT parsed by Node: they reach the app as
//   user args. NODE_OPTIONS from the environment IS honoured (e.g. `--require x.cjs` runs x.cjs first).
// - Verified: built with a stand-in entry (libp2p + tcp/noise/yamux/pnet/identify/gossipsub, dockerode,
//   zod), copied to /tmp and run from / under `env -i`: the node listened on 127.0.0.1, dockerode
//   reported `connect ENOENT <socket>`, exit 0. ldd: only libc/libm/libstdc++/libgcc_s/libdl/libpthread.
// - strip --strip-all on the node binary BEFORE injection works (the SEA starts; fuse and blob intact):
//   131.5 MB unstripped vs 113.7 MB stripped (125 vs 108 MiB), ~45 MB with gzip -1. JS stack traces
//   keep function names and lines of dist/shoal.cjs (minify and sourcemap off; shown as `shoal.cjs:LINE`
//   because sea-config's main is relative); only native C++ symbols go.
// - The entry is a small dispatcher, not the bundle: Node compiles the whole main script before it runs
//   any, so with the 3.7 MB bundle as main each task's shim took 37 ms of CPU to start, against 26 ms
//   with a bundle of its own (perf stat -r 20 -e task-clock). On 2 cores that CPU came out of the next
//   task's start: bench:start exec p50 57 → 23–27 ms. The bundles run with vm.Script, which (unlike
//   the SEA's own main) has no import() callback: the build fails if a bundle keeps a dynamic import().
// - The code cache is made by running the bundle once (`--version`), so it holds what start-up compiles,
//   not only the top level: `shoal --version` 86 → 68 ms of CPU against the SEA's useCodeCache. The
//   blob is not byte-reproducible with it. V8 rejects a cache made under other flags (NODE_OPTIONS=
//   --jitless, say) and vm.Script then compiles from source, silently. --no-code-cache leaves it out.
// - Inside the binary `require` only loads Node built-ins (nothing from disk), so the bundle must be
//   complete. __filename is the binary's path, __dirname its directory; import.meta.url/filename/
//   dirname are mapped to those (so `new URL('./x.json', import.meta.url)` points next to the binary,
//   not to the sources). import.meta.main/resolve are rejected at build time (see below).
// - dockerode → ssh2 optionally loads native addons (sshcrypto.node, cpu-features); both are replaced
//   by stubs that throw MODULE_NOT_FOUND, which ssh2 catches and falls back to pure-JS crypto.
// - No dependency uses import.meta or top-level await today. esbuild refuses top-level await in
//   CJS output; the error below says what to do.
// - Takes ~2–4 s on 2 cores; peak RSS ~0.8 GB (postject holds the 110 MB binary in WebAssembly memory).

import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const t0 = performance.now();
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist');
const OUT = {
  bundle: path.join(DIST, 'shoal.cjs'),
  legal: path.join(DIST, 'shoal.cjs.LEGAL.txt'),
  shimBundle: path.join(DIST, 'shim.cjs'),
  shimLegal: path.join(DIST, 'shim.cjs.LEGAL.txt'),
  seaMain: path.join(DIST, 'sea-main.cjs'),
  seaBundle: path.join(DIST, 'shoal.js'),
  seaShim: path.join(DIST, 'shim.js'),
  seaCache: path.join(DIST, 'shoal.cache'),
  seaConfig: path.join(DIST, 'sea-config.json'),
  blob: path.join(DIST, 'sea-prep.blob'),
  binTmp: path.join(DIST, 'shoal.partial'),
  bin: path.join(DIST, 'shoal'),
};
const SENTINEL_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

function fail(message) {
  rmSync(OUT.binTmp, { force: true });
  process.stderr.write(`\nbuild failed: ${message}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------- arguments, preconditions
let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      entry: { type: 'string', default: path.join('src', 'cli', 'main.ts') },
      'bundle-only': { type: 'boolean', default: false },
      'no-strip': { type: 'boolean', default: false },
      'no-code-cache': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(
    `${err.message}\nusage: node scripts/build.mjs [--entry PATH] [--bundle-only] [--no-strip] [--no-code-cache]`,
  );
}
if (opts.help) {
  process.stdout.write(
    'usage: node scripts/build.mjs [--entry PATH] [--bundle-only] [--no-strip] [--no-code-cache]\n',
  );
  process.exit(0);
}

const nodeMajor = Number(process.versions.node.split('.')[0]);
if (nodeMajor < 24) {
  fail(
    `running on Node ${process.versions.node} (${process.execPath}); the binary embeds the Node that runs ` +
      `this script and shoal needs Node >= 24. Use \`npm run build\` or \`node_modules/.bin/node scripts/build.mjs\`.`,
  );
}

// --entry is relative to the current directory (like any CLI path); the default is relative to the repo.
const entry = path.resolve(
  opts.entry === path.join('src', 'cli', 'main.ts') ? ROOT : process.cwd(),
  opts.entry,
);
try {
  await stat(entry);
} catch {
  fail(
    `entry ${path.relative(process.cwd(), entry) || entry} does not exist (use --entry PATH to build another file)`,
  );
}

let esbuild, inject;
try {
  esbuild = await import('esbuild');
  if (!opts['bundle-only']) ({ inject } = await import('postject'));
} catch (err) {
  fail(`cannot load build tools (${err.message}); run \`npm ci\` first`);
}

// ---------------------------------------------------------------- clean what this script writes
await mkdir(DIST, { recursive: true });
await Promise.all(Object.values(OUT).map((p) => rm(p, { force: true })));

// ---------------------------------------------------------------- 1. bundle
// Optional native addons pulled in by dockerode → ssh2. They are loaded inside try/catch, so a
// module that throws on load makes ssh2 use its pure-JS fallbacks; nothing is needed on disk.
const stubNativeAddons = {
  name: 'stub-native-addons',
  setup(build) {
    build.onResolve({ filter: /\.node$/ }, (args) => ({ path: args.path, namespace: 'native-stub' }));
    build.onResolve({ filter: /^cpu-features$/ }, (args) => ({ path: args.path, namespace: 'native-stub' }));
    build.onLoad({ filter: /.*/, namespace: 'native-stub' }, (args) => ({
      contents:
        `const err = new Error(${JSON.stringify(`native addon ${args.path} is not included in the shoal binary`)});\n` +
        `err.code = 'MODULE_NOT_FOUND';\nthrow err;\n`,
      loader: 'js',
    }));
  },
};

// import.meta does not exist in CommonJS; esbuild would otherwise replace it with {} (and
// import.meta.url with undefined). `define` maps it to one object, defined once at the top of the
// bundle (after esbuild's "use strict" directive, which a plain `banner` would precede and thereby
// turn strict mode off) from the CJS __filename/__dirname. Added only if something uses it.
const IMPORT_META = '__shoal_import_meta';
const IMPORT_META_SHIM =
  `var ${IMPORT_META} = { url: require('node:url').pathToFileURL(__filename).href, ` +
  `filename: __filename, dirname: __dirname };\n`;

// The dashboard (src/ui): bundled for browsers on its own, minified, and embedded in the main bundle as
// a string (__SHOAL_UI_JS__, served at /ui/app.js by src/api/ui.ts). Its size is printed: the issue's
// budget is 1 MB.
const uiEntry = path.join(ROOT, 'src', 'ui', 'main.ts');
let uiScript = null;
try {
  await stat(uiEntry);
  const ui = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [uiEntry],
    bundle: true,
    platform: 'browser',
    target: 'es2022',
    format: 'iife',
    minify: true,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'silent',
    write: false,
  });
  uiScript = ui.outputFiles[0]?.text ?? null;
} catch (err) {
  if (err.code !== 'ENOENT') {
    const text = await esbuild.formatMessages(err.errors ?? [], { kind: 'error', terminalWidth: 100 });
    fail(`the dashboard (src/ui) did not bundle:\n${text.join('') || err.message}`);
  }
}

let result;
try {
  result = await esbuild.build({
    absWorkingDir: ROOT,
    // The exec shim gets a bundle of its own: one runs per task, and it must not load the agent's code.
    entryPoints: [
      { in: entry, out: 'shoal' },
      { in: path.join(ROOT, 'src', 'runtime', 'drivers', 'shim-main.ts'), out: 'shim' },
    ],
    outdir: DIST,
    outExtension: { '.js': '.cjs' },
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'cjs',
    minify: false,
    sourcemap: false,
    legalComments: 'external',
    charset: 'utf8',
    metafile: true,
    logLevel: 'silent',
    define: {
      ...(uiScript === null ? {} : { __SHOAL_UI_JS__: JSON.stringify(uiScript) }),
      'import.meta': IMPORT_META,
      'import.meta.url': `${IMPORT_META}.url`,
      'import.meta.filename': `${IMPORT_META}.filename`,
      'import.meta.dirname': `${IMPORT_META}.dirname`,
    },
    plugins: [stubNativeAddons],
    write: false,
  });
} catch (err) {
  const errors = err.errors ?? [];
  if (errors.length === 0) fail(`esbuild crashed: ${err.stack ?? err}`);
  const text = await esbuild.formatMessages(errors, {
    kind: 'error',
    color: process.stderr.isTTY,
    terminalWidth: 100,
  });
  process.stderr.write(text.join(''));
  const hints = new Set();
  for (const e of errors) {
    if (/top-level await/i.test(e.text)) {
      hints.add(
        'top-level await cannot be bundled into CommonJS (the SEA needs CJS): move it into an async main() ' +
          'and call main().catch(...) at the end of the entry file.',
      );
    }
    if (/Could not resolve/.test(e.text)) {
      hints.add(
        'an import could not be resolved: check the path/extension, or run `npm ci` if it is a package.',
      );
    }
    if (/No loader is configured/.test(e.text)) {
      hints.add(
        'a file type esbuild cannot bundle was imported (native .node addon or data file); stub it in scripts/build.mjs or embed it as code.',
      );
    }
  }
  fail(
    `esbuild reported ${errors.length} error(s) while bundling ${path.relative(ROOT, entry)}` +
      [...hints].map((h) => `\n  hint: ${h}`).join(''),
  );
}

// Warnings: a `require(variable)` left in the bundle would fail inside the binary (the SEA's
// require only knows Node built-ins), so that one is an error; the others are shown.
const fatal = result.warnings.filter((w) => /will not be bundled/.test(w.text));
if (result.warnings.length > 0) {
  const text = await esbuild.formatMessages(result.warnings, {
    kind: 'warning',
    color: process.stderr.isTTY,
    terminalWidth: 100,
  });
  process.stderr.write(text.join(''));
}
if (fatal.length > 0) {
  fail(
    `${fatal.length} require()/import() call(s) cannot be bundled (non-literal module name); inside the ` +
      'single binary only Node built-ins can be loaded at run time. Use static imports.',
  );
}

// The binary runs its bundles with vm.Script (scripts/sea-main.cjs), which has no import() callback: an
// import() esbuild could not inline (an external module) would fail there at run time.
for (const [output, { imports }] of Object.entries(result.metafile.outputs)) {
  const dynamic = imports.filter((i) => i.kind === 'dynamic-import').map((i) => i.path);
  if (dynamic.length > 0) {
    fail(
      `${output} keeps import() of ${dynamic.join(', ')}; the binary's bundles cannot load modules that way. ` +
        'Use a static import or require().',
    );
  }
}

// First-party code must not rely on things that cannot work in one CJS file.
const firstParty = Object.keys(result.metafile.inputs).filter(
  (p) => !p.includes('node_modules/') && !p.includes(':'),
);
for (const file of firstParty) {
  const src = await readFile(path.join(ROOT, file), 'utf8');
  if (/import\.meta\.main\b/.test(src)) {
    fail(
      `${file} uses import.meta.main, which has no meaning in the bundle (every module is in one file). Call main() unconditionally in the entry file.`,
    );
  }
  if (/import\.meta\.resolve\b/.test(src)) {
    fail(`${file} uses import.meta.resolve, which does not exist in the bundle (no module files on disk).`);
  }
}

for (const file of result.outputFiles) {
  let text = file.text;
  if (file.path.endsWith('.cjs') && text.includes(IMPORT_META)) {
    const head = /^(#![^\n]*\n)?("use strict";\n)?/.exec(text)[0];
    text = head + IMPORT_META_SHIM + text.slice(head.length);
  }
  await writeFile(file.path, text);
}

if (opts['bundle-only']) {
  await done(OUT.bundle);
} else {
  await makeSea();
  await done(OUT.bin);
}

// ---------------------------------------------------------------- 2. single executable
async function makeSea() {
  // V8's young generation defaults to 16 MiB semi-spaces, sized for throughput; an agent and each task's
  // shim allocate little, and 1 MiB semi-spaces cut ~9 MiB of resident memory from each process
  // (bench:idle) for slightly more frequent, shorter scavenges.
  const execArgv = ['--max-semi-space-size=1'];
  // The bundles are embedded as assets, each wrapped as a CommonJS function on its first line (so stack
  // traces keep dist/*.cjs's line numbers); scripts/sea-main.cjs picks one and runs it.
  const wrap = (text) => `(function (exports, require, module, __filename, __dirname) {${text}\n})`;
  await writeFile(OUT.seaBundle, wrap(await readFile(OUT.bundle, 'utf8')));
  await writeFile(OUT.seaShim, wrap(await readFile(OUT.shimBundle, 'utf8')));
  await copyFile(path.join(ROOT, 'scripts', 'sea-main.cjs'), OUT.seaMain);
  const useCodeCache = !opts['no-code-cache'];
  if (useCodeCache) {
    run(
      process.execPath,
      [...execArgv, path.join(ROOT, 'scripts', 'sea-cache.cjs'), OUT.seaBundle, OUT.seaCache],
      'making the code cache',
    );
  }
  await writeFile(
    OUT.seaConfig,
    JSON.stringify(
      {
        // Relative to dist/ (the cwd of the command below), so the blob does not depend on the build
        // machine's paths.
        main: path.basename(OUT.seaMain),
        output: path.basename(OUT.blob),
        disableExperimentalSEAWarning: true,
        useSnapshot: false,
        // The entry is a few lines; the main bundle's cache is an asset of its own (see sea-main.cjs).
        useCodeCache: false,
        execArgv,
        assets: {
          'shoal.js': path.basename(OUT.seaBundle),
          'shim.js': path.basename(OUT.seaShim),
          ...(useCodeCache ? { 'shoal.cache': path.basename(OUT.seaCache) } : {}),
        },
      },
      null,
      2,
    ) + '\n',
  );
  run(process.execPath, ['--experimental-sea-config', OUT.seaConfig], 'generating the SEA blob');

  // Strip the copy of node before injecting (native symbols/debug info only; ~127 → ~108 MB).
  let stripped = false;
  if (!opts['no-strip']) {
    const r = spawnSync('strip', ['--strip-all', '-o', OUT.binTmp, process.execPath], { encoding: 'utf8' });
    if (r.error?.code === 'ENOENT') {
      process.stderr.write(
        'warning: `strip` not found (apt-get install binutils); the binary stays unstripped (~127 MB)\n',
      );
    } else if (r.status !== 0) {
      fail(`strip ${process.execPath} failed: ${r.stderr || r.error?.message}`);
    } else {
      stripped = true;
    }
  }
  if (!stripped) await copyFile(process.execPath, OUT.binTmp);
  await chmod(OUT.binTmp, 0o755);

  // postject's LIEF prints harmless "Can't find string offset for section name '.note…'" lines
  // through console.warn for node's many ELF notes; drop those, keep anything else.
  const warn = console.warn;
  console.warn = (...a) => {
    if (!/Can't find string offset for section name/.test(String(a[0]))) warn(...a);
  };
  try {
    await inject(OUT.binTmp, 'NODE_SEA_BLOB', await readFile(OUT.blob), { sentinelFuse: SENTINEL_FUSE });
  } catch (err) {
    fail(`postject could not inject the SEA blob into ${OUT.binTmp}: ${err.message}`);
  } finally {
    console.warn = warn;
  }
  await chmod(OUT.binTmp, 0o755);
  await rename(OUT.binTmp, OUT.bin);
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: DIST, encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    fail(`${what} failed (${cmd} ${args.join(' ')}):\n${r.stderr || r.stdout || r.error?.message}`);
  }
}

async function done(file) {
  const { size } = await stat(file);
  const mb = (size / 1e6).toFixed(1);
  const mib = (size / 1024 / 1024).toFixed(1);
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const ui = uiScript === null ? '' : `  (dashboard ${(Buffer.byteLength(uiScript) / 1024).toFixed(0)} KiB)`;
  process.stdout.write(
    `${path.relative(process.cwd(), file) || file}  ${mb} MB (${mib} MiB)  ${secs} s${ui}\n`,
  );
}
