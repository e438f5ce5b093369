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
import type { HashPool } from '../fsverity/pool.js';
import type { ObjectSink } from '../repo/repo.js';
import { Directory, emptyStat, FileSystem, type HashAlg, type Inode, Leaf } from '../tree/tree.js';
import { type ByteSource, StreamByteSource } from './bytes.js';
import { decompress } from './decompress.js';
import { readTarEntries, type TarEntry, TarFormatError } from './tar-entry.js';
import { InputError } from '../errors.js';

/** A tar member that composefs-rs refuses to apply (bad path, missing parent, ...). */
export class LayerError extends InputError {
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
export class LayerApplyError extends InputError {
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
