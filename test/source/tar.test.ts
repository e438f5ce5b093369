/**
 * OCI layer tarballs -> tree (the tar reader and tar member -> tree entry), checked against
 * composefs-rs v0.9.0 rules (process_entry, get_entry, tar-core). Tars are built byte by byte by
 * test/tar-builder.ts; trees are compared as dumpfiles.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { fsverityDigest } from '../../src/fsverity/fsverity.js';
import { applyLayer, makeAbsolutePath, makedev, newOciFileSystem } from '../../src/source/tar/members.js';
import { objectService } from '../../src/objects/service.js';
import { paxMtimeNsec } from '../../src/source/tar/reader.js';
import { transformForOci } from '../../src/transform/transform.js';
import { header, paxRecord, TarBuilder } from '../tar-builder.js';
import { base, build, dump, rejectsWith } from './layers.js';

/** Lines of a dumpfile without the root line (which is mode 0 before the transform). */
function body(d: string): string[] {
  return d.split('\n').filter((l) => l !== '' && !l.startsWith('/ '));
}


// ---------------------------------------------------------------------------------------------

test('basic member types, inline vs external, raw stat fields', async () => {
  const big = Buffer.alloc(5000, 7);
  const t = base()
    .file('etc/small', 'x'.repeat(64), { uid: 1000, gid: 100, mtime: 1700000000, mode: 0o600 })
    .file('etc/big', big, { mode: 0o4755 })
    .symlink('usr/bin/sh', 'busybox')
    .entry('etc/fifo', '', { type: '6', mode: 0o644 })
    .entry('etc/null', '', { type: '3', mode: 0o666, devmajor: 1, devminor: 3 })
    .entry('etc/blk', '', { type: '4', mode: 0o660, devmajor: 8, devminor: 0x123 })
    .entry('etc/old', 'v7', { type: 0, format: 'v7', mode: 0o644 })
    .build();
  const d = await dump([t]);
  const id = fsverityDigest(big, 'sha256').toString('hex');
  assert.deepEqual(body(d), [
    '/etc 0 40755 2 0 0 0 0.0 - - -',
    `/etc/big 5000 104755 1 0 0 0 0.0 ${id.slice(0, 2)}/${id.slice(2)} - ${id}`,
    '/etc/blk 0 60660 1 0 0 1050659 0.0 - - -',
    '/etc/fifo 0 10644 1 0 0 0 0.0 - - -',
    '/etc/null 0 20666 1 0 0 259 0.0 - - -',
    '/etc/old 2 100644 1 0 0 0 0.0 - v7 -',
    `/etc/small 64 100600 1 1000 100 0 1700000000.0 - ${'x'.repeat(64)} -`,
    '/usr 0 40755 3 0 0 0 0.0 - - -',
    '/usr/bin 0 40755 2 0 0 0 0.0 - - -',
    '/usr/bin/sh 7 120777 1 0 0 0 0.0 busybox - -',
  ]);
  // Stat::uninitialized root.
  assert.ok(d.startsWith('/ 0 40000 4 0 0 0 0.0 - - -\n'));
  assert.equal(makedev(8, 0x123), 0x100823n);
  assert.equal(makedev(0x1234, 0x56789), 0x100056723489n);
  // chunking of the input never matters
  assert.equal(await dump([t], 1), d);
  assert.equal(await dump([t], 511), d);
});

test('mode field kept unmasked; uid/gid truncated; base-256 numbers', async () => {
  const b256 = (v: bigint, len: number): Buffer => {
    const out = Buffer.alloc(len);
    let x = BigInt.asUintN(len * 8, v);
    for (let i = len - 1; i >= 0; i--) {
      out[i] = Number(x & 0xffn);
      x >>= 8n;
    }
    out[0] |= 0x80;
    return out;
  };
  const t = base()
    .file('etc/a', 'a', { mode: 0o100644 })
    .file('etc/neg', 'n', { raw: [[136, b256(-1n, 12)]] })
    .file('etc/bigid', 'b', { raw: [[108, b256(0x1_0000_0005n, 8)]] })
    .build();
  const fs = await build([t]);
  const etc = fs.root.entries.get('etc');
  assert.ok(etc?.kind === 'dir');
  const a = etc.entries.get('a');
  assert.ok(a?.kind === 'leaf');
  assert.equal(a.stat.mode, 0o100644);
  const neg = etc.entries.get('neg');
  assert.ok(neg?.kind === 'leaf');
  assert.equal(neg.stat.mtimeSec, -1n);
  const bigid = etc.entries.get('bigid');
  assert.ok(bigid?.kind === 'leaf');
  assert.equal(bigid.stat.uid, 5);
});

test('whiteouts: file, directory, opaque (stream order), re-add in a later layer', async () => {
  const l1 = base()
    .dir('a/')
    .file('a/x', 'x')
    .file('a/y', 'y')
    .dir('a/sub/')
    .file('a/sub/z', 'z')
    .dir('b/')
    .file('b/keep', 'k')
    .file('b/gone', 'g')
    .dir('c/')
    .file('c/old', 'o')
    .build();
  // layer 2: file whiteout, directory whiteout, opaque after a same-layer sibling
  const l2 = new TarBuilder()
    .file('b/.wh.gone', '')
    .file('a/.wh.sub', '')
    .dir('c/')
    .file('c/new-before', 'n')
    .file('c/.wh..wh..opq', '')
    .file('c/new-after', 'n')
    .file('b/.wh.absent', '')
    .build();
  const l3 = new TarBuilder().file('b/gone', 'again').dir('a/sub/').build();
  const d2 = body(await dump([l1, l2]));
  assert.deepEqual(
    d2.filter((l) => /^\/[abc]/.test(l)),
    [
      '/a 0 40755 2 0 0 0 0.0 - - -',
      '/a/x 1 100644 1 0 0 0 0.0 - x -',
      '/a/y 1 100644 1 0 0 0 0.0 - y -',
      '/b 0 40755 2 0 0 0 0.0 - - -',
      '/b/keep 1 100644 1 0 0 0 0.0 - k -',
      '/c 0 40755 2 0 0 0 0.0 - - -',
      '/c/new-after 1 100644 1 0 0 0 0.0 - n -',
    ],
  );
  const d3 = body(await dump([l1, l2, l3]));
  assert.ok(d3.includes('/b/gone 5 100644 1 0 0 0 0.0 - again -'));
  assert.ok(d3.includes('/a/sub 0 40755 2 0 0 0 0.0 - - -'));
  assert.ok(!d3.some((l) => l.startsWith('/a/sub/z')));
  // .wh. marker in the same layer after the entry removes it too (stream order)
  const same = body(await dump([base().file('etc/f', 'f').file('etc/.wh.f', '').build()]));
  assert.ok(!same.some((l) => l.startsWith('/etc/f')));
});

test('directory over directory replaces only the stat; leaf over dir replaces it', async () => {
  const l1 = base().dir('d/', { mode: 0o700, uid: 5 }).file('d/f', 'f').dir('e/').file('e/f', 'f').build();
  const l2 = new TarBuilder()
    .dir('d/', { mode: 0o755, uid: 7, pax: [['SCHILY.xattr.user.a', 'b']] })
    .file('e', 'now a file')
    .build();
  const d = body(await dump([l1, l2]));
  assert.ok(d.includes('/d 0 40755 2 7 0 0 0.0 - - - user.a=b'));
  assert.ok(d.includes('/d/f 1 100644 1 0 0 0 0.0 - f -'));
  assert.ok(d.includes('/e 10 100644 1 0 0 0 0.0 - now\\x20a\\x20file -'));
});

test('hardlinks: across layers share the leaf; the link header stat is ignored; errors', async () => {
  const l1 = base().file('usr/bin/busybox', Buffer.alloc(100, 1), { mode: 0o755, uid: 3 }).build();
  const l2 = new TarBuilder().hardlink('usr/bin/ls', 'usr/bin/busybox', { mode: 0o600, uid: 9 }).hardlink('etc/x', '/usr/bin/busybox').build();
  const fs = await build([l1, l2]);
  const bin = fs.root.entries.get('usr');
  assert.ok(bin?.kind === 'dir');
  const ub = bin.entries.get('bin');
  assert.ok(ub?.kind === 'dir');
  assert.equal(ub.entries.get('ls'), ub.entries.get('busybox'));
  const d = writeDumpfile(fs).toString();
  assert.match(d, /\n\/etc\/x 100 100755 3 3 0 0 0\.0 /);
  assert.ok(d.includes('/usr/bin/busybox 0 @120000 - - - - 0.0 /etc/x - -'));
  // missing target, directory target, whiteout of a hardlink's other name keeps the leaf
  await rejectsWith(build([base().hardlink('etc/h', 'etc/missing').build()]), 'layer 1', 'tar entry "etc/h"', 'does not exist');
  await rejectsWith(build([base().hardlink('etc/h', 'usr').build()]), 'tar entry "etc/h"', 'is a directory');
  await rejectsWith(build([base().hardlink('etc/h', '').build()]), 'tar entry "etc/h"', 'invalid file name');
  const l3 = new TarBuilder().file('usr/bin/.wh.busybox', '').build();
  const d3 = body(await dump([l1, l2, l3]));
  assert.ok(d3.includes('/usr/bin/ls 0 @120000 - - - - 0.0 /etc/x - -'), d3.join('\n'));
  assert.ok(!d3.some((l) => l.startsWith('/usr/bin/busybox')));
});

test('long names and link targets: PAX, GNU L/K, ustar prefix', async () => {
  const long = 'usr/' + 'd'.repeat(120);
  const longFile = long + '/' + 'f'.repeat(150);
  const target = '/' + 't'.repeat(200);
  const t = base()
    .dir(long + '/', { pax: [['path', long + '/']] })
    .file('ignored-name', 'pax', { pax: [['path', longFile]] })
    .file('ignored2', 'gnu', { gnuLongName: long + '/gnu-' + 'g'.repeat(120) })
    .symlink('etc/paxlink', 'short', { pax: [['linkpath', target]] })
    .symlink('etc/gnulink', 'short', { gnuLongLink: target })
    .file('file-in-prefix', 'p', { prefix: 'usr/bin' })
    .build();
  const d = body(await dump([t]));
  assert.ok(d.includes(`/${longFile} 3 100644 1 0 0 0 0.0 - pax -`));
  assert.ok(d.includes(`/${long}/gnu-${'g'.repeat(120)} 3 100644 1 0 0 0 0.0 - gnu -`));
  assert.ok(d.includes(`/etc/paxlink 201 120777 1 0 0 0 0.0 ${target} - -`));
  assert.ok(d.includes(`/etc/gnulink 201 120777 1 0 0 0 0.0 ${target} - -`));
  assert.ok(d.includes('/usr/bin/file-in-prefix 1 100644 1 0 0 0 0.0 - p -'));
  // PAX beats GNU long name; GNU prefix field is not a ustar prefix
  const t2 = base().file('x', 'both', { gnuLongName: 'etc/gnu', pax: [['path', 'etc/pax']] }).build();
  assert.ok(body(await dump([t2])).includes('/etc/pax 4 100644 1 0 0 0 0.0 - both -'));
  // non-UTF-8 path bytes survive
  const raw = Buffer.from([0x65, 0x74, 0x63, 0x2f, 0xff, 0xfe]);
  const t3 = base().file('y', 'bin', { pax: [['path', raw]] }).build();
  assert.ok(body(await dump([t3])).includes('/etc/\\xff\\xfe 3 100644 1 0 0 0 0.0 - bin -'));
});

test('PAX xattrs keep raw bytes, later duplicates win; PAX uid/gid/size/mtime', async () => {
  const cap = Buffer.from([0x02, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0xff, 0x80, 0, 0]);
  const t = base()
    .file('etc/f', 'data', {
      pax: [
        ['SCHILY.xattr.security.capability', cap],
        ['SCHILY.xattr.user.dup', 'first'],
        ['SCHILY.xattr.user.dup', 'second'],
        ['SCHILY.xattr.user.eq', 'a=b\nc'],
        ['uid', '123456789'],
        ['gid', '+42'],
        ['mtime', '1234567890.5'],
        ['mtime', '1700000000.25'],
        ['atime', 'whatever'],
      ],
    })
    .file('etc/sized', 'abcdefgh', { pax: [['size', '3']], size: 8 })
    .build();
  const fs = await build([t]);
  const etc = fs.root.entries.get('etc');
  assert.ok(etc?.kind === 'dir');
  const f = etc.entries.get('f');
  assert.ok(f?.kind === 'leaf');
  assert.deepEqual(f.stat.xattrs.get('security.capability'), cap);
  assert.equal(f.stat.xattrs.get('user.dup')?.toString(), 'second');
  assert.equal(f.stat.xattrs.get('user.eq')?.toString(), 'a=b\nc');
  assert.equal(f.stat.uid, 123456789);
  assert.equal(f.stat.gid, 42);
  // seconds from the last mtime record, nanoseconds from the first (composefs-rs oddity)
  assert.equal(f.stat.mtimeSec, 1700000000n);
  assert.equal(f.stat.mtimeNsec, 500000000);
  // PAX size overrides the header size: content is 3 bytes, the rest of the block is padding
  const sized = etc.entries.get('sized');
  assert.ok(sized?.kind === 'leaf' && sized.content.type === 'inline');
  assert.equal(sized.content.data.toString(), 'abc');
});

test('pax_mtime_nsec rules', () => {
  const p = (v: string): number => paxMtimeNsec(paxRecord('mtime', v));
  assert.equal(p('1234567890.5'), 500000000);
  assert.equal(p('1234567890.000000001'), 1);
  assert.equal(p('1234567890.1234567899'), 123456789);
  assert.equal(p('1234567890'), 0);
  assert.equal(p('1234567890.'), 0);
  assert.equal(p('1.+5'), 50000000);
  assert.equal(p('1.5.3'), 0);
  assert.equal(paxMtimeNsec(Buffer.concat([paxRecord('mtime', '1.25'), paxRecord('mtime', '2.5')])), 250000000);
});

test('path normalisation: ./ prefixes, //, root entries, a/.. ', async () => {
  assert.equal(makeAbsolutePath(Buffer.from('./usr/')).toString(), '/./usr');
  assert.equal(makeAbsolutePath(Buffer.from('/')).toString(), '');
  assert.equal(makeAbsolutePath(Buffer.from('//usr')).toString(), '//usr');
  const t = new TarBuilder()
    .dir('./', { mode: 0o700, uid: 1 })
    .dir('./usr/')
    .dir('usr//lib/')
    .file('/usr/lib/./x', 'x')
    .file('./usr/./lib/y/', 'y')
    .dir('usr/..', { mode: 0o711, uid: 2 })
    .build();
  const d = await dump([t]);
  assert.ok(d.startsWith('/ 0 40711 3 2 0 0 0.0 - - -\n'), d);
  assert.ok(d.includes('/usr/lib/x 1 100644 1 0 0 0 0.0 - x -'));
  assert.ok(d.includes('/usr/lib/y 1 100644 1 0 0 0 0.0 - y -'));
  // the root entry must be a directory
  await rejectsWith(build([new TarBuilder().file('./', 'x').build()]), 'tar entry "./"', 'root entry must be a directory');
  await rejectsWith(build([base().file('usr/..', 'x').build()]), 'tar entry "usr/.."', 'root entry must be a directory');
  // a path ending in ".." is a root entry even if nothing before it exists (no lookup happens)
  const dd = await dump([base().dir('..', { mode: 0o701 }).dir('nope/nothing/..', { mode: 0o702, uid: 4 }).build()]);
  assert.ok(dd.startsWith('/ 0 40702 4 4 0 0 0.0 - - -\n'), dd);
  // GNU.sparse.name overrides the path even when the member is not sparse
  const sn = body(await dump([base().file('etc/a', 'a', { pax: [['path', 'etc/b'], ['GNU.sparse.name', 'etc/c']] }).build()]));
  assert.ok(sn.includes('/etc/c 1 100644 1 0 0 0 0.0 - a -'));
});

test('hard errors: .., symlink in parent, missing parent', async () => {
  await rejectsWith(build([base().file('../x', 'x').build()]), 'layer 1', 'tar entry "../x"', '..');
  await rejectsWith(build([base().file('usr/../etc/x', 'x').build()]), 'tar entry "usr/../etc/x"', '..');
  const sym = base().dir('usr/lib/').symlink('lib', 'usr/lib').file('lib/libc.so', 'c').build();
  await rejectsWith(build([sym]), 'tar entry "lib/libc.so"', 'is not a directory');
  await rejectsWith(build([base().file('opt/x', 'x').build()]), 'tar entry "opt/x"', 'does not exist');
  // a whiteout below a missing parent is also an error
  await rejectsWith(build([base().file('opt/.wh.x', '').build()]), 'does not exist');
});

test('tar-level errors: truncation, checksum, unsupported types, sparse, duplicates', async () => {
  const good = base().file('etc/big', Buffer.alloc(3000, 1)).build();
  // EOF exactly at a header boundary is a clean end (no end-of-archive blocks needed)
  await build([good.subarray(0, good.length - 1024)]);
  await rejectsWith(build([good.subarray(0, good.length - 1024 - 600)]), 'layer 1', 'tar entry "etc/big"', 'unexpected end');
  await rejectsWith(build([good.subarray(0, 700)]), 'unexpected end');
  await rejectsWith(build([good.subarray(0, good.length - 512)]), 'unexpected end');
  await rejectsWith(build([new TarBuilder().raw(header({ name: 'x', badChecksum: true })).build()]), 'checksum');
  await rejectsWith(build([base().entry('etc/v', '', { type: 'V' }).build()]), 'tar entry "etc/v"', "unsupported tar entry type 'V'");
  await rejectsWith(build([base().entry('etc/s', '', { type: 'S', format: 'gnu' }).build()]), 'sparse');
  await rejectsWith(build([base().file('etc/s', 'x', { pax: [['GNU.sparse.map', '0,1']] }).build()]), 'sparse');
  await rejectsWith(build([base().file('etc/m', 'x', { pax: [['mtime', '-5']] }).build()]), 'invalid PAX mtime');
  await rejectsWith(build([base().file('etc/m', 'x', { pax: [['uid', 'x']] }).build()]), 'invalid PAX uid');
  const dupPax = new TarBuilder()
    .raw(header({ name: 'p', type: 'x', size: 0 }))
    .raw(header({ name: 'p', type: 'x', size: 0 }))
    .file('etc/x', 'x')
    .build();
  await rejectsWith(build([base().build().subarray(0, 1536), dupPax]), 'duplicate PAX');
  const badRec = Buffer.from('99 path=x\n');
  const t = new TarBuilder().raw(header({ name: 'p', type: 'x', size: badRec.length })).raw(Buffer.concat([badRec, Buffer.alloc(512 - badRec.length)])).file('etc/x', 'x').build();
  await rejectsWith(build([base().build().subarray(0, 1536), t]), 'malformed PAX');
  // v7 devices have no device numbers
  await rejectsWith(build([base().entry('etc/c', '', { type: '3', format: 'v7' }).build()]), 'device entry without device numbers');
  // a stray zero block is skipped; anything after the end marker is ignored
  const stray = Buffer.concat([base().build().subarray(0, 1536), Buffer.alloc(512), new TarBuilder().file('etc/z', 'z').build(), Buffer.from('trailing garbage')]);
  assert.ok(body(await dump([stray])).includes('/etc/z 1 100644 1 0 0 0 0.0 - z -'));
});

// `zstd -19` (CLI) of: new TarBuilder().dir('usr/').file('usr/hello', 'hello zstd\n').file('usr/big', 3000 x 'A').build()
const ZSTD_LAYER_B64 =
  'KLUv/QRo3QMAgsQOEbA9vzfq1kw1gGlKCcluVR2kaLQzH+O77Skhny5Y82tgwk26FBMhZE7Ip8u8Ms2n62FNMzev++EV8mkWIPAuTNy2AVCgAnnYpwLt5N8xKqmO3AFIT/xS9r8AYNUbGDr89uABpyMNBWBnMKQDQnrnAx5w0ADjSb0BavQcqA==';

test('gzip and zstd layers', async () => {
  const plain = base().file('usr/hello', 'hello gzip\n').file('usr/big', Buffer.alloc(70000, 3)).build();
  const gz = gzipSync(plain);
  assert.equal(await dump([gz]), await dump([plain]));
  assert.equal(await dump([gz], 100), await dump([plain]));
  await rejectsWith(build([gz.subarray(0, gz.length - 20)]), 'layer 1', 'gzip');
  const z = Buffer.from(ZSTD_LAYER_B64, 'base64');
  const zplain = new TarBuilder().dir('usr/').file('usr/hello', 'hello zstd\n').file('usr/big', Buffer.alloc(3000, 0x41)).build();
  assert.equal(await dump([z], 7), await dump([zplain]));
  const d = body(await dump([z]));
  assert.ok(d.includes('/usr/hello 11 100644 1 0 0 0 0.0 - hello\\x20zstd\\n -'), d.join('\n'));
  const bigId = fsverityDigest(Buffer.alloc(3000, 0x41), 'sha256').toString('hex');
  assert.ok(d.includes(`/usr/big 3000 100644 1 0 0 0 0.0 ${bigId.slice(0, 2)}/${bigId.slice(2)} - ${bigId}`));
  await rejectsWith(build([z.subarray(0, z.length - 5)]), 'layer 1', 'zstd');
});

// ---------------------------------------------------------------------------------------------
// Upstream EXPECTED_BASE_IMAGE_DUMPFILE (composefs-oci lib.rs tests, v0.9.0), built from
// test_util.rs BASE_LAYERS through tars like its dumpfile_to_tar.

/** rand 0.9 SmallRng (Xoshiro256++ seeded by SplitMix64) `fill` over bytes, as test_util uses it. */
function smallRngFill(seed: bigint, n: number): Buffer {
  const M = (1n << 64n) - 1n;
  const rotl = (x: bigint, k: bigint): bigint => ((x << k) | (x >> (64n - k))) & M;
  const s: bigint[] = [];
  let st = seed;
  for (let i = 0; i < 4; i++) {
    st = (st + 0x9e3779b97f4a7c15n) & M;
    let z = st;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    s.push(z ^ (z >> 31n));
  }
  const next = (): bigint => {
    const res = (rotl((s[0] + s[3]) & M, 23n) + s[0]) & M;
    const t = (s[1] << 17n) & M;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45n);
    return res;
  };
  const out = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    const w = Buffer.alloc(8);
    w.writeBigUInt64LE(next());
    w.copy(out, off, 0, Math.min(8, n - off));
    off += 8;
  }
  return out;
}

const CAP = '\\x02\\x00\\x00\\x02\\x00\\x20\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00';
const BASE_LAYERS = [
  `/ 0 40755 2 0 0 0 0.0 - - -
/usr 0 40755 2 0 0 0 0.0 - - -
/usr/bin 0 40755 2 0 0 0 0.0 - - -
/usr/lib 0 40755 2 0 0 0 0.0 - - -
/usr/share 0 40755 2 0 0 0 0.0 - - -
/etc 0 40755 2 0 0 0 0.0 - - -
/var 0 40755 2 0 0 0 0.0 - - -
/tmp 0 40755 2 0 0 0 0.0 - - -`,
  `/ 0 40755 2 0 0 0 0.0 - - -
/usr 0 40755 2 0 0 0 0.0 - - -
/usr/bin 0 40755 2 0 0 0 0.0 - - -
/usr/bin/busybox 4096 100755 1 0 0 0 0.0 / - -
/usr/bin/sh 7 120777 1 0 0 0 0.0 busybox - -`,
  `/ 0 40755 2 0 0 0 0.0 - - -
/usr 0 40755 2 0 0 0 0.0 - - -
/usr/bin 0 40755 2 0 0 0 0.0 - - -
/usr/bin/ls 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/cat 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/cp 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/mv 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/ping 7 120777 1 0 0 0 0.0 busybox - - security.capability=${CAP}
/usr/bin/rm 7 120777 1 0 0 0 0.0 busybox - -`,
  `/ 0 40755 2 0 0 0 0.0 - - -
/etc 0 40755 2 0 0 0 0.0 - - -
/etc/os-release 26 100644 1 0 0 0 0.0 - ID=test\\nVERSION_ID=1.0\\n -
/etc/hostname 9 100644 1 0 0 0 0.0 - test-host -
/etc/passwd 100 100644 1 0 0 0 0.0 / - -`,
  `/ 0 40755 2 0 0 0 0.0 - - -
/usr 0 40755 2 0 0 0 0.0 - - -
/usr/share 0 40755 2 0 0 0 0.0 - - -
/usr/share/doc 0 40755 2 0 0 0 0.0 - - -
/usr/share/doc/README 512 100644 1 0 0 0 0.0 / - -
/var 0 40755 2 0 0 0 0.0 - - -
/var/data 0 40755 2 0 0 0 0.0 - - -
/var/data/app.json 256 100644 1 0 0 0 0.0 / - -`,
];

const EXPECTED_BASE_IMAGE_DUMPFILE = `/ 0 40755 6 0 0 0 0.0 - - -
/etc 0 40755 2 0 0 0 0.0 - - -
/etc/hostname 9 100644 1 0 0 0 0.0 - test-host -
/etc/os-release 23 100644 1 0 0 0 0.0 - ID=test\\nVERSION_ID=1.0\\n -
/etc/passwd 100 100644 1 0 0 0 0.0 f2/c4fd5735bd46db3b18d402ae87c5086c97c0e1321901cfd30f320b73ef25aa - f2c4fd5735bd46db3b18d402ae87c5086c97c0e1321901cfd30f320b73ef25aa
/tmp 0 40755 2 0 0 0 0.0 - - -
/usr 0 40755 5 0 0 0 0.0 - - -
/usr/bin 0 40755 2 0 0 0 0.0 - - -
/usr/bin/busybox 4096 100755 1 0 0 0 0.0 f0/f7e1e58fdd31f5792222087377a4a976760c416ecdf5f426193e608681b7a1 - f0f7e1e58fdd31f5792222087377a4a976760c416ecdf5f426193e608681b7a1
/usr/bin/cat 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/cp 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/ls 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/mv 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/ping 7 120777 1 0 0 0 0.0 busybox - - security.capability=${CAP}
/usr/bin/rm 7 120777 1 0 0 0 0.0 busybox - -
/usr/bin/sh 7 120777 1 0 0 0 0.0 busybox - -
/usr/lib 0 40755 2 0 0 0 0.0 - - -
/usr/share 0 40755 3 0 0 0 0.0 - - -
/usr/share/doc 0 40755 2 0 0 0 0.0 - - -
/usr/share/doc/README 512 100644 1 0 0 0 0.0 51/44b8f80be57c3518f410d930e18c4e405387c82e4993c18265a1ba4a80263b - 5144b8f80be57c3518f410d930e18c4e405387c82e4993c18265a1ba4a80263b
/var 0 40755 3 0 0 0 0.0 - - -
/var/data 0 40755 2 0 0 0 0.0 - - -
/var/data/app.json 256 100644 1 0 0 0 0.0 c9/21965b74ac1780bc437cec640b27186d85317b9afdb3dbb68626aed5ecd2b6 - c921965b74ac1780bc437cec640b27186d85317b9afdb3dbb68626aed5ecd2b6
`;

function unescapeDump(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\') {
      const n = s[i + 1];
      if (n === 'x') {
        out.push(parseInt(s.slice(i + 2, i + 4), 16));
        i += 3;
      } else {
        out.push(n === 'n' ? 10 : n === 't' ? 9 : n === 'r' ? 13 : n.charCodeAt(0));
        i += 1;
      }
    } else out.push(s.charCodeAt(i));
  }
  return Buffer.from(out);
}

/** test_util `dumpfile_to_tar`: ustar headers via tar-rs (mtime 0), PAX 'x' header for xattrs. */
function dumpLayerToTar(layer: string): Buffer {
  const t = new TarBuilder();
  for (const line of layer.split('\n')) {
    const f = line.split(' ');
    if (f[0] === '/') continue;
    const p = f[0].slice(1);
    const mode = parseInt(f[2], 8);
    const xattrs = f.slice(11).map((x): [string, Buffer] => {
      const eq = x.indexOf('=');
      return [`SCHILY.xattr.${x.slice(0, eq)}`, unescapeDump(x.slice(eq + 1))];
    });
    const o = { mode: mode & 0o7777, uid: Number(f[4]), gid: Number(f[5]), ...(xattrs.length ? { pax: xattrs } : {}) };
    const type = mode & 0o170000;
    if (type === 0o040000) t.dir(p, o);
    else if (type === 0o120000) t.symlink(p, unescapeDump(f[8]), o);
    else if (f[8] === '/') t.file(p, smallRngFill(BigInt(f[1]), Number(f[1])), o);
    else t.file(p, unescapeDump(f[9]), o);
  }
  return t.build();
}

test('reproduces upstream EXPECTED_BASE_IMAGE_DUMPFILE', async () => {
  const fs = await build(BASE_LAYERS.map(dumpLayerToTar));
  transformForOci(fs, { propagateUsrToRoot: true, xattrs: 'allowlist-only' });
  assert.equal(writeDumpfile(fs).toString('latin1'), EXPECTED_BASE_IMAGE_DUMPFILE);
});

test('applyLayer accepts a Node readable stream', async () => {
  const { Readable } = await import('node:stream');
  const fs = newOciFileSystem();
  const objects = objectService({ alg: 'sha512' });
  try {
    await applyLayer(fs, Readable.from([base().build()]), { objects });
  } finally {
    await objects.close();
  }
  assert.equal(fs.root.entries.size, 2);
});
