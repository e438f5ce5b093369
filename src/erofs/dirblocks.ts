/**
 * Splitting a directory's entries into full 4096-byte dirent blocks and an inline tail, the
 * same way in every composefs format version.
 */

import { BLOCK_SIZE, DIRENT_SIZE, FT_DIR } from './format.js';

/**
 * A directory's entries while the image is being built, as parallel arrays (no object per
 * entry): names as latin1 keys (one char per byte), target inode indices, dirent file types.
 */
export interface DirEntries {
  names: string[];
  /** Index of the target inode in the writer's inode list; -1 until a deferred hard link is resolved. */
  targets: number[];
  types: number[];
}

/** A directory's entries as stored. */
export interface DirContent extends DirEntries {
  /** Exclusive end index of each full block (written zero-padded to 4096 bytes). */
  blockEnds: number[];
  /** Entries from here on are stored inline after the inode (may be none). */
  inlineStart: number;
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
export function splitDirectory(e: DirEntries): DirContent {
  const { names, types } = e;
  const blockEnds: number[] = [];
  let used = 0;
  let nlink = 0;
  const n = names.length;
  for (let i = 0; i < n; i++) {
    const size = DIRENT_SIZE + names[i].length;
    if (types[i] === FT_DIR) nlink++;
    if (used + size > BLOCK_SIZE) {
      blockEnds.push(i);
      used = 0;
    }
    used += size;
  }
  if (used > MAX_INLINE_DIRENTS) {
    blockEnds.push(n);
    used = 0;
  }
  const inlineStart = blockEnds.length > 0 ? blockEnds[blockEnds.length - 1] : 0;
  return { names, targets: e.targets, types, blockEnds, inlineStart, size: BLOCK_SIZE * blockEnds.length + used, nlink };
}
