/**
 * The in-place struct writers of erofs/format.ts: each writes every byte of its struct (reserved
 * bytes zeroed) into a buffer that is not zero-filled, touches nothing outside it, and the
 * decoders read back what was written. (The golden vectors check the bytes against composefs-rs;
 * this checks what they cannot see: a dirty buffer and the neighbouring bytes.)
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  COMPACT_INODE_SIZE,
  COMPOSEFS_HEADER_SIZE,
  DIRENT_SIZE,
  EXTENDED_INODE_SIZE,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  SUPERBLOCK_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  decodeComposefsHeader,
  decodeDirents,
  decodeInodeHeader,
  decodeInodeXattrSharedCount,
  decodeSharedXattrRef,
  decodeSuperblock,
  decodeXattrEntry,
  inodeFormat,
  writeCompactInodeHeader,
  writeComposefsHeader,
  writeDirentHeader,
  writeExtendedInodeHeader,
  writeInodeXattrHeader,
  writeSharedXattrRef,
  writeSuperblock,
  writeXattrEntry,
  type Superblock,
} from '../../src/erofs/format.js';

const PAD = 16;

/** A buffer of 0xAA with `size` bytes of room at PAD; checks the padding on both sides stays. */
function dirty(size: number): { b: Buffer; done: () => void } {
  const b = Buffer.alloc(size + 2 * PAD, 0xaa);
  return {
    b,
    done: () => {
      assert.ok(b.subarray(0, PAD).every((x) => x === 0xaa), 'bytes before the struct changed');
      assert.ok(b.subarray(PAD + size).every((x) => x === 0xaa), 'bytes after the struct changed');
    },
  };
}

const SB: Superblock = {
  magic: 0xe0f5e1e2,
  featureCompat: 6,
  blkszbits: 12,
  rootNid: 36,
  inos: 300n,
  buildTime: -5n,
  buildTimeNsec: 7,
  blocks: 9,
  metaBlkaddr: 0,
  xattrBlkaddr: 2,
  featureIncompat: 0,
};

test('composefs header and superblock: whole struct written, decoded back', () => {
  const h = dirty(COMPOSEFS_HEADER_SIZE);
  writeComposefsHeader(h.b, PAD, { magic: 0xd078629a, version: 1, flags: 1, composefsVersion: 2 });
  h.done();
  assert.deepEqual(decodeComposefsHeader(h.b, PAD), { magic: 0xd078629a, version: 1, flags: 1, composefsVersion: 2 });
  assert.ok(h.b.subarray(PAD + 16, PAD + 32).every((x) => x === 0), 'reserved bytes are zero');

  const s = dirty(SUPERBLOCK_SIZE);
  writeSuperblock(s.b, PAD, SB);
  s.done();
  assert.deepEqual(decodeSuperblock(s.b, PAD), SB);
  assert.ok(s.b.subarray(PAD + 48, PAD + 80).every((x) => x === 0), 'uuid and volume name are zero');
});

test('inode headers: compact and extended, reserved bytes zero, u64 fields two-way', () => {
  const c = dirty(COMPACT_INODE_SIZE);
  writeCompactInodeHeader(c.b, PAD, {
    format: inodeFormat(LAYOUT_FLAT_INLINE, false),
    xattrIcount: 3,
    mode: 0o100644,
    nlink: 2,
    size: 0xfffffffe,
    u: 77,
    ino: 5,
    uid: 0xfffe,
    gid: 1,
  });
  c.done();
  const dc = decodeInodeHeader(c.b, PAD, SB);
  assert.deepEqual(
    { ...dc },
    { extended: false, layout: LAYOUT_FLAT_INLINE, xattrIcount: 3, mode: 0o100644, nlink: 2, size: 0xfffffffen, u: 77, ino: 5, uid: 0xfffe, gid: 1, mtimeSec: -5n, mtimeNsec: 7 },
  );
  assert.ok(c.b.subarray(PAD + 12, PAD + 16).every((x) => x === 0) && c.b.subarray(PAD + 28, PAD + 32).every((x) => x === 0));

  for (const [size, mtime] of [
    [2n ** 64n - 1n, -1n],
    [2 ** 53 - 1, 2n ** 63n - 1n],
    [0x1_0000_0001, -(2n ** 63n)],
    [123n, 1_700_000_000n],
  ] as const) {
    const e = dirty(EXTENDED_INODE_SIZE);
    writeExtendedInodeHeader(e.b, PAD, {
      format: inodeFormat(LAYOUT_CHUNK_BASED, true),
      xattrIcount: 0,
      mode: 0o40755,
      size,
      u: 31,
      ino: 0xffffffff,
      uid: 0xffffffff,
      gid: 65536,
      mtime,
      mtimeNsec: 999_999_999,
      nlink: 70000,
    });
    e.done();
    const de = decodeInodeHeader(e.b, PAD, SB);
    assert.equal(de.extended, true);
    assert.equal(de.layout, LAYOUT_CHUNK_BASED);
    assert.equal(de.size, BigInt(size));
    assert.equal(de.mtimeSec, mtime);
    assert.deepEqual([de.mode, de.u, de.ino, de.uid, de.gid, de.mtimeNsec, de.nlink], [0o40755, 31, 0xffffffff, 0xffffffff, 65536, 999_999_999, 70000]);
    assert.ok(e.b.subarray(PAD + 6, PAD + 8).every((x) => x === 0) && e.b.subarray(PAD + 48, PAD + 64).every((x) => x === 0));
  }
});

test('xattr body: header, shared refs and an entry with its padding', () => {
  const suffix = Buffer.from('selinux');
  const value = Buffer.from('system_u:object_r:x:s0'); // 4 + 7 + 22 = 33 -> 36 bytes
  const size = XATTR_IBODY_HEADER_SIZE + 2 * 4 + 36;
  const d = dirty(size);
  writeInodeXattrHeader(d.b, PAD, 0xfffffff0, 2);
  writeSharedXattrRef(d.b, PAD, 0, 1234);
  writeSharedXattrRef(d.b, PAD, 1, 0xfffffffe);
  const n = writeXattrEntry(d.b, PAD + XATTR_IBODY_HEADER_SIZE + 8, 6, suffix, value);
  d.done();
  assert.equal(n, 36);
  assert.equal(d.b.readUInt32LE(PAD), 0xfffffff0);
  assert.equal(decodeInodeXattrSharedCount(d.b, PAD), 2);
  assert.ok(d.b.subarray(PAD + 5, PAD + 12).every((x) => x === 0), 'reserved bytes are zero');
  assert.equal(decodeSharedXattrRef(d.b, PAD, 0), 1234);
  assert.equal(decodeSharedXattrRef(d.b, PAD, 1), 0xfffffffe);
  const { entry, size: es } = decodeXattrEntry(d.b, PAD + XATTR_IBODY_HEADER_SIZE + 8);
  assert.equal(es, 36);
  assert.equal(entry.index, 6);
  assert.deepEqual([Buffer.from(entry.suffix), Buffer.from(entry.value)], [suffix, value]);
  assert.ok(d.b.subarray(PAD + size - 3, PAD + size).every((x) => x === 0), 'padding is zero');
});

test('dirent headers: nids beyond 32 bits, names after the headers', () => {
  const names = ['.', '..', 'a-much-longer-name'];
  const size = names.length * DIRENT_SIZE + names.reduce((s, n) => s + n.length, 0);
  const d = dirty(size);
  const nids = [36, 2 ** 40 + 3, 7];
  let nameOff = names.length * DIRENT_SIZE;
  names.forEach((name, i) => {
    writeDirentHeader(d.b, PAD, i, nids[i], nameOff, i === 2 ? 1 : 2);
    nameOff += d.b.write(name, PAD + nameOff, 'latin1');
  });
  d.done();
  const got = decodeDirents(d.b, PAD, size);
  assert.deepEqual(
    got.map((e) => [e.name.toString('latin1'), e.nid, e.fileType]),
    names.map((n, i) => [n, BigInt(nids[i]), i === 2 ? 1 : 2]),
  );
  assert.ok(got.every((e) => d.b[e.off + 11] === 0), 'reserved byte is zero');
});
