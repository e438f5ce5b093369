/**
 * The composefs EROFS image writer, byte-identical with composefs-rs v0.9.0
 * (`mkfs_erofs_versioned`) for the three format versions:
 *
 * - **V0 / V1** ("epoch 1"): the libcomposefs-compatible layout. Breadth-first inode order,
 *   compact inodes where possible, 256 whiteout stubs `00`..`ff` in the root, escaped user
 *   whiteouts, `build_time` = the minimum mtime. V0 and V1 differ only in the header's
 *   `composefs_version` and in the `opaque=x` markers V1 puts on parents of whiteouts.
 * - **V2** ("epoch 2"): composefs-rs's legacy layout. Depth-first order, extended inodes
 *   only, no stubs, whiteouts stored as plain character devices.
 *
 * The work is done in four steps, each its own function:
 *   1. collect: turn the tree into a flat list of inodes (order = write order) with their
 *      xattrs and directory entries;                    ({@link collectBfs}, {@link collectDfs})
 *   2. prepare: share xattrs, find the minimum mtime, settle epoch-1 data blocks;
 *   3. lay out: place every inode, the shared xattr table and the data blocks ({@link layOut});
 *   4. serialise into one preallocated buffer ({@link serialise}).
 * Layout never depends on values that are only known later (nids, block addresses, shared
 * xattr ids), so one layout pass followed by one writing pass is enough.
 */

import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPACT_INODE_SIZE,
  COMPOSEFS_FLAGS_HAS_ACL,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  DIRENT_SIZE,
  EROFS_SUPER_MAGIC,
  EROFS_SUPER_OFFSET,
  EXTENDED_INODE_SIZE,
  FEATURE_COMPAT_MTIME,
  FEATURE_COMPAT_XATTR_FILTER,
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
  SUPERBLOCK_SIZE,
  encodeComposefsHeader,
  type InodeHeader,
  encodeSuperblock,
  roundUp,
  xattrIcount,
} from './format.js';
import {
  Directory,
  FileSystem,
  Inode,
  Leaf,
  Stat,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  keyBytes,
} from '../tree/tree.js';
import {
  InodeXattrs,
  XATTR_INDEX_POSIX_ACL_ACCESS,
  XATTR_INDEX_POSIX_ACL_DEFAULT,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_OPAQUE,
  XATTR_OVERLAY_OPAQUE_ROOT,
  XATTR_OVERLAY_REDIRECT,
  XATTR_OVERLAY_WHITEOUT,
  XATTR_OVERLAY_WHITEOUTS,
  XATTR_SECURITY_SELINUX,
  XATTR_USER_OPAQUE,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
  XattrItem,
  entrySize,
  escapeOverlayName,
  metacopyValue,
  redirectValue,
  shareXattrs,
  writeEntry,
} from './xattrs.js';
import { DirEnt, DirContent, splitDirectory } from './dirblocks.js';

export type ErofsVersion = 0 | 1 | 2;

/** Inodes are 32-byte aligned: nid = offset / 32. */
const SLOT = 32;
/** Where the inode table starts: after the 1024-byte header area and the superblock. */
const INODE_TABLE_START = EROFS_SUPER_OFFSET + SUPERBLOCK_SIZE;
/** A demoted (epoch-1) chunk index always fills one block with this many null entries. */
const DEMOTED_CHUNK_ENTRIES = BLOCK_SIZE / 4;

// ------------------------------------------------------------------------------------------
// The flat inode list
// ------------------------------------------------------------------------------------------

/** One inode as the writer sees it. */
interface WInode {
  stat: Stat;
  xattrs: InodeXattrs;
  /** The tree leaf, or null for a directory. */
  leaf: Leaf | null;
  /** Directory entries split into blocks + inline tail; set once the children are known. */
  dir: DirContent | null;
  /** Leaf link count (references in the tree); directories use `dir.nlink`. */
  nlink: number;
  /** Epoch 1: a user whiteout (chardev 0/0) written as a regular file with marker xattrs. */
  escapedWhiteout: boolean;
  /** Full data blocks of a leaf (epoch 1 only: large inline files, promoted symlinks, demoted chunk indexes). */
  nDataBlocks: number;
  /** Bytes of leaf data stored right after the inode (inline data tail or chunk index). */
  tail: number;
}

/** Dirent file type of an inode. */
function fileType(ino: WInode): number {
  if (ino.escapedWhiteout) return FT_REG;
  if (ino.leaf === null) return FT_DIR;
  switch (ino.leaf.content.type) {
    case 'inline':
    case 'external':
    case 'external-no-verity':
    case 'sparse':
      return FT_REG;
    case 'symlink':
      return FT_LNK;
    case 'chardev':
      return FT_CHR;
    case 'blockdev':
      return FT_BLK;
    case 'fifo':
      return FT_FIFO;
    case 'socket':
      return FT_SOCK;
  }
}

const TYPE_BITS: Record<number, number> = {
  [FT_REG]: S_IFREG,
  [FT_DIR]: S_IFDIR,
  [FT_CHR]: S_IFCHR,
  [FT_BLK]: S_IFBLK,
  [FT_FIFO]: S_IFIFO,
  [FT_SOCK]: S_IFSOCK,
  [FT_LNK]: S_IFLNK,
};

/** i_mode: the type bits of the (possibly escaped) file type, and the permission bits of the stat. */
function inodeMode(ino: WInode): number {
  return TYPE_BITS[fileType(ino)] | (ino.stat.mode & 0o7777);
}

function isChunkBased(leaf: Leaf | null): boolean {
  if (leaf === null) return false;
  const t = leaf.content.type;
  return t === 'external' || t === 'external-no-verity' || t === 'sparse';
}

function isSymlink(ino: WInode): boolean {
  return ino.leaf !== null && ino.leaf.content.type === 'symlink';
}

// ------------------------------------------------------------------------------------------
// Chunk format of external files
// ------------------------------------------------------------------------------------------

/** log2 of the chunk size for a file: just enough for one chunk, between 4 KiB and 8 TiB. */
function chunkBits(size: bigint): number {
  const bits = size > 1n ? (size - 1n).toString(2).length : 1;
  return Math.min(Math.max(bits, BLOCK_BITS), BLOCK_BITS + 31);
}

/** The `i_u` chunk format: chunk bits beyond the block size (epoch 1). */
function chunkFormat(size: bigint): number {
  return chunkBits(size) - BLOCK_BITS;
}

/** Number of chunk index entries a file needs (epoch 1). */
function chunkCount(size: bigint): number {
  const chunk = 1n << BigInt(chunkBits(size));
  return Number((size + chunk - 1n) / chunk);
}

// ------------------------------------------------------------------------------------------
// Step 1: collection
// ------------------------------------------------------------------------------------------

/** A pending directory: its inode, its parent's inode and its entries (before splitting). */
interface PendingDir {
  me: number;
  parent: number;
  entries: DirEnt[];
}

class Collector {
  readonly inodes: WInode[] = [];
  /** Inode of each multiply-linked leaf, once it has one. */
  private readonly hardlinks = new Map<Leaf, number>();
  private readonly epoch1: boolean;

  constructor(
    version: ErofsVersion,
    private readonly root: Directory,
    /** The root's sorted entries (epoch 1: including the whiteout stubs). */
    private readonly rootEntries: [string, Inode][],
    private readonly nlinks: Map<Leaf, number>,
  ) {
    this.epoch1 = version !== 2;
  }

  entriesOf(dir: Directory): [string, Inode][] {
    return dir === this.root ? this.rootEntries : dir.sorted();
  }

  /**
   * Appends an inode with its own xattrs: first metacopy/redirect for external files, then the
   * stat's xattrs in name order with `trusted.overlay.*` escaped.
   */
  pushInode(stat: Stat, leaf: Leaf | null, nlink: number, nDataBlocks: number, tail: number): number {
    const xattrs = new InodeXattrs(this.epoch1);
    const c = leaf?.content;
    if (c?.type === 'external') {
      xattrs.add(XATTR_OVERLAY_METACOPY, metacopyValue(c.id));
      xattrs.add(XATTR_OVERLAY_REDIRECT, redirectValue(c.id));
    } else if (c?.type === 'external-no-verity') {
      xattrs.add(XATTR_OVERLAY_METACOPY, Buffer.alloc(0));
      xattrs.add(XATTR_OVERLAY_REDIRECT, redirectValue(c.id));
    } else if (c?.type === 'sparse') {
      xattrs.add(XATTR_OVERLAY_METACOPY, Buffer.alloc(0));
    }
    if (stat.xattrs.size > 0) {
      for (const k of [...stat.xattrs.keys()].sort()) {
        xattrs.add(escapeOverlayName(keyBytes(k)), stat.xattrs.get(k)!);
      }
    }
    this.inodes.push({ stat, xattrs, leaf, dir: null, nlink, escapedWhiteout: false, nDataBlocks, tail });
    return this.inodes.length - 1;
  }

  pushDir(dir: Directory): number {
    return this.pushInode(dir.stat, null, 0, 0, 0);
  }

  /** The inode of a leaf: a new one, or the existing one of a hard-linked leaf. */
  collectLeaf(leaf: Leaf): number {
    const nlink = this.nlinks.get(leaf) ?? 1;
    if (nlink > 1) {
      const known = this.hardlinks.get(leaf);
      if (known !== undefined) return known;
    }
    const [nDataBlocks, tail] = this.epoch1 ? epoch1LeafData(leaf) : epoch2LeafData(leaf);
    const idx = this.pushInode(leaf.stat, leaf, nlink, nDataBlocks, tail);
    if (nlink > 1) this.hardlinks.set(leaf, idx);
    return idx;
  }

  hardlinkOf(leaf: Leaf): number | undefined {
    return this.hardlinks.get(leaf);
  }

  /** Finishes a directory: sorts its entries (".", ".." included) and splits them into blocks. */
  finishDir(p: PendingDir): void {
    p.entries.sort((a, b) => Buffer.compare(a.name, b.name));
    this.inodes[p.me].dir = splitDirectory(p.entries);
  }
}

/** Epoch 1 (n_data_blocks, tail) of a leaf, before symlink promotion / chunk demotion. */
function epoch1LeafData(leaf: Leaf): [number, number] {
  const c = leaf.content;
  switch (c.type) {
    case 'inline': {
      if (c.data.length === 0) return [0, 0];
      let blocks = Math.floor(c.data.length / BLOCK_SIZE);
      let tail = c.data.length % BLOCK_SIZE;
      // Never keep more than half a block inline: such a tail gets a block of its own.
      if (tail > BLOCK_SIZE / 2) {
        blocks++;
        tail = 0;
      }
      return [blocks, tail];
    }
    case 'symlink':
      return [0, c.target.length];
    case 'external':
    case 'external-no-verity':
    case 'sparse':
      return c.size > 0n ? [0, 4 * chunkCount(c.size)] : [0, 0];
    default:
      return [0, 0];
  }
}

/** Epoch 2 (n_data_blocks, tail): inline data inline, one null chunk entry for verity externals. */
function epoch2LeafData(leaf: Leaf): [number, number] {
  const c = leaf.content;
  if (c.type === 'inline') return [0, c.data.length];
  // Only External gets its 4-byte index; no-verity and sparse files get none (composefs-rs).
  if (c.type === 'external') return [0, 4];
  return [0, 0];
}

function dotEntries(me: number, parent: number): DirEnt[] {
  return [
    { name: Buffer.from('.'), target: me, leaf: null, fileType: FT_DIR },
    { name: Buffer.from('..'), target: parent, leaf: null, fileType: FT_DIR },
  ];
}

/**
 * Epoch 2: depth-first pre-order. A directory's inode precedes its children, and each
 * subdirectory's whole subtree is placed where its name sorts. Iterative (deep trees).
 */
function collectDfs(col: Collector, root: Directory): void {
  type Frame = { pending: PendingDir; items: [string, Inode][]; i: number };
  const rootIdx = col.pushDir(root);
  const stack: Frame[] = [{ pending: { me: rootIdx, parent: rootIdx, entries: dotEntries(rootIdx, rootIdx) }, items: col.entriesOf(root), i: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.items.length) {
      col.finishDir(top.pending);
      stack.pop();
      continue;
    }
    const [name, child] = top.items[top.i++];
    const me = top.pending.me;
    if (child.kind === 'dir') {
      const idx = col.pushDir(child);
      top.pending.entries.push({ name: keyBytes(name), target: idx, leaf: null, fileType: FT_DIR });
      stack.push({ pending: { me: idx, parent: me, entries: dotEntries(idx, me) }, items: col.entriesOf(child), i: 0 });
    } else {
      const idx = col.collectLeaf(child);
      top.pending.entries.push({ name: keyBytes(name), target: idx, leaf: null, fileType: fileType(col.inodes[idx]) });
    }
  }
}

/**
 * For each multiply-linked leaf, the directory holding its first occurrence in depth-first
 * sorted order. Epoch 1 creates the leaf's inode there (composefs-rs's stand-in for
 * libcomposefs's "original" of a hard link).
 */
function canonicalDirs(col: Collector, root: Directory, nlinks: Map<Leaf, number>): Map<Leaf, Directory> {
  const out = new Map<Leaf, Directory>();
  const stack: { dir: Directory; items: [string, Inode][]; i: number }[] = [{ dir: root, items: col.entriesOf(root), i: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.items.length) {
      stack.pop();
      continue;
    }
    const child = top.items[top.i++][1];
    if (child.kind === 'dir') stack.push({ dir: child, items: col.entriesOf(child), i: 0 });
    else if ((nlinks.get(child) ?? 1) > 1 && !out.has(child)) out.set(child, top.dir);
  }
  return out;
}

/**
 * composefs-rs's test for "this root entry is one of the generated whiteout stubs": a two-digit
 * lowercase-hex name with exactly the stub's metadata. It also matches user whiteouts that look
 * like stubs (which are then left unescaped, as composefs-rs does).
 */
function looksLikeStub(name: string, leaf: Leaf, root: Directory): boolean {
  if (!/^[0-9a-f]{2}$/.test(name)) return false;
  const s = leaf.stat;
  const r = root.stat;
  if (s.mode !== 0o644 || s.uid !== r.uid || s.gid !== r.gid || s.mtimeSec !== r.mtimeSec || s.mtimeNsec !== r.mtimeNsec) {
    return false;
  }
  const rootLabel = r.xattrs.get(XATTR_SECURITY_SELINUX);
  if (rootLabel === undefined) return s.xattrs.size === 0;
  const label = s.xattrs.get(XATTR_SECURITY_SELINUX);
  return s.xattrs.size === 1 && label !== undefined && label.equals(rootLabel);
}

/**
 * Epoch 1: breadth-first order (libcomposefs's queue). A directory's children get their inodes
 * when the directory is dequeued, in name order; subdirectories are queued. A hard-linked leaf
 * gets its inode in the directory of its first depth-first occurrence; entries seen before
 * that are resolved at the end. User whiteouts are escaped to regular files with markers.
 */
function collectBfs(col: Collector, root: Directory, nlinks: Map<Leaf, number>, version: ErofsVersion): void {
  const canonical = canonicalDirs(col, root, nlinks);
  const rootIdx = col.pushDir(root);
  const queue: { dir: Directory; parent: number; me: number }[] = [{ dir: root, parent: rootIdx, me: rootIdx }];
  const pending: PendingDir[] = [];

  for (let q = 0; q < queue.length; q++) {
    const { dir, parent, me } = queue[q];
    const entries = dotEntries(me, parent);
    let hasWhiteout = false;

    for (const [name, child] of col.entriesOf(dir)) {
      if (child.kind === 'dir') {
        const idx = col.pushDir(child);
        queue.push({ dir: child, parent: me, me: idx });
        entries.push({ name: keyBytes(name), target: idx, leaf: null, fileType: FT_DIR });
        continue;
      }
      const multi = (nlinks.get(child) ?? 1) > 1;
      const isCanonical = !multi || canonical.get(child) === dir;
      let target: number | undefined = isCanonical ? col.collectLeaf(child) : col.hardlinkOf(child);

      if (target !== undefined && isCanonical && child.content.type === 'chardev' && child.content.rdev === 0n) {
        const ino = col.inodes[target];
        const stub = dir === root && looksLikeStub(name, child, root);
        if (!stub && !ino.escapedWhiteout) {
          ino.escapedWhiteout = true;
          ino.xattrs.add(XATTR_OVERLAY_WHITEOUT, Buffer.alloc(0));
          ino.xattrs.add(XATTR_USER_WHITEOUT, Buffer.alloc(0));
          hasWhiteout = true;
        }
      }
      entries.push(
        target === undefined
          ? { name: keyBytes(name), target: -1, leaf: child, fileType: FT_REG } // resolved below
          : { name: keyBytes(name), target, leaf: null, fileType: fileType(col.inodes[target]) },
      );
    }

    // The parent of whiteouts is marked; V1 also makes it opaque ("x": only for xwhiteouts).
    if (hasWhiteout) {
      const x = col.inodes[me].xattrs;
      x.add(XATTR_OVERLAY_WHITEOUTS, Buffer.alloc(0));
      x.add(XATTR_USER_WHITEOUTS, Buffer.alloc(0));
      if (version === 1) {
        x.add(XATTR_OVERLAY_OPAQUE, Buffer.from('x'));
        x.add(XATTR_USER_OPAQUE, Buffer.from('x'));
      }
    }
    pending.push({ me, parent, entries });
  }

  // Entries reached before their leaf's canonical occurrence now point to its inode.
  for (const p of pending) {
    for (const e of p.entries) {
      if (e.target !== -1) continue;
      const idx = col.hardlinkOf(e.leaf!);
      if (idx === undefined) throw new Error('internal error: hard link target was never collected');
      e.target = idx;
      e.fileType = fileType(col.inodes[idx]);
    }
    col.finishDir(p);
  }
}

/**
 * The 256 whiteout stubs `00`..`ff` that epoch-1 images carry in the root (names the root
 * already has are skipped), merged into the root's sorted entries. The tree is not modified.
 */
function rootEntriesWithStubs(root: Directory): [string, Inode][] {
  const entries = new Map(root.entries);
  const label = root.stat.xattrs.get(XATTR_SECURITY_SELINUX);
  for (let i = 0; i < 256; i++) {
    const name = i.toString(16).padStart(2, '0');
    if (entries.has(name)) continue;
    const xattrs = new Map<string, Buffer>();
    if (label !== undefined) xattrs.set(XATTR_SECURITY_SELINUX, label);
    const stat: Stat = { mode: 0o644, uid: root.stat.uid, gid: root.stat.gid, mtimeSec: root.stat.mtimeSec, mtimeNsec: root.stat.mtimeNsec, xattrs };
    entries.set(name, new Leaf(stat, { type: 'chardev', rdev: 0n }));
  }
  return [...entries.keys()].sort().map((k) => [k, entries.get(k)!]);
}

// ------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------

/** Longest name whose dirent (12-byte header + name) still fits in one block. */
const MAX_NAME_LEN = BLOCK_SIZE - DIRENT_SIZE;

/**
 * Rejects trees the writer cannot represent, and counts leaf links on the way (a leaf's nlink
 * is the number of entries referring to it).
 */
function validateAndCountLinks(fs: FileSystem): Map<Leaf, number> {
  const nlinks = new Map<Leaf, number>();
  const seenDirs = new Set<Directory>([fs.root]);
  const stack: Directory[] = [fs.root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const [name, child] of dir.entries) {
      if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
        throw new Error(`invalid directory entry name ${JSON.stringify(name)}`);
      }
      if (name.length > MAX_NAME_LEN) {
        throw new Error(`directory entry name of ${name.length} bytes is too long (at most ${MAX_NAME_LEN})`);
      }
      if (child.kind === 'dir') {
        if (seenDirs.has(child)) throw new Error(`directory ${JSON.stringify(name)} appears more than once in the tree`);
        seenDirs.add(child);
        stack.push(child);
      } else {
        nlinks.set(child, (nlinks.get(child) ?? 0) + 1);
      }
    }
  }
  for (const [leaf, n] of nlinks) validateLeaf(leaf, n);
  return nlinks;
}

function validateLeaf(leaf: Leaf, nlink: number): void {
  const c = leaf.content;
  switch (c.type) {
    case 'chardev':
    case 'blockdev':
      if (c.rdev < 0n || c.rdev > 0xffffffffn) throw new Error(`device number ${c.rdev} exceeds the EROFS 32-bit limit`);
      if (c.type === 'chardev' && c.rdev === 0n && nlink > 1) throw new Error('invalid composefs filesystem: whiteout inode has nlink > 1');
      break;
    case 'external':
    case 'external-no-verity':
      if (c.id.length !== 32 && c.id.length !== 64) throw new Error(`external object id has ${c.id.length} bytes; expected 32 or 64`);
      if (c.size < 0n || c.size > 0xffffffffffffffffn) throw new Error(`file size ${c.size} out of range`);
      break;
    case 'sparse':
      if (c.size < 0n || c.size > 0xffffffffffffffffn) throw new Error(`file size ${c.size} out of range`);
      break;
    case 'symlink':
      // One data block is all a (promoted) symlink target gets.
      if (c.target.length > BLOCK_SIZE) throw new Error(`symlink target of ${c.target.length} bytes is too long`);
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------------------------------
// Step 2: preparation
// ------------------------------------------------------------------------------------------

/** Minimum (sec, nsec) over all inodes, seconds compared as unsigned 64-bit (composefs-rs). */
function minMtime(inodes: WInode[]): [bigint, number] {
  let sec = -1n;
  let nsec = 0;
  for (const ino of inodes) {
    const s = BigInt.asUintN(64, ino.stat.mtimeSec);
    if (sec < 0n || s < sec || (s === sec && ino.stat.mtimeNsec < nsec)) {
      sec = s;
      nsec = ino.stat.mtimeNsec;
    }
  }
  return sec < 0n ? [0n, 0] : [sec, nsec];
}

/** Everything per image that inode headers need besides the inode itself. */
interface Context {
  epoch1: boolean;
  minSec: bigint;
  minNsec: number;
}

function nlinkOf(ino: WInode): number {
  return ino.dir !== null ? ino.dir.nlink : ino.nlink;
}

/** i_size of an inode. */
function inodeSize(ino: WInode): bigint {
  if (ino.dir !== null) return BigInt(ino.dir.size);
  if (ino.escapedWhiteout) return 0n;
  const c = ino.leaf!.content;
  switch (c.type) {
    case 'inline':
      return BigInt(c.data.length);
    case 'external':
    case 'external-no-verity':
    case 'sparse':
      return c.size;
    case 'symlink':
      return BigInt(c.target.length);
    default:
      return 0n;
  }
}

/**
 * Compact (32-byte) inodes have no mtime of their own (readers use build_time) and 16/32-bit
 * fields, so they are used only when nothing is lost.
 */
function fitsCompact(ino: WInode, size: bigint, ctx: Context): boolean {
  return (
    ctx.epoch1 &&
    BigInt.asUintN(64, ino.stat.mtimeSec) === ctx.minSec &&
    ino.stat.mtimeNsec === ctx.minNsec &&
    nlinkOf(ino) <= 0xffff &&
    ino.stat.uid <= 0xffff &&
    ino.stat.gid <= 0xffff &&
    size <= 0xffffffffn
  );
}

function headerSize(ino: WInode, ctx: Context): number {
  return fitsCompact(ino, inodeSize(ino), ctx) ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE;
}

/**
 * Epoch 1, once xattr sizes are final: a symlink whose inode, xattrs and target would fill a
 * block moves its target to a data block; a chunk index that cannot fit in one block even
 * after the tail padding moves to a data block ("demoted").
 */
function settleEpoch1DataBlocks(inodes: WInode[], ctx: Context): void {
  for (const ino of inodes) {
    if (ino.leaf === null || ino.tail === 0) continue;
    const xattrSize = ino.xattrs.byteSize();
    if (isSymlink(ino)) {
      if (headerSize(ino, ctx) + xattrSize + ino.tail >= BLOCK_SIZE) {
        ino.nDataBlocks += 1;
        ino.tail = 0;
      }
    } else if (isChunkBased(ino.leaf)) {
      // After padding, the tail starts (xattrSize mod 32) bytes into a block.
      if (ino.tail + (xattrSize % SLOT) > BLOCK_SIZE) {
        ino.nDataBlocks = 1;
        ino.tail = 0;
      }
    }
  }
}

/** i_format data layout. */
function dataLayout(ino: WInode): number {
  if (ino.dir !== null) return ino.dir.inline.length === 0 ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
  const c = ino.leaf!.content;
  switch (c.type) {
    case 'inline':
      if (c.data.length === 0) return LAYOUT_FLAT_PLAIN;
      return ino.nDataBlocks > 0 && ino.tail === 0 ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
    case 'external':
    case 'external-no-verity':
    case 'sparse':
      return LAYOUT_CHUNK_BASED;
    case 'symlink':
      return ino.nDataBlocks > 0 ? LAYOUT_FLAT_PLAIN : LAYOUT_FLAT_INLINE;
    default:
      return LAYOUT_FLAT_PLAIN;
  }
}

/** Bytes written right after the xattr body. */
function inlineLength(ino: WInode): number {
  if (ino.dir !== null) return ino.dir.size % BLOCK_SIZE;
  const c = ino.leaf!.content;
  if (c.type === 'symlink') return ino.nDataBlocks === 0 ? c.target.length : 0;
  return ino.tail;
}

/** Number of data blocks an inode owns. */
function dataBlockCount(ino: WInode): number {
  return ino.dir !== null ? ino.dir.blocks.length : ino.nDataBlocks;
}

// ------------------------------------------------------------------------------------------
// Step 3: layout
// ------------------------------------------------------------------------------------------

interface InodePlacement {
  offset: number;
  compact: boolean;
  xattrSize: number;
  layout: number;
  size: bigint;
}

interface Layout {
  inodes: InodePlacement[];
  /** End of the inode table (32-aligned) = start of the shared xattr table. */
  inodesEnd: number;
  /** Offset of each shared xattr entry. */
  shared: number[];
  /** Offset of each inode's first data block. */
  blocks: number[];
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
function placeInode(pos: number, ino: WInode, p: Omit<InodePlacement, 'offset'>, epoch1: boolean): number {
  const meta = (p.compact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE) + p.xattrSize;
  const inlineSize = Number(p.size % BigInt(BLOCK_SIZE));

  if (!epoch1) {
    // Epoch 2: if the last metadata byte and the (exclusive) end of the inline data are in
    // different blocks, start the inline data in the next block (then re-align to 32).
    if (p.layout !== LAYOUT_FLAT_INLINE) return pos;
    const inlineStart = pos + meta;
    const lastMeta = inlineStart - 1;
    if (Math.floor(lastMeta / BLOCK_SIZE) !== Math.floor((inlineStart + inlineSize) / BLOCK_SIZE)) {
      pos = roundUp(pos + BLOCK_SIZE - (lastMeta % BLOCK_SIZE), SLOT);
    }
    return pos;
  }

  if (isSymlink(ino)) {
    // A symlink's inode and target must sit in one block (older kernels reject anything
    // else), so the whole inode moves to the next block. Promoted symlinks keep the test on
    // their original, pre-promotion size.
    const total = meta + (p.layout === LAYOUT_FLAT_INLINE ? inlineSize : Number(p.size));
    if ((pos % BLOCK_SIZE) + total > BLOCK_SIZE) pos += toBlockBoundary(pos);
    return pos;
  }
  if (isChunkBased(ino.leaf) && ino.nDataBlocks > 0) {
    // A demoted chunk index: the inode starts a block.
    return pos + toBlockBoundary(pos);
  }
  // Directories, inline files and chunk indexes: if the tail does not fit in the rest of the
  // block, pad by that rest (rounded to 32) so the tail starts in the next block.
  const tail = isChunkBased(ino.leaf) ? ino.tail : p.layout === LAYOUT_FLAT_INLINE ? inlineSize : 0;
  if (tail > 0) {
    const rem = toBlockBoundary(pos + meta);
    if (rem !== 0 && rem < tail) pos += roundUp(rem, SLOT);
  }
  return pos;
}

function layOut(inodes: WInode[], shared: XattrItem[], ctx: Context): Layout {
  const placements: InodePlacement[] = [];
  let pos = INODE_TABLE_START;
  for (const ino of inodes) {
    const size = inodeSize(ino);
    const p = { compact: fitsCompact(ino, size, ctx), xattrSize: ino.xattrs.byteSize(), layout: dataLayout(ino), size };
    pos = placeInode(roundUp(pos, SLOT), ino, p, ctx.epoch1);
    placements.push({ offset: pos, ...p });
    pos += (p.compact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE) + p.xattrSize + inlineLength(ino);
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
  const blocks: number[] = [];
  for (const ino of inodes) {
    blocks.push(pos);
    pos += dataBlockCount(ino) * BLOCK_SIZE;
  }
  return { inodes: placements, inodesEnd, shared: sharedOffsets, blocks, end: pos };
}

// ------------------------------------------------------------------------------------------
// Step 4: serialisation
// ------------------------------------------------------------------------------------------

/** i_u: block address, device number or chunk format, depending on the inode. */
function inodeU(ino: WInode, blockOffset: number, epoch1: boolean): number {
  const blkaddr = Math.floor(blockOffset / BLOCK_SIZE) >>> 0;
  if (ino.dir !== null) return ino.dir.blocks.length > 0 || ino.dir.inline.length === 0 ? blkaddr : 0;
  const c = ino.leaf!.content;
  switch (c.type) {
    case 'inline':
    case 'symlink':
      return ino.nDataBlocks > 0 ? blkaddr : 0;
    case 'external':
    case 'external-no-verity':
    case 'sparse': {
      const format = epoch1 ? chunkFormat(c.size) : 31;
      // A demoted index's block address loses its low 16 bits to the chunk format (as in
      // libcomposefs); the index is all holes, so nothing reads it.
      return ino.nDataBlocks > 0 ? ((blkaddr & 0xffff0000) | format) >>> 0 : format;
    }
    case 'chardev':
    case 'blockdev':
      return Number(c.rdev);
    default:
      return 0;
  }
}

/** Writes a dirent group at `off` (as format.ts `encodeDirents`, without intermediate buffers). */
function writeDirents(buf: Buffer, off: number, entries: DirEnt[], layout: Layout): void {
  let nameoff = DIRENT_SIZE * entries.length;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const h = off + i * DIRENT_SIZE;
    const nid = layout.inodes[e.target].offset / SLOT;
    buf.writeUInt32LE(nid % 0x100000000, h);
    buf.writeUInt32LE(Math.floor(nid / 0x100000000), h + 4);
    buf.writeUInt16LE(nameoff, h + 8);
    buf[h + 10] = e.fileType;
    e.name.copy(buf, off + nameoff);
    nameoff += e.name.length;
  }
}

/**
 * Writes an inode header at `off` into the zero-filled image (the layout of format.ts
 * `encodeInodeHeader`, written in place: no buffer per inode).
 */
function writeInodeHeader(buf: Buffer, off: number, h: InodeHeader): number {
  if (h.extended) {
    buf.writeUInt16LE(((h.layout << 1) | 1) & 0xffff, off);
    buf.writeUInt16LE(h.xattrIcount, off + 2);
    buf.writeUInt16LE(h.mode & 0xffff, off + 4);
    writeU64(buf, off + 8, h.size);
    buf.writeUInt32LE(h.u >>> 0, off + 16);
    buf.writeUInt32LE(h.ino >>> 0, off + 20);
    buf.writeUInt32LE(h.uid >>> 0, off + 24);
    buf.writeUInt32LE(h.gid >>> 0, off + 28);
    writeU64(buf, off + 32, h.mtimeSec);
    buf.writeUInt32LE(h.mtimeNsec >>> 0, off + 40);
    buf.writeUInt32LE(h.nlink >>> 0, off + 44);
    return EXTENDED_INODE_SIZE;
  }
  buf.writeUInt16LE((h.layout << 1) & 0xffff, off);
  buf.writeUInt16LE(h.xattrIcount, off + 2);
  buf.writeUInt16LE(h.mode & 0xffff, off + 4);
  buf.writeUInt16LE(h.nlink & 0xffff, off + 6);
  buf.writeUInt32LE(Number(BigInt.asUintN(32, h.size)), off + 8);
  buf.writeUInt32LE(h.u >>> 0, off + 16);
  buf.writeUInt32LE(h.ino >>> 0, off + 20);
  buf.writeUInt16LE(h.uid & 0xffff, off + 24);
  buf.writeUInt16LE(h.gid & 0xffff, off + 26);
  return COMPACT_INODE_SIZE;
}

/** Little-endian u64 of a (possibly negative: two's complement) bigint. */
function writeU64(buf: Buffer, off: number, v: bigint): void {
  if (v >= 0n && v <= 0xffffffffn) {
    buf.writeUInt32LE(Number(v), off); // high half stays zero
    return;
  }
  buf.writeBigUInt64LE(BigInt.asUintN(64, v), off);
}

function writeInode(buf: Buffer, idx: number, ino: WInode, layout: Layout, ctx: Context): void {
  const p = layout.inodes[idx];
  let off = p.offset;
  off += writeInodeHeader(buf, off, {
    extended: !p.compact,
    layout: p.layout,
    xattrIcount: xattrIcount(p.xattrSize),
    mode: inodeMode(ino),
    nlink: nlinkOf(ino),
    size: p.size,
    u: inodeU(ino, layout.blocks[idx], ctx.epoch1),
    // Epoch 1 numbers inodes by position; epoch 2 uses the nid.
    ino: ctx.epoch1 ? idx : p.offset / SLOT,
    uid: ino.stat.uid,
    gid: ino.stat.gid,
    mtimeSec: ino.stat.mtimeSec,
    // Epoch 2 does not keep sub-second mtimes.
    mtimeNsec: ctx.epoch1 ? ino.stat.mtimeNsec : 0,
  });

  // Epoch 1 shared xattr ids count from the start of the block holding the table (whose
  // number is xattr_blkaddr); epoch 2 ids are absolute offsets / 4.
  const tableBlockStart = ctx.epoch1 ? layout.inodesEnd - (layout.inodesEnd % BLOCK_SIZE) : 0;
  off += ino.xattrs.write(buf, off, (k) => (layout.shared[k] - tableBlockStart) / 4);

  if (ino.dir !== null) {
    if (ino.dir.inline.length > 0) writeDirents(buf, off, ino.dir.inline, layout);
    return;
  }
  const c = ino.leaf!.content;
  if (c.type === 'inline') {
    c.data.copy(buf, off, c.data.length - ino.tail);
  } else if (c.type === 'symlink') {
    if (ino.nDataBlocks === 0) c.target.copy(buf, off);
  } else if (isChunkBased(ino.leaf)) {
    buf.fill(0xff, off, off + ino.tail); // chunk index of EROFS_NULL_ADDR entries: all holes
  }
}

function writeDataBlocks(buf: Buffer, idx: number, ino: WInode, layout: Layout): void {
  let off = layout.blocks[idx];
  if (ino.dir !== null) {
    for (const block of ino.dir.blocks) {
      writeDirents(buf, off, block, layout);
      off += BLOCK_SIZE;
    }
    return;
  }
  if (ino.nDataBlocks === 0) return;
  const c = ino.leaf!.content;
  if (c.type === 'inline') {
    // Only the full blocks; the tail (if any) is inline.
    const n = Math.min(c.data.length, ino.nDataBlocks * BLOCK_SIZE);
    c.data.copy(buf, off, 0, n);
  } else if (c.type === 'symlink') {
    c.target.copy(buf, off, 0, Math.min(c.target.length, BLOCK_SIZE));
  } else if (isChunkBased(ino.leaf)) {
    buf.fill(0xff, off, off + DEMOTED_CHUNK_ENTRIES * 4); // EROFS_NULL_ADDR entries: holes
  }
}

function serialise(
  inodes: WInode[],
  shared: XattrItem[],
  layout: Layout,
  ctx: Context,
  header: { flags: number; composefsVersion: number },
): Buffer {
  const buf = Buffer.alloc(layout.end);
  encodeComposefsHeader({ magic: COMPOSEFS_MAGIC, version: COMPOSEFS_HEADER_VERSION, flags: header.flags, composefsVersion: header.composefsVersion }).copy(buf, 0);
  encodeSuperblock({
    magic: EROFS_SUPER_MAGIC,
    featureCompat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
    blkszbits: BLOCK_BITS,
    rootNid: layout.inodes[0].offset / SLOT,
    inos: BigInt(inodes.length),
    buildTime: ctx.epoch1 ? ctx.minSec : 0n,
    buildTimeNsec: ctx.epoch1 ? ctx.minNsec : 0,
    blocks: layout.end / BLOCK_SIZE,
    metaBlkaddr: 0,
    xattrBlkaddr: ctx.epoch1 ? Math.floor(layout.inodesEnd / BLOCK_SIZE) : 0,
    featureIncompat: 0,
  }).copy(buf, EROFS_SUPER_OFFSET);

  inodes.forEach((ino, i) => writeInode(buf, i, ino, layout, ctx));
  shared.forEach((x, k) => writeEntry(buf, layout.shared[k], x));
  inodes.forEach((ino, i) => writeDataBlocks(buf, i, ino, layout));
  return buf;
}

// ------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------

/** Builds the whole composefs EROFS image for a tree. Throws Error with a clear message on invalid trees. */
export function writeErofs(fs: FileSystem, version: ErofsVersion): Buffer {
  if (version !== 0 && version !== 1 && version !== 2) throw new Error(`unknown EROFS format version ${String(version)}`);
  const epoch1 = version !== 2;
  const nlinks = validateAndCountLinks(fs);

  // Step 1: collect.
  const rootEntries = epoch1 ? rootEntriesWithStubs(fs.root) : fs.root.sorted();
  const col = new Collector(version, fs.root, rootEntries, nlinks);
  if (epoch1) collectBfs(col, fs.root, nlinks, version);
  else collectDfs(col, fs.root);
  const inodes = col.inodes;

  // Step 2: prepare. The root's opaque marker is added after escaping, so it stays
  // `trusted.overlay.opaque`; the ACL flag is decided while every xattr is still local.
  let flags = 0;
  if (epoch1) {
    inodes[0].xattrs.add(XATTR_OVERLAY_OPAQUE_ROOT, Buffer.from('y'));
    const hasAcl = inodes.some((ino) =>
      ino.xattrs.local.some((x) => x.index === XATTR_INDEX_POSIX_ACL_ACCESS || x.index === XATTR_INDEX_POSIX_ACL_DEFAULT),
    );
    if (hasAcl) flags |= COMPOSEFS_FLAGS_HAS_ACL;
  }
  const shared = shareXattrs(
    inodes.map((i) => i.xattrs),
    epoch1,
  );
  const [minSec, minNsec] = minMtime(inodes);
  const ctx: Context = { epoch1, minSec, minNsec };
  if (epoch1) settleEpoch1DataBlocks(inodes, ctx);

  // Steps 3 and 4.
  const layout = layOut(inodes, shared, ctx);
  return serialise(inodes, shared, layout, ctx, { flags, composefsVersion: version });
}
