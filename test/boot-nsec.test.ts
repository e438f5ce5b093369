/**
 * composefs-rs #396 (merged 2026-09-18, after v0.9.2): the bootable transform gives /boot and
 * /sysroot /usr's mtime nanoseconds as well as its seconds (`empty_toplevel_dirs`,
 * crates/composefs-boot/src/lib.rs at 235f25b9). Up to v0.9.2 only the seconds were copied.
 *
 * Oracle: the test applies each rule to the dumpfile text itself (drop /boot's and /sysroot's
 * entries, rewrite their MTIME) and has the independent Python model of the V1 writer
 * (../shared/spec/tools/model_v0v1.py) build the image, measured by `fsverity digest`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Directory, FileSystem, emptyStat } from '../src/tree/tree.js';
import { emptyToplevelDirs } from '../src/transform/boot.js';
import { IN_CI, SHARED, have, runCfs, tempDir } from './helpers.js';

function dirWith(sec: bigint, nsec: number): Directory {
  return new Directory({ ...emptyStat(), mode: 0o755, mtimeSec: sec, mtimeNsec: nsec });
}

test('emptyToplevelDirs: seconds only (v0.9.x), or seconds and nanoseconds (#396)', () => {
  for (const mtimeNsec of [false, true]) {
    const root = dirWith(1n, 0);
    root.entries.set('usr', dirWith(100n, 111));
    const boot = dirWith(200n, 222);
    boot.entries.set('x', dirWith(1n, 1));
    root.entries.set('boot', boot);
    root.entries.set('sysroot', dirWith(300n, 333));
    emptyToplevelDirs(new FileSystem(root), { mtimeNsec });
    const b = root.entries.get('boot') as Directory;
    const s = root.entries.get('sysroot') as Directory;
    assert.equal(b.entries.size, 0);
    assert.deepEqual([b.stat.mtimeSec, b.stat.mtimeNsec, s.stat.mtimeSec, s.stat.mtimeNsec], mtimeNsec ? [100n, 111, 100n, 111] : [100n, 222, 100n, 333]);
  }
});

/** A tree whose /usr, /boot and /sysroot differ in seconds and in nanoseconds. */
function makeTree(dir: string): string {
  const root = path.join(dir, 'root');
  for (const d of ['usr/bin', 'boot/EFI/Linux', 'sysroot/ostree', 'etc']) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'usr/bin/tool'), 'y'.repeat(300));
  writeFileSync(path.join(root, 'boot/EFI/Linux/a.efi'), 'z'.repeat(100));
  utimesSync(path.join(root, 'usr'), 1700000000, 1700000000.25);
  utimesSync(path.join(root, 'boot'), 1700000100, 1700000100.75);
  utimesSync(path.join(root, 'sysroot'), 1700000200, 1700000200.5);
  return root;
}

/** The bootable transform done on dumpfile text (no SELinux policy, no xattrs in this tree). */
function bootTransformText(dump: string, nsec: boolean): string {
  const lines = dump.trimEnd().split('\n');
  const mtimeOf = (p: string) => lines.find((l) => l.split(' ')[0] === p)!.split(' ')[7];
  const [usrSec, usrNsec] = mtimeOf('/usr').split('.');
  const out: string[] = [];
  for (const l of lines) {
    const f = l.split(' ');
    if (/^\/(boot|sysroot)\//.test(f[0])) continue;
    if (f[0] === '/boot' || f[0] === '/sysroot') {
      f[3] = '2';
      f[7] = `${usrSec}.${nsec ? usrNsec : f[7].split('.')[1]}`;
    }
    out.push(f.join(' '));
  }
  return out.join('\n') + '\n';
}

test('#396 rule against an independent model of the V1 writer', (t) => {
  const model = path.join(SHARED, 'spec/tools/model_v0v1.py');
  const why = !existsSync(model) ? `${model} not present` : !have('python3') ? 'python3 is missing' : !have('fsverity') ? 'fsverity is missing (apt-get install fsverity)' : '';
  if (why) {
    // ../shared is beside the project only in the development setup (as in vectors-copy.test)
    if (IN_CI && existsSync(model)) assert.fail(why);
    t.skip(why);
    return;
  }
  const { dir, cleanup } = tempDir('cfs-nsec-');
  try {
    const root = makeTree(dir);
    const raw = runCfs(['create-dumpfile', root]);
    assert.equal(raw.status, 0, raw.stderr);
    const rawText = raw.stdout.toString();
    const [, usrNsec] = rawText.split('\n').find((l) => l.startsWith('/usr '))!.split(' ')[7].split('.');
    assert.notEqual(usrNsec, '0', 'the tree has sub-second mtimes to tell the rules apart');
    const ids: string[] = [];
    for (const nsec of [false, true]) {
      const dump = path.join(dir, `boot-${nsec}.dump`);
      const img = path.join(dir, `boot-${nsec}.img`);
      writeFileSync(dump, bootTransformText(rawText, nsec));
      execFileSync('python3', [model, dump, '1', img, '--full-digest'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const measured = execFileSync('fsverity', ['digest', '--hash-alg=sha512', '--compact', img], { encoding: 'utf8' }).trim();
      ids.push(measured);
    }
    assert.notEqual(ids[0], ids[1], 'the two rules give different images for this tree');
    const karg = (args: string[]) => {
      const r = runCfs([...args, 'compute-karg', root]);
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.toString().trim();
    };
    // v0.9.x: seconds only
    assert.equal(karg(['--profile', 'cfsctl-0.9']), `composefs.digest=v1-sha512-12:${ids[0]}`);
    assert.equal(karg(['--profile', 'bootc-1.16.4']), `composefs=${ids[0]}`);
    // main after #396: nanoseconds too
    assert.equal(karg(['--profile', 'composefs-rs-main']), `composefs.digest=v1-sha512-12:${ids[1]}`);
  } finally {
    cleanup();
  }
});

test('identify finds a digest made with the #396 rule and says so', () => {
  const { dir, cleanup } = tempDir('cfs-nsec-');
  try {
    const root = makeTree(dir);
    const k = runCfs(['--profile', 'composefs-rs-main', 'compute-karg', root]).stdout.toString().trim();
    const r = runCfs(['identify', k, root]);
    assert.equal(r.status, 0, r.stdout.toString() + r.stderr);
    assert.match(r.stdout.toString(), /^match: --erofs-version 1 --hash sha512 --bootable \(boot dirs take \/usr's mtime nanoseconds: composefs-rs #396/m);
    const old = runCfs(['identify', runCfs(['compute-karg', root]).stdout.toString().trim(), root]);
    assert.equal(old.status, 0);
    assert.doesNotMatch(old.stdout.toString(), /#396/);
  } finally {
    cleanup();
  }
});
