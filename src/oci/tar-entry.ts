/**
 * A streaming tar reader with the exact acceptance rules composefs-rs v0.9.0 applies to OCI layer
 * tarballs (tar-core 0.1 `Parser::with_defaults()` driven by composefs-oci `split_async` and
 * `get_entry`), and the conversion of each member to a composefs (path, stat, item).
 *
 * We parse the headers ourselves instead of using tar-stream because we need the raw bytes of
 * PAX values (xattr values, non-UTF-8 paths), the raw mode field, tar-core's exact error cases and
 * its precedence rules (PAX > GNU long name/link > ustar prefix+name).
 *
 * Rules reproduced (see shared/spec/tree-rules.md §3.2-3.3, checked against the sources):
 * - every header's checksum is verified (unsigned sum, octal field, leading '+' accepted as Rust's
 *   from_str_radix does); numeric fields are octal or GNU base-256 (low 64 bits kept);
 * - 'x', 'L', 'K' and 'S' are extensions only in ustar/GNU headers; in v7 headers they are ordinary
 *   (unsupported) members; 'g' (global PAX) is always skipped and drops pending extensions;
 * - a duplicate 'x', 'L' or 'K' before one member is an error; extension data above 1 MiB in total is
 *   an error; a GNU long name/link loses exactly one trailing NUL;
 * - PAX records: "LEN key=value\n"; a record whose length cannot be read ends the list silently, a
 *   record with a bad length/newline/no '=' is an error; keys must be UTF-8; `path`, `linkpath`,
 *   `size`, `uid`, `gid`, `mtime` (integer part), `SCHILY.xattr.NAME`, `GNU.sparse.name` (path
 *   override) are used; malformed numbers are errors; sparse files (GNU 'S', PAX 0.0/0.1/1.0) are errors;
 * - an all-zero block followed by a non-zero one is skipped; two zero blocks end the archive and
 *   everything after them is ignored (but read, so digests cover it); EOF exactly at a header
 *   boundary is also a clean end; any other EOF is an error;
 * - device numbers come from the ustar/GNU devmajor/devminor octal fields (absent in v7 headers).
 */
import { FsVerityHasher, fsverityDigest } from '../fsverity/fsverity.js';
import type { HashPool } from '../fsverity/pool.js';
import type { ObjectSink } from '../repo/repo.js';
import { DIGEST_SIZE, INLINE_CONTENT_MAX, type HashAlg, type LeafContent, type Stat, type Xattrs, nameKey } from '../tree/tree.js';
import { type ByteSource, ShortInputError, fileBacked } from './bytes.js';
import { InputError } from '../errors.js';

export const BLOCK = 512;
/** tar-core `Limits::default().max_metadata_size`. */
export const MAX_METADATA_SIZE = 1024 * 1024;
const U64_MASK = (1n << 64n) - 1n;

/** A malformed or unsupported tar stream. The message never includes a stack-like dump. */
export class TarFormatError extends InputError {
  constructor(
    message: string,
    /** The member's path as stored in the tar (lossy UTF-8), when known. */
    readonly entryName?: string,
    /** Byte offset of the member's first header block. */
    readonly offset?: number,
  ) {
    super(message);
    this.name = 'TarFormatError';
  }
}

// ---------------------------------------------------------------------------------------------
// Header fields

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Rust `str::from_utf8`: undefined if not valid UTF-8. */
export function strictUtf8(b: Uint8Array): string | undefined {
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

function truncateNul(b: Buffer): Buffer {
  const i = b.indexOf(0);
  return i === -1 ? b : b.subarray(0, i);
}

function isTarWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0b || c === 0x0c || c === 0x0d;
}

/** tar-core `parse_octal`: NUL-truncate, trim whitespace, empty = 0, `+`? then octal digits. */
export function parseOctal(buf: Buffer, start = 0, end = buf.length): bigint {
  // Fast path: the usual octal digits followed by nothing, NUL, or spaces then NUL/end
  // (at most 17 digits: exact in a double). Anything else takes the general path below.
  // Offsets instead of a subarray per field: a header has a dozen fields.
  let fast = 0;
  let i = start;
  while (i < end && i - start < 17) {
    const c = buf[i];
    if (c < 0x30 || c > 0x37) break;
    fast = fast * 8 + (c - 0x30);
    i++;
  }
  if (i > start && i - start < 17) {
    let j = i;
    while (j < end && buf[j] === 0x20) j++;
    if (j === end || buf[j] === 0) return BigInt(fast);
  }
  const field = buf.subarray(start, end);
  const t = truncateNul(field);
  let s = 0;
  let e = t.length;
  while (s < e && isTarWhitespace(t[s])) s++;
  while (e > s && isTarWhitespace(t[e - 1])) e--;
  if (s === e) return 0n;
  const str = t.subarray(s, e).toString('latin1');
  if (!/^\+?[0-7]+$/.test(str)) throw new Error(`invalid octal field ${JSON.stringify(field.toString('latin1'))}`);
  const v = BigInt('0o' + str.replace('+', ''));
  if (v > U64_MASK) throw new Error(`invalid octal field ${JSON.stringify(field.toString('latin1'))}`);
  return v;
}

/** tar-core `parse_numeric`: GNU base-256 when the high bit is set (low 64 bits kept), else octal. */
export function parseNumeric(buf: Buffer, start = 0, end = buf.length): bigint {
  if (end <= start) return 0n;
  if (buf[start] & 0x80) {
    let v = 0n;
    for (let i = start; i < end; i++) {
      const b = i === start ? buf[i] & 0x7f : buf[i];
      v = ((v << 8n) | BigInt(b)) & U64_MASK;
    }
    return v;
  }
  return parseOctal(buf, start, end);
}

/** Rust `u64::from_str` on a PAX value: `+`? digits, no overflow. */
function parseRustU64(s: string): bigint | undefined {
  if (!/^\+?[0-9]+$/.test(s)) return undefined;
  const v = BigInt(s.replace('+', ''));
  return v > U64_MASK ? undefined : v;
}

/** Typeflags (tar-core EntryType). '\0' is an old-style regular file. */
export const T = {
  REG: 0x30,
  AREG: 0x00,
  LINK: 0x31,
  SYMLINK: 0x32,
  CHR: 0x33,
  BLK: 0x34,
  DIR: 0x35,
  FIFO: 0x36,
  CONT: 0x37,
  GNU_LONGNAME: 0x4c, // L
  GNU_LONGLINK: 0x4b, // K
  GNU_SPARSE: 0x53, // S
  PAX: 0x78, // x
  PAX_GLOBAL: 0x67, // g
} as const;

export function typeflagName(t: number): string {
  return t >= 0x20 && t < 0x7f ? `'${String.fromCharCode(t)}'` : `0x${t.toString(16).padStart(2, '0')}`;
}

interface Header {
  raw: Buffer;
  typeflag: number;
  isUstar: boolean;
  isGnu: boolean;
}

/** `ustar\0` + `00` (POSIX) and `ustar ` + ` \0` (GNU) at offsets 257..265. */
function magicIs(block: Buffer, m: readonly number[]): boolean {
  for (let i = 0; i < 8; i++) if (block[257 + i] !== m[i]) return false;
  return true;
}
const USTAR_MAGIC = [0x75, 0x73, 0x74, 0x61, 0x72, 0x00, 0x30, 0x30];
const GNU_MAGIC = [0x75, 0x73, 0x74, 0x61, 0x72, 0x20, 0x20, 0x00];

function headerOf(block: Buffer): Header {
  return {
    raw: block,
    typeflag: block[156],
    isUstar: magicIs(block, USTAR_MAGIC),
    isGnu: magicIs(block, GNU_MAGIC),
  };
}

function verifyChecksum(block: Buffer): void {
  let expected: bigint;
  try {
    expected = parseOctal(block, 148, 156);
  } catch {
    throw new Error('header checksum field is not octal');
  }
  // the checksum field itself counts as eight spaces
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i];
  for (let i = 156; i < BLOCK; i++) sum += block[i];
  if (BigInt(sum) !== expected) throw new Error(`header checksum mismatch: stored ${expected}, computed ${sum}`);
}

// ---------------------------------------------------------------------------------------------
// PAX records

export interface PaxRecord {
  key: Buffer;
  value: Buffer;
}

/**
 * tar-core `PaxExtensions`: yields records; throws on a malformed record; stops silently when the
 * next record's length prefix cannot be read (no space, not a number).
 */
export function* paxRecords(data: Buffer): Generator<PaxRecord> {
  let rest = data;
  while (rest.length > 0) {
    const sp = rest.indexOf(0x20);
    if (sp === -1) return;
    const lenStr = strictUtf8(rest.subarray(0, sp));
    if (lenStr === undefined) return;
    const len = parseRustU64(lenStr);
    if (len === undefined) return;
    if (len > BigInt(rest.length)) throw new Error('malformed PAX extension record');
    const n = Number(len);
    const record = rest.subarray(0, n);
    if (n === 0 || record[n - 1] !== 0x0a) throw new Error('malformed PAX extension record');
    if (sp + 1 > n - 1) throw new Error('malformed PAX extension record');
    const kv = record.subarray(sp + 1, n - 1);
    const eq = kv.indexOf(0x3d);
    if (eq === -1) throw new Error('malformed PAX extension record');
    yield { key: kv.subarray(0, eq), value: kv.subarray(eq + 1) };
    rest = rest.subarray(n);
  }
}

/**
 * composefs-rs `pax_mtime_nsec`: nanoseconds from the FIRST `mtime` record's fraction; truncated
 * to 9 digits, shorter fractions scaled; anything unparsable gives 0.
 */
export function paxMtimeNsec(pax: Buffer): number {
  for (const r of paxRecords(pax)) {
    if (r.key.toString('latin1') !== 'mtime') continue;
    const value = strictUtf8(r.value);
    if (value === undefined) return 0;
    const dot = value.indexOf('.');
    if (dot === -1) return 0;
    const frac = value.slice(dot + 1);
    const fracBytes = Buffer.from(frac, 'utf8');
    if (fracBytes.length >= 9) {
      const head = strictUtf8(fracBytes.subarray(0, 9));
      // Rust would panic slicing inside a multi-byte character; such a value cannot be parsed.
      if (head === undefined) throw new Error(`invalid PAX mtime value ${JSON.stringify(value)}`);
      const v = parseRustU32(head);
      return v ?? 0;
    }
    const v = parseRustU32(frac);
    return v === undefined ? 0 : v * 10 ** (9 - fracBytes.length);
  }
  return 0;
}

function parseRustU32(s: string): number | undefined {
  const v = parseRustU64(s);
  return v === undefined || v > 0xffffffffn ? undefined : Number(v);
}

// ---------------------------------------------------------------------------------------------
// Raw members

/** One tar member after all extension headers are applied (tar-core `ParsedEntry`). */
export interface RawTarEntry {
  typeflag: number;
  /** Resolved path bytes: GNU.sparse.name > PAX path > GNU long name > ustar prefix/name > name. */
  path: Buffer;
  /** Resolved link target, undefined when empty. */
  linkTarget: Buffer | undefined;
  /** The mode field, unmasked (low 32 bits). */
  mode: number;
  uid: bigint;
  gid: bigint;
  /** Integer seconds (header, or PAX integer part), unsigned 64-bit. */
  mtime: bigint;
  /** Content size (PAX `size` overrides the header). */
  size: bigint;
  devMajor: number | undefined;
  devMinor: number | undefined;
  /** SCHILY.xattr.* records in order (later duplicates win when collected into a map). */
  xattrs: [Buffer, Buffer][];
  /** The local PAX data, if a PAX header preceded the member. */
  pax: Buffer | undefined;
  /** Offset of the member's first (extension) header. */
  offset: number;
  /** Offset of the content. */
  dataOffset: number;
}

/** Lossy display form of a member path for messages. */
export function displayPath(b: Buffer): string {
  return b.toString('utf8');
}

interface Pending {
  longName?: Buffer;
  longLink?: Buffer;
  pax?: Buffer;
  metadataSize: number;
  start: number;
}

function isAllZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Parses the tar stream, calling `onEntry` for each member with the source positioned at its
 * content. Whatever content `onEntry` leaves unread (plus padding) is skipped afterwards. After the
 * end-of-archive marker the rest of the input is drained.
 */
export async function readTar(
  src: ByteSource,
  onEntry: (e: RawTarEntry, src: ByteSource) => Promise<void>,
): Promise<void> {
  let pending: Pending | undefined;
  for (;;) {
    const start = src.position;
    const block = await src.read(BLOCK);
    if (block.length === 0 && pending === undefined) return; // clean EOF at a header boundary
    if (block.length < BLOCK) throw new TarFormatError('unexpected end of tar stream inside a header', undefined, start);
    if (isAllZero(block)) {
      const second = await src.read(BLOCK);
      if (second.length < BLOCK)
        throw new TarFormatError('unexpected end of tar stream after a zero block', undefined, start);
      if (isAllZero(second)) {
        if (pending !== undefined)
          throw new TarFormatError('extension headers without a following member', undefined, pending.start);
        await src.drain();
        return;
      }
      // A stray zero block: the next block is a header (pending extensions carry over).
      await processHeader(second, start + BLOCK);
      continue;
    }
    await processHeader(block, start);
  }

  async function processHeader(block: Buffer, offset: number): Promise<void> {
    const p: Pending = pending ?? { metadataSize: 0, start: offset };
    const fail = (msg: string): never => {
      throw new TarFormatError(msg, undefined, p.start);
    };
    try {
      verifyChecksum(block);
    } catch (e) {
      fail((e as Error).message);
    }
    const h = headerOf(block);
    let size: bigint;
    try {
      size = parseNumeric(block, 124, 136);
    } catch (e) {
      return fail(`size field: ${(e as Error).message}`);
    }
    if (size > U64_MASK - 511n) fail(`invalid entry size ${size}`);
    const padded = Number((size + 511n) & ~511n);
    const ext = h.isGnu || h.isUstar;
    const t = h.typeflag;

    if (ext && (t === T.GNU_LONGNAME || t === T.GNU_LONGLINK || t === T.PAX)) {
      const kind = t === T.PAX ? 'PAX extended header' : t === T.GNU_LONGNAME ? 'GNU long name' : 'GNU long link';
      const dup = t === T.PAX ? p.pax : t === T.GNU_LONGNAME ? p.longName : p.longLink;
      if (dup !== undefined) fail(`duplicate ${kind} before one member`);
      const total = BigInt(p.metadataSize) + size;
      if (total > BigInt(MAX_METADATA_SIZE)) fail(`extension metadata too large: ${total} bytes > ${MAX_METADATA_SIZE}`);
      const n = Number(size);
      const data = await src.read(padded);
      if (data.length < padded) fail(`unexpected end of tar stream inside a ${kind}`);
      let d = Buffer.from(data.subarray(0, n));
      if (t !== T.PAX && d.length > 0 && d[d.length - 1] === 0) d = d.subarray(0, d.length - 1);
      p.metadataSize += n;
      if (t === T.PAX) p.pax = d;
      else if (t === T.GNU_LONGNAME) p.longName = d;
      else p.longLink = d;
      pending = p;
      return;
    }
    if (t === T.PAX_GLOBAL) {
      if (size > BigInt(MAX_METADATA_SIZE)) fail(`global PAX header too large: ${size} bytes`);
      if (!(await src.skip(padded))) fail('unexpected end of tar stream inside a global PAX header');
      pending = undefined; // tar-core restarts after a global header: pending extensions are dropped
      return;
    }
    pending = undefined;
    const entry = resolveEntry(h, size, p, offset);
    if (entry.dataOffset < 0) entry.dataOffset = src.position;
    const before = src.position;
    await onEntry(entry, src);
    const used = src.position - before;
    // Content length is the resolved size (PAX `size` overrides the header), as split_async uses.
    if (entry.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError(`member size ${entry.size} is too large`, displayPath(entry.path), p.start);
    const left = Number((entry.size + 511n) & ~511n) - used;
    if (left < 0) throw new Error('internal error: tar member content over-read');
    if (!(await src.skip(left)))
      throw new TarFormatError('unexpected end of tar stream inside member content', displayPath(entry.path), p.start);
  }
}

/** tar-core `emit_entry` (minus sparse, which is an error here). */
function resolveEntry(h: Header, headerSize: bigint, p: Pending, offset: number): RawTarEntry {
  const b = h.raw;
  let name: string | undefined;
  const fail = (msg: string): never => {
    throw new TarFormatError(msg, name, p.start);
  };
  let path: Buffer = truncateNul(b.subarray(0, 100));
  if (h.isUstar) {
    const prefix = truncateNul(b.subarray(345, 500));
    if (prefix.length > 0) path = Buffer.concat([prefix, Buffer.from('/'), path]);
  }
  if (p.longName !== undefined) path = p.longName;
  let linkTarget: Buffer | undefined = p.longLink ?? truncateNul(b.subarray(157, 257));
  if (linkTarget.length === 0 && p.longLink === undefined) linkTarget = undefined;
  name = displayPath(path);

  const num = (field: string, s: number, e: number): bigint => {
    try {
      return parseNumeric(b, s, e);
    } catch (err) {
      return fail(`${field} field: ${(err as Error).message}`);
    }
  };
  let uid = num('uid', 108, 116);
  let gid = num('gid', 116, 124);
  let mtime = num('mtime', 136, 148);
  let size = headerSize;
  const xattrs: [Buffer, Buffer][] = [];
  let sparseName: Buffer | undefined;
  let sparse = false;

  if (p.pax !== undefined) {
    let major: bigint | undefined;
    let minor: bigint | undefined;
    let pendingOffset: bigint | undefined;
    const u64 = (key: string, v: Buffer): bigint => {
      const s = strictUtf8(v);
      if (s === undefined) return fail(`invalid PAX ${key} value (not UTF-8)`);
      const n = parseRustU64(s);
      if (n === undefined) return fail(`invalid PAX ${key} value ${JSON.stringify(s)}`);
      return n;
    };
    let records: PaxRecord[];
    try {
      records = [...paxRecords(p.pax)];
    } catch (e) {
      return fail((e as Error).message);
    }
    for (const r of records) {
      const key = strictUtf8(r.key);
      if (key === undefined) fail('PAX key is not valid UTF-8');
      const v = r.value;
      switch (key) {
        case 'path':
          path = v;
          name = displayPath(v);
          break;
        case 'linkpath':
          linkTarget = v;
          break;
        case 'size':
          size = u64('size', v);
          break;
        case 'uid':
          uid = u64('uid', v);
          break;
        case 'gid':
          gid = u64('gid', v);
          break;
        case 'mtime': {
          const s = strictUtf8(v);
          if (s === undefined) fail('invalid PAX mtime value (not UTF-8)');
          const intPart = s!.split('.')[0];
          const n = parseRustU64(intPart);
          if (n === undefined) fail(`invalid PAX mtime value ${JSON.stringify(s)}`);
          mtime = n!;
          break;
        }
        case 'GNU.sparse.offset':
          pendingOffset = u64(key, v);
          break;
        case 'GNU.sparse.numbytes': {
          const had = pendingOffset;
          pendingOffset = undefined;
          u64(key, v);
          if (had !== undefined) sparse = true;
          break;
        }
        case 'GNU.sparse.map': {
          const s = strictUtf8(v);
          if (s === undefined) fail('invalid PAX sparse map (not UTF-8)');
          const parts = s!.split(',').filter((x) => x.length > 0);
          if (parts.length % 2 !== 0 || parts.some((x) => parseRustU64(x) === undefined))
            fail('invalid PAX sparse map');
          sparse = true;
          break;
        }
        case 'GNU.sparse.realsize':
        case 'GNU.sparse.size':
          u64(key, v);
          break;
        case 'GNU.sparse.name':
          sparseName = v;
          break;
        case 'GNU.sparse.major':
          major = u64(key, v);
          break;
        case 'GNU.sparse.minor':
          minor = u64(key, v);
          break;
        default:
          if (key!.startsWith('SCHILY.xattr.')) {
            if (r.key.includes(0)) fail('PAX xattr name contains a NUL byte');
            xattrs.push([Buffer.from(r.key.subarray(13)), Buffer.from(v)]);
          }
      }
    }
    if (major === 1n && minor === 0n) sparse = true;
  }
  if (sparseName !== undefined) {
    path = sparseName;
    name = displayPath(path);
  }
  if (linkTarget !== undefined && linkTarget.length === 0) linkTarget = undefined;
  if (path.length === 0) fail('entry has an empty path');
  // A GNU long name or PAX path may carry NUL bytes, which no file name can hold; the dumpfile
  // parser and the EROFS writer refuse them, so refuse them here, naming the member.
  if (path.includes(0)) fail('entry path contains a NUL byte');
  if (linkTarget?.includes(0)) fail('link target contains a NUL byte');
  if (sparse || ((h.isGnu || h.isUstar) && h.typeflag === T.GNU_SPARSE)) fail('sparse tar entries are not supported');

  let mode: number;
  try {
    mode = Number(parseNumeric(b, 100, 108) & 0xffffffffn);
  } catch (e) {
    return fail(`mode field: ${(e as Error).message}`);
  }
  let devMajor: number | undefined;
  let devMinor: number | undefined;
  if (h.isUstar || h.isGnu) {
    try {
      devMajor = Number(parseOctal(b, 329, 337) & 0xffffffffn);
      devMinor = Number(parseOctal(b, 337, 345) & 0xffffffffn);
    } catch (e) {
      return fail(`device number field: ${(e as Error).message}`);
    }
  }
  return {
    typeflag: h.typeflag,
    path: Buffer.from(path),
    linkTarget: linkTarget === undefined ? undefined : Buffer.from(linkTarget),
    mode,
    uid,
    gid,
    mtime,
    size,
    devMajor,
    devMinor,
    xattrs,
    pax: p.pax,
    offset: p.start ?? offset,
    dataOffset: -1,
  };
}

// ---------------------------------------------------------------------------------------------
// composefs view of a member

export type TarItem =
  | { kind: 'dir' }
  /** `kept`: the content of an external file, when a `keep` predicate asked for it. */
  | { kind: 'leaf'; content: LeafContent; kept?: Buffer }
  | { kind: 'hardlink'; target: Buffer };

/** Largest file whose content a `keep` predicate may retain whole. */
const KEEP_MAX = 64n << 20n;

/**
 * What a `keep` predicate asks for: nothing, the whole content (files up to {@link KEEP_MAX}),
 * or at most this many leading bytes (e.g. the headers and first sections of a large UKI).
 */
export type KeepWish = boolean | number;

/** Collects the kept bytes of one member, up to its limit. */
class Keeper {
  private parts: Buffer[] = [];
  private left: number;
  constructor(limit: number) {
    this.left = limit;
  }
  push(c: Uint8Array): void {
    if (this.left <= 0) return;
    const take = c.length <= this.left ? c : c.subarray(0, this.left);
    this.parts.push(Buffer.from(take));
    this.left -= take.length;
  }
  get data(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function keepLimit(wish: KeepWish, size: bigint): number {
  if (wish === true) return size <= KEEP_MAX ? Number(size) : 0;
  if (wish === false || wish <= 0) return 0;
  return Math.min(wish, Number(size));
}

/** composefs-rs `TarEntry`: absolute path (see {@link makeAbsolutePath}), stat, item. */
export interface TarEntry {
  path: Buffer;
  stat: Stat;
  item: TarItem;
  /** The member's path as stored (lossy), for messages. */
  name: string;
}

/** composefs-rs `make_absolute_path`: one leading '/' stripped, '/' prepended, trailing '/' removed; "/" -> "". */
export function makeAbsolutePath(p: Buffer): Buffer {
  const rest = p.length > 0 && p[0] === 0x2f ? p.subarray(1) : p;
  let end = rest.length + 1;
  const out = Buffer.concat([Buffer.from('/'), rest]);
  while (end > 1 && out[end - 1] === 0x2f) end--;
  if (end === 1) return Buffer.alloc(0);
  return out.subarray(0, end);
}

/** Linux `makedev` (glibc encoding), as composefs-rs (rustix) computes it. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

function isFileType(t: number): boolean {
  return t === T.REG || t === T.AREG || t === T.CONT;
}

/**
 * composefs-rs `get_entry` for one member: reads (or hashes) the content from `src` and returns the
 * composefs entry. Regular files of at most 64 bytes are inline, larger ones are external with their
 * fs-verity digest, computed while streaming.
 */
/**
 * Hashing by worker threads (see {@link toTarEntry}): digests arrive after the entry is returned
 * and are written into its (preallocated) id; `pending` collects what to wait for.
 */
export interface ParallelHashing {
  pool: HashPool;
  pending: Promise<void>[];
  /**
   * Streamed (non-file) contents at least this large are copied to a worker; smaller ones are
   * hashed here. Infinity when the cores are busy anyway (e.g. gzip decompression on 2 cores).
   */
  streamMin: number;
}

/**
 * A zeroed id buffer, filled in when its digest arrives. From Node's shared pool (an
 * ArrayBuffer of its own per file costs more than the 32 or 64 bytes it holds).
 */
function newId(hash: HashAlg): Buffer {
  return Buffer.allocUnsafe(DIGEST_SIZE[hash]).fill(0);
}

/** Members at least this large of a tar *file* are read and hashed by a worker on its own. */
const RANGE_MIN = 64 << 10;

export async function toTarEntry(
  raw: RawTarEntry,
  src: ByteSource,
  hash: HashAlg,
  sink?: ObjectSink,
  keep?: (path: Buffer) => KeepWish,
  par?: ParallelHashing,
): Promise<TarEntry> {
  const name = displayPath(raw.path);
  const fail = (msg: string): never => {
    throw new TarFormatError(msg, name, raw.offset);
  };
  let item: TarItem;
  const t = raw.typeflag;
  if (isFileType(t)) {
    if (raw.size > BigInt(INLINE_CONTENT_MAX)) {
      if (raw.size > BigInt(Number.MAX_SAFE_INTEGER)) fail(`member size ${raw.size} is too large`);
      // Content read later (the SELinux policy of the bootable transform).
      const limit = keep === undefined ? 0 : keepLimit(keep(makeAbsolutePath(raw.path)), raw.size);
      const wantKept = limit > 0;
      const file = par && !sink ? fileBacked(src) : undefined;
      const at = file?.fileAt();
      if (par && at && !wantKept && raw.size >= RANGE_MIN && raw.size <= BigInt(at.left)) {
        // A worker reads the member from the file and hashes it; we skip it (readTar does).
        const id = newId(hash);
        const p = par.pool.hashRange(at.path, at.offset, raw.size, hash).then(
          (d) => {
            id.set(d);
          },
          (e: Error) => {
            // e.g. the file changed meanwhile: name the layer's member, as for any read error
            throw new TarFormatError(`reading file content: ${e.message}`, name, raw.offset);
          },
        );
        p.catch(() => {}); // awaited (and reported) by readTarEntries
        par.pending.push(p);
        // Bounded bookkeeping: at most a few thousand members queued ahead of the workers.
        if (par.pending.length >= 4096) await Promise.all(par.pending.splice(0, 2048));
        item = { kind: 'leaf', content: { type: 'external', id, size: raw.size } };
        return finish(item);
      }
      const pool = par?.pool;
      if (pool && !sink && !file && Number(raw.size) >= par!.streamMin) {
        // A worker hashes the content while we go on parsing: the digest is filled into `id`
        // (in place) before readTarEntries returns.
        const id = newId(hash);
        const st = pool.stream(hash);
        const kept = wantKept ? new Keeper(limit) : undefined;
        try {
          await src.each(Number(raw.size), (c) => {
            st.write(c);
            kept?.push(c);
            return pool.room();
          });
        } catch (e) {
          if (e instanceof ShortInputError) fail('unexpected end of tar stream inside file content');
          throw e;
        }
        st.end((d) => id.set(d));
        item = { kind: 'leaf', content: { type: 'external', id, size: raw.size }, kept: kept?.data };
        return finish(item);
      }
      if (!sink && raw.size < BigInt(RANGE_MIN)) {
        // Small content: one read (usually a view of what is buffered) and one native call.
        const n = Number(raw.size);
        const data = await src.read(n);
        if (data.length < n) fail('unexpected end of tar stream inside file content');
        const id = fsverityDigest(data, hash);
        item = { kind: 'leaf', content: { type: 'external', id, size: raw.size }, kept: wantKept ? Buffer.from(data.subarray(0, limit)) : undefined };
        return finish(item);
      }
      const h = new FsVerityHasher(hash);
      const out = await sink?.objectWriter();
      // Content we must read back later (the SELinux policy of the bootable transform).
      const kept = wantKept ? new Keeper(limit) : undefined;
      try {
        for await (const c of src.chunks(Number(raw.size))) {
          h.update(c);
          if (out) await out.write(c);
          kept?.push(c);
        }
      } catch (e) {
        await out?.abort();
        if (e instanceof ShortInputError) fail('unexpected end of tar stream inside file content');
        throw e;
      }
      const id = h.digest();
      await out?.commit(id);
      item = { kind: 'leaf', content: { type: 'external', id, size: raw.size }, kept: kept?.data };
    } else {
      const n = Number(raw.size);
      const data = await src.read(n);
      if (data.length < n) fail('unexpected end of tar stream inside file content');
      item = { kind: 'leaf', content: { type: 'inline', data: Buffer.from(data) } };
    }
  } else {
    switch (t) {
      case T.DIR:
        item = { kind: 'dir' };
        break;
      case T.LINK:
        item = { kind: 'hardlink', target: makeAbsolutePath(raw.linkTarget ?? Buffer.alloc(0)) };
        break;
      case T.SYMLINK:
        item = { kind: 'leaf', content: { type: 'symlink', target: raw.linkTarget ?? Buffer.alloc(0) } };
        break;
      case T.CHR:
      case T.BLK: {
        if (raw.devMajor === undefined || raw.devMinor === undefined) fail('device entry without device numbers');
        const rdev = makedev(raw.devMajor!, raw.devMinor!);
        item = { kind: 'leaf', content: t === T.CHR ? { type: 'chardev', rdev } : { type: 'blockdev', rdev } };
        break;
      }
      case T.FIFO:
        item = { kind: 'leaf', content: { type: 'fifo' } };
        break;
      default:
        return fail(`unsupported tar entry type ${typeflagName(t)}`);
    }
  }
  return finish(item);

  /** The entry for `item`, with the member's stat. */
  function finish(item: TarItem): TarEntry {
    const xattrs: Xattrs = new Map();
    for (const [k, v] of raw.xattrs) xattrs.set(nameKey(k), v);
    const stat: Stat = {
      mode: raw.mode >>> 0,
      uid: Number(raw.uid & 0xffffffffn),
      gid: Number(raw.gid & 0xffffffffn),
      mtimeSec: BigInt.asIntN(64, raw.mtime),
      mtimeNsec: raw.pax === undefined ? 0 : mtimeNsec(raw.pax),
      xattrs,
    };
    return { path: makeAbsolutePath(raw.path), stat, item, name };
  }

  function mtimeNsec(pax: Buffer): number {
    try {
      return paxMtimeNsec(pax);
    } catch (e) {
      return fail((e as Error).message);
    }
  }
}

/** Streams every composefs entry of a tar. */
export async function readTarEntries(
  src: ByteSource,
  hash: HashAlg,
  onEntry: (e: TarEntry) => Promise<void> | void,
  sink?: ObjectSink,
  keep?: (path: Buffer) => KeepWish,
  pool?: HashPool,
  streamMin = 0,
): Promise<void> {
  const par: ParallelHashing | undefined = pool && { pool, pending: [], streamMin };
  await readTar(src, async (raw, s) => {
    const e = await toTarEntry(raw, s, hash, sink, keep, par);
    await onEntry(e);
  });
  // Digests computed by the pool's workers are filled in by now.
  if (par) {
    await Promise.all(par.pending);
    await par.pool.flush();
  }
}
