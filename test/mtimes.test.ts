/**
 * The engine-faithful view (--layer-mtimes seconds, --clamp-mtime EPOCH) for every source kind,
 * checked against layer tarballs that carry the engine's mtimes (whole seconds; clamped as
 * BuildKit's rewrite-timestamp does), and compute-id's warning on sub-second mtimes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { applyMtimeView, parseEpoch } from '../src/transform/mtimes.js';
import { copyRootMetadataFromUsr } from '../src/transform/transform.js';
import { Directory, FileSystem, Leaf, emptyStat, type Stat } from '../src/tree/tree.js';
import { assertCleanError, runCfs, tempDir } from './helpers.js';
import { TarBuilder } from './tar-builder.js';

const T = 1700000000;
const E = T + 50;

const st = (sec: number | bigint, nsec = 0): Stat => ({ ...emptyStat(), mode: 0o755, mtimeSec: BigInt(sec), mtimeNsec: nsec });

test('applyMtimeView: seconds round down; the clamp is strict, counts nanoseconds, and leaves the epoch whole', () => {
  const usr = new Directory(st(E + 10, 5));
  const root = new Directory(st(1));
  root.entries.set('usr', usr);
  const at = new Leaf(st(E), { type: 'inline', data: Buffer.from('a') });
  const justAfter = new Leaf(st(E, 1), { type: 'inline', data: Buffer.from('b') });
  const before = new Leaf(st(E - 1, 999_999_999), { type: 'inline', data: Buffer.from('c') });
  const old = new Leaf(st(-5, 500), { type: 'symlink', target: Buffer.from('x') });
  usr.entries.set('at', at);
  usr.entries.set('after', justAfter);
  usr.entries.set('before', before);
  usr.entries.set('old', old);
  usr.entries.set('link', before); // a hardlink: one inode, changed once
  const fs = new FileSystem(root);
  applyMtimeView(fs, { layerMtimes: 'keep', clampMtime: BigInt(E) });
  const m = (s: Stat) => `${s.mtimeSec}.${s.mtimeNsec}`;
  assert.deepEqual([usr, at, justAfter, before, old].map((i) => m(i.stat)), [`${E}.0`, `${E}.0`, `${E}.0`, `${E - 1}.999999999`, '-5.500']);
  // the root then takes /usr's clamped mtime, as bootc computes it from the rewritten layers
  copyRootMetadataFromUsr(fs);
  assert.equal(m(root.stat), `${E}.0`);
  applyMtimeView(fs, { layerMtimes: 'seconds' });
  assert.deepEqual([before, old].map((i) => m(i.stat)), [`${E - 1}.0`, '-5.0']);
  assert.equal(parseEpoch('0'), 0n);
  assert.equal(parseEpoch('1700000000'), 1700000000n);
  for (const bad of ['', '-1', '1.5', '1e9', ' 1', '99999999999999999999']) assert.equal(parseEpoch(bad), undefined, bad);
});

/** A small root with sub-second mtimes on disk. */
function liveTree(root: string): void {
  mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
  mkdirSync(path.join(root, 'etc'));
  writeFileSync(path.join(root, 'usr/bin/tool'), Buffer.alloc(3000, 1));
  writeFileSync(path.join(root, 'etc/late'), 'late\n');
  for (const [p, m] of [['usr/bin/tool', 0o644], ['etc/late', 0o644], ['usr/bin', 0o755], ['usr', 0o755], ['etc', 0o755], ['.', 0o755]] as const) chmodSync(path.join(root, p), m);
  const times: [string, number][] = [['usr/bin/tool', T + 0.25], ['etc/late', E + 99.5], ['usr/bin', T + 1.5], ['usr', E + 20.125], ['etc', T], ['.', T]];
  for (const [p, t] of times) utimesSync(path.join(root, p), t, t);
}

/** The same tree as a layer tarball with the given mtime for each entry. */
function layerTar(file: string, mt: (t: number) => number, pax = false): string {
  // owned like the files on disk, whoever runs the test
  const own = { uid: process.getuid!(), gid: process.getgid!() };
  const o = (t: number) => (pax ? { ...own, mtime: Math.floor(t), pax: [['mtime', t.toFixed(9)]] as [string, string][] } : { ...own, mtime: mt(t) });
  const b = new TarBuilder()
    .dir('./', { ...o(T), mode: 0o755 })
    .dir('etc/', { ...o(T), mode: 0o755 })
    .file('etc/late', 'late\n', { ...o(E + 99.5), mode: 0o644 })
    .dir('usr/', { ...o(E + 20.125), mode: 0o755 })
    .dir('usr/bin/', { ...o(T + 1.5), mode: 0o755 })
    .file('usr/bin/tool', Buffer.alloc(3000, 1), { ...o(T + 0.25), mode: 0o644 });
  writeFileSync(file, b.build());
  return `layers:${file}`;
}

const id = (args: string[]) => {
  const r = runCfs(args);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString().trim();
};

test('every source kind: --layer-mtimes seconds and --clamp-mtime give the id of the layers the engine writes', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    liveTree(root);
    const whole = layerTar(path.join(dir, 'whole.tar'), Math.floor);
    const clamped = layerTar(path.join(dir, 'clamped.tar'), (t) => Math.min(Math.floor(t), E));
    const pax = layerTar(path.join(dir, 'pax.tar'), (t) => t, true);
    const dump = path.join(dir, 'raw.dump');
    // the raw tree (no finishing rules) as a dumpfile, so that the view applies before them again
    writeFileSync(dump, runCfs(['create-dumpfile', '--no-propagate-usr-to-root', '--layer-mtimes', 'keep', root]).stdout);
    for (const g of [[], ['--erofs-version', '2', '--hash', 'sha256'], ['--erofs-version', '0']]) {
      const ship = id([...g, 'compute-id', whole]);
      const shipClamped = id([...g, 'compute-id', clamped]);
      assert.equal(id([...g, 'compute-id', '--layer-mtimes', 'seconds', root]), ship);
      assert.equal(id([...g, 'compute-id', '--layer-mtimes', 'seconds', pax]), ship, 'an OCI source with PAX nanoseconds');
      assert.equal(id([...g, 'compute-id', '--layer-mtimes', 'seconds', '--clamp-mtime', String(E), root]), shipClamped);
      assert.equal(id([...g, 'compute-id', '--clamp-mtime', String(E), whole]), shipClamped, 'an OCI source, clamped as BuildKit rewrites it');
      assert.equal(id([...g, 'compute-id', '--layer-mtimes', 'seconds', '--clamp-mtime', String(E), pax]), shipClamped);
    }
    // a dumpfile of the raw tree: the view, then the rules (--no-propagate: a dumpfile is taken as final)
    const rawSeconds = id(['compute-id', '--no-propagate-usr-to-root', '--layer-mtimes', 'seconds', root]);
    assert.equal(id(['compute-id', '--layer-mtimes', 'seconds', `dumpfile:${dump}`]), rawSeconds);
    assert.equal(
      id(['compute-id', '--clamp-mtime', String(E), `dumpfile:${dump}`]),
      id(['compute-id', '--no-propagate-usr-to-root', '--clamp-mtime', String(E), root]),
    );
    // the view changes the id of a tree with sub-second mtimes, and nothing on whole seconds
    assert.notEqual(id(['compute-id', root]), id(['compute-id', '--layer-mtimes', 'seconds', root]));
    assert.equal(id(['compute-id', '--layer-mtimes', 'seconds', whole]), id(['compute-id', whole]));
    // create-dumpfile shows the view
    const d = runCfs(['create-dumpfile', '--layer-mtimes', 'seconds', '--clamp-mtime', String(E), root]).stdout.toString();
    assert.match(d, new RegExp(`^/etc/late 5 100644 1 \\d+ \\d+ 0 ${E}\\.0 `, 'm'));
    assert.match(d, new RegExp(`^/usr/bin/tool 3000 100644 1 \\d+ \\d+ 0 ${T}\\.0 `, 'm'));
    assert.match(d, new RegExp(`^/ 0 40755 \\d+ \\d+ \\d+ 0 ${E}\\.0 `, 'm'), 'the root takes /usr clamped');
  } finally {
    cleanup();
  }
});

test('--json reports the view; bad epochs are clean errors', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    liveTree(root);
    const j = JSON.parse(id(['compute-id', '--json', '--layer-mtimes', 'seconds', '--clamp-mtime', String(E), root]));
    assert.deepEqual(j.mtimes, { layerMtimes: 'seconds', clampMtime: E });
    for (const d of ['boot', 'sysroot']) mkdirSync(path.join(root, d));
    const k = JSON.parse(id(['compute-karg', '--json', root]));
    assert.deepEqual(k.mtimes, { layerMtimes: 'keep', clampMtime: null });
    assertCleanError(runCfs(['compute-id', '--clamp-mtime', '1.5', root]), /--clamp-mtime.*whole seconds/);
    assertCleanError(runCfs(['compute-id', '--layer-mtimes', 'nanoseconds', root]), /--layer-mtimes/);
  } finally {
    cleanup();
  }
});

test('compute-id warns on any sub-second mtime of a directory: one line with the count and the fix', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    liveTree(root);
    const w = runCfs(['compute-id', root]);
    assert.equal(w.status, 0);
    // the root takes /usr's metadata: not counted; 4 of the 5 other paths have a fraction
    assert.match(w.stderr, /^cfs: warning: 4 of 5 paths have sub-second mtimes \(\/etc\/late, \/usr, \/usr\/bin, …\), [^\n]*--layer-mtimes seconds[^\n]*--layer-mtimes keep silences this\n$/);
    // every directory with a fraction (the BuildKit case): the old mixed-precision heuristic was silent
    for (const p of ['etc', '.']) utimesSync(path.join(root, p), T + 0.5, T + 0.5);
    assert.match(runCfs(['compute-id', root]).stderr, /^cfs: warning: 5 of 5 paths have sub-second mtimes/);
    assert.match(runCfs(['create-image', '-o', path.join(dir, 'img'), root]).stderr, /^cfs: warning: 5 of 5 paths/);
    // suppressed when the view is chosen either way
    for (const mode of ['keep', 'seconds']) assert.equal(runCfs(['compute-id', '--layer-mtimes', mode, root]).stderr, '', mode);
    // silent on whole seconds, and on layer sources (their mtimes are what ships)
    for (const [p, t] of [['usr/bin/tool', T], ['etc/late', T], ['usr/bin', T], ['usr', T], ['etc', T], ['.', T]] as const) utimesSync(path.join(root, p), t, t);
    assert.equal(runCfs(['compute-id', root]).stderr, '');
    const pax = layerTar(path.join(dir, 'pax.tar'), (t) => t, true);
    assert.equal(runCfs(['compute-id', pax]).stderr, '');
  } finally {
    cleanup();
  }
});

test('identify tries whole seconds when the tree has sub-second mtimes, and takes --clamp-mtime', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    liveTree(root);
    const seconds = id(['compute-id', '--layer-mtimes', 'seconds', root]);
    assert.equal(runCfs(['identify', seconds, root]).stdout.toString(), 'match: --erofs-version 1 --hash sha512 --xattrs allowlist-only --layer-mtimes seconds\n');
    // the ids of the shipped layers, found from the mounted tree
    const whole = layerTar(path.join(dir, 'whole.tar'), Math.floor);
    assert.match(runCfs(['identify', id(['compute-id', whole]), root]).stdout.toString(), /^match: .*--layer-mtimes seconds$/m);
    const clamped = id(['--erofs-version', '2', 'compute-id', '--clamp-mtime', String(E), root]);
    assert.equal(runCfs(['identify', clamped, root]).status, 1, 'an epoch cannot be guessed');
    assert.equal(
      runCfs(['identify', '--clamp-mtime', String(E), clamped, root]).stdout.toString(),
      `match: --erofs-version 2 --hash sha512 --xattrs allowlist-only --clamp-mtime ${E}\n`,
    );
    const j = JSON.parse(id(['identify', '--json', seconds, root]));
    assert.deepEqual(j.matches[0].mtimes, { layerMtimes: 'seconds', clampMtime: null });
    // --layer-mtimes keep: only as read
    assert.equal(runCfs(['identify', '--layer-mtimes', 'keep', seconds, root]).status, 1);
  } finally {
    cleanup();
  }
});
