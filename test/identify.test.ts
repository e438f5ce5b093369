/** `cfs identify`: which combination produced a digest; one read of the source for all. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { GOLDEN, runCfs, tempDir } from './helpers.js';

function tree(dir: string): void {
  for (const d of ['usr/bin', 'boot', 'sysroot', 'etc', 'run']) mkdirSync(path.join(dir, d), { recursive: true });
  writeFileSync(path.join(dir, 'usr/bin/tool'), Buffer.alloc(5000, 3));
  writeFileSync(path.join(dir, 'etc/conf'), 'x\n');
  execFileSync('setfattr', ['-n', 'user.note', '-v', 'kept-or-not', path.join(dir, 'etc/conf')]);
  utimesSync(path.join(dir, 'usr'), 1700000000, 1700000000);
}

const id = (args: string[]) => {
  const r = runCfs(args);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.toString().trim();
};

test('finds the combination behind ids made with each combination (directory source)', () => {
  const { dir, cleanup } = tempDir();
  try {
    tree(dir);
    const cases: [string[], string[], RegExp][] = [
      [[], [], /^match: --erofs-version 1 --hash sha512 --xattrs allowlist-only\n$/],
      [['--erofs-version', '2', '--hash', 'sha256'], ['--bootable'], /^match: --erofs-version 2 --hash sha256 --bootable --xattrs allowlist-only\n$/],
      [['--erofs-version', '0'], ['--xattrs', 'keep-user-xattrs'], /^match: --erofs-version 0 --hash sha512 --xattrs keep-user-xattrs\n$/],
      [['--erofs-version', '1', '--hash', 'sha256'], ['--no-propagate-usr-to-root', '--bootable'], /^match: --erofs-version 1 --hash sha256 --bootable --no-propagate-usr-to-root\n$/],
    ];
    for (const [g, o, re] of cases) {
      const hex = id([...g, 'compute-id', ...o, dir]);
      const r = runCfs(['identify', hex, dir]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout.toString(), re);
    }
    // a karg works as DIGEST too
    const karg = id(['compute-karg', dir]);
    assert.match(runCfs(['identify', karg, dir]).stdout.toString(), /--bootable/);
  } finally {
    cleanup();
  }
});

test('no match: exit 1 and the list of what was tried', () => {
  const { dir, cleanup } = tempDir();
  try {
    tree(dir);
    const r = runCfs(['identify', '0'.repeat(128), dir]);
    assert.equal(r.status, 1);
    const out = r.stdout.toString();
    // the tree was written just now (sub-second mtimes): every combination as read, then in whole
    // seconds; 3 formats x (3 rule sets plain + 3 bootable with /usr's mtime seconds + 3 with its
    // nanoseconds, composefs-rs #396), per view
    assert.match(out, /^no combination gives 0{128}; tried 54:\n/);
    assert.match(out, /--erofs-version 1 --hash sha512 --xattrs allowlist-only --layer-mtimes seconds: [0-9a-f]{128}/);
    assert.match(out, /--erofs-version 2 --hash sha512 --bootable --xattrs keep-user-xattrs: [0-9a-f]{128}/);
    const j = JSON.parse(runCfs(['identify', '--json', '--layer-mtimes', 'keep', '0'.repeat(64), dir]).stdout.toString());
    assert.equal(j.matches.length, 0);
    assert.equal(j.tried.length, 27);
    assert.equal(j.tried.filter((t: { bootMtimeNsec?: boolean }) => t.bootMtimeNsec).length, 9);
    assert.ok(j.tried.every((t: { hash: string }) => t.hash === 'sha256'));
    assert.equal(runCfs(['identify', 'xyz', dir]).status, 2);
  } finally {
    cleanup();
  }
});

test('dumpfile and layer-tarball sources, including the pre-0.8 unfiltered tar xattrs', () => {
  const { dir, cleanup } = tempDir();
  try {
    const dump = `dumpfile:${path.join(GOLDEN, 'special.dump')}`;
    const hex = id(['--erofs-version', '0', '--hash', 'sha256', 'compute-id', dump]);
    assert.equal(runCfs(['identify', hex, dump]).stdout.toString(), 'match: --erofs-version 0 --hash sha256\n');
    const root = path.join(dir, 'root');
    tree(root);
    const tar = path.join(dir, 'l.tar');
    execFileSync('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-C', root, '-cf', tar, '.']);
    const layers = `layers:${tar}`;
    const old = id(['--profile', 'cfsctl-0.7', 'compute-id', layers]);
    assert.notEqual(old, id(['--erofs-version', '2', 'compute-id', layers]), 'the unfiltered user xattr changes the id');
    // with only user.* xattrs, keep-user-xattrs gives the same tree: --all lists both
    const all = runCfs(['identify', '--all', old, layers]).stdout.toString();
    assert.match(all, /^match: --erofs-version 2 --hash sha512 --xattrs keep-user-xattrs$/m);
    assert.match(all, /^match: --erofs-version 2 --hash sha512 \(tar xattrs unfiltered/m);
  } finally {
    cleanup();
  }
});
