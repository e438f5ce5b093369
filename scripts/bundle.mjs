// Bundles the compiled CLI (build/) into:
//   dist/cfs.mjs  one ESM file that needs no node_modules (run with node)
//   dist/cfs      a Node single-executable application embedding the bundle and the native
//                 addon (cfs_native.node); runs where no Node is installed (skipped with --no-sea)
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const banner = "globalThis.__cfsBundled = true;";

// The hash worker's script, bundled on its own (a few KB) and embedded as a string: workers start
// it with `new Worker(code, { eval: true })` instead of loading the whole CLI bundle
// (src/fsverity/pool.ts). CommonJS, because eval'd worker code is run as a script.
const worker = await build({
  entryPoints: ['build/src/fsverity/hash-worker.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  write: false,
  logLevel: 'warning',
  external: ['*.node'],
  // import.meta.url only serves to find the addon, which the pool passes in workerData.
  define: { 'import.meta.url': 'undefined' },
});
const workerCode = worker.outputFiles[0].text;

// Built-in modules that only some commands use, loaded when first used instead of at start-up
// (a bundle's imports are all evaluated before the CLI runs): node:zlib (gzip layers),
// node:child_process (commander's external subcommands, which cfs has none of) and node:crypto
// (the JS hashing fallback, OCI blob digests, temporary names), node:worker_threads (the hash
// pool's workers, started only without native hashing or with --repo). Each import gets an object whose
// exports are getters that load the real module on first access; the names are the module's
// own, listed by the node running this build.
const LAZY_BUILTINS = ['crypto', 'zlib', 'child_process', 'worker_threads'];
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    const filter = new RegExp(`^(node:)?(${LAZY_BUILTINS.join('|')})$`);
    b.onResolve({ filter }, (args) =>
      // The stand-in's own require() is of the real module.
      args.namespace === 'lazy-builtin'
        ? { path: args.path, external: true }
        : { path: args.path.replace(/^node:/, ''), namespace: 'lazy-builtin' },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, async (args) => {
      const names = Object.keys(await import(`node:${args.path}`)).filter((k) => k !== 'default');
      return {
        loader: 'js',
        contents: `let m; const load = () => (m ??= require(${JSON.stringify(`node:${args.path}`)}));
for (const k of ${JSON.stringify(names)}) Object.defineProperty(exports, k, { enumerable: true, get: () => load()[k] });`,
      };
    });
  },
};

const common = {
  entryPoints: ['build/src/cli/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  external: ['*.node'],
  define: { __CFS_HASH_WORKER_CODE__: JSON.stringify(workerCode) },
  plugins: [lazyBuiltins],
};

await build({
  ...common,
  outfile: 'dist/cfs.mjs',
  format: 'esm',
  banner: {
    js: `#!/usr/bin/env node\nimport { createRequire as __cfsCreateRequire } from 'node:module'; const require = __cfsCreateRequire(import.meta.url); ${banner}`,
  },
});
chmodSync('dist/cfs.mjs', 0o755);

if (process.argv.includes('--no-sea')) process.exit(0);

// The executable's main script is the CommonJS bundle itself, with a V8 code cache
// (`useCodeCache`), so nothing is compiled from source at start-up and nothing is read from disk
// for commands that need no addon. Hash workers run the embedded worker script (no file needed).
// The native addon is an asset: the prelude only offers its bytes to the bundle, which writes
// them to an unnamed file and loads that when a command first needs the addon
// (src/native/addon-file.ts); no file found on disk is ever loaded.
mkdirSync('build/sea', { recursive: true });
const addon = 'build/Release/cfs_native.node';
const assets = {};
if (existsSync(addon)) assets['cfs_native.node'] = addon;
const prelude = `const __cfsImportMetaUrl = require('node:url').pathToFileURL(process.execPath).href;
globalThis.__cfsEmbeddedAddon = () => {
  const sea = require('node:sea');
  if (!sea.isSea()) return undefined;
  try { return new Uint8Array(sea.getAsset('cfs_native.node')); } catch { return undefined; }
};
${banner}`;
await build({
  ...common,
  outfile: 'build/sea/cfs.cjs',
  format: 'cjs',
  define: { ...common.define, 'import.meta.url': '__cfsImportMetaUrl' },
  banner: { js: prelude },
});
writeFileSync('build/sea/sea-config.json', JSON.stringify({
  main: 'build/sea/cfs.cjs',
  output: 'build/sea/blob',
  disableExperimentalSEAWarning: true,
  useCodeCache: true,
  assets,
}));
execFileSync(process.execPath, ['--experimental-sea-config', 'build/sea/sea-config.json'], { stdio: 'inherit' });
const exe = 'build/sea/cfs';
rmSync(exe, { force: true });
copyFileSync(process.execPath, exe);
ignoreExtraCaCerts(exe);
execFileSync(process.execPath, [
  path.join('node_modules', 'postject', 'dist', 'cli.js'),
  exe, 'NODE_SEA_BLOB', 'build/sea/blob',
  '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
], { stdio: ['ignore', 'ignore', 'inherit'] });
// postject writes the whole 100 MB file with one write(), which leaves it in the page cache as
// large folios (Linux 6.x, ext4); until they are evicted, each page the process touches maps its
// whole folio and `dist/cfs --version` peaks at 57 MB of RSS instead of the 43 MB it has when
// the binary's pages come in as it runs (after eviction) or through copy_file_range (what
// copyFileSync does here; measured on Linux 6.18). The RSS difference is clean file pages, not
// memory cfs uses; the copy makes figures taken right after a build (npm run bench) those of a
// binary that was not just written.
rmSync('dist/cfs', { force: true });
copyFileSync(exe, 'dist/cfs');
rmSync(exe);
chmodSync('dist/cfs', 0o755);

/**
 * Node 20 reads NODE_EXTRA_CA_CERTS while the process starts, before any script runs: it builds
 * its whole root certificate store and parses the named bundle (about 100 ms on CI machines that
 * set it, more than everything else `cfs --version` does). cfs makes no TLS connections, so the
 * executable renames the variable it looks up: the C string in the copied node binary, found as a
 * NUL-delimited occurrence after other text, is overwritten with a name of the same length. Anything unexpected
 * (no such string, or more than one) leaves the binary as it is and says so.
 */
function ignoreExtraCaCerts(file) {
  const from = Buffer.from('\0NODE_EXTRA_CA_CERTS\0', 'latin1');
  const to = Buffer.from('\0CFS_IGNORED_CA_CERT\0', 'latin1');
  const bin = readFileSync(file);
  const hits = [];
  // The same name also sits in V8's start-up snapshot (a JS string, preceded by its binary
  // header, not by text): only a C string preceded by another C string's printable text counts.
  for (let i = bin.indexOf(from); i !== -1; i = bin.indexOf(from, i + 1)) {
    const before = bin[i - 1];
    if (before === 0x0a || (before >= 0x20 && before < 0x7f)) hits.push(i);
  }
  if (hits.length !== 1) {
    console.warn(`bundle: ${hits.length} C strings NODE_EXTRA_CA_CERTS in ${process.execPath}; left as is`);
    return;
  }
  const fd = openSync(file, 'r+');
  try { writeSync(fd, to, 0, to.length, hits[0]); } finally { closeSync(fd); }
}
