/** `cfs compare`: equal views exit 0; divergent ones name the path, the field and the cause. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCfs, tempDir } from './helpers.js';

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

test('equal views: exit 0 and the shared id', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T, T);
    const r = runCfs(['compare', root, layers]);
    assert.equal(r.status, 0, r.stdout.toString() + r.stderr);
    const id = runCfs(['compute-id', layers]).stdout.toString().trim();
    assert.equal(r.stdout.toString(), `equal: both give sha512 ${id} (erofs V1)\n`);
    assert.equal(runCfs(['compute-id', root]).stdout.toString().trim(), id);
  } finally {
    cleanup();
  }
});

test('divergent views: implied parent, live mtime, mount stub; --json', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    // as extraction leaves it: usr/lib modified after layer 1 (live time), a RUN --mount stub
    utimesSync(path.join(root, 'usr/lib'), T + 100.25, T + 100.25);
    mkdirSync(path.join(root, 'mnt'));
    const r = runCfs(['compare', root, layers]);
    assert.equal(r.status, 1);
    const out = r.stdout.toString();
    assert.match(out, /^\/mnt: presence: directory \(A\) vs \(absent\) \(B\)\n {4}likely cause: mount-target stub/m);
    assert.match(out, /^\/usr\/lib: mtime: 1700000100\.250000000 \(A\) vs 1700000000\.000000000 \(B\)\n {4}likely cause: implied parent directory: layer 2 \(/m);
    assert.match(out, /2 difference\(s\) in 2 path\(s\)/);
    const j = JSON.parse(runCfs(['compare', '--json', root, layers]).stdout.toString());
    assert.equal(j.equal, false);
    assert.deepEqual(
      j.differences.map((d: { path: string; field: string }) => `${d.path} ${d.field}`),
      ['/mnt presence', '/usr/lib mtime'],
    );
    // V2 ignores nanoseconds but not seconds
    assert.equal(runCfs(['--erofs-version', '2', 'compare', root, layers]).status, 1);
  } finally {
    cleanup();
  }
});

test('live nanoseconds only: named as such; compute-id warns on a mixed tree', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { root, layers } = setup(dir);
    utimesSync(path.join(root, 'usr/lib'), T + 0.5, T + 0.5);
    const r = runCfs(['compare', root, layers]);
    assert.equal(r.status, 1);
    assert.match(r.stdout.toString(), /\/usr\/lib: mtime: 1700000000\.500000000 \(A\) vs 1700000000\.000000000 \(B\)\n {4}likely cause: implied parent/);
    // V2 stores no nanoseconds: equal there
    assert.equal(runCfs(['--erofs-version', '2', 'compare', root, layers]).status, 0);
    const w = runCfs(['compute-id', root]);
    assert.equal(w.status, 0);
    assert.match(w.stderr, /warning: 1 of 3 directories have sub-second mtimes \(\/usr\/lib\)/);
  } finally {
    cleanup();
  }
});
