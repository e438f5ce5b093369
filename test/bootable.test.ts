/** --bootable with a policy in the tree, from a directory and from layer tarballs: same labels, same id. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDumpfile } from '../src/dumpfile/parse.js';
import { lookup } from '../src/tree/tree.js';
import { runCfs, tempDir } from './helpers.js';

const CONFIG = `# This file controls the state of SELinux on the system (long enough to be external).
SELINUX=enforcing
SELINUXTYPE=mini
`;
const FILE_CONTEXTS = `# a tiny policy: later lines win
/.*\t\tsystem_u:object_r:default_t:s0
/usr(/.*)?\t\tsystem_u:object_r:usr_t:s0
/usr/bin/.*\t--\tsystem_u:object_r:bin_t:s0
/etc(/.*)?\t\tsystem_u:object_r:etc_t:s0
/etc/secret\t--\t<<none>>
/boot\t-d\tsystem_u:object_r:boot_t:s0
`;

function policyTree(root: string): void {
  for (const d of ['usr/bin', 'boot', 'sysroot', 'etc/selinux/mini/contexts/files']) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'etc/selinux/config'), CONFIG);
  writeFileSync(path.join(root, 'etc/selinux/mini/contexts/files/file_contexts'), FILE_CONTEXTS);
  writeFileSync(path.join(root, 'usr/bin/tool'), Buffer.alloc(3000, 1));
  writeFileSync(path.join(root, 'usr/readme'), 'r');
  writeFileSync(path.join(root, 'etc/secret'), 's');
  writeFileSync(path.join(root, 'boot/vmlinuz'), Buffer.alloc(100, 2));
  // whole-second mtimes, as a tar carries them (V0/V1 store nanoseconds)
  execFileSync('find', [root, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
}

test('bootable relabelling reads the policy from a directory and from layer tarballs alike', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    policyTree(root);
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', tar, '.']);
    const d = runCfs(['create-dumpfile', '--bootable', root]);
    assert.equal(d.status, 0, d.stderr);
    const { fs } = parseDumpfile(d.stdout);
    const label = (p: string) => lookup(fs, Buffer.from(p))?.stat.xattrs.get('security.selinux')?.toString();
    assert.equal(label('/usr/bin/tool'), 'system_u:object_r:bin_t:s0');
    assert.equal(label('/usr/bin'), 'system_u:object_r:usr_t:s0');
    assert.equal(label('/usr/readme'), 'system_u:object_r:usr_t:s0');
    assert.equal(label('/etc/secret'), undefined, '<<none>> removes the label');
    assert.equal(label('/boot'), 'system_u:object_r:boot_t:s0');
    assert.equal(label('/sysroot'), 'system_u:object_r:default_t:s0');
    assert.equal(lookup(fs, Buffer.from('/boot/vmlinuz')), undefined, '/boot emptied');
    for (const v of ['1', '2']) {
      const a = runCfs(['--erofs-version', v, 'compute-id', '--bootable', root]);
      const b = runCfs(['--erofs-version', v, 'compute-id', '--bootable', `layers:${tar}`]);
      assert.equal(b.status, 0, b.stderr);
      assert.equal(a.stdout.toString(), b.stdout.toString(), `V${v}: directory and tarball give the same bootable id`);
    }
    assert.equal(runCfs(['compute-karg', root]).stdout.toString(), runCfs(['compute-karg', `layers:${tar}`]).stdout.toString());
  } finally {
    cleanup();
  }
});

test('a broken policy is a clear error', () => {
  const { dir, cleanup } = tempDir();
  try {
    policyTree(dir);
    writeFileSync(path.join(dir, 'etc/selinux/mini/contexts/files/file_contexts'), '/usr(/.*\tsystem_u:object_r:usr_t:s0\n');
    const r = runCfs(['compute-id', '--bootable', dir]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /file_contexts/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    cleanup();
  }
});

test('identify and verify relabel copies of a layer tree: the policy is found by path', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    policyTree(root);
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', tar, '.']);
    const karg = runCfs(['compute-karg', `layers:${tar}`]).stdout.toString().trim();
    const r = runCfs(['identify', karg, `layers:${tar}`]);
    assert.equal(r.status, 0, r.stdout.toString() + r.stderr);
    assert.match(r.stdout.toString(), /^match: --erofs-version 1 --hash sha512 --bootable --xattrs allowlist-only$/m);
    // the same tree with a UKI carrying that karg in a second layer
    const pe = Buffer.alloc(1024);
    pe.write('MZ', 0, 'latin1');
    pe.writeUInt32LE(0x40, 0x3c);
    pe.write('PE\0\0', 0x40, 'latin1');
    pe.writeUInt16LE(1, 0x46);
    const cmd = Buffer.from(karg);
    pe.write('.cmdline', 0x58, 'latin1');
    pe.writeUInt32LE(cmd.length, 0x58 + 8);
    pe.writeUInt32LE(cmd.length, 0x58 + 16);
    pe.writeUInt32LE(0x200, 0x58 + 20);
    cmd.copy(pe, 0x200);
    const top = path.join(dir, 'top');
    mkdirSync(path.join(top, 'boot/EFI/Linux'), { recursive: true });
    writeFileSync(path.join(top, 'boot/EFI/Linux/x.efi'), pe);
    const tar2 = path.join(dir, 'top.tar');
    execFileSync('tar', ['--numeric-owner', '-C', top, '-cf', tar2, 'boot/EFI']);
    const v = runCfs(['verify', `layers:${tar},${tar2}`]);
    assert.equal(v.status, 0, v.stdout.toString() + v.stderr);
  } finally {
    cleanup();
  }
});
