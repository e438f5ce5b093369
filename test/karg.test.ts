/**
 * Kernel arguments: what each profile's `compute-karg` prints (each release's spelling, from its
 * own code: see src/cli/profiles.ts), `--all-forms`, and reading every spelling back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseComposefsKargs, splitCmdline } from '../src/verify/karg.js';
import { PROFILES, findProfile } from '../src/profiles.js';
import { runCfs, tempDir } from './helpers.js';

const H512 = 'ab'.repeat(64);
const H256 = 'cd'.repeat(32);

test('splitCmdline: whitespace splits, double quotes protect (composefs-boot split_cmdline)', () => {
  assert.deepEqual(splitCmdline('  a b\t"c d" e="f g"h  '), ['a', 'b', '"c d"', 'e="f g"h']);
});

test('every composefs karg spelling is read back', () => {
  const ks = parseComposefsKargs(
    `root=x composefs=${H512} composefs=?${H256} composefs.digest=v1-sha512-12:${H512.toUpperCase()} composefs.digest=?v2-sha256-12:${H256} composefs.foo=1 xcomposefs=${H512}`,
  );
  assert.deepEqual(
    ks.map((k) => [k.key, k.insecure, k.hash, k.erofsVersion, k.hex, k.error]),
    [
      ['composefs', false, 'sha512', undefined, H512, undefined],
      ['composefs', true, 'sha256', undefined, H256, undefined],
      ['composefs.digest', false, 'sha512', 1, H512, undefined],
      ['composefs.digest', true, 'sha256', 2, H256, undefined],
    ],
  );
});

test('malformed composefs kargs are reported, not guessed', () => {
  const bad = [
    ['composefs=abc', /not 64 or 128 hex digits/],
    [`composefs=${H512}0`, /not 64 or 128 hex digits/],
    [`composefs=${'g'.repeat(64)}`, /not 64 or 128 hex digits/],
    [`composefs.digest=${H512}`, /expected composefs\.digest=\[\?\]vN-ALG-12:HEX/],
    [`composefs.digest=v3-sha512-12:${H512}`, /unsupported format version 'v3'/],
    [`composefs.digest=v1-sha1-12:${H512}`, /unsupported hash 'sha1'/],
    [`composefs.digest=v1-sha512-16:${H512}`, /unsupported block size 2\^16/],
    [`composefs.digest=v1-sha512-12:${H256}`, /not 128 hex digits/],
    ['composefs=', /not 64 or 128 hex digits/],
  ] as const;
  for (const [token, re] of bad) {
    const [k] = parseComposefsKargs(`quiet ${token}`);
    assert.ok(k, token);
    assert.equal(k.hex, undefined, token);
    assert.match(k.error ?? '', re, token);
  }
});

/** A tiny bootable tree: /usr, /boot (with content), /sysroot. */
function tree(dir: string): string {
  const root = path.join(dir, 'root');
  for (const d of ['usr/bin', 'boot/EFI/Linux', 'sysroot', 'etc']) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'usr/bin/tool'), 'x'.repeat(200));
  writeFileSync(path.join(root, 'etc/os-release'), 'ID=test\n');
  writeFileSync(path.join(root, 'boot/EFI/Linux/old.efi'), 'not part of the digest');
  return root;
}

function cfs(args: string[]): string {
  const r = runCfs(args);
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString().trim();
}

test("each profile's compute-karg prints what that release writes", () => {
  const { dir, cleanup } = tempDir('cfs-karg-');
  try {
    const root = tree(dir);
    const v1 = cfs(['--erofs-version', '1', 'compute-id', '--bootable', root]);
    const v2 = cfs(['--erofs-version', '2', 'compute-id', '--bootable', root]);
    assert.notEqual(v1, v2);
    // bootc 1.16.4..1.16.9: ComposefsCmdline Display, `composefs=` with the V1 digest
    assert.equal(cfs(['--profile', 'bootc', 'compute-karg', root]), `composefs=${v1}`);
    assert.equal(cfs(['--profile', 'bootc-1.16.4', 'compute-karg', '--insecure', root]), `composefs=?${v1}`);
    // bootc up to 1.16.3: V2 under the same key
    assert.equal(cfs(['--profile', 'bootc-1.13', 'compute-karg', root]), `composefs=${v2}`);
    // bootc after #2248: composefs_kargs_for_uki, V1 then the V2 compatibility karg
    assert.equal(cfs(['--profile', 'bootc-1.17.0', 'compute-karg', root]), `composefs.digest=v1-sha512-12:${v1} composefs=${v2}`);
    assert.equal(cfs(['--profile', 'bootc-1.17.0', 'compute-karg', '--insecure', root]), `composefs.digest=?v1-sha512-12:${v1} composefs=?${v2}`);
    // `bootc container ukify --erofs-version v2`: the V2 karg alone
    assert.equal(cfs(['--profile', 'bootc-1.17.0', '--erofs-version', '2', 'compute-karg', root]), `composefs=${v2}`);
    // cfsctl 0.9 compute-karg (and the default)
    assert.equal(cfs(['--profile', 'cfsctl-0.9', 'compute-karg', root]), `composefs.digest=v1-sha512-12:${v1}`);
    assert.equal(cfs(['compute-karg', root]), `composefs.digest=v1-sha512-12:${v1}`);
    assert.equal(cfs(['--erofs-version', '0', 'compute-karg', root]), `composefs.digest=v1-sha512-12:${cfs(['--erofs-version', '0', 'compute-id', '--bootable', root])}`);
    const j = JSON.parse(cfs(['--profile', 'bootc-1.17.0', 'compute-karg', '--json', root]));
    assert.equal(j.profile, 'bootc-1.17.0');
    assert.equal(j.karg, `composefs.digest=v1-sha512-12:${v1} composefs=${v2}`);
  } finally {
    cleanup();
  }
});

test('compute-karg --all-forms: V1 and V2, both hashes, every spelling', () => {
  const { dir, cleanup } = tempDir('cfs-karg-');
  try {
    const root = tree(dir);
    const id = (v: string, h: string) => cfs(['--erofs-version', v, '--hash', h, 'compute-id', '--bootable', root]);
    const lines = cfs(['compute-karg', '--all-forms', root]).split('\n').map((l) => l.split('\t')[0]);
    const want: string[] = [];
    for (const h of ['sha256', 'sha512']) {
      want.push(`composefs.digest=v1-${h}-12:${id('1', h)}`, `composefs=${id('1', h)}`, `composefs=${id('2', h)}`, `composefs.digest=v2-${h}-12:${id('2', h)}`);
    }
    assert.deepEqual(lines, want);
    const j = JSON.parse(cfs(['compute-karg', '--all-forms', '--insecure', '--json', root]));
    assert.equal(j.forms.length, 8);
    for (const f of j.forms) {
      assert.ok(f.karg.startsWith('composefs=?') || f.karg.startsWith('composefs.digest=?v'), f.karg);
      assert.equal(parseComposefsKargs(f.karg)[0].hash, f.hash);
      assert.ok(f.note.length > 10);
    }
  } finally {
    cleanup();
  }
});

test('profiles: the newest of each kind is marked; bootc is the newest release whose tag was read', () => {
  assert.deepEqual(PROFILES.filter((p) => p.newest).map((p) => p.name), ['composefs-rs-main', 'bootc-1.17.0']);
  assert.equal(findProfile('bootc')?.name, 'bootc-1.16.4');
  for (const p of PROFILES) assert.ok(p.checked.length > 20, `${p.name} says what it was checked against`);
  const help = runCfs(['--help']).stdout.toString();
  assert.match(help, /composefs-rs-main\s+\[newest\]/);
  assert.match(help, /bootc-1\.17\.0\s+\[newest\]/);
});
