/**
 * `cfs compare`: equal views exit 0; divergent ones start with a summary of counts per cause,
 * then list the paths grouped by cause. One constructed tree/tar pair per cause an engine was
 * seen to produce (see issue 11's table), each asserting the cause named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, linkSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCfs, tempDir } from './helpers.js';
import { TarBuilder } from './tar-builder.js';

const T = 1700000000;

/** A root on disk and the same tree as two layer tarballs (GNU tar, whole-second mtimes). */
function setup(dir: string): { root: string; layers: string } {
  const root = path.join(dir, 'root');
  mkdirSync(path.join(root, 'usr/lib'), { recursive: true });
  mkdirSync(path.join(root, 'etc'));
  writeFileSync(path.join(root, 'usr/lib/a'), 'hello\n');
  writeFileSync(path.join(root, 'etc/b'), Buffer.alloc(1000, 5));
  for (const p of ['usr/lib/a', 'etc/b', 'usr/lib', 'usr', 'etc', '.']) utimesSync(path.join(root, p), T, T);
  const l1 = path.join(dir, 'l1.tar');
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', l1, '.']);
  // layer 2 adds a file under usr/lib without an entry for usr/lib itself
  writeFileSync(path.join(root, 'usr/lib/new'), 'x\n');
  utimesSync(path.join(root, 'usr/lib/new'), T + 5, T + 5);
  const l2 = path.join(dir, 'l2.tar');
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', l2, './usr/lib/new']);
  return { root, layers: `layers:${l1},${l2}` };
}

/** One tarball of a directory as it is on disk (GNU tar writes whole-second mtimes). */
function tarOf(root: string, file: string): string {
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', file, '.']);
  return `layers:${file}`;
}

interface Report {
  equal: boolean;
  paths: number;
  summary: { cause: string; paths: number; title: string; fix?: string }[];
  differences: { path: string; field: string; cause: string; note: string | null }[];
  mtimes: { a: { layerMtimes: string; clampMtime: number | null }; b: { layerMtimes: string; clampMtime: number | null } };
}

function report(args: string[]): Report {
  const r = runCfs(['compare', '--json', ...args]);
  assert.ok(r.status === 0 || r.status === 1, r.stderr);
  return JSON.parse(r.stdout.toString()) as Report;
}

/** "path field" -> cause. */
function causes(j: Report): Record<string, string> {
  return Object.fromEntries(j.differences.map((d) => [`${d.path} ${d.field}`, d.cause]));
}

const id = (args: string[]) => {
  const r = runCfs(args);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString().trim();
};

test('equal views: exit 0 and the shared id', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    const r = runCfs(['compare', root, layers]);
    assert.equal(r.status, 0, r.stdout.toString() + r.stderr);
    const hex = id(['compute-id', layers]);
    assert.equal(r.stdout.toString(), `equal: both give sha512 ${hex} (erofs V1)\n`);
    assert.equal(id(['compute-id', root]), hex);
  } finally {
    cleanup();
  }
});

test('implied parent and mount stub: summary first, then the paths by cause; --json', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    // as extraction leaves it: usr/lib modified after layer 1 (live time), a RUN --mount stub
    utimesSync(path.join(root, 'usr/lib'), T + 100.25, T + 100.25);
    mkdirSync(path.join(root, 'mnt'));
    const r = runCfs(['compare', root, layers]);
    assert.equal(r.status, 1);
    const out = r.stdout.toString();
    assert.match(out, /^2 path\(s\) differ, by cause:\n {2}1 {2}implied-parent\n {2}1 {2}mount-stub\n\n/);
    assert.match(out, /^implied-parent \(1 path\(s\)\): implied parent directory: a layer changed its entries but has no entry for the directory itself/m);
    assert.match(out, /^ {2}\/usr\/lib: mtime: 1700000100\.250000000 \(A\) vs 1700000000\.000000000 \(B\) \[layer 2 \([^)]*l2\.tar\)\]$/m);
    assert.match(out, /^mount-stub \(1 path\(s\)\): mount-target stub[^\n]*\n {2}fix: [^\n]*\n {2}\/mnt: presence: directory \(A\) vs \(absent\) \(B\)$/m);
    assert.match(out, /\n2 difference\(s\) in 2 path\(s\)\nA: sha512 [0-9a-f]{128}\nB: sha512 [0-9a-f]{128}\n$/);
    const j = report([root, layers]);
    assert.equal(j.equal, false);
    assert.equal(j.paths, 2);
    assert.deepEqual(
      j.summary.map((s) => [s.cause, s.paths]),
      [['implied-parent', 1], ['mount-stub', 1]],
    );
    assert.deepEqual(causes(j), { '/mnt presence': 'mount-stub', '/usr/lib mtime': 'implied-parent' });
    // V2 ignores nanoseconds but not seconds
    assert.equal(runCfs(['--erofs-version', '2', 'compare', root, layers]).status, 1);
  } finally {
    cleanup();
  }
});

test('root from /usr: the root is named as taking /usr metadata, not as an implied parent', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    utimesSync(path.join(root, 'usr'), T + 0.5, T + 0.5);
    const j = report([root, layers]);
    assert.deepEqual(causes(j), { '/ mtime': 'root-from-usr', '/usr mtime': 'subsecond-mtime' });
    assert.match(j.summary.find((s) => s.cause === 'root-from-usr')!.title, /\/usr's metadata/);
    // without the finishing rules the root is a directory like any other
    const raw = report(['--no-propagate-usr-to-root', root, layers]);
    assert.equal(causes(raw)['/ mtime'], undefined);
  } finally {
    cleanup();
  }
});

test('sub-second mtimes the layer writer drops (any file): named, and --layer-mtimes seconds gives the layers id', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    // an ADDed file: its nanoseconds survive on disk; the layer has the same whole second
    utimesSync(path.join(root, 'etc/b'), T + 0.123456, T + 0.123456);
    utimesSync(path.join(root, 'usr/lib/new'), T + 5.75, T + 5.75);
    const j = report([root, layers]);
    assert.deepEqual(causes(j), { '/etc/b mtime': 'subsecond-mtime', '/usr/lib/new mtime': 'subsecond-mtime' });
    assert.deepEqual(j.summary.map((s) => [s.cause, s.paths]), [['subsecond-mtime', 2]]);
    assert.match(j.summary[0].fix!, /--layer-mtimes seconds/);
    const text = runCfs(['compare', root, layers]).stdout.toString();
    assert.doesNotMatch(text, /RUN step/);
    // the view, on the directory side: equal, and compute-id agrees
    const eq = runCfs(['compare', '--layer-mtimes', 'seconds', root, layers]);
    assert.equal(eq.status, 0, eq.stdout.toString());
    assert.equal(id(['compute-id', '--layer-mtimes', 'seconds', root]), id(['compute-id', layers]));
    assert.deepEqual(report(['--layer-mtimes', 'seconds', root, layers]).mtimes, {
      a: { layerMtimes: 'seconds', clampMtime: null },
      b: { layerMtimes: 'keep', clampMtime: null },
    });
  } finally {
    cleanup();
  }
});

test('mtimes clamped to an epoch: named with the epoch; --clamp-mtime EPOCH gives the layers id', () => {
  const { dir, cleanup } = tempDir();
  try {
    const E = T + 50;
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
    mkdirSync(path.join(root, 'etc'));
    writeFileSync(path.join(root, 'usr/bin/old'), 'old\n');
    writeFileSync(path.join(root, 'usr/bin/new'), 'new\n');
    writeFileSync(path.join(root, 'etc/conf'), 'c\n');
    const times: [string, number][] = [['usr/bin/old', T], ['usr/bin/new', T + 100.5], ['etc/conf', E], ['etc', T + 200], ['usr/bin', T + 300], ['usr', T + 300], ['.', T]];
    for (const [p, t] of times) utimesSync(path.join(root, p), t, t);
    // the exported layer as BuildKit rewrites it: every mtime later than E is E
    const clamped = path.join(dir, 'clamped');
    cpSync(root, clamped, { recursive: true });
    for (const [p, t] of times) utimesSync(path.join(clamped, p), Math.min(t, E), Math.min(t, E));
    const layers = tarOf(clamped, path.join(dir, 'l.tar'));
    const j = report([root, layers]);
    assert.deepEqual(causes(j), {
      '/ mtime': 'root-from-usr',
      '/etc mtime': 'clamped-mtime',
      '/usr mtime': 'clamped-mtime',
      '/usr/bin mtime': 'clamped-mtime',
      '/usr/bin/new mtime': 'clamped-mtime',
    });
    const s = j.summary.find((x) => x.cause === 'clamped-mtime')!;
    assert.equal(s.paths, 4);
    assert.match(s.title, new RegExp(`carry ${E}`));
    assert.match(s.fix!, new RegExp(`--clamp-mtime ${E}`));
    // the view: the root takes /usr's clamped mtime, as bootc computes it from the layers
    assert.equal(runCfs(['compare', '--clamp-mtime', String(E), root, layers]).status, 0);
    assert.equal(id(['compute-id', '--clamp-mtime', String(E), '--layer-mtimes', 'seconds', root]), id(['compute-id', layers]));
    assert.notEqual(id(['compute-id', '--clamp-mtime', String(E + 1), root]), id(['compute-id', layers]));
  } finally {
    cleanup();
  }
});

test('a view that goes too far: PAX sub-seconds and unclamped base layers in the layers are named', () => {
  const { dir, cleanup } = tempDir();
  try {
    // a FROM image's blob: PAX mtimes with a fraction, and an mtime later than the epoch
    const tar = new TarBuilder()
      .dir('usr/', { mtime: T })
      .file('usr/pax', 'p\n', { mtime: T, pax: [['mtime', `${T}.25`]] })
      .file('usr/late', 'l\n', { mtime: T + 100 })
      .build();
    const file = path.join(dir, 'base.tar');
    writeFileSync(file, tar);
    // the directory as the engine extracted it
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'usr'), { recursive: true });
    writeFileSync(path.join(root, 'usr/pax'), 'p\n');
    writeFileSync(path.join(root, 'usr/late'), 'l\n');
    utimesSync(path.join(root, 'usr/pax'), T + 0.25, T + 0.25);
    utimesSync(path.join(root, 'usr/late'), T + 100, T + 100);
    utimesSync(path.join(root, 'usr'), T, T);
    const layers = `layers:${file}`;
    assert.equal(runCfs(['compare', root, layers]).status, 0, 'as read, the views agree');
    const j = report(['--layer-mtimes', 'seconds', root, layers]);
    assert.deepEqual(causes(j), { '/usr/pax mtime': 'layer-subsecond-mtime' });
    const k = report(['--clamp-mtime', String(T + 50), root, layers]);
    assert.deepEqual(causes(k), { '/usr/late mtime': 'layer-not-clamped' });
  } finally {
    cleanup();
  }
});

test('hardlinks split by the layer writer: nlink differs, same content', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
    writeFileSync(path.join(root, 'usr/bin/tool'), Buffer.alloc(3000, 7));
    // the layer stores both names as separate files
    const split = path.join(dir, 'split');
    cpSync(root, split, { recursive: true });
    writeFileSync(path.join(split, 'usr/bin/alias'), Buffer.alloc(3000, 7));
    // the mount links them
    linkSync(path.join(root, 'usr/bin/tool'), path.join(root, 'usr/bin/alias'));
    for (const r of [root, split]) for (const p of ['usr/bin/tool', 'usr/bin/alias', 'usr/bin', 'usr', '.']) utimesSync(path.join(r, p), T, T);
    const j = report([root, tarOf(split, path.join(dir, 'l.tar'))]);
    assert.deepEqual(causes(j), { '/usr/bin/alias nlink': 'hardlinks-split', '/usr/bin/tool nlink': 'hardlinks-split' });
    assert.deepEqual(j.summary.map((s) => [s.cause, s.paths]), [['hardlinks-split', 2]]);
  } finally {
    cleanup();
  }
});

test('a directory re-created without a layer entry: whole seconds differ on a directory', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    // usr/lib has an entry in layer 1 and none in layer 2 that changes it: not implied; etc neither
    utimesSync(path.join(root, 'usr/lib'), T, T);
    utimesSync(path.join(root, 'etc'), T + 7, T + 7);
    const j = report([root, layers]);
    assert.deepEqual(causes(j), { '/etc mtime': 'dir-without-layer-entry' });
  } finally {
    cleanup();
  }
});

test('a stale mount (not the committed image): contents differ, named as such; capped list, --all', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    // the image before its last step: layer 2's file missing, another content, files never committed
    rmSync(path.join(root, 'usr/lib/new'));
    writeFileSync(path.join(root, 'usr/lib/a'), 'older\n');
    utimesSync(path.join(root, 'usr/lib/a'), T, T);
    mkdirSync(path.join(root, 'usr/share'));
    for (let i = 0; i < 25; i++) writeFileSync(path.join(root, 'usr/share', `f${String(i).padStart(2, '0')}`), `${i}\n`);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    utimesSync(path.join(root, 'usr'), T, T);
    const j = report([root, layers]);
    const c = causes(j);
    assert.equal(c['/usr/lib/new presence'], 'stale-mount');
    assert.equal(c['/usr/lib/a content'], 'stale-mount');
    assert.equal(c['/usr/share presence'], 'stale-mount');
    assert.deepEqual(j.summary.map((s) => s.cause), ['stale-mount']);
    assert.match(j.summary[0].title, /not the committed image/);
    // 25 files under a new directory: its own presence difference covers them
    const many = path.join(dir, 'many');
    mkdirSync(many);
    for (let i = 0; i < 30; i++) {
      const f = path.join(many, `f${String(i).padStart(2, '0')}`);
      writeFileSync(f, `${i}\n`);
      utimesSync(f, T + 0.5, T + 0.5);
    }
    mkdirSync(path.join(many, 'usr'));
    utimesSync(path.join(many, 'usr'), T, T);
    utimesSync(many, T, T);
    const wholeTar = path.join(dir, 'many.tar');
    execFileSync('tar', ['--numeric-owner', '-C', many, '-cf', wholeTar, '.']);
    const out = runCfs(['compare', many, `layers:${wholeTar}`]).stdout.toString();
    assert.match(out, /^30 path\(s\) differ, by cause:\n {2}30 {2}subsecond-mtime\n/);
    assert.equal(out.match(/^ {2}\/f\d\d: mtime: /gm)?.length, 20);
    assert.match(out, /^ {2}…and 10 more path\(s\) \(--all lists every path\)$/m);
    const all = runCfs(['compare', '--all', many, `layers:${wholeTar}`]).stdout.toString();
    assert.equal(all.match(/^ {2}\/f\d\d: mtime: /gm)?.length, 30);
    assert.doesNotMatch(all, /more path/);
    assert.equal(report([many, `layers:${wholeTar}`]).differences.length, 30, '--json carries every path');
  } finally {
    cleanup();
  }
});

test('the view applies to the sides that are not layer sources; to both when both are', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    utimesSync(path.join(root, 'etc/b'), T + 0.5, T + 0.5);
    // B = A as a layer side: a view on B would hide the difference
    assert.deepEqual(causes(report([layers, root])), { '/etc/b mtime': 'subsecond-mtime' });
    const j = report(['--layer-mtimes', 'seconds', layers, root]);
    assert.equal(j.equal, true);
    assert.deepEqual(j.mtimes, { a: { layerMtimes: 'keep', clampMtime: null }, b: { layerMtimes: 'seconds', clampMtime: null } });
    // a dumpfile of the directory (e.g. written in the build) is the in-build view too
    const dump = path.join(dir, 'a.dump');
    writeFileSync(dump, runCfs(['create-dumpfile', '--layer-mtimes', 'keep', root]).stdout);
    assert.deepEqual(causes(report([`dumpfile:${dump}`, layers])), { '/etc/b mtime': 'subsecond-mtime' });
    const d = report(['--layer-mtimes', 'seconds', `dumpfile:${dump}`, layers]);
    assert.equal(d.equal, true);
    assert.deepEqual(d.mtimes, { a: { layerMtimes: 'seconds', clampMtime: null }, b: { layerMtimes: 'keep', clampMtime: null } });
    // two layer sources: both
    const pax = path.join(dir, 'pax.tar');
    writeFileSync(pax, new TarBuilder().dir('usr/', { mtime: T, pax: [['mtime', `${T}.5`]] }).build());
    const plain = path.join(dir, 'plain.tar');
    writeFileSync(plain, new TarBuilder().dir('usr/', { mtime: T }).build());
    assert.equal(report([`layers:${pax}`, `layers:${plain}`]).equal, false);
    const both = report(['--layer-mtimes', 'seconds', `layers:${pax}`, `layers:${plain}`]);
    assert.equal(both.equal, true);
    assert.deepEqual(both.mtimes.a, both.mtimes.b);
  } finally {
    cleanup();
  }
});

test('host xattrs, a file touched in whole seconds, a stub and the directory it was made in', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    utimesSync(path.join(root, 'etc/b'), T + 3, T + 3);
    mkdirSync(path.join(root, 'etc/stub'));
    execFileSync('setfattr', ['-n', 'user.host', '-v', 'x', path.join(root, 'usr/lib/a')]);
    const j = report(['--xattrs', 'keep-user-xattrs', root, layers]);
    assert.deepEqual(causes(j), {
      '/etc mtime': 'mount-stub',
      '/etc/b mtime': 'mtime-changed',
      '/etc/stub presence': 'mount-stub',
      '/usr/lib/a xattr user.host': 'host-xattr',
    });
  } finally {
    cleanup();
  }
});

test('files touched after the commit are not taken for clamping, even one at the layers\' latest mtime', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    // usr/lib/new has the layers' latest mtime (T + 5), etc/b an earlier one
    for (const p of ['usr/lib/new', 'etc/b']) utimesSync(path.join(root, p), T + 1000, T + 1000);
    assert.deepEqual(causes(report([root, layers])), { '/etc/b mtime': 'mtime-changed', '/usr/lib/new mtime': 'mtime-changed' });
    // one clamped path alone is clamping
    utimesSync(path.join(root, 'etc/b'), T, T);
    assert.deepEqual(causes(report([root, layers])), { '/usr/lib/new mtime': 'clamped-mtime' });
  } finally {
    cleanup();
  }
});
