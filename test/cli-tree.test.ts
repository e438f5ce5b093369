/** The image commands on directory sources: karg, --expect, --write-dumpfile-to, --json, --progress. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCfs, tempDir } from './helpers.js';

function bootableTree(dir: string): void {
  for (const d of ['usr/bin', 'boot/loader', 'sysroot/ostree', 'etc', 'run']) mkdirSync(path.join(dir, d), { recursive: true });
  writeFileSync(path.join(dir, 'usr/bin/tool'), Buffer.alloc(5000, 3));
  writeFileSync(path.join(dir, 'boot/loader/entry.conf'), 'title x\n');
  writeFileSync(path.join(dir, 'etc/hostname'), 'h\n');
  utimesSync(path.join(dir, 'usr'), 1700000000, 1700000000);
}

test('compute-karg: bootable V1/V2 kargs, the insecure form, and equality with compute-id --bootable', () => {
  const { dir, cleanup } = tempDir();
  try {
    bootableTree(dir);
    for (const [v, alg] of [['1', 'sha512'], ['0', 'sha256'], ['2', 'sha512']] as const) {
      const id = runCfs(['--erofs-version', v, '--hash', alg, 'compute-id', '--bootable', dir]);
      assert.equal(id.status, 0, id.stderr);
      const hex = id.stdout.toString().trim();
      const k = runCfs(['--erofs-version', v, '--hash', alg, 'compute-karg', dir]);
      assert.equal(k.status, 0, k.stderr);
      const ki = runCfs(['--erofs-version', v, '--hash', alg, 'compute-karg', '--insecure', dir]);
      if (v === '2') {
        assert.equal(k.stdout.toString(), `composefs=${hex}\n`);
        assert.equal(ki.stdout.toString(), `composefs=?${hex}\n`);
      } else {
        assert.equal(k.stdout.toString(), `composefs.digest=v1-${alg}-12:${hex}\n`);
        assert.equal(ki.stdout.toString(), `composefs.digest=?v1-${alg}-12:${hex}\n`);
      }
    }
    // bootable empties /boot: adding a file there does not change the karg, but does change
    // compute-id. (v0.9.0 keeps /boot's own mtime nanoseconds, so pin its mtime.)
    const boot = path.join(dir, 'boot');
    utimesSync(boot, 1600000000, 1600000000);
    const before = runCfs(['compute-karg', dir]).stdout.toString();
    const plain = runCfs(['compute-id', dir]).stdout.toString();
    writeFileSync(path.join(dir, 'boot/new'), 'x');
    utimesSync(boot, 1600000000, 1600000000);
    assert.equal(runCfs(['compute-karg', dir]).stdout.toString(), before);
    assert.notEqual(runCfs(['compute-id', dir]).stdout.toString(), plain);
  } finally {
    cleanup();
  }
});

test('compute-karg refuses a tree without /boot', () => {
  const { dir, cleanup } = tempDir();
  try {
    mkdirSync(path.join(dir, 'usr'));
    const r = runCfs(['compute-karg', dir]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /"boot" does not exist/);
  } finally {
    cleanup();
  }
});

test('--expect: exit 0 on a match, 1 with both values on a mismatch', () => {
  const { dir, cleanup } = tempDir();
  try {
    bootableTree(dir);
    const hex = runCfs(['compute-id', dir]).stdout.toString().trim();
    assert.equal(runCfs(['compute-id', '--expect', hex, dir]).status, 0);
    const wrong = hex.replace(/^./, hex[0] === '0' ? '1' : '0');
    const r = runCfs(['compute-id', '--expect', wrong, dir]);
    assert.equal(r.status, 1);
    assert.ok(r.stderr.includes(wrong) && r.stderr.includes(hex), r.stderr);
    assert.equal(runCfs(['compute-id', '--expect', 'zz', dir]).status, 2);
  } finally {
    cleanup();
  }
});

test('--write-dumpfile-to writes the dumpfile of the same tree; --json names every parameter', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'root');
    bootableTree(src);
    const out = path.join(dir, 'tree.dump');
    const r = runCfs(['--erofs-version', '2', 'compute-id', '--write-dumpfile-to', out, src]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(out).equals(runCfs(['create-dumpfile', src]).stdout));
    assert.equal(runCfs(['--erofs-version', '2', 'compute-id', 'dumpfile:' + out]).stdout.toString(), r.stdout.toString());
    const j = JSON.parse(runCfs(['--hash', 'sha256', 'compute-id', '--json', '--xattrs', 'keep-user-xattrs', src]).stdout.toString());
    assert.equal(j.hash, 'sha256');
    assert.equal(j.erofsVersion, 1);
    assert.equal(j.objectHash, 'sha256');
    assert.deepEqual(j.rules, { propagateUsrToRoot: true, xattrs: 'keep-user-xattrs', bootable: false });
    assert.equal(j.counts.externalFiles, 1);
    assert.equal(j.counts.externalBytes, '5000');
    assert.equal(j.id, runCfs(['--hash', 'sha256', 'compute-id', '--xattrs', 'keep-user-xattrs', src]).stdout.toString().trim());
    const k = JSON.parse(runCfs(['compute-karg', '--json', src]).stdout.toString());
    assert.match(k.karg, /^composefs\.digest=v1-sha512-12:[0-9a-f]{128}$/);
    assert.equal(k.rules.bootable, true);
  } finally {
    cleanup();
  }
});

test('--progress reports on stderr; without it (not a TTY) stderr stays quiet', () => {
  const { dir, cleanup } = tempDir();
  try {
    bootableTree(dir);
    for (let i = 0; i < 20; i++) writeFileSync(path.join(dir, 'usr', `big${i}`), Buffer.alloc(4 << 20, i));
    // --layer-mtimes keep: no sub-second mtime warning either
    const quiet = runCfs(['compute-id', '--layer-mtimes', 'keep', dir]);
    assert.equal(quiet.stderr, '');
    const loud = runCfs(['compute-id', '--progress', '--jobs', '1', dir]);
    assert.equal(loud.status, 0);
    assert.equal(loud.stdout.toString(), quiet.stdout.toString());
  } finally {
    cleanup();
  }
});

test('--annotation prints the sealing annotation for buildah config', () => {
  const { dir, cleanup } = tempDir();
  try {
    bootableTree(dir);
    const hex = runCfs(['compute-id', dir]).stdout.toString().trim();
    assert.equal(runCfs(['compute-id', '--annotation', dir]).stdout.toString(), `composefs.merged.erofs.v1.fsverity-sha512-12=${hex}\n`);
    const b = runCfs(['--erofs-version', '2', '--hash', 'sha256', 'compute-id', '--bootable', '--annotation', dir]).stdout.toString();
    assert.match(b, /^composefs\.merged\.bootable\.erofs\.v2\.fsverity-sha256-12=[0-9a-f]{64}\n$/);
  } finally {
    cleanup();
  }
});

test('--profile presets format, hash and rules; explicit options override it', () => {
  const { dir, cleanup } = tempDir();
  try {
    bootableTree(dir);
    const id = (args: string[]) => {
      const r = runCfs(args);
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.toString().trim();
    };
    assert.equal(id(['--profile', 'bootc-1.16.4', 'compute-id', dir]), id(['compute-id', '--bootable', dir]));
    assert.equal(id(['--profile', 'bootc', 'compute-id', dir]), id(['compute-id', '--bootable', dir]));
    assert.equal(id(['--profile', 'bootc-1.13', 'compute-id', dir]), id(['--erofs-version', '2', 'compute-id', '--bootable', dir]));
    assert.equal(id(['--profile', 'cfsctl-0.9', 'compute-id', dir]), id(['compute-id', dir]));
    // explicit options win
    assert.equal(id(['--profile', 'bootc-1.13', '--erofs-version', '1', 'compute-id', dir]), id(['compute-id', '--bootable', dir]));
    assert.equal(id(['--profile', 'bootc', '--hash', 'sha256', 'compute-id', dir]), id(['--hash', 'sha256', 'compute-id', '--bootable', dir]));
    const bad = runCfs(['--profile', 'nope', 'compute-id', dir]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown profile 'nope'; known: composefs-rs-main, bootc-1\.17\.0, bootc-1\.16\.4, bootc-1\.13, cfsctl-0\.9, cfsctl-0\.7/);
    assert.match(runCfs(['--help']).stdout.toString(), /Profiles \(--profile NAME\):\n  composefs-rs-main +\[newest\] /);
    // bootc after #2248 and composefs-rs main compute what the newest rules give
    assert.equal(id(['--profile', 'bootc-1.17.0', 'compute-id', dir]), id(['compute-id', '--bootable', dir]));
    assert.equal(id(['--profile', 'composefs-rs-main', 'compute-id', dir]), id(['compute-id', dir]));
  } finally {
    cleanup();
  }
});
