/**
 * The composefs EROFS image reader: image bytes -> {@link FileSystem}.
 *
 * Reads images of all three composefs formats (V0/V1, the libcomposefs-compatible layout
 * written by C mkcomposefs and composefs-rs; V2, the legacy composefs-rs layout) and undoes
 * what the writers add, so that writing the result as a dumpfile gives back the tree the
 * image was made from (modulo what the format cannot store, e.g. V2 drops mtime nsec).
 *
 * Semantics follow composefs-rs v0.9.0 `erofs_to_filesystem` (crates/composefs/src/erofs/
 * reader.rs) with these deliberate refinements (both give the same tree for every image the
 * writers produce from a tree they can represent; ours is exact in more corner cases):
 *
 * - The 256 root stubs `00`..`ff` are dropped only in V0/V1 images and only when they are
 *   *native* character devices 0/0 (the writers never escape the stubs). composefs-rs also
 *   drops escaped (= user) whiteouts with such names, and does so in V2 as well.
 * - Whiteout escaping is undone only in V0/V1, only for regular files of size 0 carrying both
 *   `trusted.overlay.overlay.whiteout=""` and `user.overlay.whiteout=""`; the parent markers
 *   (`*.whiteouts=""`, and in V1 `*.opaque="x"`) are removed only from directories that hold
 *   such an escaped whiteout, one entry per marker (so a user's own value survives when the
 *   writer kept both, as composefs-rs does). composefs-rs strips these six names from every
 *   inode in every version, losing user xattrs of the same names.
 * - `trusted.overlay.overlay.X` -> `trusted.overlay.X`; every other `trusted.overlay.*`
 *   (metacopy, redirect, the root's opaque=y) is writer-internal and dropped (as composefs-rs).
 *
 * Robustness: the directory walk is iterative; every offset is bounds-checked; a directory
 * reached twice (a cycle or a hard-linked directory) is an error; every data block may be
 * owned by one inode only; and a global work budget proportional to the image size stops
 * crafted images whose metadata overlaps itself. Any problem throws {@link ImageError} with
 * the byte offset of the offending structure.
 */

import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPACT_INODE_SIZE,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  EROFS_SUPER_MAGIC,
  EROFS_SUPER_OFFSET,
  EXTENDED_INODE_SIZE,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
  SUPERBLOCK_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIXES,
  decodeComposefsHeader,
  decodeInodeHeader,
  decodeSuperblock,
  decodeXattrEntry,
  decodeInodeFormat,
  decodeInodeXattrSharedCount,
  decodeSharedXattrRef,
  xattrBodySize,
  COMPOSEFS_HEADER_FIELD,
  SUPERBLOCK_FIELD,
  INODE_FIELD,
  EXTENDED_INODE_FIELD,
  INODE_XATTR_HEADER_FIELD,
  XATTR_ENTRY_FIELD,
  DIRENT_FIELD,
  type InodeHeader,
  type Superblock,
  ImageError,
  decodeDirents,
} from './format.js';
import {
  Directory,
  FileSystem,
  Leaf,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  nameKey,
  type LeafContent,
  type Stat,
  type Xattrs,
} from '../tree/tree.js';
import { childPath, entryNameProblem, showPath, statXattrsProblem } from '../tree/validate.js';

/** A corrupt, truncated or unsupported image. `offset` is the byte offset of the problem. */
export { ImageError };

/** EROFS_FEATURE_INCOMPAT_CHUNKED_FILE: the only incompat feature composefs images may use. */
const FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;

const OVERLAY_PREFIX = 'trusted.overlay.';
const OVERLAY_ESCAPED_PREFIX = 'trusted.overlay.overlay.';
const XATTR_METACOPY = 'trusted.overlay.metacopy';
const XATTR_REDIRECT = 'trusted.overlay.redirect';
/** Markers the V0/V1 writers put on an escaped whiteout (raw, i.e. escaped, names). */
const WHITEOUT_MARKERS: readonly [string, string][] = [
  ['trusted.overlay.overlay.whiteout', ''],
  ['user.overlay.whiteout', ''],
];
/** Markers on the parent of an escaped whiteout, V0 and V1. */
const WHITEOUTS_PARENT_MARKERS: readonly [string, string][] = [
  ['trusted.overlay.overlay.whiteouts', ''],
  ['user.overlay.whiteouts', ''],
];
/** Extra markers on the parent of an escaped whiteout, V1 only. */
const OPAQUE_PARENT_MARKERS_V1: readonly [string, string][] = [
  ['trusted.overlay.overlay.opaque', 'x'],
  ['user.overlay.opaque', 'x'],
];

/** Name of a V0/V1 root whiteout stub. */
const STUB_NAME = /^[0-9a-f]{2}$/;

/** One xattr as stored: full latin1 name, value, and where its entry is (for errors). */
interface RawXattr {
  name: string;
  value: Buffer;
  off: number;
}

/** An inode as parsed from the image. */
interface RawInode {
  nid: number;
  off: number;
  h: InodeHeader;
  xattrs: RawXattr[];
  /** Offset of the inline data (after header and xattr body). */
  inlineOff: number;
  /** Inline data length (FLAT_INLINE tail; 0 otherwise). */
  inlineLen: number;
}

interface DirJob {
  /** Latin1 key form, "" for the root: for messages. */
  path: string;
  nid: number;
  parentNid: number;
  dir: Directory;
  raw: RawInode;
}

/**
 * Parses a composefs EROFS image into a tree. Throws ImageError (with the byte offset and
 * reason) on truncated/corrupt input.
 */
export function readErofs(image: Buffer): { fs: FileSystem; version: 0 | 1 | 2 } {
  return new Reader(image).read();
}

/** Bytes an image starts with: the composefs header area and the EROFS superblock. */
export const IMAGE_HEAD_SIZE = EROFS_SUPER_OFFSET + SUPERBLOCK_SIZE;

/**
 * Checks the start of an image (at least {@link IMAGE_HEAD_SIZE} bytes, or all there is): the
 * composefs header, the EROFS magic, block size and features. The image is `sb.blocks` blocks
 * long; nothing else needs to be read to know that.
 */
export function decodeImageHead(img: Buffer): { version: 0 | 1 | 2; sb: Superblock } {
  if (img.length < 32) throw new ImageError(`image too short for the composefs header (${img.length} bytes)`, 0);
  const hdr = decodeComposefsHeader(img, 0);
  if (hdr.magic !== COMPOSEFS_MAGIC) {
    throw new ImageError(`not a composefs image: bad composefs magic 0x${hdr.magic.toString(16)} (expected 0x${COMPOSEFS_MAGIC.toString(16)})`, 0);
  }
  if (hdr.version !== COMPOSEFS_HEADER_VERSION) {
    throw new ImageError(`unsupported composefs header version ${hdr.version}`, COMPOSEFS_HEADER_FIELD.version);
  }
  if (hdr.composefsVersion > 2) {
    throw new ImageError(`unknown composefs_version ${hdr.composefsVersion} (expected 0, 1 or 2)`, COMPOSEFS_HEADER_FIELD.composefsVersion);
  }
  if (img.length < IMAGE_HEAD_SIZE) {
    throw new ImageError(`image too short for the EROFS superblock (${img.length} bytes)`, EROFS_SUPER_OFFSET);
  }
  const sb = decodeSuperblock(img, EROFS_SUPER_OFFSET);
  if (sb.magic !== EROFS_SUPER_MAGIC) {
    throw new ImageError(`bad EROFS magic 0x${sb.magic.toString(16)}`, EROFS_SUPER_OFFSET);
  }
  if (sb.blkszbits !== BLOCK_BITS) {
    throw new ImageError(`unsupported block size 2^${sb.blkszbits} (composefs uses 4096)`, EROFS_SUPER_OFFSET + SUPERBLOCK_FIELD.blkszbits);
  }
  if ((sb.featureIncompat & ~FEATURE_INCOMPAT_CHUNKED_FILE) !== 0) {
    throw new ImageError(`unsupported EROFS incompatible features 0x${(sb.featureIncompat >>> 0).toString(16)}`, EROFS_SUPER_OFFSET + SUPERBLOCK_FIELD.featureIncompat);
  }
  return { version: hdr.composefsVersion as 0 | 1 | 2, sb };
}

class Reader {
  private readonly img: Buffer;
  private sb!: Superblock;
  private version: 0 | 1 | 2 = 0;
  private metaBase = 0;
  private xattrBase = 0;
  private rootNid = 0;
  private readonly sharedCache = new Map<number, { name: string; value: Buffer; size: number }>();
  private readonly leafByNid = new Map<number, Leaf>();
  private readonly escapedWhiteouts = new Set<Leaf>();
  private readonly dirNids = new Set<number>();
  private blockOwner!: Uint8Array;
  /** Bytes of metadata/data we may still look at; legit images use about 2x their size. */
  private budget: number;

  constructor(image: Buffer) {
    this.img = image;
    this.budget = 8 * image.length + (1 << 20);
  }

  read(): { fs: FileSystem; version: 0 | 1 | 2 } {
    this.readHeaders();
    const rootRaw = this.readInode(this.rootNid, EROFS_SUPER_OFFSET + SUPERBLOCK_FIELD.rootNid);
    if ((rootRaw.h.mode & S_IFMT) !== S_IFDIR) {
      throw new ImageError(`root inode (nid ${this.rootNid}) is not a directory`, rootRaw.off + INODE_FIELD.mode);
    }
    const root = new Directory(this.baseStat(rootRaw.h));
    this.dirNids.add(this.rootNid);
    const stack: DirJob[] = [{ path: '', nid: this.rootNid, parentNid: this.rootNid, dir: root, raw: rootRaw }];
    while (stack.length > 0) this.readDirectory(stack.pop()!, stack);
    return { fs: new FileSystem(root), version: this.version };
  }

  // ---------------------------------------------------------------------------------------
  // Header and superblock

  private readHeaders(): void {
    const img = this.img;
    const { version, sb } = decodeImageHead(img);
    this.version = version;
    if (sb.blocks * BLOCK_SIZE > img.length) {
      throw new ImageError(
        `image is truncated: the superblock says ${sb.blocks} blocks (${sb.blocks * BLOCK_SIZE} bytes) but there are only ${img.length} bytes`,
        img.length,
      );
    }
    this.sb = sb;
    this.metaBase = sb.metaBlkaddr * BLOCK_SIZE;
    this.xattrBase = sb.xattrBlkaddr * BLOCK_SIZE;
    this.rootNid = sb.rootNid;
    this.blockOwner = new Uint8Array(Math.floor(img.length / BLOCK_SIZE));
  }

  // ---------------------------------------------------------------------------------------
  // Bounds, budget

  private need(off: number, len: number, what: string, errOff = off): void {
    if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > this.img.length) {
      throw new ImageError(`${what} runs past the end of the image (${this.img.length} bytes)`, errOff);
    }
  }

  private spend(n: number, off: number): void {
    this.budget -= n;
    if (this.budget < 0) {
      throw new ImageError('image metadata overlaps itself (work budget exhausted)', off);
    }
  }

  /** Marks `n` data blocks from `start` as owned; a block owned twice is an error. */
  private claimBlocks(start: number, n: number, inodeOff: number): void {
    if (n === 0) return;
    if (start + n > this.blockOwner.length) {
      throw new ImageError(
        `data blocks ${start}..${start + n - 1} lie past the end of the image (${this.blockOwner.length} blocks)`,
        inodeOff + INODE_FIELD.u,
      );
    }
    for (let b = start; b < start + n; b++) {
      if (this.blockOwner[b]) throw new ImageError(`data block ${b} is used by more than one inode`, inodeOff + INODE_FIELD.u);
      this.blockOwner[b] = 1;
    }
    this.spend(n * BLOCK_SIZE, inodeOff);
  }

  // ---------------------------------------------------------------------------------------
  // Inodes and xattrs

  /** Parses the inode `nid`; `refOff` is where the reference to it was found (for errors). */
  private readInode(nid: number, refOff: number): RawInode {
    const off = this.metaBase + nid * 32;
    if (!Number.isSafeInteger(off) || off + COMPACT_INODE_SIZE > this.img.length) {
      throw new ImageError(`reference to inode nid ${nid}, which lies outside the image`, refOff);
    }
    const { extended, layout } = decodeInodeFormat(this.img, off);
    const isize = extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
    this.need(off, isize, `inode nid ${nid}`);
    if (layout !== LAYOUT_FLAT_PLAIN && layout !== LAYOUT_FLAT_INLINE && layout !== LAYOUT_CHUNK_BASED) {
      throw new ImageError(`inode nid ${nid} has unsupported data layout ${layout}`, off);
    }
    const h = decodeInodeHeader(this.img, off, this.sb);
    // Refused by the dumpfile parser (which the dump of this image must satisfy): one rule both ways.
    if (h.mtimeNsec >= 1_000_000_000)
      throw new ImageError(`inode nid ${nid} has mtime nanoseconds ${h.mtimeNsec} (must be < 1000000000)`, extended ? off + EXTENDED_INODE_FIELD.mtimeNsec : EROFS_SUPER_OFFSET + SUPERBLOCK_FIELD.buildTimeNsec);
    const xsize = xattrBodySize(h.xattrIcount);
    const bodyOff = off + isize;
    this.need(bodyOff, xsize, `xattr body of inode nid ${nid}`, off + INODE_FIELD.xattrIcount);
    const inlineOff = bodyOff + xsize;
    let inlineLen = 0;
    if (layout === LAYOUT_FLAT_INLINE) {
      inlineLen = Number(h.size % BigInt(BLOCK_SIZE));
      this.need(inlineOff, inlineLen, `inline data of inode nid ${nid}`, off + INODE_FIELD.size);
    }
    this.spend(isize + xsize + inlineLen, off);
    const xattrs = this.readXattrBody(bodyOff, xsize);
    return { nid, off, h, xattrs, inlineOff, inlineLen };
  }

  private readXattrBody(bodyOff: number, xsize: number): RawXattr[] {
    const out: RawXattr[] = [];
    if (xsize === 0) return out;
    const end = bodyOff + xsize;
    const sharedCount = decodeInodeXattrSharedCount(this.img, bodyOff);
    const refsEnd = bodyOff + XATTR_IBODY_HEADER_SIZE + 4 * sharedCount;
    if (refsEnd > end) {
      throw new ImageError(`xattr body declares ${sharedCount} shared xattrs but is only ${xsize} bytes`, bodyOff + INODE_XATTR_HEADER_FIELD.sharedCount);
    }
    for (let k = 0; k < sharedCount; k++) {
      const p = bodyOff + XATTR_IBODY_HEADER_SIZE + 4 * k;
      const s = this.sharedXattr(decodeSharedXattrRef(this.img, bodyOff, k), p);
      out.push({ name: s.name, value: s.value, off: p });
    }
    let p = refsEnd;
    while (p < end) {
      if (p + 4 > end) throw new ImageError('truncated xattr entry in the inode xattr body', p);
      let e;
      try {
        e = decodeXattrEntry(this.img, p);
      } catch {
        throw new ImageError('xattr entry runs past the end of the image', p);
      }
      if (p + e.size > end) throw new ImageError('xattr entry runs past the end of the inode xattr body', p);
      out.push({ name: this.xattrName(e.entry.index, e.entry.suffix, p), value: Buffer.from(e.entry.value), off: p });
      p += e.size;
    }
    return out;
  }

  private sharedXattr(id: number, refOff: number): { name: string; value: Buffer } {
    const cached = this.sharedCache.get(id);
    if (cached) return cached;
    const off = this.xattrBase + id * 4;
    if (off + 4 > this.img.length) {
      throw new ImageError(`shared xattr id ${id} points outside the image`, refOff);
    }
    let e;
    try {
      e = decodeXattrEntry(this.img, off);
    } catch {
      throw new ImageError(`shared xattr id ${id} runs past the end of the image`, off);
    }
    this.spend(e.size, off);
    const s = { name: this.xattrName(e.entry.index, e.entry.suffix, off), value: Buffer.from(e.entry.value), size: e.size };
    this.sharedCache.set(id, s);
    return s;
  }

  private xattrName(index: number, suffix: Buffer, off: number): string {
    if (index >= XATTR_PREFIXES.length) throw new ImageError(`unknown xattr name index ${index}`, off + XATTR_ENTRY_FIELD.nameIndex);
    return (XATTR_PREFIXES[index] ?? '') + nameKey(suffix);
  }

  /**
   * The rules every tree obeys (../tree/validate.ts, shared with the writer and the dumpfile
   * parser), on the xattrs as the tree has them: what we accept here, we can write and print.
   */
  private checkStat(stat: Stat, path: string, raw: RawInode): void {
    const bad = statXattrsProblem(stat);
    if (bad !== null) throw new ImageError(`${showPath(path)}: ${bad}`, raw.off + INODE_FIELD.xattrIcount);
  }

  private baseStat(h: InodeHeader): Stat {
    return { mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, mtimeSec: h.mtimeSec, mtimeNsec: h.mtimeNsec, xattrs: new Map() };
  }

  /**
   * Turns the stored xattrs into the tree's: removes one entry per writer marker, unescapes
   * `trusted.overlay.overlay.*`, drops the other `trusted.overlay.*`. Later entries win.
   */
  private treeXattrs(raw: RawXattr[], markers: readonly (readonly [string, string])[]): Xattrs {
    let list = raw;
    if (markers.length > 0) {
      list = raw.slice();
      for (const [name, value] of markers) {
        const i = list.findIndex((x) => x.name === name && x.value.toString('latin1') === value);
        if (i >= 0) list.splice(i, 1);
      }
    }
    const out: Xattrs = new Map();
    for (const x of list) {
      let name = x.name;
      if (name.startsWith(OVERLAY_ESCAPED_PREFIX)) name = OVERLAY_PREFIX + name.slice(OVERLAY_ESCAPED_PREFIX.length);
      else if (name.startsWith(OVERLAY_PREFIX)) continue;
      out.set(name, x.value);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Data

  /** The bytes of a FLAT_PLAIN / FLAT_INLINE inode: its blocks, then its inline tail. */
  private readData(raw: RawInode): Buffer {
    const h = raw.h;
    const layout = raw.h.layout;
    if (layout === LAYOUT_CHUNK_BASED) throw new ImageError(`inode nid ${raw.nid} must not be chunk-based`, raw.off);
    if (h.size > BigInt(this.img.length)) {
      throw new ImageError(`inode nid ${raw.nid} has size ${h.size}, larger than the image`, raw.off + INODE_FIELD.size);
    }
    const size = Number(h.size);
    const nBlocks = layout === LAYOUT_FLAT_PLAIN ? Math.ceil(size / BLOCK_SIZE) : Math.floor(size / BLOCK_SIZE);
    this.claimBlocks(h.u, nBlocks, raw.off);
    const out = Buffer.alloc(size);
    const fromBlocks = Math.min(size, nBlocks * BLOCK_SIZE);
    if (fromBlocks > 0) this.img.copy(out, 0, h.u * BLOCK_SIZE, h.u * BLOCK_SIZE + fromBlocks);
    if (raw.inlineLen > 0) this.img.copy(out, fromBlocks, raw.inlineOff, raw.inlineOff + raw.inlineLen);
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Directories

  /** Dirents of a directory inode, in stored order, with the offset of each dirent. */
  private readDirents(raw: RawInode): { name: Buffer; nid: bigint; off: number }[] {
    const h = raw.h;
    const layout = raw.h.layout;
    if (layout === LAYOUT_CHUNK_BASED) throw new ImageError(`directory nid ${raw.nid} is chunk-based`, raw.off);
    if (h.size > BigInt(this.img.length)) {
      throw new ImageError(`directory nid ${raw.nid} has size ${h.size}, larger than the image`, raw.off + INODE_FIELD.size);
    }
    const size = Number(h.size);
    const nBlocks = layout === LAYOUT_FLAT_PLAIN ? Math.ceil(size / BLOCK_SIZE) : Math.floor(size / BLOCK_SIZE);
    this.claimBlocks(h.u, nBlocks, raw.off);
    const out: { name: Buffer; nid: bigint; off: number }[] = [];
    for (let b = 0; b < nBlocks; b++) {
      const len = Math.min(BLOCK_SIZE, size - b * BLOCK_SIZE);
      this.decodeDirentGroup((h.u + b) * BLOCK_SIZE, len, out);
    }
    if (raw.inlineLen > 0) this.decodeDirentGroup(raw.inlineOff, raw.inlineLen, out);
    return out;
  }

  private decodeDirentGroup(off: number, len: number, out: { name: Buffer; nid: bigint; off: number }[]): void {
    this.need(off, len, 'directory block');
    for (const d of decodeDirents(this.img, off, len)) out.push(d);
  }

  private readDirectory(job: DirJob, stack: DirJob[]): void {
    const { dir, raw } = job;
    const isRoot = job.nid === this.rootNid;
    const v01 = this.version !== 2;
    let sawDot = false;
    let sawDotDot = false;
    let hasEscapedWhiteout = false;
    for (const e of this.readDirents(raw)) {
      const nameLen = e.name.length;
      if (nameLen === 1 && e.name[0] === 0x2e) {
        if (sawDot || e.nid !== BigInt(job.nid)) throw new ImageError(`bad '.' entry in directory nid ${job.nid}`, e.off);
        sawDot = true;
        continue;
      }
      if (nameLen === 2 && e.name[0] === 0x2e && e.name[1] === 0x2e) {
        if (sawDotDot || e.nid !== BigInt(job.parentNid)) {
          throw new ImageError(`bad '..' entry in directory nid ${job.nid}`, e.off);
        }
        sawDotDot = true;
        continue;
      }
      const badName = entryNameProblem(e.name);
      if (badName !== null) throw new ImageError(`${showPath(job.path)}: ${badName}`, e.off + DIRENT_FIELD.nameOff);
      const key = nameKey(e.name);
      const path = childPath(job.path, key);
      if (dir.entries.has(key)) throw new ImageError(`${showPath(path)}: duplicate directory entry`, e.off);
      if (e.nid > BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 32))) {
        throw new ImageError(`dirent points to inode nid ${e.nid}, which lies outside the image`, e.off);
      }
      const nid = Number(e.nid);
      const known = this.leafByNid.get(nid);
      if (known) {
        if (this.escapedWhiteouts.has(known)) hasEscapedWhiteout = true;
        dir.entries.set(key, known);
        continue;
      }
      if (this.dirNids.has(nid)) {
        throw new ImageError(`directory nid ${nid} is reached twice (a cycle or a hard-linked directory)`, e.off);
      }
      const child = this.readInode(nid, e.off);
      const type = child.h.mode & S_IFMT;
      if (type === S_IFDIR) {
        this.dirNids.add(nid);
        const sub = new Directory(this.baseStat(child.h));
        dir.entries.set(key, sub);
        stack.push({ path, nid, parentNid: job.nid, dir: sub, raw: child });
        continue;
      }
      // V0/V1 root whiteout stubs: native chardev 0/0 named 00..ff (user whiteouts are escaped).
      if (v01 && isRoot && type === S_IFCHR && child.h.u === 0 && STUB_NAME.test(key)) continue;
      const leaf = this.makeLeaf(child);
      this.checkStat(leaf.stat, path, child);
      this.leafByNid.set(nid, leaf);
      if (this.escapedWhiteouts.has(leaf)) hasEscapedWhiteout = true;
      dir.entries.set(key, leaf);
    }
    if (!sawDot) throw new ImageError(`directory nid ${job.nid} has no '.' entry`, raw.off);
    if (!sawDotDot) throw new ImageError(`directory nid ${job.nid} has no '..' entry`, raw.off);
    let markers: readonly (readonly [string, string])[] = [];
    if (hasEscapedWhiteout) {
      markers = this.version === 1 ? [...WHITEOUTS_PARENT_MARKERS, ...OPAQUE_PARENT_MARKERS_V1] : WHITEOUTS_PARENT_MARKERS;
    }
    dir.stat.xattrs = this.treeXattrs(raw.xattrs, markers);
    this.checkStat(dir.stat, job.path, raw);
  }

  // ---------------------------------------------------------------------------------------
  // Leaves

  private isEscapedWhiteout(raw: RawInode): boolean {
    if ((raw.h.mode & S_IFMT) !== S_IFREG || raw.h.size !== 0n) return false;
    return WHITEOUT_MARKERS.every(([name, value]) =>
      raw.xattrs.some((x) => x.name === name && x.value.toString('latin1') === value),
    );
  }

  private makeLeaf(raw: RawInode): Leaf {
    const h = raw.h;
    const stat = this.baseStat(h);
    const type = h.mode & S_IFMT;
    let content: LeafContent;
    if (type === S_IFREG && this.version !== 2 && this.isEscapedWhiteout(raw)) {
      stat.xattrs = this.treeXattrs(raw.xattrs, WHITEOUT_MARKERS);
      const leaf = new Leaf(stat, { type: 'chardev', rdev: 0n });
      this.escapedWhiteouts.add(leaf);
      return leaf;
    }
    stat.xattrs = this.treeXattrs(raw.xattrs, []);
    switch (type) {
      case S_IFREG:
        content = this.regularContent(raw);
        break;
      case S_IFLNK:
        content = { type: 'symlink', target: this.symlinkTarget(raw) };
        break;
      case S_IFCHR:
        content = { type: 'chardev', rdev: BigInt(h.u >>> 0) };
        break;
      case S_IFBLK:
        content = { type: 'blockdev', rdev: BigInt(h.u >>> 0) };
        break;
      case S_IFIFO:
        content = { type: 'fifo' };
        break;
      case S_IFSOCK:
        content = { type: 'socket' };
        break;
      default:
        throw new ImageError(`inode nid ${raw.nid} has unknown file type 0o${type.toString(8)}`, raw.off + INODE_FIELD.mode);
    }
    return new Leaf(stat, content);
  }

  /**
   * No file system can hold an empty symlink target or a NUL in one, and the dumpfile parser
   * refuses both (the dump of this image must parse). Over-long targets are kept: C mkcomposefs
   * writes them.
   */
  private symlinkTarget(raw: RawInode): Buffer {
    const t = this.readData(raw);
    if (t.length === 0) throw new ImageError(`inode nid ${raw.nid}: empty symlink target`, raw.off + INODE_FIELD.size);
    if (t.includes(0)) throw new ImageError(`inode nid ${raw.nid}: symlink target contains a NUL byte`, raw.off);
    return t;
  }

  private regularContent(raw: RawInode): LeafContent {
    const metacopy = raw.xattrs.find((x) => x.name === XATTR_METACOPY);
    const redirect = raw.xattrs.find((x) => x.name === XATTR_REDIRECT);
    const size = raw.h.size;
    if (metacopy && metacopy.value.length > 0) {
      return { type: 'external', id: parseMetacopy(metacopy), size };
    }
    const id = redirect ? parseObjectPath(redirect.value) : null;
    if (id) return { type: 'external-no-verity', id, size };
    const layout = raw.h.layout;
    if (layout === LAYOUT_CHUNK_BASED) return { type: 'sparse', size };
    return { type: 'inline', data: this.readData(raw) };
  }
}

/**
 * The fs-verity digest in a `trusted.overlay.metacopy` value: version 0, length, flags 0,
 * algorithm (1 = SHA-256, 32 bytes; 2 = SHA-512, 64 bytes), digest.
 */
function parseMetacopy(x: RawXattr): Buffer {
  const v = x.value;
  const digestLen = v.length >= 4 ? ({ 1: 32, 2: 64 } as Record<number, number>)[v[3]] : undefined;
  if (v.length < 4 || v[0] !== 0 || v[1] !== v.length || v[2] !== 0 || digestLen === undefined || v.length !== 4 + digestLen) {
    throw new ImageError(`malformed trusted.overlay.metacopy xattr (${v.length} bytes: ${v.subarray(0, 4).toString('hex')}...)`, x.off);
  }
  return Buffer.from(v.subarray(4));
}

/**
 * The object id in a redirect path: the trailing `xx/yyyy...` (hex, 64 or 128 digits in all),
 * as composefs-rs `from_object_pathname` reads it; null if it is not one.
 */
function parseObjectPath(value: Buffer): Buffer | null {
  const s = value.toString('latin1');
  for (const hexLen of [128, 64]) {
    const n = hexLen + 1;
    if (s.length < n) continue;
    const t = s.slice(s.length - n);
    if (/^[0-9a-fA-F]{2}\/[0-9a-fA-F]+$/.test(t)) return Buffer.from(t.slice(0, 2) + t.slice(3), 'hex');
  }
  return null;
}
