/**
 * The in-memory filesystem every source produces and every writer consumes.
 *
 * It mirrors composefs-rs's generic tree: directories own a sorted map of entries, every
 * non-directory is a {@link Leaf}, and a hardlink is simply the same `Leaf` object reachable
 * under two names. Nothing here knows about EROFS, dumpfiles, tarballs or disks.
 *
 * Names, symlink targets and xattr names/values are arbitrary bytes. Names and xattr names are
 * kept as *latin1 strings* (one UTF-16 code unit per byte, 0..255) so they can be Map keys and
 * sort with plain `<` in exactly raw byte order, as composefs-rs's `BTreeMap<OsStr>` does. Use
 * {@link nameKey} / {@link keyBytes} to convert; never decode them as UTF-8.
 */

/** Hash algorithm of fs-verity digests (object ids and image ids). */
export type HashAlg = 'sha256' | 'sha512';

/** Byte length of a digest for each algorithm. */
export const DIGEST_SIZE: Record<HashAlg, number> = { sha256: 32, sha512: 64 };

/** The xattr holding a path's SELinux label (relabelled by the boot transform; the V1 writer copies the root's to /). */
export const XATTR_SECURITY_SELINUX = 'security.selinux';

/** Regular files of at most this many bytes are stored inline in the image (composefs-rs INLINE_CONTENT_MAX_V0). */
export const INLINE_CONTENT_MAX = 64;

/** Extended attributes: latin1 name key -> raw value. Iterate with {@link sortedXattrs}. */
export type Xattrs = Map<string, Buffer>;

/** Per-inode metadata kept by composefs (no atime/ctime/size/nlink/ino). */
export interface Stat {
  /**
   * Permission bits as the source gave them. Scanners and the dumpfile parser mask with 0o7777;
   * the tar path keeps the raw header value. Type bits are OR-ed in by writers, never stored.
   */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, signed 64-bit. */
  mtimeSec: bigint;
  /** 0..999 999 999. */
  mtimeNsec: number;
  xattrs: Xattrs;
}

/** What a leaf (any non-directory inode) holds. */
export type LeafContent =
  | { type: 'inline'; data: Buffer }
  | { type: 'external'; id: Buffer; size: bigint }
  /** Redirect without a digest in the metacopy xattr (digest-less dumpfile lines). */
  | { type: 'external-no-verity'; id: Buffer; size: bigint }
  /** Declared size, no content (dumpfile: no payload, no content, SIZE > 0). */
  | { type: 'sparse'; size: bigint }
  | { type: 'symlink'; target: Buffer }
  | { type: 'chardev'; rdev: bigint }
  | { type: 'blockdev'; rdev: bigint }
  | { type: 'fifo' }
  | { type: 'socket' };

/** A non-directory inode. Sharing one `Leaf` object between entries makes them hardlinks. */
export class Leaf {
  readonly kind = 'leaf' as const;
  /**
   * Scratch of the image writer, not part of the tree: the number of the last writer pass that
   * met this leaf. Counting links with it keeps every singly-linked leaf (nearly all of them)
   * out of the writer's hash maps.
   */
  seenInPass = 0;
  constructor(public stat: Stat, public content: LeafContent) {}
}

/** A directory: its own stat and its entries keyed by latin1 name. */
export class Directory {
  readonly kind = 'dir' as const;
  readonly entries = new Map<string, Inode>();
  constructor(public stat: Stat) {}

  /** Entries in raw byte order of their names (composefs-rs BTreeMap order). */
  sorted(): [string, Inode][] {
    const keys = [...this.entries.keys()].sort(compareKeys);
    return keys.map((k) => [k, this.entries.get(k)!]);
  }

  /** Immediate child directory names, for nlink = 2 + subdirectories. */
  subdirCount(): number {
    let n = 0;
    for (const v of this.entries.values()) if (v.kind === 'dir') n++;
    return n;
  }
}

export type Inode = Directory | Leaf;

/** A whole tree. */
export class FileSystem {
  constructor(public root: Directory) {}
}

/** Compares two latin1 keys in raw byte order. */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Bytes -> latin1 key. */
export function nameKey(b: Buffer | Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/** latin1 key -> bytes. */
export function keyBytes(k: string): Buffer {
  return Buffer.from(k, 'latin1');
}

/** A fresh stat with everything zero (composefs-rs `Stat::uninitialized`). */
export function emptyStat(): Stat {
  return { mode: 0, uid: 0, gid: 0, mtimeSec: 0n, mtimeNsec: 0, xattrs: new Map() };
}

/** A deep copy of a stat (xattr values are shared: they are never mutated in place). */
export function cloneStat(s: Stat): Stat {
  return { ...s, xattrs: new Map(s.xattrs) };
}

/** xattrs as [name bytes, value] pairs in raw byte order of names. */
export function sortedXattrs(x: Xattrs): [Buffer, Buffer][] {
  return [...x.keys()].sort(compareKeys).map((k) => [keyBytes(k), x.get(k)!]);
}

/** POSIX type bits (S_IFMT values) of an inode. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** The S_IFMT bits for an inode. */
export function typeBits(inode: Inode): number {
  if (inode.kind === 'dir') return S_IFDIR;
  switch (inode.content.type) {
    case 'inline':
    case 'external':
    case 'external-no-verity':
    case 'sparse':
      return S_IFREG;
    case 'symlink':
      return S_IFLNK;
    case 'chardev':
      return S_IFCHR;
    case 'blockdev':
      return S_IFBLK;
    case 'fifo':
      return S_IFIFO;
    case 'socket':
      return S_IFSOCK;
  }
}

/** One step of a {@link traverse}: absolute path bytes ("/" for the root), the inode, its parent and name key. */
export interface WalkEntry {
  path: Buffer;
  inode: Inode;
  parent: Directory | null;
  name: string | null;
}

/**
 * Depth-first pre-order traversal in byte-sorted name order (the dumpfile / composefs-rs order).
 * A generator, so consumers can stream; iterative, so deep trees cannot exhaust the JS stack.
 */
export function* traverse(fs: FileSystem): Generator<WalkEntry> {
  type Frame = { path: Buffer; items: [string, Inode][]; i: number; dir: Directory };
  yield { path: Buffer.from('/'), inode: fs.root, parent: null, name: null };
  const stack: Frame[] = [{ dir: fs.root, path: Buffer.alloc(0), items: fs.root.sorted(), i: 0 }];
  const slash = Buffer.from('/');
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.i >= top.items.length) {
      stack.pop();
      continue;
    }
    const [name, child] = top.items[top.i++];
    const path = Buffer.concat([top.path, slash, keyBytes(name)]);
    yield { path, inode: child, parent: top.dir, name };
    if (child.kind === 'dir') stack.push({ dir: child, path, items: child.sorted(), i: 0 });
  }
}

/** Callback form of {@link traverse}. */
export function walk(fs: FileSystem, fn: (e: WalkEntry) => void): void {
  for (const e of traverse(fs)) fn(e);
}

/** Number of entries referring to each leaf (composefs-rs `FileSystem::nlinks`). */
export function leafLinkCounts(fs: FileSystem): Map<Leaf, number> {
  const counts = new Map<Leaf, number>();
  const stack: Directory[] = [fs.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const v of d.entries.values()) {
      if (v.kind === 'dir') stack.push(v);
      else counts.set(v, (counts.get(v) ?? 0) + 1);
    }
  }
  return counts;
}

/** Resolves an absolute path (bytes, "/"-separated) to an inode, or undefined. */
export function lookup(fs: FileSystem, path: Buffer): Inode | undefined {
  let cur: Inode = fs.root;
  for (const part of splitPath(path)) {
    if (cur.kind !== 'dir') return undefined;
    const next: Inode | undefined = cur.entries.get(part);
    if (!next) return undefined;
    cur = next;
  }
  return cur;
}

/** Splits an absolute path into latin1 name keys, skipping empty components. */
export function splitPath(path: Buffer): string[] {
  return path
    .toString('latin1')
    .split('/')
    .filter((p) => p.length > 0);
}
