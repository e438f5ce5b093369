/**
 * Extended attributes as the composefs EROFS writer stores them: prefix splitting, the
 * `trusted.overlay.*` escape, the overlayfs metacopy/redirect values of external files, the
 * per-inode bloom filter, and the global sharing pass.
 *
 * The two layout epochs (V0/V1 = "epoch 1", the libcomposefs-compatible layout; V2 = "epoch 2",
 * the legacy composefs-rs layout) differ here only in the prefix table (epoch 1 has no
 * `lustre.`), in the order of an inode's xattrs, and in the order of the shared table.
 */

import {
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIXES,
  writeInodeXattrHeader,
  writeSharedXattrRef,
  writeXattrEntry,
  xattrEntrySize,
} from './format.js';
import { xxh32 } from './xxhash.js';

export const OVERLAY_PREFIX = Buffer.from('trusted.overlay.');
export const OVERLAY_ESCAPED_PREFIX = Buffer.from('trusted.overlay.overlay.');
export const XATTR_OVERLAY_METACOPY = Buffer.from('trusted.overlay.metacopy');
export const XATTR_OVERLAY_REDIRECT = Buffer.from('trusted.overlay.redirect');
/** Set on the root of V0/V1 images (never escaped: added after escaping). */
export const XATTR_OVERLAY_OPAQUE_ROOT = Buffer.from('trusted.overlay.opaque');
/** Whiteout markers of V0/V1 images; already in escaped form. */
export const XATTR_OVERLAY_WHITEOUT = Buffer.from('trusted.overlay.overlay.whiteout');
export const XATTR_USER_WHITEOUT = Buffer.from('user.overlay.whiteout');
export const XATTR_OVERLAY_WHITEOUTS = Buffer.from('trusted.overlay.overlay.whiteouts');
export const XATTR_USER_WHITEOUTS = Buffer.from('user.overlay.whiteouts');
export const XATTR_OVERLAY_OPAQUE = Buffer.from('trusted.overlay.overlay.opaque');
export const XATTR_USER_OPAQUE = Buffer.from('user.overlay.opaque');

/** Prefix indices of the POSIX ACL names (they set the V0/V1 header's HAS_ACL flag). */
export const XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
const XATTR_INDEX_LUSTRE = 5;

/** Longest suffix / value an xattr entry header can describe (u8 / u16 length fields). */
const MAX_SUFFIX_LEN = 0xff;
const MAX_VALUE_LEN = 0xffff;

const PREFIX_BYTES: (Buffer | null)[] = XATTR_PREFIXES.map((p) => (p === null ? null : Buffer.from(p)));

/** One xattr of one inode, split into EROFS prefix index + suffix. */
export interface XattrItem {
  index: number;
  suffix: Buffer;
  value: Buffer;
  /** The full (escaped) name: epoch 1 orders by it. */
  name: Buffer;
  /**
   * For the writer's own metacopy (1) / redirect (2) values derived from an object id: the id.
   * Such items are grouped for sharing by id instead of by value bytes.
   */
  id?: Buffer;
  idKind?: number;
}

/**
 * Splits a name into (prefix index, suffix): the matching well-known prefix, or index 0 with
 * the whole name. Epoch 1 does not know `lustre.` (libcomposefs leaves it out of its table).
 */
export function splitXattrName(name: Buffer, epoch1: boolean): { index: number; suffix: Buffer } {
  for (let idx = PREFIX_BYTES.length - 1; idx >= 1; idx--) {
    if (epoch1 && idx === XATTR_INDEX_LUSTRE) continue;
    const prefix = PREFIX_BYTES[idx]!;
    if (name.length >= prefix.length && prefix.compare(name, 0, prefix.length) === 0) {
      return { index: idx, suffix: name.subarray(prefix.length) };
    }
  }
  return { index: 0, suffix: name };
}

/**
 * `trusted.overlay.X` -> `trusted.overlay.overlay.X`, so that overlayfs shows the user's own
 * overlay xattrs instead of interpreting them. Other names are returned unchanged.
 */
export function escapeOverlayName(name: Buffer): Buffer {
  if (name.length >= OVERLAY_PREFIX.length && OVERLAY_PREFIX.compare(name, 0, OVERLAY_PREFIX.length) === 0) {
    return Buffer.concat([OVERLAY_ESCAPED_PREFIX, name.subarray(OVERLAY_PREFIX.length)]);
  }
  return name;
}

/** fs-verity algorithm number of an object id, decided by its length (32 = SHA-256, 64 = SHA-512). */
function verityAlgorithm(id: Buffer): number {
  if (id.length === 32) return 1;
  if (id.length === 64) return 2;
  throw new Error(`external object id has ${id.length} bytes; expected 32 (sha256) or 64 (sha512)`);
}

/** The overlayfs metacopy value carrying the object's fs-verity digest: version, length, flags, algorithm, digest. */
export function metacopyValue(id: Buffer): Buffer {
  const alg = verityAlgorithm(id);
  const out = Buffer.alloc(4 + id.length);
  out[0] = 0; // version
  out[1] = out.length; // total length of the struct
  out[2] = 0; // flags
  out[3] = alg;
  id.copy(out, 4);
  return out;
}

/** The overlayfs redirect value: "/" + the object's path in the repository ("xx/yyyy…"). */
export function redirectValue(id: Buffer): Buffer {
  verityAlgorithm(id);
  const hex = id.toString('hex');
  return Buffer.from(`/${hex.slice(0, 2)}/${hex.slice(2)}`, 'latin1');
}

/** Length of the metacopy value for an id of `idLen` bytes. */
export function metacopyLength(idLen: number): number {
  return 4 + idLen;
}

/** Length of the redirect value ("/xx/" + the rest in hex) for an id of `idLen` bytes. */
export function redirectLength(idLen: number): number {
  return 2 * idLen + 2;
}

const HEX = Buffer.from('0123456789abcdef', 'latin1');

/** Writes the metacopy value of `id` at `off` (as {@link metacopyValue}, without a buffer). */
export function writeMetacopyValue(buf: Buffer, off: number, id: Buffer): void {
  buf[off] = 0;
  buf[off + 1] = 4 + id.length;
  buf[off + 2] = 0;
  buf[off + 3] = verityAlgorithm(id);
  buf.set(id, off + 4); // TypedArray set: no native call per (small) copy, unlike Buffer#copy
}

/** Writes the redirect value of `id` at `off` (as {@link redirectValue}, without a hex string). */
export function writeRedirectValue(buf: Buffer, off: number, id: Buffer): void {
  buf[off] = 0x2f;
  buf[off + 1] = HEX[id[0] >> 4];
  buf[off + 2] = HEX[id[0] & 15];
  buf[off + 3] = 0x2f;
  let o = off + 4;
  for (let i = 1; i < id.length; i++) {
    const b = id[i];
    buf[o++] = HEX[b >> 4];
    buf[o++] = HEX[b & 15];
  }
}

/** Encoded size of an xattr entry: header, suffix, value, padded to 4. */
export function entrySize(x: XattrItem): number {
  return xattrEntrySize(x.suffix.length, x.value.length);
}

/** Writes one xattr entry at `off`; returns its size. */
export function writeEntry(buf: Buffer, off: number, x: XattrItem): number {
  return writeXattrEntry(buf, off, x.index, x.suffix, x.value);
}

/** A name split into prefix index and suffix, with its bloom filter bit. */
export interface SplitName {
  index: number;
  suffix: Buffer;
  bit: number;
}

/**
 * The split of the writer's own constant names (metacopy, redirect, markers: added to very many
 * inodes), computed once per epoch; other names are split each time.
 */
const splitCache: [WeakMap<Buffer, SplitName>, WeakMap<Buffer, SplitName>] = [new WeakMap(), new WeakMap()];
const CONSTANT_NAMES = new Set<Buffer>([
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_REDIRECT,
  XATTR_OVERLAY_OPAQUE_ROOT,
  XATTR_OVERLAY_WHITEOUT,
  XATTR_USER_WHITEOUT,
  XATTR_OVERLAY_WHITEOUTS,
  XATTR_USER_WHITEOUTS,
  XATTR_OVERLAY_OPAQUE,
  XATTR_USER_OPAQUE,
]);

export function splitCached(name: Buffer, epoch1: boolean): SplitName {
  const constant = CONSTANT_NAMES.has(name);
  const cache = splitCache[epoch1 ? 1 : 0];
  if (constant) {
    const hit = cache.get(name);
    if (hit) return hit;
  }
  const { index, suffix } = splitXattrName(name, epoch1);
  const out = { index, suffix, bit: (1 << (xxh32(suffix, (XATTR_FILTER_SEED + index) >>> 0) & 31)) >>> 0 };
  if (constant) cache.set(name, out);
  return out;
}

/** The xattrs of one inode: local entries, references into the shared table, bloom filter. */
export class InodeXattrs {
  local: XattrItem[] = [];
  /** Indices into the shared table, in the order the xattrs had in this inode. */
  shared: number[] = [];
  /** OR of one bit per xattr name ever added; stored complemented. 0 = no xattrs at all. */
  filter = 0;

  constructor(private readonly epoch1: boolean) {}

  /** Appends an xattr (no de-duplication: composefs-rs appends, so duplicates are possible). */
  add(name: Buffer, value: Buffer, id?: Buffer, idKind?: number): void {
    const { index, suffix, bit } = splitCached(name, this.epoch1);
    if (suffix.length > MAX_SUFFIX_LEN) {
      throw new Error(`xattr name ${JSON.stringify(name.toString('latin1'))} is too long for EROFS (${suffix.length} > ${MAX_SUFFIX_LEN} bytes after the prefix)`);
    }
    if (value.length > MAX_VALUE_LEN) {
      throw new Error(`xattr ${JSON.stringify(name.toString('latin1'))} has a ${value.length}-byte value; EROFS allows at most ${MAX_VALUE_LEN}`);
    }
    this.filter = (this.filter | bit) >>> 0;
    this.local.push(id === undefined ? { index, suffix, value, name } : { index, suffix, value, name, id, idKind });
  }

  /** Size of the in-inode xattr body (0 when the inode has no xattrs). */
  byteSize(): number {
    if (this.filter === 0) return 0;
    let size = XATTR_IBODY_HEADER_SIZE + 4 * this.shared.length;
    for (const x of this.local) size += entrySize(x);
    return size;
  }

  /**
   * Writes the body at `off`: complemented filter, shared count, shared refs (mapped to on-disk
   * ids by `sharedRef`), local entries.
   */
  write(buf: Buffer, off: number, sharedRef: (index: number) => number): number {
    if (this.filter === 0) return 0;
    if (this.shared.length > 0xff) {
      throw new Error(`an inode references ${this.shared.length} shared xattrs; EROFS allows at most 255`);
    }
    const start = off;
    const shared = this.shared;
    writeInodeXattrHeader(buf, off, ~this.filter >>> 0, shared.length);
    for (let k = 0; k < shared.length; k++) writeSharedXattrRef(buf, start, k, sharedRef(shared[k]));
    off += XATTR_IBODY_HEADER_SIZE + 4 * shared.length;
    for (const x of this.local) off += writeEntry(buf, off, x);
    return off - start;
  }
}

/** Epoch 1 order (libcomposefs): full name, then value length, then value bytes. */
function compareFullKey(a: XattrItem, b: XattrItem): number {
  return Buffer.compare(a.name, b.name) || a.value.length - b.value.length || Buffer.compare(a.value, b.value);
}

/** Epoch 2 order (composefs-rs): prefix index, suffix bytes, value bytes. */
function compareTriple(a: XattrItem, b: XattrItem): number {
  return a.index - b.index || Buffer.compare(a.suffix, b.suffix) || Buffer.compare(a.value, b.value);
}


/**
 * Per object id (a group, numbered from 0): occurrence counts and shared-table positions of its
 * metacopy / redirect values. Parallel typed arrays, no object per id: a tree of 500k external
 * files has about as many ids.
 */
export class IdGroups {
  n = 0;
  readonly id: Buffer[];
  /** Occurrences of the metacopy value (with digest) and of the redirect value. */
  readonly mc: Int32Array;
  readonly rd: Int32Array;
  /** Positions in the shared table; -1 = stays local. */
  readonly mcPos: Int32Array;
  readonly rdPos: Int32Array;
  /** `capacity`: at most one group per inode (an inode's id items all carry its one id). */
  constructor(capacity: number) {
    this.id = new Array<Buffer>(capacity);
    this.mc = new Int32Array(capacity);
    this.rd = new Int32Array(capacity);
    this.mcPos = new Int32Array(capacity).fill(-1);
    this.rdPos = new Int32Array(capacity).fill(-1);
  }
}

/** (prefix index, suffix) as one string: the second-level key of the sharing pass. */
function nameKeyOf(x: XattrItem): string {
  return String.fromCharCode(x.index) + x.suffix.toString('latin1');
}

interface ValueGroup {
  item: XattrItem;
  count: number;
  position: number;
}

/**
 * The id groups in ascending byte order of their ids, when all ids have one valid length (the
 * usual case: one digest algorithm); null otherwise. Sorted without a comparator: a Float64Array
 * of (first 4 bytes) * 2^21 + group, then runs that agree in those bytes (rare for digests;
 * possible for crafted ones, then an ordinary O(n log n) sort) by the whole id.
 */
function idOrder(groups: IdGroups): Int32Array | null {
  const n = groups.n;
  if (n === 0 || n >= 1 << 21) return null;
  const idLen = groups.id[0].length;
  if (idLen !== 32 && idLen !== 64) return null;
  const keys = new Float64Array(n);
  for (let g = 0; g < n; g++) {
    const id = groups.id[g];
    if (id.length !== idLen) return null;
    // The first 4 bytes big-endian, by hand: Buffer#readUInt32BE is a JS wrapper with checks,
    // costly while the writer is not yet optimised (src/cli/jit.ts).
    keys[g] = (((id[0] << 24) | (id[1] << 16) | (id[2] << 8) | id[3]) >>> 0) * 2097152 + g;
  }
  keys.sort();
  const order = new Int32Array(n);
  for (let k = 0; k < n; k++) order[k] = keys[k] % 2097152;
  for (let k = 0; k < n; ) {
    const top = Math.floor(keys[k] / 2097152);
    let e = k + 1;
    while (e < n && Math.floor(keys[e] / 2097152) === top) e++;
    if (e - k > 1) {
      const run = Array.from(order.subarray(k, e));
      run.sort((a, b) => Buffer.compare(groups.id[a], groups.id[b]));
      order.set(run, k);
    }
    k = e;
  }
  return order;
}

/**
 * The shared-table items of one id-derived name (metacopy or redirect): one per group occurring
 * more than once, sorted as `compareFullKey` (epoch 1, here ascending) / `compareTriple` order
 * them among themselves. The name (so prefix and suffix) is the same for all, leaving the value:
 * epoch 1 compares its length, then its bytes; epoch 2 its bytes, a shorter prefix first — the
 * order of latin1 strings.
 */
function idItems(
  groups: IdGroups,
  counts: Int32Array,
  pos: Int32Array,
  name: Buffer,
  valueOf: (id: Buffer) => Buffer,
  epoch1: boolean,
  byId: Int32Array | null,
  write: (buf: Buffer, off: number, id: Buffer) => void,
  valueLength: (idLen: number) => number,
): { items: XattrItem[]; group: number[]; pos: Int32Array } {
  const { index, suffix } = splitCached(name, epoch1);
  if (byId !== null) {
    // Ids all of one length, in ascending byte order: both values are a fixed header plus the
    // id (or its hex with '/' at fixed places), so they sort as the ids do. The values share
    // one buffer instead of a small allocation each.
    let count = 0;
    for (let k = 0; k < byId.length; k++) if (counts[byId[k]] > 1) count++;
    const items: XattrItem[] = new Array<XattrItem>(count);
    const group: number[] = new Array<number>(count);
    if (count === 0) return { items, group, pos };
    const len = valueLength(groups.id[byId[0]].length);
    const slab = Buffer.allocUnsafe(count * len);
    let j = 0;
    for (let k = 0; k < byId.length; k++) {
      const g = byId[epoch1 ? byId.length - 1 - k : k]; // epoch 1: descending
      if (counts[g] <= 1) continue;
      write(slab, j * len, groups.id[g]);
      items[j] = { index, suffix, value: slab.subarray(j * len, (j + 1) * len), name };
      group[j++] = g;
    }
    return { items, group, pos };
  }
  const group: number[] = [];
  const values: Buffer[] = [];
  const keys: string[] = [];
  for (let g = 0; g < groups.n; g++) {
    if (counts[g] > 1) {
      const value = valueOf(groups.id[g]);
      group.push(g);
      values.push(value);
      keys.push(value.toString('latin1'));
    }
  }
  const order = Array.from(group.keys());
  order.sort((a, b) => {
    const ka = keys[a];
    const kb = keys[b];
    if (epoch1 && ka.length !== kb.length) return ka.length - kb.length;
    return ka < kb ? -1 : ka > kb ? 1 : a - b;
  });
  // Epoch 1 lays the table out descending: callers merge with the reversed comparator.
  if (epoch1) order.reverse();
  return {
    items: order.map((o) => ({ index, suffix, value: values[o], name })),
    group: order.map((o) => group[o]),
    pos,
  };
}

/**
 * Moves every (prefix, suffix, value) that occurs more than once across all inodes into a
 * shared table and replaces the inode-local copies by references. Occurrences are counted, not
 * inodes, so an inode holding the same xattr twice shares it too (as composefs-rs does).
 * Epoch 1 first sorts each inode's xattrs by full name, and lays the table out in *descending*
 * full-name order; epoch 2 keeps insertion order and lays the table out ascending by triple.
 *
 * Works on the writer's compact representation: inode `i` either has a general
 * {@link InodeXattrs} (`generic[i]`), or is an external file whose only xattrs are the metacopy
 * and redirect values of `fastId[i]` (never materialised: they are grouped by id, since those
 * names are never produced by escaping and equal values mean equal ids), or has no xattrs.
 *
 * Fills `groups`, `fastGroup[i]` (the id group) for fast inodes and `generic[i].shared`
 * (positions in the table) / `.local`. Returns the table in on-disk order.
 */
export function shareXattrsFast(
  n: number,
  generic: (InodeXattrs | null)[],
  fastId: (Buffer | null)[],
  groups: IdGroups,
  fastGroup: Int32Array,
  epoch1: boolean,
): XattrItem[] {
  // Keyed by 30 bits of the id (a small integer: no string or heap number per file); different
  // ids with equal keys (a few among hundreds of thousands of digests) share a second-level map
  // keyed by the whole id. (A list searched linearly there let a dumpfile of ids crafted to
  // agree in those bits make this quadratic: 10,000 files took 40 s.)
  const byId = new Map<number, number | Map<string, number>>();
  const newGroup = (id: Buffer): number => {
    const g = groups.n++;
    if (g >= groups.mc.length) throw new Error('internal error: more object ids than inodes');
    groups.id[g] = id;
    return g;
  };
  const idGroup = (id: Buffer): number => {
    const k = id.length >= 4 ? ((id[0] | (id[1] << 8) | (id[2] << 16) | (id[3] << 24)) >>> 2) : -1 - id.length;
    const b = byId.get(k);
    if (b === undefined) {
      const g = newGroup(id);
      byId.set(k, g);
      return g;
    }
    if (typeof b !== 'number') {
      const ik = id.toString('latin1');
      const known = b.get(ik);
      if (known !== undefined) return known;
      const g = newGroup(id);
      b.set(ik, g);
      return g;
    }
    const other = groups.id[b];
    if (other.equals(id)) return b;
    const g = newGroup(id);
    byId.set(k, new Map([[other.toString('latin1'), b], [id.toString('latin1'), g]]));
    return g;
  };
  // Keyed by value first: the common repeated xattr (one SELinux label on many files) costs one
  // lookup. Values carried under several names get a second level keyed by (index, suffix):
  // a list searched linearly here made 40,000 names with one value quadratic.
  const byValue = new Map<string, ValueGroup | Map<string, ValueGroup>>();
  // Per generic item in order: its value group, or (a number) its id group.
  const groupOf: (ValueGroup | number)[] = [];
  for (let i = 0; i < n; i++) {
    const x = generic[i];
    if (x === null) {
      const id = fastId[i];
      if (id !== null) {
        const g = idGroup(id);
        groups.mc[g]++;
        groups.rd[g]++;
        fastGroup[i] = g;
      }
      continue;
    }
    if (epoch1) x.local.sort(compareFullKey);
    for (const item of x.local) {
      if (item.id !== undefined) {
        const g = idGroup(item.id);
        if (item.idKind === 1) groups.mc[g]++;
        else groups.rd[g]++;
        groupOf.push(g);
        continue;
      }
      const vk = item.value.toString('latin1');
      const bucket = byValue.get(vk);
      let g: ValueGroup | undefined;
      if (bucket === undefined) {
        g = { item, count: 0, position: -1 };
        byValue.set(vk, g);
      } else if (bucket instanceof Map) {
        const nk = nameKeyOf(item);
        g = bucket.get(nk);
        if (!g) bucket.set(nk, (g = { item, count: 0, position: -1 }));
      } else if (bucket.item.index === item.index && bucket.item.suffix.equals(item.suffix)) {
        g = bucket;
      } else {
        g = { item, count: 0, position: -1 };
        byValue.set(vk, new Map([[nameKeyOf(bucket.item), bucket], [nameKeyOf(item), g]]));
      }
      g.count++;
      groupOf.push(g);
    }
  }

  // The table's order is one sort of every (prefix, suffix, value) seen more than once by
  // `cmp`. Done as one sort with that comparator it cost most of this function on trees of
  // repeated external files (two items per object id, each comparison several Buffer.compare
  // calls). The id-derived items are sorted apart, per name, by their values as latin1 strings
  // (the same byte order), and the value-grouped items are merged in: the resulting order is
  // the one the single stable sort gave, the value-grouped items first on ties.
  const cmp = epoch1 ? (a: XattrItem, b: XattrItem) => compareFullKey(b, a) : compareTriple;
  const valueMulti: ValueGroup[] = [];
  for (const v of byValue.values()) {
    if (v instanceof Map) {
      for (const g of v.values()) if (g.count > 1) valueMulti.push(g);
    } else if (v.count > 1) valueMulti.push(v);
  }
  byValue.clear();
  valueMulti.sort((a, b) => cmp(a.item, b.item));
  const order = idOrder(groups);
  const mcList = idItems(groups, groups.mc, groups.mcPos, XATTR_OVERLAY_METACOPY, metacopyValue, epoch1, order, writeMetacopyValue, metacopyLength);
  const rdList = idItems(groups, groups.rd, groups.rdPos, XATTR_OVERLAY_REDIRECT, redirectValue, epoch1, order, writeRedirectValue, redirectLength);
  byId.clear();
  // The two lists' names differ, so the name alone orders one list wholly before the other.
  const mcFirst = mcList.items.length === 0 || rdList.items.length === 0 || cmp(mcList.items[0], rdList.items[0]) < 0;
  const [first, second] = mcFirst ? [mcList, rdList] : [rdList, mcList];
  const idCount = first.items.length + second.items.length;
  const idAt = (j: number): XattrItem => (j < first.items.length ? first.items[j] : second.items[j - first.items.length]);
  const setIdPos = (j: number, pos: number): void => {
    const list = j < first.items.length ? first : second;
    const jj = j < first.items.length ? j : j - first.items.length;
    list.pos[list.group[jj]] = pos;
  };
  const table: XattrItem[] = [];
  let j = 0;
  for (const vg of valueMulti) {
    // First id item not strictly before this one (ties: the value-grouped item goes first).
    let lo = j;
    let hi = idCount;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cmp(idAt(mid), vg.item) < 0) lo = mid + 1;
      else hi = mid;
    }
    for (; j < lo; j++) {
      setIdPos(j, table.length);
      table.push(idAt(j));
    }
    vg.position = table.length;
    table.push(vg.item);
  }
  for (; j < idCount; j++) {
    setIdPos(j, table.length);
    table.push(idAt(j));
  }

  let k = 0;
  for (let i = 0; i < n; i++) {
    const x = generic[i];
    if (x === null || x.local.length === 0) continue;
    const keep: XattrItem[] = [];
    for (const item of x.local) {
      const g = groupOf[k++];
      const pos = typeof g !== 'number' ? g.position : item.idKind === 1 ? groups.mcPos[g] : groups.rdPos[g];
      if (pos < 0) keep.push(item);
      else x.shared.push(pos);
    }
    x.local = keep;
  }
  return table;
}
