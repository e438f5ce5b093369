/**
 * The composefs EROFS on-disk format as typed structs with encoders and decoders.
 *
 * Everything is little-endian. The writer and the reader share these definitions, so the byte
 * layout lives in exactly one place: every field offset is spelled here and nowhere else (the
 * `*_FIELD` tables, which error messages use too). The structs follow composefs-rs
 * `crates/composefs/src/erofs/format.rs` (revision f22ecda9): `ComposefsHeader`, `Superblock`,
 * `CompactInodeHeader`, `ExtendedInodeHeader`, `InodeXAttrHeader`, `XAttrHeader`,
 * `DirectoryEntryHeader`, which its writer emits as they are.
 *
 * The `write*` functions encode in place into a caller's buffer at an offset, without
 * allocating (the image writer calls them once per inode / entry), and write every byte of their
 * struct, reserved bytes included, so the buffer need not be zero-filled. Layout rules (which
 * inode goes where) are not here: see the writer.
 */
import { InputError } from '../errors.js';

/** The composefs format versions: 0 and 1 are C mkcomposefs's layouts, 2 the older composefs-rs one. */
export type ErofsVersion = 0 | 1 | 2;

// Little-endian stores through a DataView of the buffer being written (one builtin call per
// field: the writer runs mostly before V8 has optimised it, where a call is cheaper than four
// byte stores). Callers pass values of the field's width; larger ones are truncated as a cast
// would.
let viewOf: Uint8Array | undefined;
let view: DataView | undefined;
function dv(b: Uint8Array): DataView {
  if (b !== viewOf) {
    view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    viewOf = b;
  }
  return view!;
}

/**
 * The buffer as 32-bit little-endian words, for the headers written once per inode or entry
 * (plain typed-array stores: cheaper still than DataView calls before V8 optimises the writer);
 * null where the host is big-endian or the buffer does not start on a 4-byte boundary (then the
 * DataView stores are used).
 */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
let wordsOf: Uint8Array | undefined;
let words: Uint32Array | null = null;
function w32(b: Uint8Array): Uint32Array | null {
  if (b !== wordsOf) {
    words = LITTLE_ENDIAN && b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2) : null;
    wordsOf = b;
  }
  return words;
}

/** A u64 that fits a double exactly (0 <= v < 2^53), for the word stores; -1 otherwise. */
function safeU64(v: number | bigint): number {
  const n = typeof v === 'number' ? v : Number(v);
  return n >= 0 && n <= Number.MAX_SAFE_INTEGER && (typeof v === 'number' || BigInt(n) === v) ? n : -1;
}

function put16(b: Uint8Array, off: number, v: number): void {
  dv(b).setUint16(off, v & 0xffff, true);
}

function put32(b: Uint8Array, off: number, v: number): void {
  dv(b).setUint32(off, v >>> 0, true);
}

/** A u64 from a non-negative number (< 2^64) or a bigint (negative: two's complement). */
function put64(b: Uint8Array, off: number, v: number | bigint): void {
  // Bigints in the safe-integer range (every real mtime) take the number path: one conversion
  // instead of bigint comparisons and shifts per field.
  const n = typeof v === 'number' ? v : Number(v);
  if (n >= 0 && (typeof v === 'number' || n <= Number.MAX_SAFE_INTEGER)) {
    const d = dv(b);
    d.setUint32(off, n % 0x100000000, true);
    d.setUint32(off + 4, Math.floor(n / 0x100000000), true);
  } else if (typeof v === 'number') {
    throw new RangeError(`${v} is not a u64`);
  } else {
    dv(b).setBigUint64(off, BigInt.asUintN(64, v), true);
  }
}

export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;

export const COMPOSEFS_MAGIC = 0xd078629a;
/** `version` field of the composefs header (LCFS_EROFS_VERSION). */
export const COMPOSEFS_HEADER_VERSION = 1;
export const COMPOSEFS_FLAGS_HAS_ACL = 1;
export const EROFS_SUPER_MAGIC = 0xe0f5e1e2;
export const EROFS_SUPER_OFFSET = 1024;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;

/** i_format data layouts (shifted left by one in i_format; bit 0 = extended). */
export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_CHUNK_BASED = 4;

export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;
export const XATTR_IBODY_HEADER_SIZE = 12;
export const DIRENT_SIZE = 12;

/** Dirent file types. */
export const FT_REG = 1;
export const FT_DIR = 2;
export const FT_CHR = 3;
export const FT_BLK = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_LNK = 7;

/** Bloom-filter seed for the xattr name filter (EROFS_XATTR_FILTER_SEED). */
export const XATTR_FILTER_SEED = 0x25bbe08f;

/** Composefs header, the first 32 bytes of every image (16 of them reserved). */
export interface ComposefsHeader {
  magic: number;
  version: number;
  flags: number;
  composefsVersion: number;
}

export const COMPOSEFS_HEADER_SIZE = 32;
/** Field offsets of {@link ComposefsHeader}. */
export const COMPOSEFS_HEADER_FIELD = { magic: 0, version: 4, flags: 8, composefsVersion: 12 } as const;

export function writeComposefsHeader(b: Buffer, off: number, h: ComposefsHeader): void {
  const F = COMPOSEFS_HEADER_FIELD;
  b.fill(0, off, off + COMPOSEFS_HEADER_SIZE);
  put32(b, off + F.magic, h.magic);
  put32(b, off + F.version, h.version);
  put32(b, off + F.flags, h.flags);
  put32(b, off + F.composefsVersion, h.composefsVersion);
}

export function decodeComposefsHeader(b: Buffer, off = 0): ComposefsHeader {
  const F = COMPOSEFS_HEADER_FIELD;
  return {
    magic: b.readUInt32LE(off + F.magic),
    version: b.readUInt32LE(off + F.version),
    flags: b.readUInt32LE(off + F.flags),
    composefsVersion: b.readUInt32LE(off + F.composefsVersion),
  };
}

/** The fields of the 128-byte EROFS superblock that composefs images use. */
export interface Superblock {
  magic: number;
  featureCompat: number;
  blkszbits: number;
  rootNid: number;
  inos: bigint;
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  featureIncompat: number;
}

export const SUPERBLOCK_SIZE = 128;
/** Field offsets of {@link Superblock} (the fields composefs leaves zero are not named). */
export const SUPERBLOCK_FIELD = {
  magic: 0,
  featureCompat: 8,
  blkszbits: 12,
  rootNid: 14,
  inos: 16,
  buildTime: 24,
  buildTimeNsec: 32,
  blocks: 36,
  metaBlkaddr: 40,
  xattrBlkaddr: 44,
  featureIncompat: 80,
} as const;

export function writeSuperblock(b: Buffer, off: number, s: Superblock): void {
  const F = SUPERBLOCK_FIELD;
  b.fill(0, off, off + SUPERBLOCK_SIZE);
  put32(b, off + F.magic, s.magic);
  put32(b, off + F.featureCompat, s.featureCompat);
  b[off + F.blkszbits] = s.blkszbits;
  put16(b, off + F.rootNid, s.rootNid);
  put64(b, off + F.inos, s.inos);
  put64(b, off + F.buildTime, s.buildTime);
  put32(b, off + F.buildTimeNsec, s.buildTimeNsec);
  put32(b, off + F.blocks, s.blocks);
  put32(b, off + F.metaBlkaddr, s.metaBlkaddr);
  put32(b, off + F.xattrBlkaddr, s.xattrBlkaddr);
  put32(b, off + F.featureIncompat, s.featureIncompat);
}

export function decodeSuperblock(b: Buffer, off = EROFS_SUPER_OFFSET): Superblock {
  const F = SUPERBLOCK_FIELD;
  return {
    magic: b.readUInt32LE(off + F.magic),
    featureCompat: b.readUInt32LE(off + F.featureCompat),
    blkszbits: b.readUInt8(off + F.blkszbits),
    rootNid: b.readUInt16LE(off + F.rootNid),
    inos: b.readBigUInt64LE(off + F.inos),
    buildTime: BigInt.asIntN(64, b.readBigUInt64LE(off + F.buildTime)),
    buildTimeNsec: b.readUInt32LE(off + F.buildTimeNsec),
    blocks: b.readUInt32LE(off + F.blocks),
    metaBlkaddr: b.readUInt32LE(off + F.metaBlkaddr),
    xattrBlkaddr: b.readUInt32LE(off + F.xattrBlkaddr),
    featureIncompat: b.readUInt32LE(off + F.featureIncompat),
  };
}

/** i_format: the data layout (LAYOUT_*) shifted left by one; bit 0 = extended header. */
export function inodeFormat(layout: number, extended: boolean): number {
  return (layout << 1) | (extended ? 1 : 0);
}

/**
 * A compact (32-byte) inode header: no mtime of its own (readers take the superblock's
 * build_time), 16-bit nlink/uid/gid, 32-bit size. `format` is {@link inodeFormat}.
 */
export interface CompactInodeHeader {
  format: number;
  xattrIcount: number;
  /** st_mode: type bits | permissions (16 bits). */
  mode: number;
  nlink: number;
  size: number;
  /** i_u: block address, rdev, or chunk format depending on type and layout. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
}

/** An extended (64-byte) inode header: 64-bit size and mtime, 32-bit nlink/uid/gid. */
export interface ExtendedInodeHeader {
  format: number;
  xattrIcount: number;
  mode: number;
  size: number | bigint;
  u: number;
  ino: number;
  uid: number;
  gid: number;
  /** Seconds (signed; stored as the u64 two's complement). */
  mtime: bigint;
  mtimeNsec: number;
  nlink: number;
}

/** Field offsets shared by both inode headers. */
export const INODE_FIELD = { format: 0, xattrIcount: 2, mode: 4, size: 8, u: 16, ino: 20 } as const;
/** Field offsets of {@link CompactInodeHeader} beyond {@link INODE_FIELD}. */
export const COMPACT_INODE_FIELD = { nlink: 6, uid: 24, gid: 26 } as const;
/** Field offsets of {@link ExtendedInodeHeader} beyond {@link INODE_FIELD}. */
export const EXTENDED_INODE_FIELD = { uid: 24, gid: 28, mtime: 32, mtimeNsec: 40, nlink: 44 } as const;

// The word stores below pair 16-bit fields that share a word; the field tables must say so.
if (
  INODE_FIELD.format % 4 !== 0 || INODE_FIELD.xattrIcount !== INODE_FIELD.format + 2 || INODE_FIELD.mode % 4 !== 0 ||
  COMPACT_INODE_FIELD.nlink !== INODE_FIELD.mode + 2 || COMPACT_INODE_FIELD.uid % 4 !== 0 || COMPACT_INODE_FIELD.gid !== COMPACT_INODE_FIELD.uid + 2 ||
  INODE_FIELD.size % 4 !== 0 || INODE_FIELD.u % 4 !== 0 || INODE_FIELD.ino % 4 !== 0 || EXTENDED_INODE_FIELD.uid % 4 !== 0 ||
  EXTENDED_INODE_FIELD.gid % 4 !== 0 || EXTENDED_INODE_FIELD.mtime % 4 !== 0 || EXTENDED_INODE_FIELD.mtimeNsec % 4 !== 0 || EXTENDED_INODE_FIELD.nlink % 4 !== 0
) {
  throw new Error('internal error: inode field offsets do not fit the word stores');
}

export function writeCompactInodeHeader(b: Buffer, off: number, h: CompactInodeHeader): void {
  const F = INODE_FIELD;
  const C = COMPACT_INODE_FIELD;
  const u = w32(b);
  if (u !== null && off % 4 === 0) {
    u[(off + F.format) >>> 2] = (h.format & 0xffff) | (h.xattrIcount << 16);
    u[(off + F.mode) >>> 2] = (h.mode & 0xffff) | (h.nlink << 16);
    u[(off + F.size) >>> 2] = h.size;
    u[(off + F.size + 4) >>> 2] = 0; // reserved
    u[(off + F.u) >>> 2] = h.u;
    u[(off + F.ino) >>> 2] = h.ino;
    u[(off + C.uid) >>> 2] = (h.uid & 0xffff) | (h.gid << 16);
    u[(off + C.gid + 2) >>> 2] = 0; // reserved2
    return;
  }
  put16(b, off + F.format, h.format);
  put16(b, off + F.xattrIcount, h.xattrIcount);
  put16(b, off + F.mode, h.mode);
  put16(b, off + C.nlink, h.nlink);
  put32(b, off + F.size, h.size);
  put32(b, off + F.size + 4, 0); // reserved
  put32(b, off + F.u, h.u);
  put32(b, off + F.ino, h.ino);
  put16(b, off + C.uid, h.uid);
  put16(b, off + C.gid, h.gid);
  put32(b, off + C.gid + 2, 0); // reserved2
}

export function writeExtendedInodeHeader(b: Buffer, off: number, h: ExtendedInodeHeader): void {
  const F = INODE_FIELD;
  const E = EXTENDED_INODE_FIELD;
  const u = w32(b);
  const size = u !== null && off % 4 === 0 ? safeU64(h.size) : -1;
  const mtime = size >= 0 ? safeU64(h.mtime) : -1;
  if (mtime >= 0) {
    u![(off + F.format) >>> 2] = (h.format & 0xffff) | (h.xattrIcount << 16);
    u![(off + F.mode) >>> 2] = h.mode & 0xffff; // and the reserved u16
    u![(off + F.size) >>> 2] = size % 0x100000000;
    u![(off + F.size + 4) >>> 2] = Math.floor(size / 0x100000000);
    u![(off + F.u) >>> 2] = h.u;
    u![(off + F.ino) >>> 2] = h.ino;
    u![(off + E.uid) >>> 2] = h.uid;
    u![(off + E.gid) >>> 2] = h.gid;
    u![(off + E.mtime) >>> 2] = mtime % 0x100000000;
    u![(off + E.mtime + 4) >>> 2] = Math.floor(mtime / 0x100000000);
    u![(off + E.mtimeNsec) >>> 2] = h.mtimeNsec;
    u![(off + E.nlink) >>> 2] = h.nlink;
    for (let r = (off + E.nlink + 4) >>> 2; r < (off + EXTENDED_INODE_SIZE) >>> 2; r++) u![r] = 0; // reserved2
    return;
  }
  put16(b, off + F.format, h.format);
  put16(b, off + F.xattrIcount, h.xattrIcount);
  put16(b, off + F.mode, h.mode);
  put16(b, off + F.mode + 2, 0); // reserved
  put64(b, off + F.size, h.size);
  put32(b, off + F.u, h.u);
  put32(b, off + F.ino, h.ino);
  put32(b, off + E.uid, h.uid);
  put32(b, off + E.gid, h.gid);
  put64(b, off + E.mtime, h.mtime);
  put32(b, off + E.mtimeNsec, h.mtimeNsec);
  put32(b, off + E.nlink, h.nlink);
  for (let r = off + E.nlink + 4; r < off + EXTENDED_INODE_SIZE; r += 4) put32(b, r, 0); // reserved2
}

/**
 * An inode header as the reader sees it, compact or extended: the fields of both, compact
 * ones widened (size to bigint; mtime from the superblock's build time, as the kernel does).
 */
export interface InodeHeader {
  extended: boolean;
  layout: number;
  xattrIcount: number;
  /** Full st_mode: type bits | permissions (low 16 bits stored). */
  mode: number;
  nlink: number;
  size: bigint;
  /** i_u: block address, rdev, or chunk format depending on type and layout. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
}

export function inodeHeaderSize(extended: boolean): number {
  return extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
}

/** Whether the inode header at `off` is extended, and its data layout (from i_format alone). */
export function decodeInodeFormat(b: Buffer, off: number): { extended: boolean; layout: number } {
  const format = b.readUInt16LE(off + INODE_FIELD.format);
  return { extended: (format & 1) === 1, layout: (format >> 1) & 0x7 };
}

/**
 * Decodes the inode header at `off`. Compact inodes get `mtimeSec`/`mtimeNsec` from the
 * superblock's build time, as the kernel does.
 */
export function decodeInodeHeader(b: Buffer, off: number, sb: Superblock): InodeHeader {
  const F = INODE_FIELD;
  const { extended, layout } = decodeInodeFormat(b, off);
  if (extended) {
    const E = EXTENDED_INODE_FIELD;
    return {
      extended,
      layout,
      xattrIcount: b.readUInt16LE(off + F.xattrIcount),
      mode: b.readUInt16LE(off + F.mode),
      size: b.readBigUInt64LE(off + F.size),
      u: b.readUInt32LE(off + F.u),
      ino: b.readUInt32LE(off + F.ino),
      uid: b.readUInt32LE(off + E.uid),
      gid: b.readUInt32LE(off + E.gid),
      mtimeSec: BigInt.asIntN(64, b.readBigUInt64LE(off + E.mtime)),
      mtimeNsec: b.readUInt32LE(off + E.mtimeNsec),
      nlink: b.readUInt32LE(off + E.nlink),
    };
  }
  const C = COMPACT_INODE_FIELD;
  return {
    extended,
    layout,
    xattrIcount: b.readUInt16LE(off + F.xattrIcount),
    mode: b.readUInt16LE(off + F.mode),
    nlink: b.readUInt16LE(off + C.nlink),
    size: BigInt(b.readUInt32LE(off + F.size)),
    u: b.readUInt32LE(off + F.u),
    ino: b.readUInt32LE(off + F.ino),
    uid: b.readUInt16LE(off + C.uid),
    gid: b.readUInt16LE(off + C.gid),
    mtimeSec: sb.buildTime,
    mtimeNsec: sb.buildTimeNsec,
  };
}

/** Field offsets of the in-inode xattr header (`InodeXAttrHeader`, 12 bytes, 7 reserved). */
export const INODE_XATTR_HEADER_FIELD = { nameFilter: 0, sharedCount: 4 } as const;

/**
 * Writes the in-inode xattr header: the name filter (stored as given: composefs stores the
 * complement of the bloom bits) and the count of shared references that follow it.
 */
export function writeInodeXattrHeader(b: Buffer, off: number, nameFilter: number, sharedCount: number): void {
  const F = INODE_XATTR_HEADER_FIELD;
  put32(b, off + F.nameFilter, nameFilter);
  put32(b, off + F.sharedCount, sharedCount); // the count byte and 3 reserved
  put32(b, off + F.sharedCount + 4, 0); // 4 more reserved
}

/** The shared-reference count of the in-inode xattr header at `off`. */
export function decodeInodeXattrSharedCount(b: Buffer, off: number): number {
  return b.readUInt8(off + INODE_XATTR_HEADER_FIELD.sharedCount);
}

/** Writes shared xattr reference `i` (a u32 id) of the body whose header is at `bodyOff`. */
export function writeSharedXattrRef(b: Buffer, bodyOff: number, i: number, id: number): void {
  put32(b, bodyOff + XATTR_IBODY_HEADER_SIZE + 4 * i, id);
}

/** Shared xattr reference `i` of the body whose header is at `bodyOff`. */
export function decodeSharedXattrRef(b: Buffer, bodyOff: number, i: number): number {
  return b.readUInt32LE(bodyOff + XATTR_IBODY_HEADER_SIZE + 4 * i);
}

/** Size of an in-inode xattr body for a given i_xattr_icount (0 = none). */
export function xattrBodySize(icount: number): number {
  return icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + 4 * (icount - 1);
}

/** i_xattr_icount for an xattr body of `size` bytes (0 = no body). */
export function xattrIcount(size: number): number {
  return size === 0 ? 0 : 1 + (size - XATTR_IBODY_HEADER_SIZE) / 4;
}

/** EROFS xattr name prefixes by index. Index 0 = the full name is stored. */
export const XATTR_PREFIXES: readonly (string | null)[] = [
  null,
  'user.',
  'system.posix_acl_access',
  'system.posix_acl_default',
  'trusted.',
  'lustre.',
  'security.',
];

/** One xattr entry split into prefix index + suffix. */
export interface XattrEntry {
  index: number;
  suffix: Buffer;
  value: Buffer;
}

/** Field offsets of an xattr entry's header (`XAttrHeader`); the name suffix, then the value follow it. */
export const XATTR_ENTRY_FIELD = { nameLen: 0, nameIndex: 1, valueSize: 2 } as const;
export const XATTR_ENTRY_HEADER_SIZE = 4;

/** Size of an xattr entry: header, suffix, value, padded to 4. */
export function xattrEntrySize(suffixLen: number, valueLen: number): number {
  return (XATTR_ENTRY_HEADER_SIZE + suffixLen + valueLen + 3) & ~3;
}

/**
 * Writes an xattr entry's header and name suffix at `off` and returns where its value of
 * `valueSize` bytes goes (for values the caller encodes in place); padding is not written.
 */
export function writeXattrEntryHead(b: Buffer, off: number, nameIndex: number, suffix: Uint8Array, valueSize: number): number {
  const F = XATTR_ENTRY_FIELD;
  b[off + F.nameLen] = suffix.length;
  b[off + F.nameIndex] = nameIndex;
  put16(b, off + F.valueSize, valueSize);
  b.set(suffix, off + XATTR_ENTRY_HEADER_SIZE); // TypedArray set: no native call per (small) copy
  return off + XATTR_ENTRY_HEADER_SIZE + suffix.length;
}

/** Writes a whole xattr entry at `off`, zero padding included; returns its size. */
export function writeXattrEntry(b: Buffer, off: number, nameIndex: number, suffix: Uint8Array, value: Uint8Array): number {
  const v = writeXattrEntryHead(b, off, nameIndex, suffix, value.length);
  b.set(value, v);
  const size = xattrEntrySize(suffix.length, value.length);
  for (let p = v + value.length; p < off + size; p++) b[p] = 0;
  return size;
}

/** Decodes an xattr entry at `off`; returns it with its padded length. */
export function decodeXattrEntry(b: Buffer, off: number): { entry: XattrEntry; size: number } {
  const F = XATTR_ENTRY_FIELD;
  const nameLen = b.readUInt8(off + F.nameLen);
  const index = b.readUInt8(off + F.nameIndex);
  const valueLen = b.readUInt16LE(off + F.valueSize);
  const start = off + XATTR_ENTRY_HEADER_SIZE;
  const end = start + nameLen + valueLen;
  if (end > b.length) throw new RangeError(`xattr entry at offset ${off} runs past the end of the image`);
  const suffix = b.subarray(start, start + nameLen);
  const value = b.subarray(start + nameLen, end);
  return { entry: { index, suffix, value }, size: xattrEntrySize(nameLen, valueLen) };
}

/** A directory entry as stored: target nid, name, file type. */
export interface Dirent {
  nid: bigint;
  name: Buffer;
  fileType: number;
}

/** A malformed image: the reason and the byte offset where it was found. */
export class ImageError extends InputError {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} (at byte offset ${offset})`);
    this.name = 'ImageError';
  }
}

/** Field offsets of a dirent header (`DirectoryEntryHeader`, 12 bytes); names follow all headers. */
export const DIRENT_FIELD = { nid: 0, nameOff: 8, fileType: 10 } as const;
if (DIRENT_FIELD.nid % 4 !== 0 || DIRENT_FIELD.nameOff % 4 !== 0 || DIRENT_FIELD.fileType !== DIRENT_FIELD.nameOff + 2) {
  throw new Error('internal error: dirent field offsets do not fit the word stores');
}

/**
 * Writes dirent header `i` of the group at `groupOff`: the target's nid (< 2^53), the offset of
 * its name from the start of the group, its file type.
 */
export function writeDirentHeader(b: Buffer, groupOff: number, i: number, nid: number, nameOff: number, fileType: number): void {
  const F = DIRENT_FIELD;
  const h = groupOff + i * DIRENT_SIZE;
  const u = w32(b);
  if (u !== null && h % 4 === 0 && nid >= 0 && nid <= Number.MAX_SAFE_INTEGER) {
    u[(h + F.nid) >>> 2] = nid % 0x100000000;
    u[(h + F.nid + 4) >>> 2] = Math.floor(nid / 0x100000000);
    u[(h + F.nameOff) >>> 2] = (nameOff & 0xffff) | ((fileType & 0xff) << 16); // reserved byte 0
    return;
  }
  put64(b, h + F.nid, nid);
  put16(b, h + F.nameOff, nameOff);
  b[h + F.fileType] = fileType;
  b[h + F.fileType + 1] = 0; // reserved
}

/**
 * Decodes a dirent group (one block or the inline tail) of `len` bytes at `off`: all headers,
 * then all names. The last name ends at the first NUL or at the end of the group (full blocks
 * are zero-padded). Each entry carries the offset of its header.
 */
export function decodeDirents(b: Buffer, off: number, len: number): (Dirent & { off: number })[] {
  const F = DIRENT_FIELD;
  if (off + len > b.length) throw new ImageError(`directory block of ${len} bytes runs past the end of the image`, off);
  if (len < DIRENT_SIZE) throw new ImageError(`directory block of ${len} bytes is too short for a dirent`, off);
  const first = b.readUInt16LE(off + F.nameOff);
  if (first === 0 || first % DIRENT_SIZE !== 0 || first > len) {
    throw new ImageError(`directory block has a bad first name offset ${first}`, off + F.nameOff);
  }
  const n = first / DIRENT_SIZE;
  const out: (Dirent & { off: number })[] = [];
  for (let i = 0; i < n; i++) {
    const d = off + i * DIRENT_SIZE;
    const nameOff = b.readUInt16LE(d + F.nameOff);
    let nameEnd: number;
    if (i + 1 < n) nameEnd = b.readUInt16LE(d + DIRENT_SIZE + F.nameOff);
    else {
      const z = nameOff <= len ? b.subarray(off + nameOff, off + len).indexOf(0) : -1;
      nameEnd = z === -1 ? len : nameOff + z;
    }
    if (nameOff < first || nameOff > nameEnd || nameEnd > len) {
      throw new ImageError(`dirent ${i} has bad name offsets ${nameOff}..${nameEnd}`, d + F.nameOff);
    }
    out.push({ nid: b.readBigUInt64LE(d + F.nid), fileType: b.readUInt8(d + F.fileType), name: b.subarray(off + nameOff, off + nameEnd), off: d });
  }
  return out;
}

/** Rounds `x` up to a multiple of `n` (a power of two or any positive integer). */
export function roundUp(x: number, n: number): number {
  return Math.ceil(x / n) * n;
}
