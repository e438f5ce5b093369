/**
 * Step 1 of the writer: the tree becomes the flat inode list, in the order of the format
 * version (epoch 1: breadth-first with whiteout stubs and escapes; epoch 2: depth-first), with
 * each inode's xattrs and directory entries.
 */

import { BLOCK_SIZE, type ErofsVersion, FT_DIR, FT_REG } from './format.js';
import { Directory, type Inode, keyBytes, Leaf, type Stat, XATTR_SECURITY_SELINUX } from '../tree/tree.js';
import {
  escapeOverlayName,
  InodeXattrs,
  metacopyValue,
  redirectValue,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_OPAQUE,
  XATTR_OVERLAY_REDIRECT,
  XATTR_OVERLAY_WHITEOUT,
  XATTR_OVERLAY_WHITEOUTS,
  XATTR_USER_OPAQUE,
  XATTR_USER_WHITEOUT,
  XATTR_USER_WHITEOUTS,
} from './xattrs.js';
import { type DirEntries, splitDirectory } from './dirblocks.js';
import {
  chunkCount,
  chunkCountOf,
  fileType,
  Inodes,
  K_DIR,
  K_EXTERNAL,
  K_EXTERNAL_NO_VERITY,
  K_INLINE,
  K_SPARSE,
  K_SYMLINK,
  KIND_OF,
  MAX_EXACT,
} from './inodes.js';

// ------------------------------------------------------------------------------------------
// Step 1: collection
// ------------------------------------------------------------------------------------------

/** The sorted entry names of a directory (plain default sort: UTF-16 code units = bytes). */
export function sortedKeys(entries: Map<string, Inode>): string[] {
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

export class Collector {
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
export function collectDfs(col: Collector, root: Directory): void {
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
export function collectBfs(col: Collector, root: Directory, nlinks: Map<Leaf, number>, version: ErofsVersion, anyMulti: boolean): void {
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
export function rootEntriesWithStubs(root: Directory): Map<string, Inode> {
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
