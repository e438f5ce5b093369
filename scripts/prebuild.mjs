// The prebuilt addon of the npm package, made while packing (package.json `prepack`; `postpack`
// runs this with --clean): build/Release/cfs_native.node, built from native/*.c by node-gyp, is
// copied to prebuilds/<platform>-<arch>/cfs_native.napi.node, the prebuildify / node-gyp-build
// layout. It is an N-API addon (binding.gyp: NAPI_VERSION 8; besides Node-API it calls only
// libuv's uv_err_name), so one file serves every Node >= 20 on this platform and libc.
//
// Refuses (exit 1) when what would be packed is missing or older than its sources: run
// `npm run build` (and `npm run install` after changing native/) first. The prebuild exists only
// while packing, so a checkout never loads a stale one in place of its own build.
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';

const dir = path.join('prebuilds', `${process.platform}-${process.arch}`);
if (process.argv.includes('--clean')) {
  rmSync('prebuilds', { recursive: true, force: true });
  process.exit(0);
}

function fail(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

/** Newest modification time of the files under `p` that match `re`. */
function newest(p, re) {
  let t = 0;
  for (const e of readdirSync(p, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && re.test(e.name)) t = Math.max(t, statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
  }
  return t;
}

const built = path.join('build', 'Release', 'cfs_native.node');
if (!existsSync(built)) fail(`${built} is missing: run \`npm run install\` (node-gyp) first`);
if (statSync(built).mtimeMs < Math.max(newest('native', /\.[ch]$/), statSync('binding.gyp').mtimeMs))
  fail(`${built} is older than native/ or binding.gyp: run \`npm run install\` first`);
for (const out of ['dist/cfs.mjs', 'build/src']) {
  if (!existsSync(out)) fail(`${out} is missing: run \`npm run build\` first`);
}
// tsc never deletes: output of a source that was moved or removed would be packed as a stale
// module. Only files with no source are removed, and named.
for (const e of readdirSync('build/src', { withFileTypes: true, recursive: true })) {
  const m = /^(.*)\.(js|js\.map|d\.ts|d\.ts\.map)$/.exec(e.name);
  if (!e.isFile() || !m) continue;
  const file = path.join(e.parentPath ?? e.path, e.name);
  const source = path.join('src', path.relative('build/src', path.dirname(file)), `${m[1]}.ts`);
  if (!existsSync(source)) {
    console.error(`prebuild: removing ${file} (no ${source})`);
    rmSync(file);
  }
}
const stamp = Math.min(statSync('dist/cfs.mjs').mtimeMs, newest('build/src', /\.js$/));
if (stamp < newest('src', /\.ts$/)) fail('dist/cfs.mjs or build/src is older than src/: run `npm run build` first');

const mod = { exports: {} };
try {
  process.dlopen(mod, path.resolve(built));
} catch (e) {
  fail(`${built} does not load: ${e.message}`);
}
if (typeof mod.exports.scanDir !== 'function') fail(`${built} is not the cfs_native addon`);

mkdirSync(dir, { recursive: true });
copyFileSync(built, path.join(dir, 'cfs_native.napi.node'));
