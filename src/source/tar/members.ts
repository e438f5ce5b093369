/**
 * Applying OCI layer tarballs to a tree, exactly as composefs-rs v0.9.0 `process_entry`
 * (composefs-oci image.rs) does on top of its generic tree (generic_tree.rs):
 *
 * - entries are applied in stream order to the tree merged so far; there are no implied parent
 *   directories (a missing parent is an error) and symlinks in parent paths are never followed
 *   (a non-directory parent component is an error);
 * - paths follow Rust `Path` semantics: empty and `.` components vanish, a `..` component anywhere
 *   in the parent is an error, and a path whose last component is `..` (or that has none) is the
 *   root entry: it must be a directory and only replaces the root's stat;
 * - `.wh.NAME` removes NAME from the parent (no-op if absent), `.wh..wh..opq` empties the parent,
 *   both immediately (so they also remove same-layer entries that came before them); the marker
 *   itself is never inserted;
 * - a directory over an existing directory replaces only its stat (children kept); anything else
 *   replaces the entry;
 * - a hardlink resolves its target in the merged tree at that moment (the target must be an existing
 *   non-directory) and shares that leaf; the hardlink member's own stat is ignored.
 *
 * The tree starts from composefs-rs `Stat::uninitialized()` (all zero). `transform_for_oci` (root
 * from /usr, /run emptied, xattr filter) is separate: src/transform/transform.ts.
 */
import { FsVerityHasher, fsverityDigest } from '../../fsverity/fsverity.js';
import type { HashPool } from '../../fsverity/pool.js';
import type { ObjectSink } from '../../repo/repo.js';
import { DIGEST_SIZE, Directory, emptyStat, FileSystem, INLINE_CONTENT_MAX, type HashAlg, type Inode, Leaf, type LeafContent, type Stat, type Xattrs, nameKey } from '../../tree/tree.js';
import { type ByteSource, ShortInputError, StreamByteSource, fileBacked } from '../bytes.js';
import { decompress } from '../decompress.js';
import { displayPath, paxMtimeNsec, type RawTarEntry, readTar, T, TarFormatError, typeflagName } from './reader.js';

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


/** A tar member that composefs-rs refuses to apply (bad path, missing parent, ...). */
export class LayerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LayerError';
  }
}

/** Rust `Path::components()` of an absolute path (or ""), as latin1 keys: Normal names and "..". */
function components(path: Buffer): string[] {
  const out: string[] = [];
  for (const part of path.toString('latin1').split('/')) {
    if (part === '' || part === '.') continue;
    out.push(part);
  }
  return out;
}

function show(key: string): string {
  return JSON.stringify(Buffer.from(key, 'latin1').toString('utf8'));
}

/** `Directory::get_directory[_mut]`: walk without following anything. */
function getDirectory(root: Directory, comps: string[]): Directory {
  let dir = root;
  for (const c of comps) {
    if (c === '..') throw new LayerError('path contains a ".." component');
    const next = dir.entries.get(c);
    if (next === undefined) throw new LayerError(`parent directory ${show(c)} does not exist`);
    if (next.kind !== 'dir') throw new LayerError(`parent ${show(c)} is not a directory (symlinks are not followed)`);
    dir = next;
  }
  return dir;
}

/** `Directory::split[_mut]`: (parent directory, file name); the path must end in a normal name. */
function split(root: Directory, path: Buffer): [Directory, string] {
  const comps = components(path);
  const last = comps.length === 0 ? undefined : comps[comps.length - 1];
  if (last === undefined || last === '..') throw new LayerError(`invalid file name in ${show(path.toString('latin1'))}`);
  return [getDirectory(root, comps.slice(0, -1)), last];
}

/** True if the path has no final normal component (composefs-rs treats it as the root entry). */
function isRootPath(path: Buffer): boolean {
  const comps = components(path);
  return comps.length === 0 || comps[comps.length - 1] === '..';
}

const WH_PREFIX = '.wh.';
const WH_OPAQUE_REST = '.wh..opq';

/**
 * Which layer last gave each directory an explicit entry, and which layer last added or removed
 * one of its entries. A directory whose contents changed in a layer that has no entry for the
 * directory itself is an *implied parent* there: extraction onto disk then leaves it with a
 * live mtime that the tarball view does not have. `cfs compare` uses this to name the cause.
 */
export class Provenance {
  readonly explicit = new Map<Directory, number>();
  readonly touched = new Map<Directory, number>();
  layer = 0;
  /** Layer labels by index, for messages. */
  readonly labels: string[] = [];

  /** The layer in which `dir` was last an implied parent, if it was after its own last entry. */
  impliedIn(dir: Directory): number | undefined {
    const t = this.touched.get(dir);
    if (t === undefined) return undefined;
    const x = this.explicit.get(dir);
    return x === undefined || t > x ? t : undefined;
  }
}

/** composefs-rs `process_entry`. */
export function applyEntry(fs: FileSystem, e: TarEntry, prov?: Provenance, kept?: KeptContent): void {
  if (isRootPath(e.path)) {
    if (e.item.kind !== 'dir') throw new LayerError('the root entry must be a directory');
    fs.root.stat = e.stat;
    prov?.explicit.set(fs.root, prov.layer);
    return;
  }
  let inode: Inode;
  switch (e.item.kind) {
    case 'dir':
      inode = new Directory(e.stat);
      break;
    case 'leaf':
      inode = new Leaf(e.stat, e.item.content);
      if (e.item.kept && kept) kept.byLeaf.set(inode, e.item.kept);
      break;
    case 'hardlink': {
      const target = e.item.target;
      let dir: Directory;
      let name: string;
      try {
        [dir, name] = split(fs.root, target);
      } catch (err) {
        throw new LayerError(`hardlink target ${show(target.toString('latin1'))}: ${(err as Error).message}`);
      }
      const t = dir.entries.get(name);
      if (t === undefined) throw new LayerError(`hardlink target ${show(target.toString('latin1'))} does not exist`);
      if (t.kind === 'dir') throw new LayerError(`hardlink target ${show(target.toString('latin1'))} is a directory`);
      inode = t;
      break;
    }
  }
  const [dir, name] = split(fs.root, e.path);
  prov?.touched.set(dir, prov.layer);
  if (name.startsWith(WH_PREFIX)) {
    const rest = name.slice(WH_PREFIX.length);
    if (rest === WH_OPAQUE_REST) dir.entries.clear();
    else dir.entries.delete(rest);
    return;
  }
  const old = dir.entries.get(name);
  if (inode.kind === 'dir' && old !== undefined && old.kind === 'dir') {
    old.stat = inode.stat;
    prov?.explicit.set(old, prov.layer);
  } else {
    dir.entries.set(name, inode);
    if (inode.kind === 'dir') prov?.explicit.set(inode, prov.layer);
  }
}

export interface ApplyOptions {
  hash: HashAlg;
  /** Name of the layer in error messages (e.g. "layer 2 (sha256:…)"). */
  label?: string;
  /** Skip decompression detection (the stream is known to be a plain tar). */
  raw?: boolean;
  /** Records where directories came from (see {@link Provenance}). */
  provenance?: Provenance;
  /** Stores external file contents as objects (with --repo). */
  sink?: ObjectSink;
  /** Keeps the content of the external files it selects, by leaf (see {@link KeptContent}). */
  kept?: KeptContent;
  /** Worker threads that hash external file contents while the tar is parsed (without a sink). */
  pool?: HashPool;
  /** With `pool`: streamed contents smaller than this are hashed on this thread (default 0). */
  streamMin?: number;
  /** Counts the members applied (for progress displays). */
  counter?: { entries: number };
}

/**
 * Contents the bootable transform reads back (the SELinux policy under /etc/selinux), kept
 * while streaming because external file contents are otherwise never stored.
 */
export class KeptContent {
  readonly byLeaf = new WeakMap<Leaf, Buffer>();
  /**
   * /etc/selinux/config and the file_contexts family. Subclasses may keep other files, or only
   * their first N bytes (a number; see KeepWish in tar-entry.ts).
   */
  wants(path: Buffer): boolean | number {
    // Asked for every member: the usual answer without building a string.
    if (path.indexOf(SELINUX) === -1) return false;
    // tar paths may carry `./` components; composefs-rs normalises them when applying
    const p = '/' + path.toString('latin1').split('/').filter((c) => c !== '' && c !== '.').join('/');
    return p === '/etc/selinux/config' || /^\/etc\/selinux\/[^/]+\/contexts\/files\/[^/]+$/.test(p);
  }
}

const SELINUX = Buffer.from('/selinux/');

/** A readable or async iterable of byte chunks. */
export type ByteStream = AsyncIterable<Uint8Array> | NodeJS.ReadableStream;

function describe(label: string | undefined, e: { entryName?: string; offset?: number }): string {
  const parts: string[] = [];
  if (label) parts.push(label);
  if (e.entryName !== undefined) parts.push(`tar entry ${JSON.stringify(e.entryName)}`);
  else if (e.offset !== undefined) parts.push(`tar offset ${e.offset}`);
  return parts.join(', ');
}

/** Error raised while applying a layer: names the layer and the member, then the reason. */
export class LayerApplyError extends Error {
  constructor(
    readonly layer: string | undefined,
    readonly entryName: string | undefined,
    readonly reason: string,
    readonly offset?: number,
  ) {
    const where = describe(layer, { entryName, offset });
    super(where ? `${where}: ${reason}` : reason);
    this.name = 'LayerApplyError';
  }
}

/** Applies the members of one (plain) tar stream to `fs`. */
export async function applyTar(fs: FileSystem, src: ByteSource, opts: ApplyOptions): Promise<void> {
  try {
    await readTarEntries(
      src,
      opts.hash,
      (e) => {
        if (opts.counter) opts.counter.entries++;
        try {
          applyEntry(fs, e, opts.provenance, opts.kept);
        } catch (err) {
          if (err instanceof LayerError) throw new LayerApplyError(opts.label, e.name, err.message);
          throw err;
        }
      },
      opts.sink,
      opts.kept && ((p) => opts.kept!.wants(p)),
      opts.pool,
      opts.streamMin,
    );
  } catch (err) {
    if (err instanceof TarFormatError) throw new LayerApplyError(opts.label, err.entryName, err.message, err.offset);
    throw err;
  }
}

/**
 * Applies one layer (plain, gzip or zstd tar, detected by magic bytes) to `fs`, in place. The whole
 * input is consumed, including anything after the end-of-archive marker.
 */
export async function applyLayer(fs: FileSystem, layer: ByteStream, opts: ApplyOptions): Promise<void> {
  const chunks = layer as AsyncIterable<Uint8Array>;
  const plain = opts.raw ? chunks : decompress(chunks, opts.label);
  const src = new StreamByteSource(plain);
  try {
    await applyTar(fs, src, opts);
  } finally {
    await src.close().catch(() => {});
  }
}

/** A fresh tree with composefs-rs's starting root (`Stat::uninitialized()`: mode 0, all zero). */
export function newOciFileSystem(): FileSystem {
  return new FileSystem(new Directory(emptyStat()));
}

/** Builds the merged tree (before `transform_for_oci`) from layers in order, bottom first. */
export async function buildFromLayers(
  layers: Iterable<ByteStream | (() => ByteStream | Promise<ByteStream>)>,
  opts: { hash: HashAlg; labels?: string[] },
): Promise<FileSystem> {
  const fs = newOciFileSystem();
  let i = 0;
  for (const l of layers) {
    const stream = typeof l === 'function' ? await l() : l;
    await applyLayer(fs, stream, { hash: opts.hash, label: opts.labels?.[i] ?? `layer ${i + 1}` });
    i++;
  }
  return fs;
}
