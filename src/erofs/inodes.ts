/**
 * The writer's flat inode list (parallel arrays, in write order), node kinds, the chunk format
 * of external files, and the per-inode facts layout and serialisation both read.
 */

import {
  BLOCK_BITS,
  BLOCK_SIZE,
  FT_BLK,
  FT_CHR,
  FT_DIR,
  FT_FIFO,
  FT_LNK,
  FT_REG,
  FT_SOCK,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
} from './format.js';
import {
  Directory,
  Leaf,
  type LeafContent,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
} from '../tree/tree.js';
import { InodeXattrs } from './xattrs.js';
import { type DirContent } from './dirblocks.js';

// ------------------------------------------------------------------------------------------
// The flat inode list
// ------------------------------------------------------------------------------------------

/**
 * The inodes as the writer sees them, in write order, as parallel arrays (no object per
 * inode: trees of 500k files stay small and cheap to collect):
 *  - `node`: the tree leaf or directory;
 *  - `xa`: the inode's xattrs, or null when it has none, or when it is an external file whose
 *    only xattrs are the metacopy / redirect values of its id (those are never materialised);
 *  - `dir`: directory entries split into blocks + inline tail (directories only);
 *  - `nlink`: leaf link count (references in the tree); directories use `dir.nlink`;
 *  - `escaped`: epoch 1 user whiteout (chardev 0/0) written as a regular file with markers;
 *  - `nData`: full data blocks of a leaf (epoch 1 only: large inline files, promoted
 *    symlinks, demoted chunk indexes);
 *  - `tail`: bytes of leaf data stored right after the inode (inline data tail or chunk index).
 */
export class Inodes {
  n = 0;
  // Sized once (the capacity is known): growing them by push cost copies and garbage. Entries
  // from `n` on are null (node's type leaves that out: nothing reads past `n`).
  readonly node: (Leaf | Directory)[];
  readonly xa: (InodeXattrs | null)[];
  readonly dir: (DirContent | null)[];
  readonly nlink: Int32Array;
  readonly escaped: Uint8Array;
  readonly nData: Int32Array;
  readonly tail: Int32Array;
  /**
   * The node's kind (K_*) and, for leaves, its content length as a number (-1: a file too
   * large for one). Read from typed arrays, the per-inode passes avoid property loads on
   * content objects of many shapes.
   */
  readonly kind: Uint8Array;
  readonly isize: Float64Array;
  constructor(capacity: number) {
    this.node = new Array<Leaf | Directory | null>(capacity).fill(null) as (Leaf | Directory)[];
    this.xa = new Array<InodeXattrs | null>(capacity).fill(null);
    this.dir = new Array<DirContent | null>(capacity).fill(null);
    this.nlink = new Int32Array(capacity);
    this.escaped = new Uint8Array(capacity);
    this.nData = new Int32Array(capacity);
    this.tail = new Int32Array(capacity);
    this.kind = new Uint8Array(capacity);
    this.isize = new Float64Array(capacity);
  }
}

/** Dirent file type of an inode. */
export function fileType(inos: Inodes, i: number): number {
  return inos.escaped[i] !== 0 ? FT_REG : FT_OF_KIND[inos.kind[i]];
}

// Node kinds (Inodes.kind).
export const K_DIR = 0;
export const K_INLINE = 1;
export const K_EXTERNAL = 2;
export const K_EXTERNAL_NO_VERITY = 3;
export const K_SPARSE = 4;
export const K_SYMLINK = 5;
const K_CHARDEV = 6;
const K_BLOCKDEV = 7;
const K_FIFO = 8;
const K_SOCKET = 9;
export const KIND_OF: Record<LeafContent['type'], number> = {
  inline: K_INLINE,
  external: K_EXTERNAL,
  'external-no-verity': K_EXTERNAL_NO_VERITY,
  sparse: K_SPARSE,
  symlink: K_SYMLINK,
  chardev: K_CHARDEV,
  blockdev: K_BLOCKDEV,
  fifo: K_FIFO,
  socket: K_SOCKET,
};
const FT_OF_KIND = [FT_DIR, FT_REG, FT_REG, FT_REG, FT_REG, FT_LNK, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK];

/** External, no-verity external or sparse: a chunk-based file. */
export function chunkedAt(inos: Inodes, i: number): boolean {
  const k = inos.kind[i];
  return k === K_EXTERNAL || k === K_EXTERNAL_NO_VERITY || k === K_SPARSE;
}

export const TYPE_BITS: number[] = [];
TYPE_BITS[FT_REG] = S_IFREG;
TYPE_BITS[FT_DIR] = S_IFDIR;
TYPE_BITS[FT_CHR] = S_IFCHR;
TYPE_BITS[FT_BLK] = S_IFBLK;
TYPE_BITS[FT_FIFO] = S_IFIFO;
TYPE_BITS[FT_SOCK] = S_IFSOCK;
TYPE_BITS[FT_LNK] = S_IFLNK;

// ------------------------------------------------------------------------------------------
// Chunk format of external files
// ------------------------------------------------------------------------------------------

/** {@link chunkBits} of a size below 2^53, in number arithmetic (no bigint per file). */
export function chunkBitsOf(size: number): number {
  if (size <= BLOCK_SIZE) return BLOCK_BITS;
  const v = size - 1;
  const hi = Math.floor(v / 0x100000000);
  const bits = hi > 0 ? 64 - Math.clz32(hi) : 32 - Math.clz32(v);
  return Math.min(Math.max(bits, BLOCK_BITS), BLOCK_BITS + 31);
}

/** Number of chunk index entries of a file of a size below 2^53 (epoch 1). */
export function chunkCountOf(size: number): number {
  return Math.ceil(size / 2 ** chunkBitsOf(size));
}

/** log2 of the chunk size for a file: just enough for one chunk, between 4 KiB and 8 TiB. */
function chunkBits(size: bigint): number {
  if (size <= MAX_EXACT) return chunkBitsOf(Number(size));
  if (size <= 4096n) return BLOCK_BITS;
  let bits: number;
  if (size <= 0x20000000000000n) {
    // bit length of size - 1, without a bigint -> string conversion per file
    const v = Number(size - 1n);
    const hi = Math.floor(v / 0x100000000);
    bits = hi > 0 ? 64 - Math.clz32(hi) : 32 - Math.clz32(v);
  } else bits = (size - 1n).toString(2).length;
  return Math.min(Math.max(bits, BLOCK_BITS), BLOCK_BITS + 31);
}

/** The `i_u` chunk format: chunk bits beyond the block size (epoch 1). */
export function chunkFormat(size: bigint): number {
  return chunkBits(size) - BLOCK_BITS;
}

/** Number of chunk index entries a file needs (epoch 1). */
export function chunkCount(size: bigint): number {
  const chunk = 1n << BigInt(chunkBits(size));
  return Number((size + chunk - 1n) / chunk);
}


export const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

export function nlinkOf(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  return d !== null ? d.nlink : inos.nlink[i];
}

/** i_size of an inode: a number, or the file's bigint size for chunk-based files. */
export function inodeSize(inos: Inodes, i: number): number | bigint {
  const d = inos.dir[i];
  if (d !== null) return d.size;
  if (inos.escaped[i] !== 0) return 0;
  const n = inos.isize[i];
  if (n >= 0) return n;
  return ((inos.node[i] as Leaf).content as { size: bigint }).size; // beyond 2^53 bytes
}

/** i_format data layout. */
export function dataLayout(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  if (d !== null) return d.inlineStart === d.names.length ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
  switch (inos.kind[i]) {
    case K_INLINE:
      if (inos.isize[i] === 0) return LAYOUT_FLAT_PLAIN;
      return inos.nData[i] > 0 && inos.tail[i] === 0 ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
    case K_EXTERNAL:
    case K_EXTERNAL_NO_VERITY:
    case K_SPARSE:
      return LAYOUT_CHUNK_BASED;
    case K_SYMLINK:
      return inos.nData[i] > 0 ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
    default:
      return LAYOUT_FLAT_PLAIN;
  }
}

/** Bytes written right after the xattr body. */
export function inlineLength(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  if (d !== null) return d.size % BLOCK_SIZE;
  if (inos.kind[i] === K_SYMLINK) return inos.nData[i] === 0 ? inos.isize[i] : 0;
  return inos.tail[i];
}

/** Number of data blocks an inode owns. */
export function dataBlockCount(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  return d !== null ? d.blockEnds.length : inos.nData[i];
}
