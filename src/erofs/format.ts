/**
 * The composefs EROFS on-disk format as typed structs with encoders and decoders.
 *
 * Everything is little-endian. Writers (V0/V1 and V2) and the reader share these definitions so
 * the byte layout lives in exactly one place. Layout rules (which inode goes where) are not
 * here: see the writers.
 */
import { InputError } from '../errors.js';

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

/** Composefs header, the first 32 bytes of every image. */
export interface ComposefsHeader {
  magic: number;
  version: number;
  flags: number;
  composefsVersion: number;
}

export function encodeComposefsHeader(h: ComposefsHeader): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(h.magic, 0);
  b.writeUInt32LE(h.version, 4);
  b.writeUInt32LE(h.flags, 8);
  b.writeUInt32LE(h.composefsVersion, 12);
  return b;
}

export function decodeComposefsHeader(b: Buffer, off = 0): ComposefsHeader {
  return {
    magic: b.readUInt32LE(off),
    version: b.readUInt32LE(off + 4),
    flags: b.readUInt32LE(off + 8),
    composefsVersion: b.readUInt32LE(off + 12),
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

export function encodeSuperblock(s: Superblock): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.writeUInt32LE(s.magic, 0);
  b.writeUInt32LE(s.featureCompat, 8);
  b.writeUInt8(s.blkszbits, 12);
  b.writeUInt16LE(s.rootNid, 14);
  b.writeBigUInt64LE(s.inos, 16);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.buildTime), 24);
  b.writeUInt32LE(s.buildTimeNsec >>> 0, 32);
  b.writeUInt32LE(s.blocks >>> 0, 36);
  b.writeUInt32LE(s.metaBlkaddr >>> 0, 40);
  b.writeUInt32LE(s.xattrBlkaddr >>> 0, 44);
  b.writeUInt32LE(s.featureIncompat >>> 0, 80);
  return b;
}

export function decodeSuperblock(b: Buffer, off = EROFS_SUPER_OFFSET): Superblock {
  return {
    magic: b.readUInt32LE(off),
    featureCompat: b.readUInt32LE(off + 8),
    blkszbits: b.readUInt8(off + 12),
    rootNid: b.readUInt16LE(off + 14),
    inos: b.readBigUInt64LE(off + 16),
    buildTime: BigInt.asIntN(64, b.readBigUInt64LE(off + 24)),
    buildTimeNsec: b.readUInt32LE(off + 32),
    blocks: b.readUInt32LE(off + 36),
    metaBlkaddr: b.readUInt32LE(off + 40),
    xattrBlkaddr: b.readUInt32LE(off + 44),
    featureIncompat: b.readUInt32LE(off + 80),
  };
}

/**
 * An inode header, compact (32 bytes) or extended (64 bytes). Compact inodes have no mtime of
 * their own (the reader takes build_time) and 16-bit uid/gid/nlink, 32-bit size.
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

/**
 * Decodes the inode header at `off`. Compact inodes get `mtimeSec`/`mtimeNsec` from the
 * superblock's build time, as the kernel does.
 */
export function decodeInodeHeader(b: Buffer, off: number, sb: Superblock): InodeHeader {
  const format = b.readUInt16LE(off);
  const extended = (format & 1) === 1;
  const layout = (format >> 1) & 0x7;
  if (extended) {
    return {
      extended,
      layout,
      xattrIcount: b.readUInt16LE(off + 2),
      mode: b.readUInt16LE(off + 4),
      size: b.readBigUInt64LE(off + 8),
      u: b.readUInt32LE(off + 16),
      ino: b.readUInt32LE(off + 20),
      uid: b.readUInt32LE(off + 24),
      gid: b.readUInt32LE(off + 28),
      mtimeSec: BigInt.asIntN(64, b.readBigUInt64LE(off + 32)),
      mtimeNsec: b.readUInt32LE(off + 40),
      nlink: b.readUInt32LE(off + 44),
    };
  }
  return {
    extended,
    layout,
    xattrIcount: b.readUInt16LE(off + 2),
    mode: b.readUInt16LE(off + 4),
    nlink: b.readUInt16LE(off + 6),
    size: BigInt(b.readUInt32LE(off + 8)),
    u: b.readUInt32LE(off + 16),
    ino: b.readUInt32LE(off + 20),
    uid: b.readUInt16LE(off + 24),
    gid: b.readUInt16LE(off + 26),
    mtimeSec: sb.buildTime,
    mtimeNsec: sb.buildTimeNsec,
  };
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

/** Decodes an xattr entry at `off`; returns it with its padded length. */
export function decodeXattrEntry(b: Buffer, off: number): { entry: XattrEntry; size: number } {
  const nameLen = b.readUInt8(off);
  const index = b.readUInt8(off + 1);
  const valueLen = b.readUInt16LE(off + 2);
  const end = off + 4 + nameLen + valueLen;
  if (end > b.length) throw new RangeError(`xattr entry at offset ${off} runs past the end of the image`);
  const suffix = b.subarray(off + 4, off + 4 + nameLen);
  const value = b.subarray(off + 4 + nameLen, end);
  return { entry: { index, suffix, value }, size: (4 + nameLen + valueLen + 3) & ~3 };
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

/**
 * Decodes a dirent group (one block or the inline tail) of `len` bytes at `off`: all headers,
 * then all names. The last name ends at the first NUL or at the end of the group (full blocks
 * are zero-padded). Each entry carries the offset of its header.
 */
export function decodeDirents(b: Buffer, off: number, len: number): (Dirent & { off: number })[] {
  if (off + len > b.length) throw new ImageError(`directory block of ${len} bytes runs past the end of the image`, off);
  if (len < DIRENT_SIZE) throw new ImageError(`directory block of ${len} bytes is too short for a dirent`, off);
  const first = b.readUInt16LE(off + 8);
  if (first === 0 || first % DIRENT_SIZE !== 0 || first > len) {
    throw new ImageError(`directory block has a bad first name offset ${first}`, off + 8);
  }
  const n = first / DIRENT_SIZE;
  const out: (Dirent & { off: number })[] = [];
  for (let i = 0; i < n; i++) {
    const d = off + i * DIRENT_SIZE;
    const nameOff = b.readUInt16LE(d + 8);
    let nameEnd: number;
    if (i + 1 < n) nameEnd = b.readUInt16LE(d + DIRENT_SIZE + 8);
    else {
      const z = nameOff <= len ? b.subarray(off + nameOff, off + len).indexOf(0) : -1;
      nameEnd = z === -1 ? len : nameOff + z;
    }
    if (nameOff < first || nameOff > nameEnd || nameEnd > len) {
      throw new ImageError(`dirent ${i} has bad name offsets ${nameOff}..${nameEnd}`, d + 8);
    }
    out.push({ nid: b.readBigUInt64LE(d), fileType: b.readUInt8(d + 10), name: b.subarray(off + nameOff, off + nameEnd), off: d });
  }
  return out;
}

/** Rounds `x` up to a multiple of `n` (a power of two or any positive integer). */
export function roundUp(x: number, n: number): number {
  return Math.ceil(x / n) * n;
}
