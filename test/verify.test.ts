/**
 * `cfs verify`: the kargs of the UKIs in an image against the image's own bootable digest, in
 * every spelling, with the failures a user meets (changed image, wrong or missing karg), UKI
 * addons, /usr/lib/modules UKIs, single UKI files, and sealing labels/annotations of OCI images.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildPe, cannotMakeUki, makeUki } from './pe-builder.js';
import { TarBuilder } from './tar-builder.js';
import { IN_CI, runCfs, tempDir } from './helpers.js';

function cfs(args: string[]): string {
  const r = runCfs(args);
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout.toString().trim();
}

function verify(args: string[]): { status: number; out: string; err: string; json?: any } {
  const r = runCfs(['verify', ...args]);
  const out = r.stdout.toString();
  return { status: r.status, out, err: r.stderr, json: args.includes('--json') && r.status !== 2 ? JSON.parse(out) : undefined };
}

function makeRoot(dir: string): string {
  const root = path.join(dir, 'root');
  for (const d of ['usr/bin', 'usr/lib/modules/6.1.0-test', 'boot/EFI/Linux', 'sysroot', 'etc']) mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(path.join(root, 'usr/bin/tool'), 'x'.repeat(500));
  writeFileSync(path.join(root, 'etc/hostname'), 'sealed\n');
  return root;
}

/** A UKI (PE with .osrel, .cmdline, .linux, .initrd) built in-process. */
function uki(cmdline: string | undefined): Buffer {
  return buildPe({
    sections: [
      { name: '.osrel', data: 'ID=test\n' },
      ...(cmdline === undefined ? [] : [{ name: '.cmdline', data: `${cmdline}\n` }]),
      { name: '.linux', data: 'kernel' },
      { name: '.initrd', data: 'initrd' },
    ],
  });
}

test('a UKI carrying the image digest in each release spelling verifies; the report names the profiles', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    const cases: [string, string[]][] = [
      [cfs(['compute-karg', root]), ['bootc-1.17.0', 'cfsctl-0.9']],
      [cfs(['--profile', 'bootc', 'compute-karg', root]), ['bootc-1.16.4']],
      [cfs(['--profile', 'bootc-1.13', 'compute-karg', root]), ['bootc-1.17.0']],
      [cfs(['--hash', 'sha256', 'compute-karg', root]), []],
    ];
    for (const [karg, profiles] of cases) {
      writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi'), uki(`rw quiet ${karg}`));
      const v = verify(['--json', root]);
      assert.equal(v.status, 0, `${karg}: ${v.out}${v.err}`);
      const [f] = v.json.files;
      assert.equal(f.path, '/boot/EFI/Linux/sealed.efi');
      assert.equal(f.kargs.length, 1);
      assert.equal(f.kargs[0].status, 'match');
      for (const p of profiles) assert.ok(f.kargs[0].matched.profiles.includes(p), `${karg}: ${f.kargs[0].matched.profiles}`);
      assert.equal(v.json.ok, true);
    }
    // bootc after #2248: both kargs on one line, both checked
    writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi'), uki(`rw ${cfs(['--profile', 'bootc-1.17.0', 'compute-karg', root])}`));
    const v = verify(['--json', root]);
    assert.equal(v.status, 0, v.out);
    assert.deepEqual(v.json.files[0].kargs.map((k: any) => [k.key, k.status, k.matched.erofsVersion]), [
      ['composefs.digest', 'match', 1],
      ['composefs', 'match', 2],
    ]);
    assert.match(verify([root]).out, /OK: every composefs karg and sealing label matches this image/);
    // names are bytes: a UTF-8 name is read from disk and shown as such
    writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi'), uki('rw'));
    writeFileSync(Buffer.from(path.join(root, 'boot/EFI/Linux/scellé.efi')), uki(cfs(['compute-karg', root])));
    const u = verify(['--json', root]);
    assert.deepEqual(u.json.files.map((f: any) => [f.path, f.kargs.length]), [
      ['/boot/EFI/Linux/scellé.efi', 1],
      ['/boot/EFI/Linux/sealed.efi', 0],
    ]);
  } finally {
    cleanup();
  }
});

test('a later change under /usr: mismatch, both values, pointer to cfs compare (exit 1)', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    const karg = cfs(['compute-karg', root]);
    writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi'), uki(`rw ${karg}`));
    writeFileSync(path.join(root, 'usr/bin/added-later'), 'changed after sealing\n');
    const now = cfs(['compute-id', '--bootable', root]);
    const v = verify([root]);
    assert.equal(v.status, 1, v.out + v.err);
    assert.match(v.out, /MISMATCH composefs\.digest=v1-sha512-12:/);
    assert.ok(v.out.includes(`karg:     ${karg.split(':')[1]}`), v.out);
    assert.ok(v.out.includes(`computed: ${now}`), v.out);
    assert.match(v.out, /FAILED: 1 problem\(s\)\n  - \/boot\/EFI\/Linux\/sealed\.efi: 'composefs\.digest=' digest does not match this image/);
    assert.match(v.out, /hint: .*`cfs compare BUILD-TIME-TREE SOURCE`/);
  } finally {
    cleanup();
  }
});

test('a UKI without a composefs karg, with a malformed one, or without .cmdline fails clearly (exit 1)', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    const efi = path.join(root, 'boot/EFI/Linux/sealed.efi');
    writeFileSync(efi, uki('rw quiet'));
    let v = verify([root]);
    assert.equal(v.status, 1);
    assert.match(v.out, /sealed\.efi: no composefs= or composefs\.digest= karg on its \.cmdline: it does not seal any image/);
    writeFileSync(efi, uki('rw composefs=deadbeef'));
    v = verify([root]);
    assert.equal(v.status, 1);
    assert.match(v.out, /INVALID  composefs=deadbeef: 'composefs=deadbeef': the value is not 64 or 128 hex digits/);
    assert.match(v.out, /unusable composefs karg/);
    writeFileSync(efi, uki(undefined));
    v = verify([root]);
    assert.equal(v.status, 1);
    assert.match(v.out, /no \.cmdline section/);
    // a wrong digest (of another tree)
    writeFileSync(efi, uki(`composefs=${'0'.repeat(128)}`));
    v = verify(['--json', root]);
    assert.equal(v.status, 1);
    assert.equal(v.json.files[0].kargs[0].status, 'mismatch');
    assert.ok(v.json.files[0].kargs[0].tried > 1, 'every combination was tried');
  } finally {
    cleanup();
  }
});

test('addons, /usr/lib/modules UKIs, the insecure marker, and an image without UKIs', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    // A UKI in /usr is part of the image: it cannot carry the digest itself; an addon in /boot can.
    writeFileSync(path.join(root, 'usr/lib/modules/6.1.0-test/6.1.0-test.efi'), uki('rw'));
    // /boot's own entries first: up to composefs-rs 0.9.2 /boot keeps its mtime nanoseconds
    mkdirSync(path.join(root, 'boot/loader/addons'), { recursive: true });
    const karg = cfs(['compute-karg', '--insecure', root]);
    writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi'), uki('rw'));
    mkdirSync(path.join(root, 'boot/EFI/Linux/sealed.efi.extra.d'));
    writeFileSync(path.join(root, 'boot/EFI/Linux/sealed.efi.extra.d/cfs.addon.efi'), buildPe({ sections: [{ name: '.cmdline', data: karg }] }));
    writeFileSync(path.join(root, 'boot/loader/addons/global.addon.efi'), buildPe({ sections: [{ name: '.cmdline', data: `console=ttyS0 ${karg}` }] }));
    let v = verify(['--json', root]);
    assert.equal(v.status, 0, v.out);
    assert.deepEqual(
      v.json.files.map((f: any) => [f.path, f.kind, f.kargs.map((k: any) => k.status)]),
      [
        ['/boot/EFI/Linux/sealed.efi', 'uki', []],
        ['/boot/EFI/Linux/sealed.efi.extra.d/cfs.addon.efi', 'addon', ['match']],
        ['/boot/loader/addons/global.addon.efi', 'global-addon', ['match']],
        ['/usr/lib/modules/6.1.0-test/6.1.0-test.efi', 'uki', []],
      ],
    );
    assert.deepEqual(v.json.files[0].addons, ['/boot/EFI/Linux/sealed.efi.extra.d/cfs.addon.efi', '/boot/loader/addons/global.addon.efi']);
    assert.deepEqual(v.json.files[3].addons, ['/boot/loader/addons/global.addon.efi']);
    assert.ok(v.json.notes.some((n: string) => /'\?' marker/.test(n)));
    // without the global addon, the /usr UKI seals nothing
    writeFileSync(path.join(root, 'boot/loader/addons/global.addon.efi'), buildPe({ sections: [{ name: '.cmdline', data: 'console=ttyS0' }] }));
    v = verify([root]);
    assert.equal(v.status, 1);
    assert.match(v.out, /6\.1\.0-test\.efi: no composefs= or composefs\.digest= karg/);
    // an image without UKIs seals nothing
    const bare = path.join(dir, 'bare');
    for (const d of ['usr', 'boot', 'sysroot']) mkdirSync(path.join(bare, d), { recursive: true });
    v = verify([bare]);
    assert.equal(v.status, 1);
    assert.match(v.out, /no UKI in \/boot\/EFI\/Linux\/, \/boot\/loader\/addons\/, \/usr\/lib\/modules\/\*\/: nothing seals this image/);
  } finally {
    cleanup();
  }
});

test('a single UKI file: its kargs alone, or against an image SOURCE', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    const karg = cfs(['--profile', 'bootc', 'compute-karg', root]);
    const f = path.join(dir, 'sealed.efi');
    writeFileSync(f, uki(`rw ${karg}`));
    let v = verify([f]);
    assert.equal(v.status, 0, v.out);
    assert.match(v.out, new RegExp(`cmdline: rw ${karg}`));
    v = verify(['--json', f, root]);
    assert.equal(v.status, 0, v.out);
    assert.ok(v.json.files[0].kargs[0].matched.profiles.includes('bootc-1.16.4'));
    writeFileSync(path.join(root, 'usr/bin/tool'), 'changed');
    assert.equal(verify([f, root]).status, 1);
    writeFileSync(f, uki('rw'));
    assert.equal(verify([f]).status, 1);
    const bad = runCfs(['verify', root, root]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /is not a UKI file: a second argument only goes with a UKI file/);
    const missing = runCfs(['verify', path.join(dir, 'nope')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope/);
  } finally {
    cleanup();
  }
});

test('a real objcopy-built UKI in a directory tree verifies', (t) => {
  const why = cannotMakeUki();
  if (why) {
    if (IN_CI) assert.fail(why);
    t.skip(why);
    return;
  }
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const root = makeRoot(dir);
    makeUki(path.join(root, 'boot/EFI/Linux/real.efi'), `rw ${cfs(['compute-karg', root])}`, dir);
    const v = verify([root]);
    assert.equal(v.status, 0, v.out);
  } finally {
    cleanup();
  }
});

// -------------------------------------------------------------------------------------------
// OCI images: the UKI in a later layer; the digest as annotation and label

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function writeLayout(dir: string, layers: Buffer[], annotations: Record<string, string>, labels: Record<string, string>): void {
  mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
  const put = (b: Buffer) => {
    writeFileSync(path.join(dir, 'blobs/sha256', sha256(b)), b);
    return `sha256:${sha256(b)}`;
  };
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Labels: labels }, rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha256(l)}`) } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: put(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: put(l), size: l.length })),
      annotations,
    }),
  );
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: put(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'sealed' } }] }),
  );
}

test('OCI: the UKI from a later layer, and the sealing annotation/label checked by key', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const t0 = { mtime: 1700000000 };
    const base = new TarBuilder()
      .dir('usr/', t0)
      .dir('usr/bin/', t0)
      .file('usr/bin/tool', 'x'.repeat(300), t0)
      .dir('boot/', t0)
      .dir('sysroot/', t0)
      .dir('etc/', t0)
      .build();
    const baseTar = path.join(dir, 'base.tar');
    writeFileSync(baseTar, base);
    const karg = cfs(['compute-karg', `layers:${baseTar}`]);
    const id = karg.split(':')[1];
    const v2 = cfs(['--erofs-version', '2', 'compute-id', '--bootable', `layers:${baseTar}`]);
    const top = new TarBuilder()
      .dir('boot/', { mtime: 1700000500 })
      .dir('boot/EFI/', { mtime: 1700000500 })
      .dir('boot/EFI/Linux/', { mtime: 1700000500 })
      .file('boot/EFI/Linux/sealed.efi', uki(`rw ${karg}`), { mtime: 1700000500 })
      .build();
    const layout = path.join(dir, 'oci');
    const annKey = cfs(['compute-id', '--bootable', '--annotation', `layers:${baseTar}`]).split('=')[0];
    assert.equal(annKey, 'composefs.merged.bootable.erofs.v1.fsverity-sha512-12');
    writeLayout(
      layout,
      [base, top],
      { [annKey]: id, 'org.example.other': 'x' },
      { 'composefs.merged.bootable.erofs.v2.fsverity-sha512-12': v2, 'composefs.merged.erofs.v1.fsverity-sha512-12': '1'.repeat(128) },
    );
    const v = verify(['--json', `oci:${layout}:sealed`]);
    assert.equal(v.status, 1, v.out);
    assert.equal(v.json.files[0].kargs[0].status, 'match');
    assert.deepEqual(
      v.json.labels.map((l: any) => [l.where, l.key, l.status]),
      [
        ['annotation', 'composefs.merged.bootable.erofs.v1.fsverity-sha512-12', 'match'],
        ['label', 'composefs.merged.bootable.erofs.v2.fsverity-sha512-12', 'match'],
        ['label', 'composefs.merged.erofs.v1.fsverity-sha512-12', 'mismatch'],
      ],
    );
    const text = verify([`oci:${layout}:sealed`]).out;
    assert.match(text, /ok       annotation composefs\.merged\.bootable\.erofs\.v1\.fsverity-sha512-12/);
    assert.match(text, /MISMATCH label composefs\.merged\.erofs\.v1\.fsverity-sha512-12/);
    assert.match(text, /- label composefs\.merged\.erofs\.v1\.fsverity-sha512-12 does not match this image/);
    // the non-bootable digest is what that label should have carried
    const plain = cfs(['compute-id', `oci:${layout}:sealed`]);
    assert.ok(text.includes(`computed: ${plain}`), text);
  } finally {
    cleanup();
  }
});

test('OCI: a UKI larger than 64 MiB is read from its kept start; a .cmdline beyond it is reported', () => {
  const { dir, cleanup } = tempDir('cfs-verify-');
  try {
    const t0 = { mtime: 1700000000 };
    const base = new TarBuilder().dir('usr/', t0).file('usr/tool', 'x'.repeat(100), t0).dir('boot/', t0).dir('sysroot/', t0).build();
    const baseTar = path.join(dir, 'base.tar');
    writeFileSync(baseTar, base);
    const karg = cfs(['compute-karg', `layers:${baseTar}`]);
    const kernel = Buffer.alloc(70 << 20, 0x90);
    const layer = (sections: { name: string; data: Buffer | string }[]) => {
      const f = path.join(dir, `top-${sections.map((s) => s.name).join('')}.tar`);
      writeFileSync(f, new TarBuilder().dir('boot/EFI/', t0).dir('boot/EFI/Linux/', t0).file('boot/EFI/Linux/big.efi', buildPe({ sections }), t0).build());
      return f;
    };
    const good = layer([{ name: '.osrel', data: 'ID=x' }, { name: '.cmdline', data: karg }, { name: '.linux', data: kernel }]);
    let v = verify([`layers:${baseTar},${good}`]);
    assert.equal(v.status, 0, v.out + v.err);
    const late = layer([{ name: '.osrel', data: 'ID=x' }, { name: '.linux', data: kernel }, { name: '.cmdline', data: karg }]);
    v = verify([`layers:${baseTar},${late}`]);
    assert.equal(v.status, 2, v.out);
    assert.match(v.err, /^cfs: \/boot\/EFI\/Linux\/big\.efi: offset 0x[0-9a-f]+: \d+ bytes here lie beyond the first 16777216 bytes of the file kept from its layer\n$/);
  } finally {
    cleanup();
  }
});
