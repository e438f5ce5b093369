// npm install script of the package: use the prebuilt addon when it loads here, else build it
// from source with node-gyp (needs a C toolchain and Node's headers). The runtime loader
// (src/native/addon.ts) finds either one by itself; this script only decides whether a build is
// needed, so an install without a toolchain works wherever the prebuild fits.
//
// `npm install --build-from-source` (npm_config_build_from_source, the node-gyp-build convention)
// skips the prebuild. In a source checkout there is no prebuild (scripts/prebuild.mjs makes it only
// while packing), so `npm ci` there always builds.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

const prebuild = path.resolve('prebuilds', `${process.platform}-${process.arch}`, 'cfs_native.napi.node');
const fromSource = /^(1|true)$/i.test(process.env.npm_config_build_from_source ?? "");

/** Why the file does not load as our addon here, or '' when it does. */
function whyNot(file) {
  try {
    const mod = { exports: {} };
    process.dlopen(mod, file);
    return typeof mod.exports.scanDir === 'function' ? '' : 'not the cfs_native addon';
  } catch (e) {
    return e.message;
  }
}

if (!fromSource && existsSync(prebuild)) {
  const why = whyNot(prebuild);
  if (why === '') process.exit(0);
  console.error(`composefs-ts: the prebuilt addon does not load here (${why}); building it from source`);
}
// `configure build`, not `rebuild`: rebuild would first delete build/, which holds the compiled
// JavaScript. npm names its own node-gyp in npm_config_node_gyp (and puts it on PATH).
const gyp = process.env.npm_config_node_gyp;
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'configure', 'build'], { stdio: 'inherit' })
  : spawnSync('node-gyp', ['configure', 'build'], { stdio: 'inherit' });
if (r.error) console.error(`composefs-ts: cannot run node-gyp: ${r.error.message}`);
process.exit(r.status ?? 1);
