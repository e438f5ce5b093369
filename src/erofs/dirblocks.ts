/**
 * Splitting a directory's entries into full 4096-byte dirent blocks and an inline tail, the
 * same way in every composefs format version.
 */

import { BLOCK_SIZE, DIRENT_SIZE, FT_DIR } from './format.js';
import type { Leaf } from '../tree/tree.js';

/** One directory entry while the image is being built. */
export interface DirEnt {
  name: Buffer;
  /** Index of the target inode in the writer's inode list; -1 until a deferred hard link is resolved. */
  target: number;
  /** The leaf of a deferred hard link (only while `target` is -1). */
  leaf: Leaf | null;
  fileType: number;
}

/** A directory's entries as stored. */
export interface DirContent {
  /** Full blocks, each written zero-padded to 4096 bytes. */
  blocks: DirEnt[][];
  /** Entries stored inline after the inode (may be empty). */
  inline: DirEnt[];
  /** i_size: 4096 per full block + the inline bytes. */
  size: number;
  /** Entries of type directory, "." and ".." included = 2 + subdirectories. */
  nlink: number;
}

/** At most half a block of entries stays inline; a larger remainder gets a block of its own. */
const MAX_INLINE_DIRENTS = BLOCK_SIZE / 2;

/**
 * Greedy split of sorted entries: fill a block until the next entry (12-byte header + name)
 * would not fit, then start the next one. The last group stays inline unless it is larger
 * than half a block.
 */
export function splitDirectory(entries: DirEnt[]): DirContent {
  const blocks: DirEnt[][] = [];
  let cur: DirEnt[] = [];
  let used = 0;
  let nlink = 0;
  for (const e of entries) {
    const size = DIRENT_SIZE + e.name.length;
    if (e.fileType === FT_DIR) nlink++;
    if (used + size > BLOCK_SIZE) {
      blocks.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(e);
    used += size;
  }
  if (used > MAX_INLINE_DIRENTS) {
    blocks.push(cur);
    cur = [];
    used = 0;
  }
  return { blocks, inline: cur, size: BLOCK_SIZE * blocks.length + used, nlink };
}
