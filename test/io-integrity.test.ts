/**
 * What cfs writes, it writes whole or not at all: full disks, outputs that are not regular files,
 * symlinked or shared repositories, closed or full standard output, signals.
 * Most cases need root (tmpfs, mknod, read-only bind mounts); they skip outside CI without it.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fsverityDigest } from '../src/fsverity/fsverity.js';
import { abandonTemps, trackedTemps } from '../src/repo/files.js';
import { writeFileAtomic } from '../src/cli/atomic.js';
import { CLI, IN_CI, assertCleanError, runCfs, tempDir } from './helpers.js';

const isRoot = process.getuid?.() === 0;

/** True when the test may run; skips (or fails under CI) when it needs root and is not. */
function needRoot(t: TestContext): boolean {
  if (isRoot) return true;
  if (IN_CI) assert.fail('this test needs root under CI');
  t.skip('needs root (tmpfs, mknod, bind mounts)');
  return false;
}

/** A dumpfile of `n` empty files: its image is about 100 bytes per file. */
function bigDumpfile(n: number): string {
  let s = '/ 0 40755 2 0 0 0 0.0 - - -\n';
  for (let i = 0; i < n; i++) s += `/file-with-a-longish-name-${i} 0 100644 1 0 0 0 0.0 - - -\n`;
  return s;
}

function mountTmpfs(dir: string, size: string): () => void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return () => execFileSync('umount', ['-l', dir]);
}

/** Every file below `dir` (relative), directories excluded. */
function allFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

/** Asserts every object in a repository holds the content its name says. */
function assertObjectsIntact(repo: string, alg: 'sha256' | 'sha512' = 'sha512'): number {
  let n = 0;
  for (const f of allFiles(path.join(repo, 'objects'))) {
    assert.doesNotMatch(f, /tmp/, `temporary file left: ${f}`);
    const [xx, rest] = f.split('/');
    const got = fsverityDigest(readFileSync(path.join(repo, 'objects', f)), alg).toString('hex');
    assert.equal(got, xx + rest, `object ${f} holds other content (${statSync(path.join(repo, 'objects', f)).size} bytes)`);
    n++;
  }
  return n;
}

/** A directory tree with distinct file contents of the given sizes under usr/. */
function makeTree(dir: string, sizes: number[]): void {
  mkdirSync(path.join(dir, 'usr'), { recursive: true });
  sizes.forEach((s, i) => writeFileSync(path.join(dir, 'usr', `f${i}`), Buffer.alloc(s, i + 1)));
}

// ---- item 1: short writes on a full filesystem --------------------------------------------

test('full filesystem: -o, create-dumpfile -o and --write-dumpfile-to fail with exit 2 and leave nothing', (t) => {
  if (!needRoot(t)) return;
  const { dir, cleanup } = tempDir('io-full-');
  const small = path.join(dir, 'small');
  const umount = mountTmpfs(small, '64k');
  try {
    const dump = path.join(dir, 'big.dump');
    writeFileSync(dump, bigDumpfile(6000));
    const img = path.join(small, 'out.img');
    assertCleanError(runCfs(['create-image', `dumpfile:${dump}`, '-o', img]), /out\.img: no space left on device/);
    assert.deepEqual(readdirSync(small), [], 'no partial image, no temporary file');
    assertCleanError(runCfs(['create-dumpfile', `dumpfile:${dump}`, '-o', path.join(small, 'out.dump')]), /out\.dump: no space left on device/);
    assert.deepEqual(readdirSync(small), []);
    assertCleanError(
      runCfs(['compute-id', '--write-dumpfile-to', path.join(small, 'w.dump'), `dumpfile:${dump}`]),
      /w\.dump: no space left on device/,
    );
    assert.deepEqual(readdirSync(small), []);
  } finally {
    umount();
    cleanup();
  }
});

test('full filesystem: --repo fails with exit 2 naming the repository and commits no truncated object', (t) => {
  if (!needRoot(t)) return;
  const { dir, cleanup } = tempDir('io-fullrepo-');
  const small = path.join(dir, 'small');
  const umount = mountTmpfs(small, '64k');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [9000, 11000, 13000, 17000, 19000, 23000, 29000]);
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', src, '-cf', tar, '.']);
    for (const source of [`layers:${tar}`, src]) {
      const repo = path.join(small, 'repo');
      const r = runCfs(['create-image', '--repo', repo, source, 'img']);
      assertCleanError(r, /repo.*no space left on device/);
      assert.doesNotMatch(r.stderr, /usr\/f\d/, 'a repository error is not blamed on the source file');
      assertObjectsIntact(repo);
      assert.ok(!existsSync(path.join(repo, 'images/refs/img')));
      execFileSync('rm', ['-rf', repo]);
    }
    // The image object alone does not fit.
    const dump = path.join(dir, 'big.dump');
    writeFileSync(dump, bigDumpfile(6000));
    const repo = path.join(small, 'repo2');
    assertCleanError(runCfs(['create-image', '--repo', repo, `dumpfile:${dump}`, 'img']), /repo2.*no space left on device/);
    assertObjectsIntact(repo);
    assert.deepEqual(readdirSync(path.join(repo, 'images')), ['refs']);
  } finally {
    umount();
    cleanup();
  }
});

test('an object left truncated or replaced by an earlier run is detected and rewritten', () => {
  const { dir, cleanup } = tempDir('io-corrupt-');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [5000, 70000, 200000]);
    for (const source of [src, (() => {
      const tar = path.join(dir, 'layer.tar');
      execFileSync('tar', ['--numeric-owner', '-C', src, '-cf', tar, '.']);
      return `layers:${tar}`;
    })()]) {
      const repo = path.join(dir, `repo-${source.length}`);
      const r = runCfs(['create-image', '--repo', repo, source, 'img']);
      assert.equal(r.status, 0, r.stderr);
      const hex = r.stdout.toString().trim().replace(/^sha512:/, '');
      const objects = allFiles(path.join(repo, 'objects'));
      assert.equal(objects.length, 4);
      // truncate every object (the image too), and turn one into a symlink to a planted file
      for (const o of objects) truncateSync(path.join(repo, 'objects', o), 1000);
      const planted = path.join(dir, 'planted');
      writeFileSync(planted, 'x');
      const victim = path.join(repo, 'objects', objects[0]);
      execFileSync('rm', [victim]);
      symlinkSync(planted, victim);
      const again = runCfs(['create-image', '--repo', repo, source, 'img']);
      assert.equal(again.status, 0, again.stderr);
      assert.equal(again.stdout.toString(), r.stdout.toString());
      assert.equal(assertObjectsIntact(repo), 4);
      assert.ok(lstatSync(victim).isFile(), 'the planted symlink was replaced by the object');
      assert.equal(readFileSync(planted, 'utf8'), 'x', 'the planted file was not written through');
      assert.equal(fsverityDigest(readFileSync(path.join(repo, 'images', hex)), 'sha512').toString('hex'), hex);
      // the image object, same size but other bytes: compared, and replaced
      const imageObj = path.join(repo, 'objects', hex.slice(0, 2), hex.slice(2));
      const bad = readFileSync(imageObj);
      bad[bad.length - 1] ^= 0xff;
      writeFileSync(imageObj, bad);
      assert.equal(runCfs(['create-image', '--repo', repo, source, 'img']).status, 0);
      assert.equal(fsverityDigest(readFileSync(imageObj), 'sha512').toString('hex'), hex);
    }
  } finally {
    cleanup();
  }
});

// ---- item 3: outputs that are not regular files ------------------------------------------

test('-o refuses symlinks, directories and sockets; writes through character devices and FIFOs', async (t) => {
  if (!needRoot(t)) return;
  const { dir, cleanup } = tempDir('io-out-');
  let server: net.Server | undefined;
  try {
    const dumpPath = path.join(dir, 'small.dump');
    writeFileSync(dumpPath, bigDumpfile(3));
    const src = `dumpfile:${dumpPath}`;
    const wantImage = (() => {
      const f = path.join(dir, 'ref.img');
      assert.equal(runCfs(['create-image', src, '-o', f]).status, 0);
      return readFileSync(f);
    })();
    // a private /dev/full: writing fails with ENOSPC, and the node stays a device
    const full = path.join(dir, 'full');
    execFileSync('mknod', [full, 'c', '1', '7']);
    for (const args of [['create-image', src, '-o', full], ['create-dumpfile', src, '-o', full], ['compute-id', '--write-dumpfile-to', full, src]]) {
      assertCleanError(runCfs(args), /full: no space left on device/);
      assert.ok(lstatSync(full).isCharacterDevice(), `${args[0]}: the device node is still there`);
    }
    // a private /dev/null: written through, still a device
    const nul = path.join(dir, 'null');
    execFileSync('mknod', [nul, 'c', '1', '3']);
    assert.equal(runCfs(['create-image', src, '-o', nul]).status, 0);
    assert.ok(lstatSync(nul).isCharacterDevice());
    // a symlink: refused, neither the link nor its target changes
    const target = path.join(dir, 'target');
    writeFileSync(target, 'keep');
    const link = path.join(dir, 'link.img');
    symlinkSync(target, link);
    assertCleanError(runCfs(['create-image', src, '-o', link]), /link\.img: .*symbolic link/);
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(readFileSync(target, 'utf8'), 'keep');
    const dangling = path.join(dir, 'dangling');
    symlinkSync(path.join(dir, 'nowhere'), dangling);
    assertCleanError(runCfs(['create-dumpfile', src, '-o', dangling]), /dangling: .*symbolic link/);
    assert.ok(!existsSync(path.join(dir, 'nowhere')));
    // a directory
    assertCleanError(runCfs(['create-image', src, '-o', dir]), /is a directory/);
    // a socket
    const sock = path.join(dir, 'sock');
    server = net.createServer();
    await new Promise<void>((r) => server!.listen(sock, r));
    assertCleanError(runCfs(['create-image', src, '-o', sock]), /sock: .*socket/);
    assert.ok(lstatSync(sock).isSocket());
    // a FIFO with a reader: written through
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const got = path.join(dir, 'from-fifo');
    const reader = spawn('sh', ['-c', `cat "${fifo}" > "${got}"`]);
    const readerDone = new Promise((r) => reader.on('close', r));
    const w = await runCfsAsync(['create-image', src, '-o', fifo]);
    assert.equal(w.status, 0, w.stderr);
    await readerDone;
    assert.ok(readFileSync(got).equals(wantImage), 'the image came through the FIFO');
    assert.ok(lstatSync(fifo).isFIFO());
    // a FIFO without a reader: an error, not a hang
    assertCleanError(runCfs(['create-image', src, '-o', fifo]), /fifo: no process is reading/);
    // a regular file: replaced atomically
    const reg = path.join(dir, 'out.img');
    writeFileSync(reg, 'old');
    assert.equal(runCfs(['create-image', src, '-o', reg]).status, 0);
    assert.ok(readFileSync(reg).equals(wantImage));
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), []);
  } finally {
    server?.close();
    cleanup();
  }
});

test('-o - and -o /dev/stdout write to standard output; the id line then goes to stderr', () => {
  const { dir, cleanup } = tempDir('io-stdout-');
  try {
    const dumpPath = path.join(dir, 'small.dump');
    writeFileSync(dumpPath, bigDumpfile(3));
    const src = `dumpfile:${dumpPath}`;
    const f = path.join(dir, 'ref.img');
    const ref = runCfs(['create-image', src, '-o', f]);
    const want = readFileSync(f);
    for (const o of ['-', '/dev/stdout']) {
      const r = runCfs(['create-image', src, '-o', o]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.equals(want), `${o}: image bytes on stdout`);
      assert.equal(r.stderr, ref.stdout.toString());
      const d = runCfs(['create-dumpfile', src, '-o', o]);
      assert.equal(d.status, 0, d.stderr);
      assert.equal(d.stdout.toString(), runCfs(['create-dumpfile', src]).stdout.toString());
    }
    // stdout redirected to a regular file: /dev/stdout writes into it, it is not replaced
    const out = path.join(dir, 'redirected');
    const fd = openSync(out, 'w');
    const r = spawnSync(process.execPath, [CLI, 'create-image', src, '-o', '/dev/stdout'], { stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    assert.equal(r.status, 0, r.stderr.toString());
    assert.ok(readFileSync(out).equals(want));
  } finally {
    cleanup();
  }
});

function runCfsAsync(args: string[]): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args]);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

// ---- item 4: the repository path ---------------------------------------------------------

test('--repo refuses a symlink to a non-repository, a non-empty directory, and symlinks inside', () => {
  const { dir, cleanup } = tempDir('io-repo-');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [100, 5000]);
    // a stand-in for `/`: a directory with content that is not a repository
    const fakeRoot = path.join(dir, 'root');
    mkdirSync(path.join(fakeRoot, 'etc'), { recursive: true });
    writeFileSync(path.join(fakeRoot, 'etc/passwd'), 'root:x:0:0\n');
    const link = path.join(dir, 'repo-link');
    symlinkSync(fakeRoot, link);
    assertCleanError(runCfs(['create-image', '--repo', link, src]), /repo-link.*not a composefs repository/);
    assertCleanError(runCfs(['create-image', '--repo', fakeRoot, src]), /root.*not a composefs repository/);
    assert.deepEqual(readdirSync(fakeRoot), ['etc'], 'nothing written into it');
    // a symlink to a real repository is fine
    const repo = path.join(dir, 'repo');
    assert.equal(runCfs(['create-image', '--repo', repo, src]).status, 0);
    const link2 = path.join(dir, 'repo-link2');
    symlinkSync(repo, link2);
    const viaLink = runCfs(['create-image', '--repo', link2, src, 'named']);
    assert.equal(viaLink.status, 0, viaLink.stderr);
    assert.ok(lstatSync(path.join(repo, 'images/refs/named')).isSymbolicLink());
    // an empty directory becomes a repository
    const empty = path.join(dir, 'empty');
    mkdirSync(empty);
    assert.equal(runCfs(['create-image', '--repo', empty, src]).status, 0);
    assert.ok(existsSync(path.join(empty, 'meta.json')));
    // symlinks inside the repository are never followed
    const elsewhere = path.join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    for (const inner of ['images/refs', 'objects', 'images']) {
      const r2 = path.join(dir, `r-${inner.replace('/', '-')}`);
      assert.equal(runCfs(['create-image', '--repo', r2, src]).status, 0);
      execFileSync('rm', ['-rf', path.join(r2, inner)]);
      symlinkSync(elsewhere, path.join(r2, inner));
      assertCleanError(runCfs(['create-image', '--repo', r2, src, 'x']), new RegExp(`${inner.replace('/', '\\/')}.*symbolic link`));
      assert.deepEqual(readdirSync(elsewhere), [], `${inner}: nothing written through the link`);
    }
    // an object fan-out directory that is a symlink
    const r3 = path.join(dir, 'r3');
    assert.equal(runCfs(['create-image', '--repo', r3, src]).status, 0);
    const fan = readdirSync(path.join(r3, 'objects'))[0];
    execFileSync('rm', ['-rf', path.join(r3, 'objects', fan)]);
    symlinkSync(elsewhere, path.join(r3, 'objects', fan));
    assertCleanError(runCfs(['create-image', '--repo', r3, src]), /symbolic link/);
    assert.deepEqual(readdirSync(elsewhere), []);
    // meta.json that is a symlink
    const r4 = path.join(dir, 'r4');
    assert.equal(runCfs(['create-image', '--repo', r4, src]).status, 0);
    execFileSync('mv', [path.join(r4, 'meta.json'), path.join(dir, 'meta-elsewhere.json')]);
    symlinkSync(path.join(dir, 'meta-elsewhere.json'), path.join(r4, 'meta.json'));
    assertCleanError(runCfs(['create-image', '--repo', r4, src]), /meta\.json.*symbolic link/);
    // meta.json that is a FIFO: refused, no hang
    execFileSync('rm', [path.join(r4, 'meta.json')]);
    execFileSync('mkfifo', [path.join(r4, 'meta.json')]);
    assertCleanError(runCfs(['create-image', '--repo', r4, src]), /meta\.json is not a regular file/);
  } finally {
    cleanup();
  }
});

// ---- item 12: standard output that fails ------------------------------------------------

test('standard output that is full or closed: exit 2, no stack trace', async () => {
  const { dir, cleanup } = tempDir('io-stdoutfail-');
  try {
    const dumpPath = path.join(dir, 'big.dump');
    writeFileSync(dumpPath, bigDumpfile(20000));
    const full = openSync('/dev/full', 'w');
    for (const args of [['create-dumpfile', `dumpfile:${dumpPath}`], ['compute-id', `dumpfile:${dumpPath}`], ['create-image', `dumpfile:${dumpPath}`, '-o', '-']]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', full, 'pipe'] });
      assertCleanError({ status: r.status ?? -1, stderr: r.stderr.toString() }, /standard output: no space left on device/);
      assert.equal(r.stderr.toString().split('\n').filter(Boolean).length, 1, 'one line');
    }
    closeSync(full);
    // `| head -c 100`: the reader goes away early
    const r = await new Promise<{ status: number | null; signal: string | null; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'create-dumpfile', `dumpfile:${dumpPath}`]);
      let stderr = '';
      p.stderr.on('data', (d) => (stderr += d));
      p.stdout.once('data', () => p.stdout.destroy());
      p.on('close', (status, signal) => resolve({ status, signal, stderr }));
    });
    assert.equal(r.signal, null);
    assert.equal(r.status, 2, r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at |Error/, 'no stack trace');
  } finally {
    cleanup();
  }
});

// ---- item 13: signals and stale temporary files ------------------------------------------

/** Runs create-image --repo and sends `signal` once it is mid-work; undefined if it finished first. */
async function interrupted(
  signal: 'SIGINT' | 'SIGTERM',
  source: string,
  repo: string,
): Promise<{ status: number | null; signal: string | null; stderr: string } | undefined> {
  const p = spawn(process.execPath, [CLI, 'create-image', '--repo', repo, source]);
  let stderr = '';
  let exited = false;
  p.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ status: number | null; signal: string | null; stderr: string }>((resolve) =>
    p.on('close', (status, sig) => {
      exited = true;
      resolve({ status, signal: sig, stderr });
    }),
  );
  // Wait until it is mid-work: a temporary object file exists.
  const objects = path.join(repo, 'objects');
  while (!exited) {
    if (existsSync(objects) && readdirSync(objects).some((f) => f.startsWith('.tmp-'))) {
      p.kill(signal);
      return done;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  await done;
  return undefined;
}

test('SIGINT / SIGTERM during create-image --repo remove the temporary files; exit 130 / 143', async () => {
  const { dir, cleanup } = tempDir('io-signal-');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, Array.from({ length: 48 }, () => 4 << 20));
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', src, '-cf', tar, '.']);
    for (const [sig, code, source] of [['SIGINT', 130, src], ['SIGTERM', 143, `layers:${tar}`], ['SIGINT', 130, `layers:${tar}`]] as const) {
      let r;
      let repo = '';
      for (let attempt = 0; attempt < 5 && !r; attempt++) {
        repo = path.join(dir, `repo-${sig}-${source.length}-${attempt}`);
        r = await interrupted(sig, source, repo);
      }
      assert.ok(r, 'caught the run mid-work');
      assert.equal(r.signal, null, `${sig}: exits by itself`);
      assert.equal(r.status, code, r.stderr);
      assert.deepEqual(allFiles(repo).filter((f) => f.includes('tmp')), [], `${sig} ${source}: no temporary file left`);
      assertObjectsIntact(repo);
    }
  } finally {
    cleanup();
  }
});

test('opening a repository sweeps only its own stale temporary files', () => {
  const { dir, cleanup } = tempDir('io-sweep-');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [5000]);
    const repo = path.join(dir, 'repo');
    assert.equal(runCfs(['create-image', '--repo', repo, src]).status, 0);
    const obj = (n: string) => path.join(repo, 'objects', n);
    const old = new Date(Date.now() - 3 * 3600 * 1000);
    // a dead process's old temporary: swept
    const deadPid = 4194304 + 1; // above pid_max's ceiling: never a live process
    const stale = [obj(`.tmp-${deadPid}-0123456789abcdef`), path.join(repo, `meta.json.tmp-${deadPid}-01234567`), path.join(repo, 'images', `abc.tmp-${deadPid}-89abcdef`)];
    // kept: recent, of a live process, or not our pattern
    const kept = [obj(`.tmp-${deadPid}-fedcba9876543210`), obj(`.tmp-${process.pid}-0011223344556677`), obj('.tmp-someone-else'), obj('notes.txt')];
    for (const f of [...stale, ...kept]) writeFileSync(f, 'x');
    for (const f of stale) utimesSync(f, old, old);
    for (const f of kept.slice(1)) utimesSync(f, old, old);
    const r = runCfs(['create-image', '--repo', repo, src]);
    assert.equal(r.status, 0, r.stderr);
    for (const f of stale) assert.ok(!existsSync(f), `${f} swept`);
    for (const f of kept) assert.ok(existsSync(f), `${f} kept`);
  } finally {
    cleanup();
  }
});

test('a signal also removes the temporary file of an -o output being written', async () => {
  const { dir, cleanup } = tempDir('io-atomic-');
  try {
    const target = path.join(dir, 'out');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('first');
      await gate;
      yield Buffer.from('second');
    }
    const writing = writeFileAtomic(target, slow()).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50));
    const temps = readdirSync(dir);
    assert.equal(temps.length, 1, 'a temporary file while writing');
    assert.deepEqual([...trackedTemps()].map((p) => path.basename(p)), temps, 'and it is tracked for removal');
    abandonTemps();
    assert.deepEqual(readdirSync(dir), [], 'removed on abandon');
    release();
    await writing;
    assert.ok(!existsSync(target) || readFileSync(target, 'utf8') === 'firstsecond');
  } finally {
    cleanup();
  }
});

// ---- items 15, 16: repository errors name the repository; checks come first ---------------

test('a read-only or unwritable repository: the real cause, naming the repository', (t) => {
  if (!needRoot(t)) return;
  const { dir, cleanup } = tempDir('io-rorepo-');
  const ro = path.join(dir, 'ro');
  let mounted = false;
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [5000, 300000]);
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', src, '-cf', tar, '.']);
    const repo = path.join(dir, 'repo');
    mkdirSync(repo);
    mkdirSync(ro);
    execFileSync('mount', ['--bind', repo, ro]);
    mounted = true;
    execFileSync('mount', ['-o', 'remount,bind,ro', ro]);
    for (const source of [src, `layers:${tar}`]) {
      const r = runCfs(['create-image', '--repo', ro, source]);
      assertCleanError(r, /ro: read-only file system/);
      assert.doesNotMatch(r.stderr, /usr\/f\d|no such file/, r.stderr);
    }
    // a new repository below a read-only directory
    const deep = runCfs(['create-image', '--repo', path.join(ro, 'a/b'), src]);
    assertCleanError(deep, /ro\/a\/b: read-only file system \(mkdir .*ro\/a\)/);
    execFileSync('umount', [ro]);
    mounted = false;
    // an existing repository, read-only
    assert.equal(runCfs(['create-image', '--repo', repo, src]).status, 0);
    execFileSync('mount', ['--bind', repo, ro]);
    mounted = true;
    execFileSync('mount', ['-o', 'remount,bind,ro', ro]);
    makeTree(path.join(dir, 'src2'), [7000, 9000]);
    const r = runCfs(['create-image', '--repo', ro, path.join(dir, 'src2')]);
    assertCleanError(r, /ro.*: read-only file system/);
    assert.doesNotMatch(r.stderr, /src2\/usr|no such file/, r.stderr);
    // not writable by this user (nobody)
    chmodSync(dir, 0o755);
    chmodSync(src, 0o755);
    const nobody = runCfs(['create-image', '--repo', repo, src], undefined, { uid: 65534, gid: 65534 });
    assertCleanError(nobody, /repo.*permission denied/);
  } finally {
    if (mounted) execFileSync('umount', [ro]);
    cleanup();
  }
});

test('an invalid image name, or a repository inside the source directory, is refused before any work', () => {
  const { dir, cleanup } = tempDir('io-early-');
  try {
    const src = path.join(dir, 'src');
    makeTree(src, [5000]);
    const repo = path.join(dir, 'repo');
    for (const name of ['a/b', '..', '.', '']) {
      assertCleanError(runCfs(['create-image', '--repo', repo, src, name]), /invalid image name/);
      assert.ok(!existsSync(repo), `${JSON.stringify(name)}: nothing stored`);
    }
    const inside = path.join(src, 'var/repo');
    assertCleanError(runCfs(['create-image', '--repo', inside, src]), /inside the source directory/);
    assert.ok(!existsSync(path.join(src, 'var')), 'nothing created');
    assertCleanError(runCfs(['create-image', '--repo', src, `dir:${src}`]), /inside the source directory/);
    // through a symlink to the source
    const alias = path.join(dir, 'alias');
    symlinkSync(src, alias);
    assertCleanError(runCfs(['create-image', '--repo', path.join(alias, 'repo'), src]), /inside the source directory/);
    assert.deepEqual(readdirSync(src), ['usr']);
  } finally {
    cleanup();
  }
});
