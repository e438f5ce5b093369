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
 * The work is done in four steps (validation first: validate.ts):
 *   1. collect: turn the tree into a flat list of inodes (order = write order, inodes.ts) with
 *      their xattrs and directory entries (collect.ts `collectBfs`, `collectDfs`);
 *   2. prepare: share xattrs (xattrs.ts), find the minimum mtime, settle epoch-1 data blocks;
 *   3. lay out: place every inode, the shared xattr table and the data blocks (layout.ts);
 *   4. serialise into one preallocated buffer (here: `writeInode`, `writeDataBlocks`), every
 *      on-disk struct through format.ts's in-place writers.
 * Layout never depends on values that are only known later (nids, block addresses, shared
 * xattr ids), so one layout pass followed by one writing pass is enough.
 */

import { constants as bufferConstants } from 'node:buffer';
import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPACT_INODE_SIZE,
  type CompactInodeHeader,
  COMPOSEFS_FLAGS_HAS_ACL,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  DIRENT_SIZE,
  EROFS_SUPER_MAGIC,
  EROFS_SUPER_OFFSET,
  type ErofsVersion,
  EXTENDED_INODE_SIZE,
  type ExtendedInodeHeader,
  FEATURE_COMPAT_MTIME,
  FEATURE_COMPAT_XATTR_FILTER,
  inodeFormat,
  writeCompactInodeHeader,
  writeComposefsHeader,
  writeDirentHeader,
  writeExtendedInodeHeader,
  writeInodeXattrHeader,
  writeSharedXattrRef,
  writeSuperblock,
  writeXattrEntryHead,
  XATTR_IBODY_HEADER_SIZE,
  xattrEntrySize,
  xattrIcount,
} from './format.js';
import { FileSystem, Leaf } from '../tree/tree.js';
import {
  IdGroups,
  metacopyLength,
  redirectLength,
  shareXattrsFast,
  splitCached,
  type SplitName,
  writeEntry,
  writeMetacopyValue,
  XATTR_INDEX_POSIX_ACL_ACCESS,
  XATTR_INDEX_POSIX_ACL_DEFAULT,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_OPAQUE_ROOT,
  XATTR_OVERLAY_REDIRECT,
} from './xattrs.js';
import { type DirContent } from './dirblocks.js';
import {
  chunkBitsOf,
  chunkedAt,
  chunkFormat,
  fileType,
  Inodes,
  inodeSize,
  K_INLINE,
  K_SYMLINK,
  nlinkOf,
  TYPE_BITS,
} from './inodes.js';
import { collectBfs, collectDfs, Collector, rootEntriesWithStubs, sortedKeys } from './collect.js';
import { checkXattrBodies, validateAndCountLinks } from './validate.js';
import { type Context, type Layout, layOut, minMtime, settleEpoch1DataBlocks, SLOT } from './layout.js';

export type { ErofsVersion };

/** A demoted (epoch-1) chunk index always fills one block with this many null entries. */
const DEMOTED_CHUNK_ENTRIES = BLOCK_SIZE / 4;

/** The largest Buffer this Node allows (4 GiB on Node 20): the image is built in one. */
const MAX_IMAGE_BYTES = bufferConstants.MAX_LENGTH;

// ------------------------------------------------------------------------------------------
// Xattr bodies
// ------------------------------------------------------------------------------------------

/** A fast xattr body with every byte but the id-dependent ones (and shared references) in place. */
interface FastTemplate {
  bytes: Buffer;
  /** Where the id goes in the metacopy value (-1: the metacopy value is shared). */
  idAt: number;
  /** Where the redirect value starts (-1: shared). */
  redirectAt: number;
}

/** Redirect values converted to hex at once (one native call per batch). */
const REDIRECT_BATCH = 1024;
/** Room per id in a batch: the longest id (SHA-512). */
const REDIRECT_STRIDE = 64;

/**
 * The implicit metacopy + redirect xattrs of external files without other xattrs: one body per
 * external file, nearly all of them alike. Each body is copied from a template made once per
 * id length and sharing case and then patched (the shared references, the id); the redirect
 * values' hex is written last, for many files at once ({@link flushRedirects}). The image is
 * written mostly before V8 optimises the writer (src/cli/jit.ts), where a few builtin calls
 * per file cost far less than a loop per byte.
 */
class FastXattrs {
  readonly mc: SplitName;
  readonly rd: SplitName;
  readonly filter: number;
  /** By (SHA-512 ? 4 : 0) | (metacopy shared ? 2 : 0) | (redirect shared ? 1 : 0). */
  private readonly templates: (FastTemplate | undefined)[] = new Array<FastTemplate | undefined>(8);
  private readonly redirectAt: Float64Array;
  private readonly redirectId: Buffer[] = [];
  private redirects = 0;

  constructor(epoch1: boolean, capacity: number) {
    this.mc = splitCached(XATTR_OVERLAY_METACOPY, epoch1);
    this.rd = splitCached(XATTR_OVERLAY_REDIRECT, epoch1);
    this.filter = (this.mc.bit | this.rd.bit) >>> 0;
    this.redirectAt = new Float64Array(Math.max(1, capacity));
  }
  mcEntrySize(idLen: number): number {
    return xattrEntrySize(this.mc.suffix.length, metacopyLength(idLen));
  }
  rdEntrySize(idLen: number): number {
    return xattrEntrySize(this.rd.suffix.length, redirectLength(idLen));
  }
  byteSize(groups: IdGroups, g: number): number {
    const idLen = groups.id[g].length;
    let size = XATTR_IBODY_HEADER_SIZE;
    size += groups.mcPos[g] >= 0 ? 4 : this.mcEntrySize(idLen);
    size += groups.rdPos[g] >= 0 ? 4 : this.rdEntrySize(idLen);
    return size;
  }

  /** The body of an id of `idLen` bytes with a zero id (an invalid length throws, as writing it would). */
  private template(idLen: number, mcShared: boolean, rdShared: boolean): FastTemplate {
    const key = (idLen === 64 ? 4 : 0) | (mcShared ? 2 : 0) | (rdShared ? 1 : 0);
    const known = this.templates[key];
    if (known !== undefined && (idLen === 32 || idLen === 64)) return known;
    const refs = (mcShared ? 1 : 0) + (rdShared ? 1 : 0);
    const size = XATTR_IBODY_HEADER_SIZE + 4 * refs + (mcShared ? 0 : this.mcEntrySize(idLen)) + (rdShared ? 0 : this.rdEntrySize(idLen));
    const bytes = Buffer.alloc(size);
    writeInodeXattrHeader(bytes, 0, ~this.filter >>> 0, refs);
    let off = XATTR_IBODY_HEADER_SIZE + 4 * refs;
    let idAt = -1;
    let redirectAt = -1;
    if (!mcShared) {
      const value = writeXattrEntryHead(bytes, off, this.mc.index, this.mc.suffix, metacopyLength(idLen));
      writeMetacopyValue(bytes, value, Buffer.alloc(idLen));
      idAt = value + 4;
      off += this.mcEntrySize(idLen);
    }
    if (!rdShared) redirectAt = writeXattrEntryHead(bytes, off, this.rd.index, this.rd.suffix, redirectLength(idLen));
    const t = { bytes, idAt, redirectAt };
    this.templates[key] = t;
    return t;
  }

  write(buf: Buffer, off: number, groups: IdGroups, g: number, sharedRef: (index: number) => number): void {
    const id = groups.id[g];
    const mcPos = groups.mcPos[g];
    const rdPos = groups.rdPos[g];
    const t = this.template(id.length, mcPos >= 0, rdPos >= 0);
    buf.set(t.bytes, off);
    let refs = 0;
    if (mcPos >= 0) writeSharedXattrRef(buf, off, refs++, sharedRef(mcPos));
    if (rdPos >= 0) writeSharedXattrRef(buf, off, refs++, sharedRef(rdPos));
    if (t.idAt >= 0) buf.set(id, off + t.idAt);
    if (t.redirectAt >= 0) {
      // At most one body per inode between flushes: `capacity` is the inode count.
      this.redirectAt[this.redirects] = off + t.redirectAt;
      this.redirectId[this.redirects++] = id;
    }
  }

  /** Writes the redirect values of every body written so far ("/xx/" + the rest of the id in hex). */
  flushRedirects(buf: Buffer): void {
    const ids = Buffer.allocUnsafe(REDIRECT_BATCH * REDIRECT_STRIDE);
    for (let s = 0; s < this.redirects; s += REDIRECT_BATCH) {
      const k = Math.min(REDIRECT_BATCH, this.redirects - s);
      for (let j = 0; j < k; j++) ids.set(this.redirectId[s + j], j * REDIRECT_STRIDE);
      const text = Buffer.from(ids.toString('hex', 0, k * REDIRECT_STRIDE), 'latin1');
      // A plain Uint8Array view: subarray() of a Buffer runs Buffer's own constructor each time.
      const hex = new Uint8Array(text.buffer, text.byteOffset, text.length);
      for (let j = 0; j < k; j++) {
        const at = this.redirectAt[s + j];
        const h = 2 * REDIRECT_STRIDE * j;
        // All the hex at +2 puts its third digit at +4; then "/", the first two digits, "/".
        buf.set(hex.subarray(h, h + 2 * this.redirectId[s + j].length), at + 2);
        buf[at] = 0x2f;
        buf[at + 1] = hex[h];
        buf[at + 2] = hex[h + 1];
        buf[at + 3] = 0x2f;
      }
    }
    this.redirects = 0;
    this.redirectId.length = 0;
  }
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
function writeInode(buf: Buffer, i: number, inos: Inodes, xsize: Int32Array, groups: IdGroups, fastGroup: Int32Array, fast: FastXattrs, layout: Layout, ctx: Context, sharedRef: (k: number) => number): void {
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
    else fast.write(buf, off, groups, fastGroup[i], sharedRef);
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
  const groups = new IdGroups(n);
  const fastGroup = new Int32Array(n).fill(-1);
  const shared = shareXattrsFast(n, inos.xa, fastId, groups, fastGroup, epoch1);
  const fast = new FastXattrs(epoch1, n);
  const xsize = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const x = inos.xa[i];
    if (x !== null) xsize[i] = x.byteSize();
    else if (fastId[i] !== null) xsize[i] = fast.byteSize(groups, fastGroup[i]);
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
  for (let i = 0; i < n; i++) writeInode(buf, i, inos, xsize, groups, fastGroup, fast, layout, ctx, sharedRef);
  fast.flushRedirects(buf);
  shared.forEach((x, k) => writeEntry(buf, layout.shared[k], x));
  for (let i = 0; i < n; i++) writeDataBlocks(buf, i, inos, layout);
  return buf;
}
