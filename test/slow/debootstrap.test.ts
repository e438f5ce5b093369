/**
 * A real root filesystem: `debootstrap --variant=minbase bookworm` (about a minute, from
 * Debian's mirror). The tree goes through compute-id and create-image, the kernel mount of the
 * image must equal the transformed source, and the single-executable `dist/cfs` must run inside
 * a chroot of that root filesystem (no Node there) and print the same id as `dist/cfs.mjs`.
 *
 * Set CFS_DEBOOTSTRAP_DIR to an existing debootstrap tree to skip the download.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { IN_CI, ROOT, have, runCfs } from '../helpers.js';
import { expectedView, hardlinkGroups, mountComposefs, readMountedTree, requireMount, withoutIno } from '../mount-helpers.js';

let rootfs = '';
let owned = false;
let why = '';

before(() => {
  if (process.getuid?.() !== 0) why = 'needs root (debootstrap, chroot, mount)';
  else if (!have('debootstrap')) why = 'debootstrap not installed (apt-get install debootstrap)';
  if (why) return;
  const given = process.env.CFS_DEBOOTSTRAP_DIR;
  if (given && existsSync(path.join(given, 'usr/bin'))) {
    rootfs = given;
    return;
  }
  rootfs = mkdtempSync(path.join('/var/tmp', 'cfs-debootstrap-'));
  owned = true;
  const r = spawnSync('debootstrap', ['--variant=minbase', 'bookworm', rootfs, 'http://deb.debian.org/debian'], { encoding: 'utf8' });
  if (r.status !== 0) why = `debootstrap failed: ${(r.stdout + r.stderr).split('\n').slice(-5).join(' | ')}`;
});

after(() => {
  if (owned && rootfs) rmSync(rootfs, { recursive: true, force: true });
});

function proceed(t: { skip: (m: string) => void }): boolean {
  if (!why) return true;
  if (IN_CI) throw new Error(`debootstrap test cannot run under CI: ${why}`);
  t.skip(why);
  return false;
}

test('debootstrap root: image mounted by the kernel equals the transformed source (V1, sha512)', { timeout: 600_000 }, (t) => {
  if (!proceed(t) || !requireMount(t)) return;
  const work = mkdtempSync(path.join(tmpdir(), 'cfs-deb-'));
  let unmount: (() => void) | undefined;
  try {
    const source = readMountedTree(rootfs);
    const image = path.join(work, 'image.cfs');
    const repo = path.join(work, 'repo');
    const r = runCfs(['create-image', '--repo', repo, rootfs, '-o', image]);
    assert.equal(r.status, 0, r.stderr);
    const id = runCfs(['compute-id', rootfs]);
    assert.equal(r.stdout.toString(), `sha512:${id.stdout.toString()}`);
    const m = mountComposefs(image, path.join(repo, 'objects'), work);
    unmount = m.unmount;
    const seen = readMountedTree(m.root);
    const want = expectedView(source, 1);
    assert.deepEqual([...seen.keys()].sort(), [...want.keys()].sort());
    for (const [p, w] of want) assert.deepEqual(withoutIno(seen.get(p)!), withoutIno(w), `path ${JSON.stringify(p)}`);
    assert.deepEqual(hardlinkGroups(seen), hardlinkGroups(want));
    assert.ok(source.size > 3000, `a real root filesystem (${source.size} paths)`);
  } finally {
    unmount?.();
    rmSync(work, { recursive: true, force: true });
  }
});

test('dist/cfs runs in a chroot without Node and prints the same id as dist/cfs.mjs', { timeout: 600_000 }, (t) => {
  if (!proceed(t)) return;
  const sea = path.join(ROOT, 'dist/cfs');
  assert.ok(existsSync(sea), 'dist/cfs is built by npm run build');
  assert.ok(!existsSync(path.join(rootfs, 'usr/bin/node')), 'no node in the chroot');
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  // Outside first, before anything is mounted into the tree.
  const outside = execFileSync(process.execPath, [path.join(ROOT, 'dist/cfs.mjs'), 'compute-id', rootfs], { env }).toString();
  // Inside: the binary lives on a private tmpfs at /tmp, the tree is a (non-recursive, read-only)
  // bind mount of the same root at /mnt, so neither the binary nor its extracted cache is scanned.
  const tmp = path.join(rootfs, 'tmp');
  const mnt = path.join(rootfs, 'mnt');
  execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', tmp]);
  try {
    execFileSync('mount', ['--bind', '-o', 'ro', rootfs, mnt]);
    try {
      copyFileSync(sea, path.join(tmp, 'cfs'));
      const inside = execFileSync('chroot', [rootfs, '/tmp/cfs', 'compute-id', '/mnt'], { env }).toString();
      assert.equal(inside, outside);
      const karg = execFileSync('chroot', [rootfs, '/tmp/cfs', '--erofs-version', '2', 'compute-id', '/mnt'], { env }).toString();
      assert.match(karg, /^[0-9a-f]{128}\n$/);
    } finally {
      execFileSync('umount', [mnt]);
    }
  } finally {
    execFileSync('umount', [tmp]);
  }
  assert.match(readFileSync(path.join(rootfs, 'etc/os-release'), 'utf8'), /bookworm/);
});
