/**
 * The npm package as a user gets it: `npm pack` of this checkout, installed into an empty project
 * with a PATH that has no C compiler and no make. It must install with the prebuilt addon, and
 * its `cfs` must compute the same ids as the checkout (a directory source needs the addon), with
 * file digests that `fsverity digest` confirms. Where the prebuild does not load, the install
 * script builds from source (node-gyp), and without a toolchain says why it could not. The install
 * script writes nothing when the prebuild loads: the runtime loader (src/native/addon.ts) finds
 * it by itself, so `--ignore-scripts` installs work the same way.
 *
 * Offline: the temporary project gets a lockfile whose registry entries (commander, fzstd) come
 * from this checkout's package-lock.json, so `npm ci --offline` takes them from the npm cache that
 * `npm ci` of the checkout filled (.ci/run does that first). Outside CI, an empty cache skips.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { CLI, IN_CI, ROOT, have, tempDir } from './helpers.js';
import { imageId, loadRawTree, parseSource, writeImage } from '../src/index.js';

const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  dependencies: Record<string, string>;
};
const PREBUILD = `prebuilds/${process.platform}-${process.arch}/cfs_native.napi.node`;

function skipUnless(cond: boolean, why: string): string | false {
  if (cond) return false;
  if (IN_CI) assert.fail(`${why} (required under CI)`);
  return why;
}

/** npm's own script (run with this node, so no PATH lookup is needed to start it). */
function npmCli(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return realpathSync(r.stdout.trim());
}
const NPM = npmCli();
const npmSkip = skipUnless(NPM !== undefined, 'needs npm');

let work: { dir: string; cleanup: () => void } | undefined;
let tgz = '';
/** A directory whose only commands are node, sh and python3: no cc, gcc, g++, make. */
let bareBin = '';
let registry = '';

/** The environment npm runs in: PATH replaced, no npm settings inherited from an outer `npm test`. */
function npmEnv(PATH: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, PATH, ...extra };
}

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv): { status: number; out: string } {
  const r = spawnSync(process.execPath, [NPM!, ...args], { cwd, env, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { status: r.status ?? -1, out: `${r.stdout}\n${r.stderr}` };
}

before(() => {
  if (npmSkip) return;
  work = tempDir('cfs-pkg-test-');
  const r = npm(['pack', '--pack-destination', work.dir], ROOT, npmEnv(process.env.PATH ?? ''));
  assert.equal(r.status, 0, `npm pack: ${r.out}`);
  tgz = path.join(work.dir, `${PKG.name}-${PKG.version}.tgz`);
  assert.ok(existsSync(tgz), `npm pack made ${tgz}`);
  bareBin = path.join(work.dir, 'bin');
  mkdirSync(bareBin);
  symlinkSync(process.execPath, path.join(bareBin, 'node'));
  symlinkSync('/bin/sh', path.join(bareBin, 'sh'));
  // node-gyp's configure step needs Python; a machine without a C toolchain may well have it.
  const python = spawnSync('sh', ['-c', 'command -v python3'], { encoding: 'utf8' }).stdout.trim();
  if (python) symlinkSync(python, path.join(bareBin, 'python3'));
  registry = npm(['config', 'get', 'registry'], ROOT, npmEnv(process.env.PATH ?? '')).out.trim().replace(/\/$/, '');
});

after(() => work?.cleanup());

/** The packed files, without the leading `package/`. */
function packedFiles(file: string): string[] {
  return execFileSync('tar', ['tzf', file], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l && !l.endsWith('/'))
    .map((l) => l.replace(/^package\//, ''));
}

/**
 * An empty project depending on the package file `file`, locked so that `npm ci --offline`
 * resolves the registry dependencies from the cache (by the checkout's locked versions).
 */
function project(name: string, file: string): string {
  const dir = path.join(work!.dir, name);
  mkdirSync(dir);
  const spec = `file:${path.relative(dir, file)}`;
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version: string; integrity: string }>;
  };
  const packages: Record<string, unknown> = {
    '': { name, version: '1.0.0', dependencies: { [PKG.name]: spec } },
    [`node_modules/${PKG.name}`]: {
      version: PKG.version,
      resolved: spec,
      integrity: `sha512-${createHash('sha512').update(readFileSync(file)).digest('base64')}`,
      hasInstallScript: true,
      dependencies: PKG.dependencies,
      bin: { cfs: 'dist/cfs.mjs' },
    },
  };
  for (const dep of Object.keys(PKG.dependencies)) {
    const e = lock.packages[`node_modules/${dep}`];
    packages[`node_modules/${dep}`] = { ...e, resolved: `${registry}/${dep}/-/${dep}-${e.version}.tgz` };
  }
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, dependencies: { [PKG.name]: spec } }));
  writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ name, version: '1.0.0', lockfileVersion: 3, requires: true, packages }));
  return dir;
}

/** `npm ci --offline`; skips (outside CI) when the cache lacks the registry dependencies. */
function install(t: TestContext, dir: string, env: NodeJS.ProcessEnv, args: string[] = []): { status: number; out: string } | undefined {
  const r = npm(['ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', ...args], dir, env);
  if (r.status !== 0 && /ENOTCACHED/.test(r.out)) {
    const why = `the npm cache lacks ${Object.keys(PKG.dependencies).join(', ')} (run \`npm ci\` in the checkout first)`;
    if (IN_CI) assert.fail(`${why}: ${r.out}`);
    t.skip(why);
    return undefined;
  }
  return r;
}

/** Runs the installed `cfs` with only `bin` on PATH (its `#!/usr/bin/env node` needs node there). */
function cfs(proj: string, bin: string, args: string[]): string {
  const r = spawnSync(path.join(proj, 'node_modules/.bin/cfs'), args, { env: { ...process.env, PATH: bin }, encoding: 'utf8' });
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The id printed by the README's first example (compute-id of examples/rootfs.dump). */
function readmeId(): string {
  const m = /^```\n([0-9a-f]{128})\n```$/m.exec(readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  assert.ok(m, 'README shows the example id');
  return m[1];
}

/** A small tree whose id needs the addon: a directory scan, a hashed file, inline data, a symlink. */
function makeTree(): { root: string; big: string } {
  const root = path.join(work!.dir, 'tree');
  mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
  const big = path.join(root, 'usr/bin/tool');
  const data = Buffer.alloc(300000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919) >> 3;
  writeFileSync(big, data);
  chmodSync(big, 0o755);
  writeFileSync(path.join(root, 'usr/small'), 'hello\n');
  symlinkSync('tool', path.join(root, 'usr/bin/link'));
  return { root, big };
}

/** The checkout's own id of a source (node + its build/Release addon). */
function checkoutId(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('npm pack: the compiled code, the prebuilt addon and the sources to rebuild it, nothing else', { skip: npmSkip }, () => {
  const files = packedFiles(tgz);
  for (const want of ['package.json', 'README.md', 'dist/cfs.mjs', PREBUILD, 'binding.gyp', 'native/cfs.h', 'native/module.c', 'native/scan.c', 'native/sha256x2.c', 'native/verity.c', 'native/xattrs.c', 'scripts/install.mjs', 'build/src/native/addon.js', 'build/src/cli/main.js']) {
    assert.ok(files.includes(want), `${want} is packed`);
  }
  const allowed = /^(package\.json|README\.md|dist\/cfs\.mjs|binding\.gyp|scripts\/install\.mjs|native\/[a-z0-9]+\.[ch]|prebuilds\/[a-z0-9]+-[a-z0-9]+\/cfs_native\.napi\.node|build\/src\/.+\.(js|d\.ts))$/;
  assert.deepEqual(files.filter((f) => !allowed.test(f)), [], 'nothing else is packed (no tests, no build/test, no dist/cfs)');
  // Every packed module has its source (tsc leaves the output of moved files behind).
  for (const f of files.filter((f) => f.startsWith('build/src/') && f.endsWith('.js'))) {
    assert.ok(existsSync(path.join(ROOT, f.replace(/^build\//, '').replace(/\.js$/, '.ts'))), `${f} has a source`);
  }
  assert.equal(existsSync(path.join(ROOT, 'prebuilds')), false, 'postpack removed the prebuild from the checkout');
});

test('npm install without a C toolchain uses the prebuilt addon; the installed cfs and library compute the ids', { skip: npmSkip }, async (t) => {
  const bare = spawnSync('sh', ['-c', 'for c in cc gcc g++ c++ clang make; do command -v $c; done; true'], { env: { PATH: bareBin }, encoding: 'utf8' });
  assert.equal(bare.stdout, '', 'the bare PATH has no compiler and no make');
  const proj = project('proj', tgz);
  const r = install(t, proj, npmEnv(bareBin));
  if (!r) return;
  assert.equal(r.status, 0, `npm ci without a toolchain: ${r.out}`);
  const installed = path.join(proj, 'node_modules', PKG.name);
  assert.ok(existsSync(path.join(installed, PREBUILD)));
  assert.equal(existsSync(path.join(installed, 'build/Release')), false, 'nothing was built from source');

  const example = path.join(ROOT, 'examples/rootfs.dump');
  assert.equal(cfs(proj, bareBin, ['compute-id', `dumpfile:${example}`]).trim(), readmeId());

  const { root, big } = makeTree();
  for (const hash of ['sha512', 'sha256']) {
    const args = ['--hash', hash, 'compute-id', '--layer-mtimes', 'keep', root];
    assert.equal(cfs(proj, bareBin, args).trim(), checkoutId(args), `${hash}: the installed cfs and the checkout agree`);
  }
  // The library as the project imports it (`exports`, build/src/native/addon.js finds the prebuild).
  const script = `import { imageId, loadRawTree, parseSource, writeImage } from '${PKG.name}';
for (const spec of process.argv.slice(1)) {
  const raw = await loadRawTree(parseSource(spec), { hash: 'sha512', jobs: 2 });
  console.log(imageId(writeImage(raw.fs, { version: 1 }), 'sha512').toString('hex'));
}`;
  const lib = spawnSync(process.execPath, ['--input-type=module', '-e', script, `dumpfile:${example}`, root], { cwd: proj, env: { ...process.env, PATH: bareBin }, encoding: 'utf8' });
  assert.equal(lib.status, 0, lib.stderr);
  const raw = await loadRawTree(parseSource(root), { hash: 'sha512', jobs: 2 });
  const here = imageId(writeImage(raw.fs, { version: 1 }), 'sha512').toString('hex');
  assert.deepEqual(lib.stdout.trim().split('\n'), [readmeId(), here], 'the installed library: the README id, and the checkout\'s raw-tree id of the directory');
  if (!have('fsverity')) {
    if (IN_CI) assert.fail('needs fsverity (required under CI)');
    t.diagnostic('fsverity not installed: file digests not checked against it');
    return;
  }
  for (const hash of ['sha512', 'sha256']) {
    const dump = cfs(proj, bareBin, ['--hash', hash, 'create-dumpfile', '--layer-mtimes', 'keep', root]);
    const line = dump.split('\n').find((l) => l.startsWith('/usr/bin/tool '));
    assert.ok(line, dump);
    const digest = line.split(' ')[10];
    const oracle = execFileSync('fsverity', ['digest', `--hash-alg=${hash}`, '--compact', big], { encoding: 'utf8' }).trim();
    assert.equal(digest, oracle, `${hash}: the dumpfile's digest is fsverity's`);
  }
});

test('where the prebuilt addon does not load, install builds it from source (and says why without a toolchain)', { skip: npmSkip || skipUnless(have('cc') && have('make'), 'needs cc and make') }, (t) => {
  // The same package with a prebuild that cannot load (as on another libc or architecture).
  const unpacked = path.join(work!.dir, 'unpacked');
  mkdirSync(unpacked);
  execFileSync('tar', ['xzf', tgz, '-C', unpacked]);
  writeFileSync(path.join(unpacked, 'package', PREBUILD), 'not a shared object\n');
  const broken = path.join(work!.dir, 'broken.tgz');
  execFileSync('tar', ['czf', broken, '-C', unpacked, 'package']);

  const bareProj = project('proj-broken-bare', broken);
  const fail = install(t, bareProj, npmEnv(bareBin));
  if (!fail) return;
  assert.notEqual(fail.status, 0, 'no prebuild and no toolchain: the install fails');
  assert.match(fail.out, /composefs-ts: the prebuilt addon does not load here \(.*\); building it from source/);
  assert.match(fail.out, /gyp ERR! (build error|find Python)/, 'node-gyp ran and could not build');

  const proj = project('proj-broken', broken);
  const r = install(t, proj, npmEnv(process.env.PATH ?? ''));
  if (!r) return;
  assert.equal(r.status, 0, `npm ci with a toolchain: ${r.out}`);
  assert.ok(existsSync(path.join(proj, 'node_modules', PKG.name, 'build/Release/cfs_native.node')), 'built from source');
  const root = existsSync(path.join(work!.dir, 'tree')) ? path.join(work!.dir, 'tree') : makeTree().root;
  const args = ['compute-id', '--layer-mtimes', 'keep', root];
  assert.equal(cfs(proj, bareBin, args).trim(), checkoutId(args));
});
