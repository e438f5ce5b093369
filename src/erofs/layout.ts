/**
 * Steps 2 and 3 of the writer: what layout needs from the whole tree (the minimum mtime,
 * compact or extended headers, epoch-1 data blocks), then the placement of every inode, the
 * shared xattr table and the data blocks.
 */

import {
  BLOCK_SIZE,
  COMPACT_INODE_SIZE,
  EROFS_SUPER_OFFSET,
  EXTENDED_INODE_SIZE,
  LAYOUT_FLAT_INLINE,
  roundUp,
  SUPERBLOCK_SIZE,
} from './format.js';
import { entrySize, type XattrItem } from './xattrs.js';
import {
  chunkedAt,
  dataBlockCount,
  dataLayout,
  inlineLength,
  Inodes,
  inodeSize,
  K_DIR,
  K_SYMLINK,
  nlinkOf,
} from './inodes.js';

/** Inodes are 32-byte aligned: nid = offset / 32. */
export const SLOT = 32;
/** Where the inode table starts: after the 1024-byte header area and the superblock. */
const INODE_TABLE_START = EROFS_SUPER_OFFSET + SUPERBLOCK_SIZE;

const U64 = 1n << 64n;

/** A signed 64-bit seconds value as composefs-rs compares it: unsigned. */
function asU64(v: bigint): bigint {
  return v >= 0n && v < U64 ? v : BigInt.asUintN(64, v);
}

/** Minimum (sec, nsec) over all inodes, seconds compared as unsigned 64-bit (composefs-rs). */
export function minMtime(inos: Inodes): [bigint, number] {
  let sec = -1n;
  let nsec = 0;
  let last: bigint | undefined;
  for (let i = 0; i < inos.n; i++) {
    const st = inos.node[i].stat;
    const raw = st.mtimeSec;
    if (raw === last && st.mtimeNsec >= nsec) continue; // common: same second as the last one
    last = raw;
    const s = asU64(raw);
    if (sec < 0n || s < sec || (s === sec && st.mtimeNsec < nsec)) {
      sec = s;
      nsec = st.mtimeNsec;
    }
  }
  return sec < 0n ? [0n, 0] : [sec, nsec];
}

/** Everything per image that inode headers need besides the inode itself. */
export interface Context {
  epoch1: boolean;
  minSec: bigint;
  minNsec: number;
}

/**
 * Compact (32-byte) inodes have no mtime of their own (readers use build_time) and 16/32-bit
 * fields, so they are used only when nothing is lost.
 */
function fitsCompact(inos: Inodes, i: number, size: number | bigint, ctx: Context): boolean {
  if (!ctx.epoch1) return false;
  const st = inos.node[i].stat;
  return (
    st.mtimeNsec === ctx.minNsec &&
    (st.mtimeSec === ctx.minSec || asU64(st.mtimeSec) === ctx.minSec) &&
    nlinkOf(inos, i) <= 0xffff &&
    st.uid <= 0xffff &&
    st.gid <= 0xffff &&
    size <= 0xffffffff
  );
}

/**
 * Epoch 1, once xattr sizes are final: a symlink whose inode, xattrs and target would fill a
 * block moves its target to a data block; a chunk index that cannot fit in one block even
 * after the tail padding moves to a data block ("demoted").
 */
export function settleEpoch1DataBlocks(inos: Inodes, xsize: Int32Array, ctx: Context): void {
  for (let i = 0; i < inos.n; i++) {
    if (inos.kind[i] === K_DIR || inos.tail[i] === 0) continue;
    const xattrSize = xsize[i];
    if (inos.kind[i] === K_SYMLINK) {
      const header = fitsCompact(inos, i, inodeSize(inos, i), ctx) ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE;
      if (header + xattrSize + inos.tail[i] >= BLOCK_SIZE) {
        inos.nData[i] += 1;
        inos.tail[i] = 0;
      }
    } else if (chunkedAt(inos, i)) {
      // After padding, the tail starts (xattrSize mod 32) bytes into a block.
      if (inos.tail[i] + (xattrSize % SLOT) > BLOCK_SIZE) {
        inos.nData[i] = 1;
        inos.tail[i] = 0;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Step 3: layout
// ------------------------------------------------------------------------------------------

export interface Layout {
  /** Per inode: offset, header kind (1 = compact), data layout. */
  offset: Float64Array;
  compact: Uint8Array;
  layout: Uint8Array;
  /** End of the inode table (32-aligned) = start of the shared xattr table. */
  inodesEnd: number;
  /** Offset of each shared xattr entry. */
  shared: number[];
  /** Offset of each inode's first data block. */
  blocks: Float64Array;
  /** Image length. */
  end: number;
}

/** Bytes from `pos` to the next block boundary; 0 when `pos` is on one. */
function toBlockBoundary(pos: number): number {
  const r = pos % BLOCK_SIZE;
  return r === 0 ? 0 : BLOCK_SIZE - r;
}

/**
 * Where an inode starts, given the first free 32-aligned offset. Inline data must not straddle
 * a block boundary, so some inodes are pushed forward; the rules differ per epoch and type.
 */
function placeInode(pos: number, inos: Inodes, i: number, meta: number, layout: number, size: number | bigint, epoch1: boolean): number {
  // Only FLAT_INLINE inodes (directories, inline files, symlinks: number sizes) use this.
  const inlineSize = typeof size === 'number' ? size % BLOCK_SIZE : 0;

  if (!epoch1) {
    // Epoch 2: if the last metadata byte and the (exclusive) end of the inline data are in
    // different blocks, start the inline data in the next block (then re-align to 32).
    if (layout !== LAYOUT_FLAT_INLINE) return pos;
    const inlineStart = pos + meta;
    const lastMeta = inlineStart - 1;
    if (Math.floor(lastMeta / BLOCK_SIZE) !== Math.floor((inlineStart + inlineSize) / BLOCK_SIZE)) {
      pos = roundUp(pos + BLOCK_SIZE - (lastMeta % BLOCK_SIZE), SLOT);
    }
    return pos;
  }

  if (inos.kind[i] === K_SYMLINK) {
    // A symlink's inode and target must sit in one block (older kernels reject anything
    // else), so the whole inode moves to the next block. Promoted symlinks keep the test on
    // their original, pre-promotion size.
    const total = meta + (layout === LAYOUT_FLAT_INLINE ? inlineSize : Number(size));
    if ((pos % BLOCK_SIZE) + total > BLOCK_SIZE) pos += toBlockBoundary(pos);
    return pos;
  }
  const chunked = chunkedAt(inos, i);
  if (chunked && inos.nData[i] > 0) {
    // A demoted chunk index: the inode starts a block.
    return pos + toBlockBoundary(pos);
  }
  // Directories, inline files and chunk indexes: if the tail does not fit in the rest of the
  // block, pad by that rest (rounded to 32) so the tail starts in the next block.
  const tail = chunked ? inos.tail[i] : layout === LAYOUT_FLAT_INLINE ? inlineSize : 0;
  if (tail > 0) {
    const rem = toBlockBoundary(pos + meta);
    if (rem !== 0 && rem < tail) pos += roundUp(rem, SLOT);
  }
  return pos;
}

export function layOut(inos: Inodes, xsize: Int32Array, shared: XattrItem[], ctx: Context): Layout {
  const n = inos.n;
  const offset = new Float64Array(n);
  const compact = new Uint8Array(n);
  const layouts = new Uint8Array(n);
  let pos = INODE_TABLE_START;
  for (let i = 0; i < n; i++) {
    const size = inodeSize(inos, i);
    const isCompact = fitsCompact(inos, i, size, ctx);
    const layout = dataLayout(inos, i);
    const meta = (isCompact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE) + xsize[i];
    pos = placeInode(roundUp(pos, SLOT), inos, i, meta, layout, size, ctx.epoch1);
    offset[i] = pos;
    compact[i] = isCompact ? 1 : 0;
    layouts[i] = layout;
    pos += meta + inlineLength(inos, i);
  }
  const inodesEnd = roundUp(pos, SLOT);

  const sharedOffsets: number[] = [];
  pos = inodesEnd;
  for (const x of shared) {
    sharedOffsets.push(pos);
    pos += entrySize(x);
  }

  // Data blocks follow in inode order.
  pos = roundUp(pos, BLOCK_SIZE);
  const blocks = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    blocks[i] = pos;
    pos += dataBlockCount(inos, i) * BLOCK_SIZE;
  }
  return { offset, compact, layout: layouts, inodesEnd, shared: sharedOffsets, blocks, end: pos };
}
