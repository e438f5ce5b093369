// Bundles the compiled CLI (build/) into:
//   dist/cfs.mjs  one ESM file that needs no node_modules (run with node)
//   dist/cfs      a Node single-executable application embedding the bundle and the native
//                 xattr addon; runs where no Node is installed (skipped with --no-sea)
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const banner = "globalThis.__cfsBundled = true;";
const common = {
  entryPoints: ['build/src/cli/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  external: ['*.node'],
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

// The executable runs a small loader that extracts the CommonJS bundle and the addon into a
// private cache directory once, then runs the bundle from there: worker threads and dlopen
// need real files.
mkdirSync('build/sea', { recursive: true });
await build({
  ...common,
  outfile: 'build/sea/cfs.cjs',
  format: 'cjs',
  define: { 'import.meta.url': '__cfsImportMetaUrl' },
  banner: { js: `const __cfsImportMetaUrl = require('node:url').pathToFileURL(__filename).href; ${banner}` },
});
const addon = 'build/Release/xattr.node';
const assets = { 'cfs.cjs': 'build/sea/cfs.cjs' };
if (existsSync(addon)) assets['xattr.node'] = addon;
writeFileSync('build/sea/loader.cjs', `'use strict';
const sea = require('node:sea');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { createRequire } = require('node:module');
const names = ${JSON.stringify(Object.keys(assets))};
const files = names.map((n) => [n, new Uint8Array(sea.getAsset(n))]);
const h = crypto.createHash('sha256');
for (const [n, b] of files) h.update(n).update(b);
const uid = typeof process.getuid === 'function' ? process.getuid() : 'u';
const base = process.env.CFS_CACHE_DIR || os.tmpdir();
const dir = path.join(base, 'cfs-' + uid + '-' + h.digest('hex').slice(0, 16));
if (!fs.existsSync(path.join(dir, 'cfs.cjs'))) {
  const tmp = fs.mkdtempSync(path.join(base, '.cfs-extract-'));
  for (const [n, b] of files) fs.writeFileSync(path.join(tmp, n), b, { mode: 0o700 });
  try { fs.renameSync(tmp, dir); } catch (e) { fs.rmSync(tmp, { recursive: true, force: true }); if (!fs.existsSync(path.join(dir, 'cfs.cjs'))) throw e; }
}
if (names.includes('xattr.node') && !process.env.CFS_XATTR_ADDON) process.env.CFS_XATTR_ADDON = path.join(dir, 'xattr.node');
process.argv[1] = path.join(dir, 'cfs.cjs');
createRequire(path.join(dir, 'cfs.cjs'))(path.join(dir, 'cfs.cjs'));
`);
writeFileSync('build/sea/sea-config.json', JSON.stringify({
  main: 'build/sea/loader.cjs',
  output: 'build/sea/blob',
  disableExperimentalSEAWarning: true,
  useCodeCache: false,
  assets,
}));
execFileSync(process.execPath, ['--experimental-sea-config', 'build/sea/sea-config.json'], { stdio: 'inherit' });
rmSync('dist/cfs', { force: true });
copyFileSync(process.execPath, 'dist/cfs');
chmodSync('dist/cfs', 0o755);
execFileSync(process.execPath, [
  path.join('node_modules', 'postject', 'dist', 'cli.js'),
  'dist/cfs', 'NODE_SEA_BLOB', 'build/sea/blob',
  '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
], { stdio: ['ignore', 'ignore', 'inherit'] });
