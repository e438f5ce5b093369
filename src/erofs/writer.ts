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

import { constants as bufferConstants } from 'node:buffer';
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
  XATTR_IBODY_HEADER_SIZE,
  type CompactInodeHeader,
  type ErofsVersion,
  type ExtendedInodeHeader,
  inodeFormat,
  roundUp,
  writeCompactInodeHeader,
  writeComposefsHeader,
  writeDirentHeader,
  writeExtendedInodeHeader,
  writeInodeXattrHeader,
  writeSharedXattrRef,
  writeSuperblock,
  writeXattrEntryHead,
  xattrEntrySize,
  xattrIcount,
} from './format.js';
import {
  Directory,
  FileSystem,
  type Inode,
  Leaf,
  type Stat,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  XATTR_SECURITY_SELINUX,
  keyBytes,
  type LeafContent,
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
  XATTR_USER_OPAQUE,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
  type IdGroup,
  type SplitName,
  type XattrItem,
  entrySize,
  escapeOverlayName,
  metacopyLength,
  metacopyValue,
  redirectLength,
  redirectValue,
  shareXattrsFast,
  splitCached,
  writeEntry,
  writeMetacopyValue,
  writeRedirectValue,
} from './xattrs.js';
import { type DirContent, type DirEntries, splitDirectory } from './dirblocks.js';
import { childPath, entryNameProblem, rdevProblem, showPath, statXattrsProblem } from '../tree/validate.js';

export type { ErofsVersion };

/** Inodes are 32-byte aligned: nid = offset / 32. */
const SLOT = 32;
/** Where the inode table starts: after the 1024-byte header area and the superblock. */
const INODE_TABLE_START = EROFS_SUPER_OFFSET + SUPERBLOCK_SIZE;
/** A demoted (epoch-1) chunk index always fills one block with this many null entries. */
const DEMOTED_CHUNK_ENTRIES = BLOCK_SIZE / 4;

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
class Inodes {
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
function fileType(inos: Inodes, i: number): number {
  return inos.escaped[i] !== 0 ? FT_REG : FT_OF_KIND[inos.kind[i]];
}

// Node kinds (Inodes.kind).
const K_DIR = 0;
const K_INLINE = 1;
const K_EXTERNAL = 2;
const K_EXTERNAL_NO_VERITY = 3;
const K_SPARSE = 4;
const K_SYMLINK = 5;
const K_CHARDEV = 6;
const K_BLOCKDEV = 7;
const K_FIFO = 8;
const K_SOCKET = 9;
const KIND_OF: Record<LeafContent['type'], number> = {
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
function chunkedAt(inos: Inodes, i: number): boolean {
  const k = inos.kind[i];
  return k === K_EXTERNAL || k === K_EXTERNAL_NO_VERITY || k === K_SPARSE;
}

const TYPE_BITS: number[] = [];
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
function chunkBitsOf(size: number): number {
  if (size <= BLOCK_SIZE) return BLOCK_BITS;
  const v = size - 1;
  const hi = Math.floor(v / 0x100000000);
  const bits = hi > 0 ? 64 - Math.clz32(hi) : 32 - Math.clz32(v);
  return Math.min(Math.max(bits, BLOCK_BITS), BLOCK_BITS + 31);
}

/** Number of chunk index entries of a file of a size below 2^53 (epoch 1). */
function chunkCountOf(size: number): number {
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

/** The sorted entry names of a directory (plain default sort: UTF-16 code units = bytes). */
function sortedKeys(entries: Map<string, Inode>): string[] {
  const keys = [...entries.keys()];
  keys.sort();
  return keys;
}

/** A directory's entries with "." and ".." merged in at their byte-order positions. */
class EntryBuilder {
  // Sized once: a directory has exactly its entries plus "." and "..".
  readonly names: string[];
  readonly targets: number[];
  readonly types: number[];
  private n = 0;
  private dots = 0;
  constructor(
    private readonly me: number,
    private readonly parent: number,
    entries: number,
  ) {
    this.names = new Array<string>(entries + 2);
    this.targets = new Array<number>(entries + 2);
    this.types = new Array<number>(entries + 2);
  }
  /** Appends an entry; names must come in sorted order. */
  push(name: string, target: number, type: number): number {
    // "." < ".." < any other name starting with "."; names below "." sort before them.
    while (this.dots < 2 && (this.dots === 0 ? '.' : '..') < name) this.pushDot();
    const k = this.n++;
    this.names[k] = name;
    this.targets[k] = target;
    this.types[k] = type;
    return k;
  }
  private pushDot(): void {
    const first = this.dots === 0;
    const k = this.n++;
    this.names[k] = first ? '.' : '..';
    this.targets[k] = first ? this.me : this.parent;
    this.types[k] = FT_DIR;
    this.dots++;
  }
  finish(): DirEntries {
    while (this.dots < 2) this.pushDot();
    if (this.n !== this.names.length) throw new Error('internal error: directory entry count changed while it was collected');
    return this;
  }
}

const EMPTY = Buffer.alloc(0);

class Collector {
  /** Inode of each multiply-linked leaf, once it has one. */
  private readonly hardlinks = new Map<Leaf, number>();
  private readonly epoch1: boolean;

  constructor(
    version: ErofsVersion,
    readonly inos: Inodes,
    private readonly root: Directory,
    /** The root's entries (epoch 1: including the whiteout stubs) and their sorted names. */
    private readonly rootEntries: Map<string, Inode>,
    private readonly rootKeys: string[],
    private readonly nlinks: Map<Leaf, number>,
  ) {
    this.epoch1 = version !== 2;
  }

  entriesOf(dir: Directory): Map<string, Inode> {
    return dir === this.root ? this.rootEntries : dir.entries;
  }

  keysOf(dir: Directory): string[] {
    return dir === this.root ? this.rootKeys : sortedKeys(dir.entries);
  }

  /** The xattrs of an inode, created on first use. */
  xattrsOf(i: number): InodeXattrs {
    let x = this.inos.xa[i];
    if (x === null) this.inos.xa[i] = x = new InodeXattrs(this.epoch1);
    return x;
  }

  /**
   * Appends an inode with its own xattrs: first metacopy/redirect for external files, then the
   * stat's xattrs in name order with `trusted.overlay.*` escaped. An external file without
   * other xattrs keeps them implicit (xa = null).
   */
  pushInode(node: Leaf | Directory, nlink: number, nDataBlocks: number, tail: number): number {
    const stat = node.stat;
    let xattrs: InodeXattrs | null = null;
    const c = node.kind === 'leaf' ? node.content : null;
    const hasOwn = stat.xattrs.size > 0;
    if (c !== null && (hasOwn || c.type !== 'external')) {
      if (c.type === 'external') {
        xattrs = new InodeXattrs(this.epoch1);
        xattrs.add(XATTR_OVERLAY_METACOPY, metacopyValue(c.id), c.id, 1);
        xattrs.add(XATTR_OVERLAY_REDIRECT, redirectValue(c.id), c.id, 2);
      } else if (c.type === 'external-no-verity') {
        xattrs = new InodeXattrs(this.epoch1);
        xattrs.add(XATTR_OVERLAY_METACOPY, EMPTY);
        xattrs.add(XATTR_OVERLAY_REDIRECT, redirectValue(c.id), c.id, 2);
      } else if (c.type === 'sparse') {
        xattrs = new InodeXattrs(this.epoch1);
        xattrs.add(XATTR_OVERLAY_METACOPY, EMPTY);
      }
    }
    if (hasOwn) {
      xattrs ??= new InodeXattrs(this.epoch1);
      for (const k of [...stat.xattrs.keys()].sort()) {
        xattrs.add(escapeOverlayName(keyBytes(k)), stat.xattrs.get(k)!);
      }
    }
    const inos = this.inos;
    const i = inos.n++;
    inos.node[i] = node;
    inos.xa[i] = xattrs;
    if (c === null) inos.kind[i] = K_DIR;
    else {
      inos.kind[i] = KIND_OF[c.type];
      inos.isize[i] =
        c.type === 'inline'
          ? c.data.length
          : c.type === 'symlink'
            ? c.target.length
            : c.type === 'external' || c.type === 'external-no-verity' || c.type === 'sparse'
              ? c.size <= MAX_EXACT
                ? Number(c.size)
                : -1
              : 0;
    }
    inos.nlink[i] = nlink;
    inos.nData[i] = nDataBlocks;
    inos.tail[i] = tail;
    return i;
  }

  pushDir(dir: Directory): number {
    return this.pushInode(dir, 0, 0, 0);
  }

  /** The inode of a leaf: a new one, or the existing one of a hard-linked leaf. */
  collectLeaf(leaf: Leaf): number {
    const nlink = this.nlinks.get(leaf) ?? 1;
    if (nlink > 1) {
      const known = this.hardlinks.get(leaf);
      if (known !== undefined) return known;
    }
    const idx = this.pushInode(leaf, nlink, 0, 0);
    if (this.epoch1) setEpoch1LeafData(this.inos, idx);
    else this.inos.tail[idx] = epoch2LeafTail(leaf);
    if (nlink > 1) this.hardlinks.set(leaf, idx);
    return idx;
  }

  hardlinkOf(leaf: Leaf): number | undefined {
    return this.hardlinks.get(leaf);
  }

  /** Finishes a directory: splits its (sorted, dots included) entries into blocks. */
  finishDir(me: number, entries: DirEntries): void {
    this.inos.dir[me] = splitDirectory(entries);
  }
}

/** Epoch 1 n_data_blocks and tail of leaf inode `i`, before symlink promotion / chunk demotion. */
function setEpoch1LeafData(inos: Inodes, i: number): void {
  const k = inos.kind[i];
  const size = inos.isize[i];
  if (k === K_INLINE) {
    if (size === 0) return;
    let blocks = Math.floor(size / BLOCK_SIZE);
    let tail = size % BLOCK_SIZE;
    // Never keep more than half a block inline: such a tail gets a block of its own.
    if (tail > BLOCK_SIZE / 2) {
      blocks++;
      tail = 0;
    }
    inos.nData[i] = blocks;
    inos.tail[i] = tail;
  } else if (k === K_SYMLINK) {
    inos.tail[i] = size;
  } else if (k === K_EXTERNAL || k === K_EXTERNAL_NO_VERITY || k === K_SPARSE) {
    if (size > 0) inos.tail[i] = 4 * chunkCountOf(size);
    else if (size < 0) inos.tail[i] = 4 * chunkCount(((inos.node[i] as Leaf).content as { size: bigint }).size); // beyond 2^53 bytes
  }
}

/** Epoch 2 tail: inline data inline, one null chunk entry for verity externals. */
function epoch2LeafTail(leaf: Leaf): number {
  const c = leaf.content;
  if (c.type === 'inline') return c.data.length;
  // Only External gets its 4-byte index; no-verity and sparse files get none (composefs-rs).
  if (c.type === 'external') return 4;
  return 0;
}

/**
 * Epoch 2: depth-first pre-order. A directory's inode precedes its children, and each
 * subdirectory's whole subtree is placed where its name sorts. Iterative (deep trees).
 */
function collectDfs(col: Collector, root: Directory): void {
  type Frame = { me: number; b: EntryBuilder; entries: Map<string, Inode>; keys: string[]; i: number };
  const inos = col.inos;
  const rootIdx = col.pushDir(root);
  const rootKeys = col.keysOf(root);
  const stack: Frame[] = [{ me: rootIdx, b: new EntryBuilder(rootIdx, rootIdx, rootKeys.length), entries: col.entriesOf(root), keys: rootKeys, i: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.keys.length) {
      col.finishDir(top.me, top.b.finish());
      stack.pop();
      continue;
    }
    const name = top.keys[top.i++];
    const child = top.entries.get(name)!;
    if (child.kind === 'dir') {
      const idx = col.pushDir(child);
      top.b.push(name, idx, FT_DIR);
      const keys = col.keysOf(child);
      stack.push({ me: idx, b: new EntryBuilder(idx, top.me, keys.length), entries: col.entriesOf(child), keys, i: 0 });
    } else {
      const idx = col.collectLeaf(child);
      top.b.push(name, idx, fileType(inos, idx));
    }
  }
}

/**
 * For each multiply-linked leaf, the directory holding its first occurrence in depth-first
 * sorted order. Epoch 1 creates the leaf's inode there (composefs-rs's stand-in for
 * libcomposefs's "original" of a hard link). `keys` caches the sorted names it computed.
 */
function canonicalDirs(col: Collector, root: Directory, nlinks: Map<Leaf, number>, keys: Map<Directory, string[]>): Map<Leaf, Directory> {
  const out = new Map<Leaf, Directory>();
  const keysOf = (d: Directory): string[] => {
    const k = col.keysOf(d);
    keys.set(d, k);
    return k;
  };
  const stack: { dir: Directory; entries: Map<string, Inode>; keys: string[]; i: number }[] = [
    { dir: root, entries: col.entriesOf(root), keys: keysOf(root), i: 0 },
  ];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.keys.length) {
      stack.pop();
      continue;
    }
    const child = top.entries.get(top.keys[top.i++])!;
    if (child.kind === 'dir') stack.push({ dir: child, entries: col.entriesOf(child), keys: keysOf(child), i: 0 });
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
function collectBfs(col: Collector, root: Directory, nlinks: Map<Leaf, number>, version: ErofsVersion, anyMulti: boolean): void {
  const inos = col.inos;
  const cachedKeys = new Map<Directory, string[]>();
  const canonical = anyMulti ? canonicalDirs(col, root, nlinks, cachedKeys) : null;
  const rootIdx = col.pushDir(root);
  // The queue: directory inode indices and their parents' (the node is inos.node[me]).
  const qMe: number[] = [rootIdx];
  const qParent: number[] = [rootIdx];
  const built: (DirEntries | null)[] = [];
  const deferred: { q: number; pos: number; leaf: Leaf }[] = [];

  for (let q = 0; q < qMe.length; q++) {
    const me = qMe[q];
    const dir = inos.node[me] as Directory;
    let hasWhiteout = false;
    const entries = col.entriesOf(dir);
    let keys = cachedKeys.get(dir);
    if (keys !== undefined) cachedKeys.delete(dir);
    else keys = col.keysOf(dir);
    const b = new EntryBuilder(me, qParent[q], keys.length);

    for (const name of keys) {
      const child = entries.get(name)!;
      if (child.kind === 'dir') {
        const idx = col.pushDir(child);
        qMe.push(idx);
        qParent.push(me);
        b.push(name, idx, FT_DIR);
        continue;
      }
      const isCanonical = canonical === null || (nlinks.get(child) ?? 1) <= 1 || canonical.get(child) === dir;
      const target: number | undefined = isCanonical ? col.collectLeaf(child) : col.hardlinkOf(child);

      if (target !== undefined && isCanonical && child.content.type === 'chardev' && child.content.rdev === 0n) {
        const stub = dir === root && looksLikeStub(name, child, root);
        if (!stub && inos.escaped[target] === 0) {
          inos.escaped[target] = 1;
          const x = col.xattrsOf(target);
          x.add(XATTR_OVERLAY_WHITEOUT, EMPTY);
          x.add(XATTR_USER_WHITEOUT, EMPTY);
          hasWhiteout = true;
        }
      }
      if (target === undefined) {
        deferred.push({ q, pos: b.push(name, -1, FT_REG), leaf: child }); // resolved below
      } else {
        b.push(name, target, fileType(inos, target));
      }
    }

    // The parent of whiteouts is marked; V1 also makes it opaque ("x": only for xwhiteouts).
    if (hasWhiteout) {
      const x = col.xattrsOf(me);
      x.add(XATTR_OVERLAY_WHITEOUTS, EMPTY);
      x.add(XATTR_USER_WHITEOUTS, EMPTY);
      if (version === 1) {
        x.add(XATTR_OVERLAY_OPAQUE, Buffer.from('x'));
        x.add(XATTR_USER_OPAQUE, Buffer.from('x'));
      }
    }
    built.push(b.finish());
  }

  // Entries reached before their leaf's canonical occurrence now point to its inode.
  for (const d of deferred) {
    const idx = col.hardlinkOf(d.leaf);
    if (idx === undefined) throw new Error('internal error: hard link target was never collected');
    const e = built[d.q]!;
    e.targets[d.pos] = idx;
    e.types[d.pos] = fileType(inos, idx);
  }
  for (let q = 0; q < qMe.length; q++) {
    col.finishDir(qMe[q], built[q]!);
    built[q] = null;
  }
}

/**
 * The 256 whiteout stubs `00`..`ff` that epoch-1 images carry in the root (names the root
 * already has are skipped), merged into the root's entries. The tree is not modified.
 */
function rootEntriesWithStubs(root: Directory): Map<string, Inode> {
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
  return entries;
}

// ------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------

/** Numbers writer passes (see Leaf.seenInPass). */
let passCounter = 0;

/**
 * Rejects trees the writer cannot represent (the rules of ../tree/validate.ts, shared with the
 * reader and the dumpfile parser; errors name the path), and counts leaf links on the way (a
 * leaf's nlink is the number of entries referring to it), leaves and directories. `nlinks`
 * holds only the leaves with more than one link: every other leaf has nlink 1.
 */
function validateAndCountLinks(fs: FileSystem): { nlinks: Map<Leaf, number>; dirs: number; leaves: number; anyMulti: boolean } {
  const pass = ++passCounter;
  const nlinks = new Map<Leaf, number>();
  const seenDirs = new Set<Directory>([fs.root]);
  // Directory paths (latin1 keys, "" = the root) ride along: one string per directory, none per leaf.
  const stack: Directory[] = [fs.root];
  const paths: string[] = [''];
  let leaves = 0;
  checkStat(fs.root.stat, '');
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const dirPath = paths.pop()!;
    // Keys and values walked side by side: no [name, child] pair per entry.
    const values = dir.entries.values();
    for (const name of dir.entries.keys()) {
      const child = values.next().value as Inode;
      const bad = entryNameProblem(name);
      if (bad !== null) throw new Error(`${showPath(dirPath)}: ${bad}`);
      if (child.kind === 'dir') {
        const path = childPath(dirPath, name);
        if (seenDirs.has(child)) throw new Error(`${showPath(path)}: directory appears more than once in the tree`);
        seenDirs.add(child);
        checkStat(child.stat, path);
        stack.push(child);
        paths.push(path);
      } else if (child.seenInPass !== pass) {
        child.seenInPass = pass;
        leaves++;
        if (child.stat.xattrs.size > 0) checkStat(child.stat, childPath(dirPath, name));
        validateLeaf(child, 1, dirPath, name);
      } else {
        nlinks.set(child, (nlinks.get(child) ?? 1) + 1);
      }
    }
  }
  for (const [leaf, n] of nlinks) {
    if (n > 1 && leaf.content.type === 'chardev' && leaf.content.rdev === 0n) {
      const where = pathOf(fs, leaf);
      throw new Error(`${where === null ? 'a whiteout' : showPath(where)}: invalid composefs filesystem: whiteout inode has nlink > 1`);
    }
  }
  return { nlinks, dirs: seenDirs.size, leaves, anyMulti: nlinks.size > 0 };
}

function checkStat(stat: Stat, path: string): void {
  const bad = statXattrsProblem(stat);
  if (bad !== null) throw new Error(`${showPath(path)}: ${bad}`);
}

/** Throws the problem of a leaf, naming its path. */
function failLeaf(dirPath: string, name: string, why: string): never {
  throw new Error(`${showPath(childPath(dirPath, name))}: ${why}`);
}

function validateLeaf(leaf: Leaf, nlink: number, dirPath: string, name: string): void {
  const c = leaf.content;
  switch (c.type) {
    case 'chardev':
    case 'blockdev': {
      const bad = rdevProblem(c.rdev);
      if (bad !== null) failLeaf(dirPath, name, bad);
      if (c.type === 'chardev' && c.rdev === 0n && nlink > 1) failLeaf(dirPath, name, 'invalid composefs filesystem: whiteout inode has nlink > 1');
      break;
    }
    case 'external':
    case 'external-no-verity':
      if (c.id.length !== 32 && c.id.length !== 64) failLeaf(dirPath, name, `external object id has ${c.id.length} bytes; expected 32 or 64`);
      if (c.size < 0n || c.size > 0xffffffffffffffffn) failLeaf(dirPath, name, `file size ${c.size} out of range`);
      break;
    case 'sparse':
      if (c.size < 0n || c.size > 0xffffffffffffffffn) failLeaf(dirPath, name, `file size ${c.size} out of range`);
      break;
    case 'symlink':
      // One data block is all a (promoted) symlink target gets.
      if (c.target.length > BLOCK_SIZE) failLeaf(dirPath, name, `symlink target of ${c.target.length} bytes is too long (at most ${BLOCK_SIZE})`);
      break;
    default:
      break;
  }
}

/** The path of `node` in the tree (latin1 key form), found by a walk: for error messages only. */
function pathOf(fs: FileSystem, node: Inode): string | null {
  if (node === fs.root) return '';
  const stack: Directory[] = [fs.root];
  const paths: string[] = [''];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const dirPath = paths.pop()!;
    for (const [name, child] of dir.entries) {
      if (child === node) return childPath(dirPath, name);
      if (child.kind === 'dir') {
        stack.push(child);
        paths.push(childPath(dirPath, name));
      }
    }
  }
  return null;
}

// ------------------------------------------------------------------------------------------
// Step 2: preparation
// ------------------------------------------------------------------------------------------

const U64 = 1n << 64n;
const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/** A signed 64-bit seconds value as composefs-rs compares it: unsigned. */
function asU64(v: bigint): bigint {
  return v >= 0n && v < U64 ? v : BigInt.asUintN(64, v);
}

/** Minimum (sec, nsec) over all inodes, seconds compared as unsigned 64-bit (composefs-rs). */
function minMtime(inos: Inodes): [bigint, number] {
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

/** The largest Buffer this Node allows (4 GiB on Node 20): the image is built in one. */
const MAX_IMAGE_BYTES = bufferConstants.MAX_LENGTH;

/** Largest xattr body `i_xattr_icount` (a u16) can describe: 12 + 4 * (65535 - 1) bytes. */
const MAX_XATTR_BODY = XATTR_IBODY_HEADER_SIZE + 4 * (0xffff - 1);
/** `h_shared_count` is a u8. */
const MAX_SHARED_REFS = 0xff;

/**
 * The limits only sharing settles: an inode's count of shared references and the size of its
 * xattr body. composefs-rs truncates both (`as u8`, `as u16`: a corrupt image); we refuse.
 */
function checkXattrBodies(fs: FileSystem, inos: Inodes, xsize: Int32Array): void {
  for (let i = 0; i < inos.n; i++) {
    const x = inos.xa[i];
    if (x === null) continue;
    let why: string | null = null;
    if (x.shared.length > MAX_SHARED_REFS) {
      why = `${x.shared.length} of its xattrs are shared with other files; an EROFS inode can reference at most ${MAX_SHARED_REFS}`;
    } else if (xsize[i] > MAX_XATTR_BODY) {
      why = `its xattrs take ${xsize[i]} bytes; an EROFS inode's xattr area holds at most ${MAX_XATTR_BODY} (i_xattr_icount is 16-bit)`;
    }
    if (why !== null) {
      const where = pathOf(fs, inos.node[i]);
      throw new Error(`${where === null ? 'an inode' : showPath(where)}: ${why}`);
    }
  }
}

/** Everything per image that inode headers need besides the inode itself. */
interface Context {
  epoch1: boolean;
  minSec: bigint;
  minNsec: number;
}

function nlinkOf(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  return d !== null ? d.nlink : inos.nlink[i];
}

/** i_size of an inode: a number, or the file's bigint size for chunk-based files. */
function inodeSize(inos: Inodes, i: number): number | bigint {
  const d = inos.dir[i];
  if (d !== null) return d.size;
  if (inos.escaped[i] !== 0) return 0;
  const n = inos.isize[i];
  if (n >= 0) return n;
  return ((inos.node[i] as Leaf).content as { size: bigint }).size; // beyond 2^53 bytes
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
function settleEpoch1DataBlocks(inos: Inodes, xsize: Int32Array, ctx: Context): void {
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

/** i_format data layout. */
function dataLayout(inos: Inodes, i: number): number {
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
function inlineLength(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  if (d !== null) return d.size % BLOCK_SIZE;
  if (inos.kind[i] === K_SYMLINK) return inos.nData[i] === 0 ? inos.isize[i] : 0;
  return inos.tail[i];
}

/** Number of data blocks an inode owns. */
function dataBlockCount(inos: Inodes, i: number): number {
  const d = inos.dir[i];
  return d !== null ? d.blockEnds.length : inos.nData[i];
}

// ------------------------------------------------------------------------------------------
// Xattr bodies
// ------------------------------------------------------------------------------------------

/** The implicit metacopy + redirect xattrs of external files without other xattrs. */
class FastXattrs {
  readonly mc: SplitName;
  readonly rd: SplitName;
  readonly filter: number;
  constructor(epoch1: boolean) {
    this.mc = splitCached(XATTR_OVERLAY_METACOPY, epoch1);
    this.rd = splitCached(XATTR_OVERLAY_REDIRECT, epoch1);
    this.filter = (this.mc.bit | this.rd.bit) >>> 0;
  }
  mcEntrySize(idLen: number): number {
    return xattrEntrySize(this.mc.suffix.length, metacopyLength(idLen));
  }
  rdEntrySize(idLen: number): number {
    return xattrEntrySize(this.rd.suffix.length, redirectLength(idLen));
  }
  byteSize(g: IdGroup): number {
    const idLen = g.id.length;
    let size = XATTR_IBODY_HEADER_SIZE;
    size += g.mcPos >= 0 ? 4 : this.mcEntrySize(idLen);
    size += g.rdPos >= 0 ? 4 : this.rdEntrySize(idLen);
    return size;
  }
  write(buf: Buffer, off: number, g: IdGroup, sharedRef: (index: number) => number): void {
    const id = g.id;
    let refs = 0;
    if (g.mcPos >= 0) writeSharedXattrRef(buf, off, refs++, sharedRef(g.mcPos));
    if (g.rdPos >= 0) writeSharedXattrRef(buf, off, refs++, sharedRef(g.rdPos));
    writeInodeXattrHeader(buf, off, ~this.filter >>> 0, refs);
    off += XATTR_IBODY_HEADER_SIZE + 4 * refs;
    if (g.mcPos < 0) {
      writeMetacopyValue(buf, writeXattrEntryHead(buf, off, this.mc.index, this.mc.suffix, metacopyLength(id.length)), id);
      off += this.mcEntrySize(id.length);
    }
    if (g.rdPos < 0) writeRedirectValue(buf, writeXattrEntryHead(buf, off, this.rd.index, this.rd.suffix, redirectLength(id.length)), id);
  }
}

// ------------------------------------------------------------------------------------------
// Step 3: layout
// ------------------------------------------------------------------------------------------

interface Layout {
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

function layOut(inos: Inodes, xsize: Int32Array, shared: XattrItem[], ctx: Context): Layout {
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

// ------------------------------------------------------------------------------------------
// Step 4: serialisation
// ------------------------------------------------------------------------------------------

/** i_u: block address, device number or chunk format, depending on the inode. */
function inodeU(inos: Inodes, i: number, blockOffset: number, epoch1: boolean): number {
  const blkaddr = Math.floor(blockOffset / BLOCK_SIZE) >>> 0;
  const d = inos.dir[i];
  if (d !== null) return d.blockEnds.length > 0 || d.inlineStart === d.names.length ? blkaddr : 0;
  const c = (inos.node[i] as Leaf).content;
  switch (c.type) {
    case 'inline':
    case 'symlink':
      return inos.nData[i] > 0 ? blkaddr : 0;
    case 'external':
    case 'external-no-verity':
    case 'sparse': {
      const n = inos.isize[i];
      const format = !epoch1 ? 31 : n >= 0 ? chunkBitsOf(n) - BLOCK_BITS : chunkFormat(c.size);
      // A demoted index's block address loses its low 16 bits to the chunk format (as in
      // libcomposefs); the index is all holes, so nothing reads it.
      return inos.nData[i] > 0 ? ((blkaddr & 0xffff0000) | format) >>> 0 : format;
    }
    case 'chardev':
    case 'blockdev':
      return Number(c.rdev);
    default:
      return 0;
  }
}

/**
 * Writes the dirents `from`..`to` of a directory as one group at `off`: all headers, then all
 * names (the layout format.ts `decodeDirents` reads).
 */
function writeDirents(buf: Buffer, off: number, d: DirContent, from: number, to: number, layout: Layout): void {
  let nameoff = DIRENT_SIZE * (to - from);
  const { names, targets, types } = d;
  const offsets = layout.offset;
  for (let i = from; i < to; i++) {
    writeDirentHeader(buf, off, i - from, offsets[targets[i]] / SLOT, nameoff, types[i]);
    // Names are latin1 keys (one char per byte, at most 255): stored char by char, without a
    // native call per name.
    const name = names[i];
    const at = off + nameoff;
    for (let j = 0; j < name.length; j++) buf[at + j] = name.charCodeAt(j);
    nameoff += name.length;
  }
}

// One header of each kind, refilled for every inode (no object per inode).
const compactHeader: CompactInodeHeader = { format: 0, xattrIcount: 0, mode: 0, nlink: 0, size: 0, u: 0, ino: 0, uid: 0, gid: 0 };
const extendedHeader: ExtendedInodeHeader = { format: 0, xattrIcount: 0, mode: 0, size: 0, u: 0, ino: 0, uid: 0, gid: 0, mtime: 0n, mtimeNsec: 0, nlink: 0 };

/**
 * Writes an inode at its offset into the zero-filled image: the header (the layout format.ts
 * `decodeInodeHeader` reads, written in place), the xattr body, the inline data.
 */
function writeInode(buf: Buffer, i: number, inos: Inodes, xsize: Int32Array, fastGroup: (IdGroup | null)[], fast: FastXattrs, layout: Layout, ctx: Context, sharedRef: (k: number) => number): void {
  let off = layout.offset[i];
  const st = inos.node[i].stat;
  const xs = xsize[i];
  const mode = (TYPE_BITS[fileType(inos, i)] | (st.mode & 0o7777)) & 0xffff;
  const size = inodeSize(inos, i);
  const u = inodeU(inos, i, layout.blocks[i], ctx.epoch1) >>> 0;
  // Epoch 1 numbers inodes by position; epoch 2 uses the nid.
  const ino = (ctx.epoch1 ? i : layout.offset[i] / SLOT) >>> 0;
  const nlink = nlinkOf(inos, i);
  const lay = layout.layout[i];
  if (layout.compact[i] === 0) {
    const h = extendedHeader;
    h.format = inodeFormat(lay, true);
    h.xattrIcount = xattrIcount(xs);
    h.mode = mode;
    h.size = size;
    h.u = u;
    h.ino = ino;
    h.uid = st.uid;
    h.gid = st.gid;
    h.mtime = st.mtimeSec;
    // Epoch 2 does not keep sub-second mtimes.
    h.mtimeNsec = ctx.epoch1 ? st.mtimeNsec : 0;
    h.nlink = nlink;
    writeExtendedInodeHeader(buf, off, h);
    off += EXTENDED_INODE_SIZE;
  } else {
    // fitsCompact settled that nlink, uid, gid and size fit.
    const h = compactHeader;
    h.format = inodeFormat(lay, false);
    h.xattrIcount = xattrIcount(xs);
    h.mode = mode;
    h.nlink = nlink;
    h.size = Number(size);
    h.u = u;
    h.ino = ino;
    h.uid = st.uid;
    h.gid = st.gid;
    writeCompactInodeHeader(buf, off, h);
    off += COMPACT_INODE_SIZE;
  }

  if (xs > 0) {
    const x = inos.xa[i];
    if (x !== null) x.write(buf, off, sharedRef);
    else fast.write(buf, off, fastGroup[i]!, sharedRef);
    off += xs;
  }

  const d = inos.dir[i];
  if (d !== null) {
    if (d.inlineStart < d.names.length) writeDirents(buf, off, d, d.inlineStart, d.names.length, layout);
    return;
  }
  const k = inos.kind[i];
  if (k === K_INLINE) {
    const c = (inos.node[i] as Leaf).content as { data: Buffer };
    const t = inos.tail[i];
    // TypedArray set for the usual whole small file: Buffer#copy costs a native call each
    if (t === c.data.length) buf.set(c.data, off);
    else c.data.copy(buf, off, c.data.length - t);
  } else if (k === K_SYMLINK) {
    if (inos.nData[i] === 0) buf.set(((inos.node[i] as Leaf).content as { target: Buffer }).target, off);
  } else if (chunkedAt(inos, i)) {
    const t = inos.tail[i];
    if (t > 0) buf.fill(0xff, off, off + t); // chunk index of EROFS_NULL_ADDR entries: all holes
  }
}

function writeDataBlocks(buf: Buffer, i: number, inos: Inodes, layout: Layout): void {
  let off = layout.blocks[i];
  const d = inos.dir[i];
  if (d !== null) {
    let from = 0;
    for (const end of d.blockEnds) {
      writeDirents(buf, off, d, from, end, layout);
      from = end;
      off += BLOCK_SIZE;
    }
    return;
  }
  if (inos.nData[i] === 0) return;
  const leaf = inos.node[i] as Leaf;
  const c = leaf.content;
  if (c.type === 'inline') {
    // Only the full blocks; the tail (if any) is inline.
    const n = Math.min(c.data.length, inos.nData[i] * BLOCK_SIZE);
    c.data.copy(buf, off, 0, n);
  } else if (c.type === 'symlink') {
    c.target.copy(buf, off, 0, Math.min(c.target.length, BLOCK_SIZE));
  } else if (chunkedAt(inos, i)) {
    buf.fill(0xff, off, off + DEMOTED_CHUNK_ENTRIES * 4); // EROFS_NULL_ADDR entries: holes
  }
}

// ------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------

/** Builds the whole composefs EROFS image for a tree. Throws Error with a clear message on invalid trees. */
export function writeErofs(fs: FileSystem, version: ErofsVersion): Buffer {
  if (version !== 0 && version !== 1 && version !== 2) throw new Error(`unknown EROFS format version ${String(version)}`);
  const epoch1 = version !== 2;
  const { nlinks, dirs, leaves, anyMulti } = validateAndCountLinks(fs);

  // Step 1: collect.
  const rootEntries = epoch1 ? rootEntriesWithStubs(fs.root) : fs.root.entries;
  const inos = new Inodes(dirs + leaves + 256);
  const col = new Collector(version, inos, fs.root, rootEntries, sortedKeys(rootEntries), nlinks);
  if (epoch1) collectBfs(col, fs.root, nlinks, version, anyMulti);
  else collectDfs(col, fs.root);
  const n = inos.n;

  // Step 2: prepare. The root's opaque marker is added after escaping, so it stays
  // `trusted.overlay.opaque`; the ACL flag is decided while every xattr is still local.
  let flags = 0;
  if (epoch1) {
    col.xattrsOf(0).add(XATTR_OVERLAY_OPAQUE_ROOT, Buffer.from('y'));
    const hasAcl = inos.xa.some(
      (x) => x !== null && x.local.some((it) => it.index === XATTR_INDEX_POSIX_ACL_ACCESS || it.index === XATTR_INDEX_POSIX_ACL_DEFAULT),
    );
    if (hasAcl) flags |= COMPOSEFS_FLAGS_HAS_ACL;
  }
  // External files without other xattrs: metacopy + redirect of their id, kept implicit.
  const fastId: (Buffer | null)[] = new Array<Buffer | null>(n);
  for (let i = 0; i < n; i++) {
    const node = inos.node[i];
    fastId[i] = inos.xa[i] === null && node.kind === 'leaf' && node.content.type === 'external' ? node.content.id : null;
  }
  const fastGroup: (IdGroup | null)[] = new Array<IdGroup | null>(n).fill(null);
  const shared = shareXattrsFast(n, inos.xa, fastId, fastGroup, epoch1);
  const fast = new FastXattrs(epoch1);
  const xsize = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const x = inos.xa[i];
    if (x !== null) xsize[i] = x.byteSize();
    else if (fastId[i] !== null) xsize[i] = fast.byteSize(fastGroup[i]!);
  }
  checkXattrBodies(fs, inos, xsize);
  const [minSec, minNsec] = minMtime(inos);
  const ctx: Context = { epoch1, minSec, minNsec };
  if (epoch1) settleEpoch1DataBlocks(inos, xsize, ctx);

  // Step 3: lay out.
  const layout = layOut(inos, xsize, shared, ctx);

  // Step 4: write.
  if (layout.end > MAX_IMAGE_BYTES) {
    throw new Error(`the image would be ${layout.end} bytes; at most ${MAX_IMAGE_BYTES} can be built in memory`);
  }
  const buf = Buffer.alloc(layout.end);
  writeComposefsHeader(buf, 0, { magic: COMPOSEFS_MAGIC, version: COMPOSEFS_HEADER_VERSION, flags, composefsVersion: version });
  writeSuperblock(buf, EROFS_SUPER_OFFSET, {
    magic: EROFS_SUPER_MAGIC,
    featureCompat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
    blkszbits: BLOCK_BITS,
    rootNid: layout.offset[0] / SLOT,
    inos: BigInt(n),
    buildTime: epoch1 ? minSec : 0n,
    buildTimeNsec: epoch1 ? minNsec : 0,
    blocks: layout.end / BLOCK_SIZE,
    metaBlkaddr: 0,
    xattrBlkaddr: epoch1 ? Math.floor(layout.inodesEnd / BLOCK_SIZE) : 0,
    featureIncompat: 0,
  });

  // Epoch 1 shared xattr ids count from the start of the block holding the table (whose
  // number is xattr_blkaddr); epoch 2 ids are absolute offsets / 4.
  const tableBlockStart = epoch1 ? layout.inodesEnd - (layout.inodesEnd % BLOCK_SIZE) : 0;
  const sharedRef = (k: number) => (layout.shared[k] - tableBlockStart) / 4;
  for (let i = 0; i < n; i++) writeInode(buf, i, inos, xsize, fastGroup, fast, layout, ctx, sharedRef);
  shared.forEach((x, k) => writeEntry(buf, layout.shared[k], x));
  for (let i = 0; i < n; i++) writeDataBlocks(buf, i, inos, layout);
  return buf;
}
