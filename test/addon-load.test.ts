/**
 * Where the single executable `dist/cfs` gets its native addon from. dlopen needs a file, and
 * root runs cfs in build stages next to other users' files: nothing another user (here:
 * `nobody`) put in a shared directory may ever be loaded, whatever its name, and a missing,
 * read-only or noexec temporary directory must not break cfs.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CLI, IN_CI, ROOT, have } from './helpers.js';
import { embeddedAddonDirs, materializeAddon } from '../src/native/addon-file.js';

const SEA = path.join(ROOT, 'dist/cfs');
const ADDON = path.join(ROOT, 'build/Release/cfs_native.node');
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

function skipUnless(cond: boolean, why: string): string | false {
  if (cond) return false;
  if (IN_CI) assert.fail(`${why} (required under CI)`);
  return why;
}

const rootSkip = skipUnless(isRoot && have('cc'), 'needs root (to act as another user) and a C compiler');

/** A world-readable scratch directory (other users must traverse it), removed at the end. */
function scratch(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync('/tmp/cfs-addon-test-');
  chmodSync(dir, 0o755);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A shared library that, when loaded, creates `marker`: proof that its code ran. */
function buildPlantedLibrary(dir: string, marker: string): string {
  const src = path.join(dir, 'planted.c');
  writeFileSync(
    src,
    `#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
  int fd = open(${JSON.stringify(marker)}, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) { (void)write(fd, "planted\\n", 8); close(fd); }
}
`,
  );
  const out = path.join(dir, 'planted.node');
  execFileSync('cc', ['-shared', '-fPIC', '-o', out, src]);
  chmodSync(out, 0o755);
  return out;
}

/** Runs a shell script as nobody. */
function asNobody(script: string, ...args: string[]): void {
  const r = spawnSync('sh', ['-c', script, 'sh', ...args], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
  assert.equal(r.status, 0, `as nobody: ${r.stderr}`);
}

/** The directory name cfs releases up to this fix used for the extracted addon (predictable). */
function legacyCacheName(): string {
  const h = createHash('sha256').update('xattr.node').update(readFileSync(ADDON)).digest('hex').slice(0, 16);
  return `cfs-${process.getuid!()}-${h}`;
}

/** A small tree whose id needs the addon (directory scan, xattrs, a hashed file). */
function makeTree(dir: string): string {
  const root = path.join(dir, 'tree');
  mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
  writeFileSync(path.join(root, 'usr/bin/tool'), Buffer.alloc(10000, 7));
  writeFileSync(path.join(root, 'usr/small'), 'hello\n');
  return root;
}

/** The id as the source checkout computes it (node + build/Release/cfs_native.node). */
function referenceId(tree: string): string {
  const r = spawnSync(process.execPath, [CLI, 'compute-id', tree], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** Environment without the variables that steer where the addon goes. */
function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['TMPDIR', 'CFS_CACHE_DIR', 'CFS_NATIVE_ADDON', 'CFS_XATTR_ADDON', 'XDG_RUNTIME_DIR', 'CFS_NO_NATIVE_HASH']) delete env[k];
  return { ...env, ...extra };
}

function runSea(exe: string, args: string[], env: NodeJS.ProcessEnv): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(exe, args, { env, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** dist/cfs linked (or copied) to `dest`: the binary as installed somewhere else. */
function installCopy(dest: string): void {
  mkdirSync(path.dirname(dest), { recursive: true });
  try {
    linkSync(SEA, dest);
  } catch {
    copyFileSync(SEA, dest);
    chmodSync(dest, 0o755);
  }
}

test('dist/cfs never loads an addon another user planted in a shared temporary or cache directory', { skip: rootSkip }, () => {
  const { dir, cleanup } = scratch();
  try {
    const marker = path.join(dir, 'marker-shared');
    const lib = buildPlantedLibrary(dir, marker);
    const tree = makeTree(dir);
    const want = referenceId(tree);
    // A sticky world-writable directory standing in for /tmp or a shared cache mount.
    const shared = path.join(dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    // Everything nobody can guess: the old predictable name, and a few likely others.
    for (const name of [legacyCacheName(), 'cfs', '.cfs-addon', 'build/Release']) {
      asNobody('mkdir -p "$1" && cp "$2" "$1/xattr.node" && cp "$2" "$1/cfs_native.node"', path.join(shared, name), lib);
    }
    for (const env of [{ TMPDIR: shared }, { CFS_CACHE_DIR: shared }, { TMPDIR: shared, CFS_CACHE_DIR: shared }]) {
      const r = runSea(SEA, ['compute-id', tree], cleanEnv(env));
      assert.equal(existsSync(marker), false, `planted code ran (${JSON.stringify(env)})`);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), want);
    }
  } finally {
    cleanup();
  }
});

test('dist/cfs ignores a cache directory of its own whose mode lets others write', { skip: rootSkip }, () => {
  const { dir, cleanup } = scratch();
  try {
    const marker = path.join(dir, 'marker-mode');
    const lib = buildPlantedLibrary(dir, marker);
    const tree = makeTree(dir);
    const want = referenceId(tree);
    const cache = path.join(dir, 'cache');
    mkdirSync(cache, { mode: 0o700 });
    // Root's own directory under the old name, left group/other-writable: nobody fills it.
    const own = path.join(cache, legacyCacheName());
    mkdirSync(own);
    chmodSync(own, 0o777);
    chmodSync(cache, 0o755);
    asNobody('cp "$2" "$1/xattr.node" && cp "$2" "$1/cfs_native.node"', own, lib);
    const r = runSea(SEA, ['compute-id', tree], cleanEnv({ CFS_CACHE_DIR: cache }));
    assert.equal(existsSync(marker), false, 'planted code ran');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), want);
  } finally {
    cleanup();
  }
});

test('an installed dist/cfs does not look for build/Release/cfs_native.node or prebuilds/ beside or above itself', { skip: rootSkip }, () => {
  const { dir, cleanup } = scratch();
  try {
    const marker = path.join(dir, 'marker-walk');
    const lib = buildPlantedLibrary(dir, marker);
    const tree = makeTree(dir);
    const want = referenceId(tree);
    // nobody's home, where root runs a cfs installed there (or any directory above the binary).
    const home = path.join(dir, 'home');
    mkdirSync(home);
    execFileSync('chown', [`${NOBODY}:${NOBODY}`, home]);
    installCopy(path.join(home, 'bin/cfs'));
    asNobody(
      'mkdir -p "$1/build/Release" "$1/prebuilds/linux-x64" && cp "$2" "$1/build/Release/cfs_native.node" && ' +
        'cp "$2" "$1/build/Release/xattr.node" && cp "$2" "$1/prebuilds/linux-x64/cfs_native.napi.node" && echo "{}" > "$1/package.json"',
      home,
      lib,
    );
    for (const env of [{}, { TMPDIR: '/nonexistent/cfs-test', CFS_CACHE_DIR: '/nonexistent/cfs-test' }]) {
      const r = runSea(path.join(home, 'bin/cfs'), ['compute-id', tree], cleanEnv(env));
      assert.equal(existsSync(marker), false, `planted code ran (${JSON.stringify(env)})`);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), want);
    }
  } finally {
    cleanup();
  }
});

test('dist/cfs works when TMPDIR and CFS_CACHE_DIR name directories that do not exist', () => {
  assert.ok(existsSync(SEA), 'dist/cfs is built by npm run build');
  const { dir, cleanup } = scratch();
  try {
    const tree = makeTree(dir);
    const want = referenceId(tree);
    // Installed away from the source checkout (no build/Release above it).
    const exe = path.join(dir, 'inst/cfs');
    installCopy(exe);
    const env = cleanEnv({ TMPDIR: path.join(dir, 'missing'), CFS_CACHE_DIR: path.join(dir, 'missing-too') });
    const r = runSea(exe, ['compute-id', tree], env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), want);
    assert.doesNotMatch(r.stderr, /addon|npm|error/i);
    assert.deepEqual(readdirSync(dir).sort(), ['inst', 'tree'], 'nothing left behind');
  } finally {
    cleanup();
  }
});

test('dist/cfs leaves nothing in the temporary directory, and --version touches nothing there', () => {
  const { dir, cleanup } = scratch();
  try {
    const tmp = path.join(dir, 'tmp');
    mkdirSync(tmp, { mode: 0o700 });
    const tree = makeTree(dir);
    const r = runSea(SEA, ['compute-id', tree], cleanEnv({ TMPDIR: tmp, CFS_CACHE_DIR: tmp }));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(readdirSync(tmp), [], 'the addon is written to an unnamed file, never left on disk');
    const v = runSea(SEA, ['--version'], cleanEnv({ TMPDIR: tmp, CFS_CACHE_DIR: tmp }));
    assert.equal(v.status, 0, v.stderr);
    assert.deepEqual(readdirSync(tmp), []);
  } finally {
    cleanup();
  }
});

const nsSkip = skipUnless(isRoot && have('unshare') && have('mount'), 'needs root and unshare(1) for a private mount namespace');

test('with no usable directory, dist/cfs names each directory it tried and why; other commands still run', { skip: nsSkip }, () => {
  const { dir, cleanup } = scratch();
  try {
    const tree = makeTree(dir);
    const want = referenceId(tree);
    const exe = path.join(dir, 'inst/cfs');
    installCopy(exe);
    const tar = path.join(dir, 'tree.tar');
    execFileSync('tar', ['-C', tree, '--numeric-owner', '-cf', tar, '.']);
    const tarWant = spawnSync(process.execPath, [CLI, 'compute-id', `layers:${tar}`], { encoding: 'utf8' });
    assert.equal(tarWant.status, 0, tarWant.stderr);
    // In a private mount namespace: /tmp and /var/tmp read-only (a build stage), /dev/shm
    // writable but noexec, TMPDIR missing. The scratch dir lives under /tmp: still readable.
    const script = (extra: string) => `set -e
mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp
mount --bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp
mount -t tmpfs -o noexec,size=1m tmpfs /dev/shm
${extra}
"$@"`;
    const run = (extra: string, env: Record<string, string>, ...args: string[]) => {
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script(extra), 'sh', exe, ...args], {
        env: cleanEnv({ TMPDIR: '/nonexistent/cfs-tmp', ...env }),
        encoding: 'utf8',
      });
      return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    };
    const r = run('', {}, 'compute-id', tree);
    assert.equal(r.status, 2, r.stderr);
    assert.doesNotMatch(r.stderr, /npm install/, 'no source-checkout advice from a self-contained binary');
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /\/nonexistent\/cfs-tmp \(TMPDIR\): no such file or directory/);
    assert.match(r.stderr, /\/tmp: read-only file system/);
    assert.match(r.stderr, /\/var\/tmp: read-only file system/);
    assert.match(r.stderr, /\/dev\/shm: .*noexec/);
    assert.match(r.stderr, /CFS_CACHE_DIR/);
    // Without /proc (a bare chroot) it is loaded by name, so only from a directory where no other
    // user can rename anything on the way: not from a world-writable directory without the
    // sticky bit, even when it is the only one left.
    const shared = path.join(dir, 'np-shared');
    const priv = path.join(dir, 'np-private');
    mkdirSync(shared);
    mkdirSync(priv);
    const noProcShared = run(`mount -t tmpfs -o size=1m,mode=0777 tmpfs ${shared}\numount -l /proc`, { CFS_CACHE_DIR: shared }, 'compute-id', tree);
    assert.equal(noProcShared.status, 2, noProcShared.stderr);
    assert.match(noProcShared.stderr, /np-shared \(CFS_CACHE_DIR\): not safe to load from without \/proc: others may write to .*np-shared, and it is not sticky/);
    const noProc = run(`mount -t tmpfs -o size=1m,mode=0700 tmpfs ${priv}\numount -l /proc`, { CFS_CACHE_DIR: priv }, 'compute-id', tree);
    assert.equal(noProc.status, 0, noProc.stderr);
    assert.equal(noProc.stdout.trim(), want);
    // Commands that need no addon run: a dumpfile, and a tar (hashed in JavaScript).
    const d = run('', {}, 'compute-id', `dumpfile:${path.join(ROOT, 'examples/rootfs.dump')}`);
    assert.equal(d.status, 0, d.stderr);
    assert.match(d.stdout, /^6bbae30d87a2de89/);
    const t = run('', {}, 'compute-id', `layers:${tar}`);
    assert.equal(t.status, 0, t.stderr);
    assert.equal(t.stdout, tarWant.stdout);
    // One usable directory anywhere in the list is enough.
    const exec = path.join(dir, 'exec-ok');
    mkdirSync(exec, { mode: 0o700 });
    const ok = run(`mount -t tmpfs -o size=1m,mode=0700 tmpfs ${exec}`, { XDG_RUNTIME_DIR: exec }, 'compute-id', tree);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), want);
  } finally {
    cleanup();
  }
});

test('materializeAddon: an unnamed file (O_TMPFILE), else a private directory removed at once, else (no /proc) a checked name', () => {
  const bytes = readFileSync(ADDON);
  const { dir, cleanup } = scratch();
  try {
    for (const tmpfile of [true, false]) {
      const d = path.join(dir, `m-${tmpfile}`);
      mkdirSync(d, { mode: 0o700 });
      const r = materializeAddon(bytes, [{ dir: d, from: 'TEST' }], { tmpfile });
      assert.match(r.file, /^\/proc\/self\/fd\/\d+$/);
      assert.deepEqual(readdirSync(d), [], 'nothing named on disk');
      assert.deepEqual(readFileSync(r.file), bytes);
      const mod = r.exports as { hashAvailable?: () => boolean };
      assert.equal(typeof mod.hashAvailable, 'function');
    }
    // As without /proc: by name, removed once loaded; refused where others could rename things.
    const d = path.join(dir, 'm-name');
    mkdirSync(d, { mode: 0o700 });
    const r = materializeAddon(bytes, [{ dir: d, from: 'TEST' }], { byName: true });
    assert.equal(typeof (r.exports as { hashAvailable?: unknown }).hashAvailable, 'function');
    assert.deepEqual(readdirSync(d), [], 'removed once loaded');
    const open = path.join(dir, 'm-open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(
      () => materializeAddon(bytes, [{ dir: open, from: 'TEST' }], { byName: true }),
      /m-open \(TEST\): not safe to load from without \/proc: others may write to .*m-open, and it is not sticky/,
    );
    assert.deepEqual(readdirSync(open), []);
    assert.throws(
      () => materializeAddon(bytes, [{ dir: path.join(dir, 'none'), from: 'CFS_CACHE_DIR' }]),
      /none \(CFS_CACHE_DIR\): no such file or directory/,
    );
  } finally {
    cleanup();
  }
});

test('embeddedAddonDirs: CFS_CACHE_DIR, TMPDIR, then the usual places, once each', () => {
  const dirs = embeddedAddonDirs({ CFS_CACHE_DIR: '/c', TMPDIR: '/tmp', XDG_RUNTIME_DIR: '/run/user/0' });
  assert.deepEqual(
    dirs.map((d) => `${d.dir}${d.from ? ` (${d.from})` : ''}`),
    ['/c (CFS_CACHE_DIR)', '/tmp (TMPDIR)', '/dev/shm', '/var/tmp', '/run/user/0 (XDG_RUNTIME_DIR)'],
  );
});

test('from a package (not dist/cfs): build/Release/cfs_native.node, then the prebuild; the first that loads wins', () => {
  const { dir, cleanup } = scratch();
  try {
    const tree = makeTree(dir);
    const want = referenceId(tree);
    // A package as npm installs it: package.json, the bundle, and the addon files beside them.
    const pkg = path.join(dir, 'pkg');
    const built = path.join(pkg, 'build/Release/cfs_native.node');
    const prebuild = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`, 'cfs_native.napi.node');
    mkdirSync(path.dirname(built), { recursive: true });
    mkdirSync(path.dirname(prebuild), { recursive: true });
    mkdirSync(path.join(pkg, 'dist'));
    writeFileSync(path.join(pkg, 'package.json'), '{}');
    copyFileSync(CLI, path.join(pkg, 'dist/cfs.mjs'));
    const run = (): { status: number; stdout: string; stderr: string } => {
      const r = spawnSync(process.execPath, [path.join(pkg, 'dist/cfs.mjs'), 'compute-id', tree], { env: cleanEnv({}), encoding: 'utf8' });
      return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    };
    const junk = 'not a shared object\n';
    for (const [b, p] of [
      [ADDON, junk], // a prebuild that does not load here (another libc): the local build
      [junk, ADDON], // a broken local build: the prebuild
      [undefined, ADDON], // the prebuild alone (an install without a toolchain)
    ] as const) {
      rmSync(built, { force: true });
      rmSync(prebuild, { force: true });
      if (b !== undefined) (b === junk ? writeFileSync(built, junk) : copyFileSync(b, built));
      if (p === junk) writeFileSync(prebuild, junk);
      else copyFileSync(p, prebuild);
      const r = run();
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), want);
    }
    // Neither loads: one line naming each file tried, exit 2.
    writeFileSync(built, junk);
    writeFileSync(prebuild, junk);
    const r = run();
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(r.stderr.includes(built) && r.stderr.includes(prebuild), r.stderr);
    assert.match(r.stderr, /^cfs: cannot load the native addon: .*npm rebuild composefs-ts/);
  } finally {
    cleanup();
  }
});
