/**
 * OCI image sources -> the tree composefs-rs builds for them (`create_filesystem`):
 *
 *   oci:DIR[:REF]              OCI image layout directory
 *   oci-archive:FILE[:REF]     the same, as a tar (read in place, never extracted)
 *   docker-archive:FILE[:REF]  `docker save` / `podman save` output (manifest.json + layer tars)
 *   layers:A.tar,B.tar.gz,...  bare layer tarballs, bottom first (no digests to verify)
 *
 * REF for OCI layouts is the `org.opencontainers.image.ref.name` annotation (optional when the
 * index names one image); split as composefs-rs `parse_oci_layout_ref` does (last ':' unless what
 * follows contains '/'). For docker archives REF is a RepoTags entry or `@N` (Nth image).
 * Image indexes / manifest lists are resolved for a platform (default: the host's, e.g. linux/amd64).
 *
 * Every blob read is verified while streaming: size and digest of manifests, configs and layer
 * blobs against their descriptors, and each layer's uncompressed sha256 against the config's
 * rootfs.diff_ids. A mismatch is an error naming the blob.
 */
import { HashPool } from '../fsverity/pool.js';
import type { ObjectSink } from '../repo/repo.js';
import { transformForOci } from '../transform/transform.js';
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc, createReadStream } from 'node:fs';
import { type FileHandle, lstat, open, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { withYoungGenerationGrowth } from '../tree/young-gen.js';
import { type ByteSource, FileByteSource, FileStreamSource, StreamByteSource } from './bytes.js';
import { type Compression, decompress, detectCompression, mediaTypeCompression } from './decompress.js';
import { KeptContent, Provenance, applyTar, newOciFileSystem } from './layers.js';
import { readTar, T, TarFormatError } from './tar-entry.js';
import { InputError } from '../errors.js';

export class OciSourceError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'OciSourceError';
  }
}

export interface OciTransformLike {
  propagateUsrToRoot: boolean;
  xattrs: 'allowlist-only' | 'keep-user-xattrs';
}

export interface OciSourceOptions {
  /** Hash of external file object ids. */
  hash: HashAlg;
  /** "os/arch[/variant]"; default: the host (linux/amd64 on x64). */
  platform?: string;
  /**
   * If given, composefs-rs `transform_for_oci` is applied (root from /usr, /run emptied, xattr
   * filter), via src/transform/transform.ts. Without it the merged tree is returned as is.
   */
  transform?: OciTransformLike;
  /** Filled with where each directory came from (for `cfs compare`). */
  provenance?: Provenance;
  /** Stores external file contents as objects (with --repo). */
  sink?: ObjectSink;
  /** Keeps the SELinux policy files' contents (for --bootable). */
  kept?: KeptContent;
  /** Hashing threads for tar member contents (default: one per core). */
  jobs?: number;
  /** Filled with the image's manifest annotations and config labels (where the source has them). */
  metadata?: ImageMetadata;
  /** Filled in as layers are read, for a progress display (read it from a timer). */
  progress?: LayerProgress;
}

/** Where loading stands: which layer, how much of its blob was read, entries applied so far. */
export interface LayerProgress {
  /** 1-based index of the layer being read (0 before the first). */
  layer: number;
  layers: number;
  /** The layer as errors name it: "layer 2 (sha256:…)". */
  label: string;
  /** Size of the current layer's blob (compressed, as stored). */
  size: number;
  /** Bytes of the current layer's blob read so far. */
  read(): number;
  /** Tar members applied so far, over all layers. */
  entries: number;
}

/**
 * What an image says about itself besides its layers: the digest of a sealed image may travel
 * here (composefs-rs sealing keys, crates/composefs-oci/src/sealing_spec.rs v0.9.0).
 */
export interface ImageMetadata {
  /** Top-level annotations of the image manifest (OCI layouts; docker archives have none). */
  annotations: Record<string, string>;
  /** `config.Labels` of the image configuration. */
  labels: Record<string, string>;
}

/** String-valued entries of a JSON object (anything else is not an annotation/label). */
function stringMap(x: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return out;
  for (const [k, v] of Object.entries(x)) if (typeof v === 'string') out[k] = v;
  return out;
}

function labelsOf(config: unknown): Record<string, string> {
  return stringMap((config as { config?: { Labels?: unknown } } | null)?.config?.Labels);
}

// ---------------------------------------------------------------------------------------------
// Blob stores

/** A readable byte range: a file, or a member of an uncompressed tar file. */
interface Blob {
  name: string;
  size: number;
  stream(): AsyncIterable<Buffer>;
  /** Where the bytes are, when they are a range of a file (`nofollow`: open without following a symlink). */
  file?: { path: string; start: number; nofollow: boolean };
}

interface Store {
  describe: string;
  /** undefined if absent. */
  get(name: string): Promise<Blob | undefined>;
}

/**
 * How blob files are opened: never through a symlink in the last component (a blob that is a
 * symlink to, say, /etc/shadow would otherwise be hashed and its digest printed in the mismatch
 * error). Layout files are checked to be regular files when found ({@link DirStore.get}); every
 * later open uses these flags again, so a swap in between is refused too.
 */
const READ_NOFOLLOW = fsc.O_RDONLY | fsc.O_NOFOLLOW;

/** Opens a file for reading; `nofollow`: refuse a symlink as the last component. */
export function openBlobFile(file: string, nofollow: boolean): Promise<FileHandle> {
  return open(file, nofollow ? READ_NOFOLLOW : 'r');
}

function fileRange(file: string, name: string, start: number, size: number, nofollow = false): Blob {
  return {
    name,
    size,
    file: { path: file, start, nofollow },
    stream: () =>
      size === 0
        ? (async function* () {})()
        : nofollow
          ? streamNoFollow(file, start, size)
          : (createReadStream(file, { start, end: start + size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>),
  };
}

async function* streamNoFollow(file: string, start: number, size: number): AsyncGenerator<Buffer> {
  const fh = await openBlobFile(file, true);
  try {
    yield* fh.createReadStream({ start, end: start + size - 1, highWaterMark: 1 << 20, autoClose: false }) as AsyncIterable<Buffer>;
  } finally {
    await fh.close();
  }
}

/** An OCI image layout directory: its files must be regular files inside it (no symlinks). */
class DirStore implements Store {
  constructor(readonly dir: string) {}
  get describe(): string {
    return `OCI layout ${this.dir}`;
  }
  async get(name: string): Promise<Blob | undefined> {
    // Names come from us: "oci-layout", "index.json" or blobs/ALG/HEX of a validated digest.
    if (!/^(oci-layout|index\.json|blobs\/[a-z0-9]+\/[a-f0-9]+)$/.test(name)) return undefined;
    const parts = name.split('/');
    // The directories on the way (blobs/, blobs/ALG/) must be real directories of the layout.
    for (let i = 1; i < parts.length; i++) {
      const d = path.join(this.dir, ...parts.slice(0, i));
      const st = await lstat(d).catch(() => undefined);
      if (st === undefined) return undefined;
      if (!st.isDirectory()) throw new OciSourceError(`${this.describe}: ${parts.slice(0, i).join('/')} is not a directory (symlinks are not followed)`);
    }
    const p = path.join(this.dir, name);
    let fh: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted as a blob must not block the open.
      fh = await open(p, READ_NOFOLLOW | fsc.O_NONBLOCK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP') throw new OciSourceError(`${this.describe}: ${name} is a symlink; layout files must be regular files`);
      throw new OciSourceError(`${this.describe}: cannot open ${name}: ${code ?? (e as Error).message}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new OciSourceError(`${this.describe}: ${name} is not a regular file`);
      return fileRange(p, name, 0, st.size, true);
    } finally {
      await fh.close();
    }
  }
}

/** Normalises an archive member name: no leading "./" or "/", no trailing "/", no "." parts. */
function normMember(name: string): string {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

class ArchiveStore implements Store {
  private constructor(
    readonly file: string,
    readonly kind: string,
    private readonly members: Map<string, { offset: number; size: number } | { link: string }>,
  ) {}

  get describe(): string {
    return `${this.kind} ${this.file}`;
  }

  /** Indexes the archive's members by reading only their headers. */
  static async open(file: string, kind: string): Promise<ArchiveStore> {
    const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new OciSourceError(`cannot open ${kind} ${file}: ${e.code ?? e.message}`);
    });
    try {
      const st = await fh.stat();
      const head = Buffer.alloc(6);
      await fh.read(head, 0, 6, 0);
      let c: Compression | undefined;
      try {
        c = detectCompression(head);
      } catch (e) {
        throw new OciSourceError(`${kind} ${file}: ${(e as Error).message.replace('layers are', 'archives are')}`);
      }
      if (c === 'gzip') throw new OciSourceError(`${kind} ${file} is gzip-compressed; decompress it first (e.g. gunzip)`);
      if (c === 'zstd') throw new OciSourceError(`${kind} ${file} is zstd-compressed; decompress it first`);
      const members = new Map<string, { offset: number; size: number } | { link: string }>();
      const src = new FileByteSource(fh, 0, st.size);
      await readTar(src, async (e) => {
        const name = normMember(e.path.toString('utf8'));
        if (e.typeflag === T.REG || e.typeflag === T.AREG || e.typeflag === T.CONT) {
          members.set(name, { offset: src.position, size: Number(e.size) });
        } else if (e.typeflag === T.SYMLINK && e.linkTarget) {
          const t = e.linkTarget.toString('utf8');
          members.set(name, { link: normMember(t.startsWith('/') ? t : path.posix.join(path.posix.dirname(name), t)) });
        } else if (e.typeflag === T.LINK && e.linkTarget) {
          members.set(name, { link: normMember(e.linkTarget.toString('utf8')) });
        }
      }).catch((err: unknown) => {
        if (err instanceof TarFormatError) throw new OciSourceError(`${kind} ${file}: not a valid tar archive: ${err.message}`);
        throw err;
      });
      return new ArchiveStore(file, kind, members);
    } finally {
      await fh.close();
    }
  }

  async get(name: string): Promise<Blob | undefined> {
    let key = normMember(name);
    for (let hops = 0; hops < 16; hops++) {
      const m = this.members.get(key);
      if (m === undefined) return undefined;
      if ('link' in m) {
        key = m.link;
        continue;
      }
      return fileRange(this.file, name, m.offset, m.size);
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Digests and verified reads

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;


function blobPath(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

function shortDigest(d: string): string {
  return d.length > 19 ? d.slice(0, 19) + '…' : d;
}

async function hashBlob(b: Blob, alg: string): Promise<{ hex: string; size: number }> {
  const h = createHash(alg);
  let size = 0;
  for await (const c of b.stream()) {
    h.update(c);
    size += c.length;
  }
  return { hex: h.digest('hex'), size };
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** A JSON document's shape is wrong: names the document and the field. */
function badField(where: string, field: string, expected: string): OciSourceError {
  return new OciSourceError(`${where}: ${field || 'the document'} ${expected}`);
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function optString(o: Record<string, unknown>, key: string, where: string, field: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'string') throw badField(where, `${field}.${key}`, 'is not a string');
}

/** An OCI descriptor (image-spec descriptor.md), every field we use type-checked. */
function asDescriptor(x: unknown, where: string, field: string): Descriptor {
  if (!isObject(x)) throw badField(where, field, 'is not an object');
  optString(x, 'mediaType', where, field);
  if (typeof x.digest !== 'string' || !DIGEST_RE.test(x.digest))
    throw badField(where, `${field}.digest`, `is not a supported digest (${preview(x.digest)})`);
  if (typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0)
    throw badField(where, `${field}.size`, 'is not a non-negative integer');
  if (x.annotations !== undefined) {
    if (!isObject(x.annotations)) throw badField(where, `${field}.annotations`, 'is not an object');
    for (const [k, v] of Object.entries(x.annotations))
      if (typeof v !== 'string') throw badField(where, `${field}.annotations[${JSON.stringify(k)}]`, 'is not a string');
  }
  if (x.platform !== undefined) {
    if (!isObject(x.platform)) throw badField(where, `${field}.platform`, 'is not an object');
    for (const k of ['os', 'architecture', 'variant']) optString(x.platform, k, where, `${field}.platform`);
  }
  return x as unknown as Descriptor;
}

/** A JSON value for a message, cut short. */
function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? s.slice(0, 80) + '…' : s;
}

/**
 * "a, b, c, … (N in all)": lists in messages stay one short line, whatever the input holds
 * (an index may list hundreds of thousands of images).
 */
export function listSome(items: string[], max = 8): string {
  if (items.length === 0) return 'none';
  if (items.length <= max) return items.join(', ');
  return `${items.slice(0, max).join(', ')}, … (${items.length} in all)`;
}

async function getBlob(store: Store, desc: Descriptor, what: string): Promise<Blob> {
  const b = await store.get(blobPath(desc.digest));
  if (!b) throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} is missing`);
  if (b.size !== desc.size)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} has size ${b.size}, descriptor says ${desc.size}`);
  return b;
}

/**
 * Largest manifest or config we read: containers/image's limits for the same documents
 * (`iolimits.MaxManifestBodySize`, `MaxConfigBodySize`: 4 MiB). Real ones are a few KB; a
 * larger one is refused before it is read, so a hostile image cannot make us hold gigabytes.
 */
export const MAX_JSON = 4 << 20;
/** index.json and docker-archive manifest.json list images, so they may be longer. */
export const MAX_JSON_LIST = 16 << 20;

function tooLarge(where: string, size: number, limit: number): OciSourceError {
  return new OciSourceError(`${where} is too large (${size} bytes; the limit is ${limit} bytes)`);
}

async function readAll(b: Blob): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of b.stream()) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Reads a small JSON blob, verifying size and digest. */
async function readJsonBlob(store: Store, desc: Descriptor, what: string): Promise<unknown> {
  if (desc.size > MAX_JSON) throw tooLarge(`${store.describe}: ${what} blob ${desc.digest}`, desc.size, MAX_JSON);
  const b = await getBlob(store, desc, what);
  const data = await readAll(b);
  const [alg, hex] = desc.digest.split(':');
  const actual = createHash(alg).update(data).digest('hex');
  if (actual !== hex)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} does not match its digest (content is ${alg}:${actual})`);
  return parseJson(data, `${store.describe}: ${what} ${desc.digest}`);
}

function parseJson(data: Buffer, what: string): unknown {
  try {
    // Many values in a small young generation thrash the GC (src/tree/young-gen.ts).
    return withYoungGenerationGrowth(data.length > 1 << 20, () => JSON.parse(data.toString('utf8')));
  } catch (e) {
    throw new OciSourceError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function readJsonMember(store: Store, name: string, limit: number): Promise<unknown> {
  const b = await store.get(name);
  if (!b) throw new OciSourceError(`${store.describe}: ${name} is missing`);
  if (b.size > limit) throw tooLarge(`${store.describe}: ${name}`, b.size, limit);
  return parseJson(await readAll(b), `${store.describe}: ${name}`);
}

/** Passes chunks through while counting bytes. */
async function* counted(src: AsyncIterable<Buffer>, count: { n: number }): AsyncGenerator<Buffer> {
  for await (const c of src) {
    count.n += c.length;
    yield c;
  }
}

/** Passes chunks through while hashing them and counting bytes. */
async function* tap(src: AsyncIterable<Buffer>, h: Hash, count: { n: number }): AsyncGenerator<Buffer> {
  for await (const c of src) {
    h.update(c);
    count.n += c.length;
    yield c;
  }
}

interface LayerSpec {
  blob: Blob;
  label: string;
  /** Expected digest of the blob bytes, if known. */
  digest?: string;
  /** Expected sha256 of the uncompressed tar (config rootfs.diff_ids), if known. */
  diffId?: string;
  mediaType?: string;
}

/** Compression of a blob from its first bytes, when it is a range of a file (else undefined). */
async function peekCompression(b: Blob): Promise<Compression | undefined> {
  if (!b.file || b.size === 0) return undefined;
  const fh = await openBlobFile(b.file.path, b.file.nofollow).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const head = Buffer.alloc(Math.min(6, b.size));
    const { bytesRead } = await fh.read(head, 0, head.length, b.file.start);
    return detectCompression(head.subarray(0, bytesRead));
  } catch {
    return undefined; // xz/bzip2 and read errors: the streaming path reports them
  } finally {
    await fh.close();
  }
}

/**
 * A layer blob already known to be an uncompressed tar ({@link peekCompression}) and a range of a
 * file, opened for reading in place (workers read large members themselves).
 */
async function openPlainTar(b: Blob): Promise<FileStreamSource | undefined> {
  if (!b.file || b.size === 0) return undefined;
  const fh = await openBlobFile(b.file.path, b.file.nofollow).catch(() => undefined);
  return fh && new FileStreamSource(fh, Buffer.from(b.file.path), b.file.start, b.file.start + b.size);
}

/** Applies one layer, verifying the blob digest and diff_id while streaming. */
async function applyVerifiedLayer(
  fs: FileSystem,
  l: LayerSpec,
  hash: HashAlg,
  extra: Pick<OciSourceOptions, 'provenance' | 'sink' | 'kept' | 'progress'> & { pool?: HashPool },
): Promise<void> {
  const [alg, hex] = l.digest ? l.digest.split(':') : ['sha256', undefined];
  const blobHash = createHash(alg);
  const blobCount = { n: 0 };
  const diffHash = createHash('sha256');
  const diffCount = { n: 0 };
  const mismatch = (actual: string): OciSourceError =>
    new OciSourceError(`${l.label}: blob ${l.blob.name} does not match its digest ${l.digest} (content is ${alg}:${actual})`);
  // Hash only what there is to verify (bare `layers:` have neither digest): each is a full pass
  // over the data on the main thread.
  let src: ByteSource & { close(): Promise<void> };
  const kind = await peekCompression(l.blob);
  const direct = kind === 'none' && hex === undefined && l.diffId === undefined && extra.pool !== undefined ? await openPlainTar(l.blob) : undefined;
  // gzip is inflated by one thread of its own: with fewer than 2 hashing workers the cores are
  // busy already, and handing contents over costs more than it saves.
  const streamMin = kind === 'gzip' ? ((extra.pool?.jobs ?? 0) >= 2 ? 1 << 20 : Infinity) : 64 << 10;
  // An uncompressed blob whose digest is its diff_id: one sha256 pass checks both.
  const sameHash = kind === 'none' && alg === 'sha256' && l.diffId === `sha256:${hex}`;
  const progress = extra.progress;
  if (direct) {
    src = direct;
    if (progress) progress.read = () => direct.position;
  } else {
    const raw =
      hex !== undefined ? tap(l.blob.stream(), blobHash, blobCount) : progress ? counted(l.blob.stream(), blobCount) : l.blob.stream();
    if (progress) progress.read = () => blobCount.n;
    const decoded = decompress(raw, l.label);
    const plain = l.diffId !== undefined && !sameHash ? tap(decoded, diffHash, diffCount) : decoded;
    src = new StreamByteSource(plain);
  }
  try {
    await applyTar(fs, src, { hash, label: l.label, ...extra, counter: progress, streamMin });
    if (direct) await direct.close();
  } catch (e) {
    await src.close().catch(() => {});
    // A corrupt blob usually fails as a tar or decompression error first: report the digest instead.
    if (hex !== undefined) {
      const again = await hashBlob(l.blob, alg);
      if (again.hex !== hex) throw mismatch(again.hex);
    }
    throw e;
  }
  if (hex !== undefined) {
    let actual: string;
    if (blobCount.n === l.blob.size) actual = blobHash.digest('hex');
    else actual = (await hashBlob(l.blob, alg)).hex; // decoder stopped early (e.g. trailing data)
    if (actual !== hex) throw mismatch(actual);
  }
  if (l.diffId !== undefined && !sameHash) {
    const actual = 'sha256:' + diffHash.digest('hex');
    if (actual !== l.diffId)
      throw new OciSourceError(`${l.label}: uncompressed content of ${l.blob.name} is ${actual}, config rootfs.diff_ids says ${l.diffId}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Platforms and manifests

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
const MANIFEST_TYPES = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);
const REF_NAME = 'org.opencontainers.image.ref.name';

const ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips64el: 'mips64le',
};

interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function hostPlatform(): Platform {
  const architecture = ARCH[process.arch] ?? process.arch;
  return { os: 'linux', architecture, ...(architecture === 'arm64' ? { variant: 'v8' } : {}) };
}

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === ''))
    throw new OciSourceError(`invalid platform ${JSON.stringify(s)}: expected OS/ARCH[/VARIANT]`);
  return { os: parts[0], architecture: parts[1], ...(parts[2] ? { variant: parts[2] } : {}) };
}

function platformMatches(p: Descriptor['platform'], want: Platform): boolean {
  if (!p || p.os !== want.os || p.architecture !== want.architecture) return false;
  if (want.variant === undefined || p.variant === want.variant) return true;
  // arm64 images usually omit the (only) variant v8.
  return want.architecture === 'arm64' && want.variant === 'v8' && (p.variant === undefined || p.variant === '');
}

function showPlatform(p: Platform | Descriptor['platform']): string {
  if (!p) return '(none)';
  return [p.os, p.architecture, p.variant].filter((x) => x).join('/');
}

function pickPlatform(descs: Descriptor[], want: Platform, where: string): Descriptor {
  const m = descs.find((d) => platformMatches(d.platform, want));
  if (m) return m;
  const avail = listSome([...new Set(descs.map((d) => showPlatform(d.platform)))]);
  throw new OciSourceError(`${where}: no image for platform ${showPlatform(want)} (available: ${avail})`);
}

/** An image index (image-spec image-index.md): its `manifests`, each a valid descriptor. */
function manifestsOf(x: unknown, where: string): Descriptor[] {
  if (!isObject(x)) throw badField(where, '', 'is not a JSON object');
  const m = x.manifests;
  if (!Array.isArray(m)) throw badField(where, 'manifests', 'is not a list');
  return m.map((d, i) => asDescriptor(d, where, `manifests[${i}]`));
}

interface ResolvedImage {
  manifestDigest: string;
  manifest: { config: Descriptor; layers: Descriptor[]; annotations: Record<string, string> };
}

/** Follows indexes down to one image manifest. */
async function resolveDescriptor(store: Store, desc: Descriptor, want: Platform, depth = 0): Promise<ResolvedImage> {
  if (depth > 4) throw new OciSourceError(`${store.describe}: image indexes nested too deeply`);
  const json = await readJsonBlob(store, desc, 'manifest');
  const where = `${store.describe}: manifest ${desc.digest}`;
  if (!isObject(json)) throw badField(where, '', 'is not a JSON object');
  optString(json, 'mediaType', where, '');
  const mt = (json.mediaType as string | undefined) ?? desc.mediaType;
  if ((mt !== undefined && INDEX_TYPES.has(mt)) || (mt === undefined && Array.isArray(json.manifests))) {
    const iwhere = `${store.describe}: index ${desc.digest}`;
    const list = manifestsOf(json, iwhere);
    return resolveDescriptor(store, pickPlatform(list, want, iwhere), want, depth + 1);
  }
  if (mt !== undefined && !MANIFEST_TYPES.has(mt))
    throw new OciSourceError(`${store.describe}: ${desc.digest} has unsupported media type ${preview(mt)}`);
  const config = asDescriptor(json.config, where, 'config');
  if (!Array.isArray(json.layers)) throw badField(where, 'layers', 'is not a list');
  const layers = (json.layers as unknown[]).map((l, i) => asDescriptor(l, where, `layers[${i}]`));
  return { manifestDigest: desc.digest, manifest: { config, layers, annotations: stringMap(json.annotations) } };
}

/** The config's rootfs.diff_ids (image-spec config.md), each a sha256/sha512 digest. */
function diffIdsOf(config: unknown, where: string): string[] {
  if (!isObject(config)) throw badField(where, '', 'is not a JSON object');
  if (!isObject(config.rootfs)) throw badField(where, 'rootfs', 'is not an object');
  const ids = config.rootfs.diff_ids;
  if (!Array.isArray(ids)) throw badField(where, 'rootfs.diff_ids', 'is not a list');
  return ids.map((d, i) => {
    if (typeof d !== 'string' || !DIGEST_RE.test(d)) throw badField(where, `rootfs.diff_ids[${i}]`, `is not a supported digest (${preview(d)})`);
    return d;
  });
}

async function layoutLayers(store: Store, ref: string | undefined, want: Platform, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const layoutFile = await store.get('oci-layout');
  if (!layoutFile) throw new OciSourceError(`${store.describe}: not an OCI image layout (no oci-layout file)`);
  const index = await readJsonMember(store, 'index.json', MAX_JSON_LIST);
  let descs = manifestsOf(index, `${store.describe}: index.json`);
  if (ref !== undefined) {
    const named = descs.filter((d) => d.annotations?.[REF_NAME] === ref);
    if (named.length === 0) {
      const names = descs.map((d) => d.annotations?.[REF_NAME]).filter((n) => n !== undefined);
      throw new OciSourceError(`${store.describe}: no image named ${JSON.stringify(ref)} (available: ${listSome(names)})`);
    }
    descs = named;
  }
  if (descs.length === 0) throw new OciSourceError(`${store.describe}: index.json lists no images`);
  let desc: Descriptor;
  if (descs.length === 1) desc = descs[0];
  else if (descs.every((d) => d.platform)) desc = pickPlatform(descs, want, `${store.describe}: index.json`);
  else {
    const names = listSome(descs.map((d) => d.annotations?.[REF_NAME] ?? d.digest));
    throw new OciSourceError(`${store.describe}: index.json lists ${descs.length} images; choose one with :REF (${names})`);
  }
  const img = await resolveDescriptor(store, desc, want);
  const config = await readJsonBlob(store, img.manifest.config, 'config');
  if (meta) Object.assign(meta, { annotations: img.manifest.annotations, labels: labelsOf(config) });
  const diffIds = diffIdsOf(config, `${store.describe}: config ${img.manifest.config.digest}`);
  if (diffIds.length !== img.manifest.layers.length)
    throw new OciSourceError(
      `manifest ${img.manifestDigest}: ${img.manifest.layers.length} layers but config lists ${diffIds.length} diff_ids`,
    );
  const out: LayerSpec[] = [];
  for (let i = 0; i < img.manifest.layers.length; i++) {
    const d = img.manifest.layers[i];
    const label = `layer ${i + 1} (${shortDigest(d.digest)})`;
    if (d.mediaType !== undefined && mediaTypeCompression(d.mediaType) === undefined)
      throw new OciSourceError(`${label}: unsupported layer media type ${d.mediaType}`);
    out.push({ blob: await getBlob(store, d, label), label, digest: d.digest, diffId: diffIds[i], mediaType: d.mediaType });
  }
  return out;
}

/** One entry of a docker-archive manifest.json (`docker save` format), fields type-checked. */
interface DockerEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function dockerEntries(m: unknown, where: string): DockerEntry[] {
  if (!Array.isArray(m)) throw badField(where, '', 'is not a list');
  if (m.length === 0) throw new OciSourceError(`${where} lists no images`);
  return m.map((e, i) => {
    const f = `[${i}]`;
    if (!isObject(e)) throw badField(where, f, 'is not an object');
    if (typeof e.Config !== 'string') throw badField(where, `${f}.Config`, 'is not a string');
    const strings = (key: string, optional: boolean): string[] => {
      const v = e[key];
      if (v === undefined || (v === null && optional)) {
        if (optional) return [];
        throw badField(where, `${f}.${key}`, 'is missing');
      }
      if (!Array.isArray(v)) throw badField(where, `${f}.${key}`, 'is not a list');
      v.forEach((x, j) => {
        if (typeof x !== 'string') throw badField(where, `${f}.${key}[${j}]`, 'is not a string');
      });
      return v as string[];
    };
    return { Config: e.Config, RepoTags: strings('RepoTags', true), Layers: strings('Layers', false) };
  });
}

async function dockerArchiveLayers(store: ArchiveStore, ref: string | undefined, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const entries = dockerEntries(await readJsonMember(store, 'manifest.json', MAX_JSON_LIST), `${store.describe}: manifest.json`);
  let entry: DockerEntry | undefined;
  if (ref === undefined) {
    if (entries.length > 1) throw new OciSourceError(`${store.describe}: ${entries.length} images in the archive; choose one with :TAG or :@N`);
    entry = entries[0];
  } else if (/^@\d+$/.test(ref)) {
    entry = entries[Number(ref.slice(1))];
  } else {
    entry =
      entries.find((e) => e.RepoTags.includes(ref)) ??
      entries.find((e) => e.RepoTags.includes(`${ref}:latest`)) ??
      entries.find((e) => e.RepoTags.some((t) => t.endsWith(`/${ref}`) || t.endsWith(`/${ref}:latest`)));
  }
  if (!entry) {
    const tags = listSome(entries.flatMap((e) => e.RepoTags));
    throw new OciSourceError(`${store.describe}: no image ${JSON.stringify(ref)} in manifest.json (tags: ${tags})`);
  }
  const configName = entry.Config;
  const cb = await store.get(configName);
  if (!cb) throw new OciSourceError(`${store.describe}: config ${configName} is missing`);
  if (cb.size > MAX_JSON) throw tooLarge(`${store.describe}: config ${configName}`, cb.size, MAX_JSON);
  const data = await readAll(cb);
  // The config's name is its sha256 ("<hex>.json" or "blobs/sha256/<hex>"): verify it.
  const hexName = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/.exec(configName)?.[1];
  if (hexName !== undefined) {
    const actual = createHash('sha256').update(data).digest('hex');
    if (actual !== hexName)
      throw new OciSourceError(`${store.describe}: config ${configName} does not match its digest (content is sha256:${actual})`);
  }
  const cwhere = `${store.describe}: config ${configName}`;
  const configJson = parseJson(data, cwhere);
  if (meta) Object.assign(meta, { annotations: {}, labels: labelsOf(configJson) });
  const diffIds = diffIdsOf(configJson, cwhere);
  const layers = entry.Layers;
  if (diffIds.length !== layers.length)
    throw new OciSourceError(`${store.describe}: ${layers.length} layers but config lists ${diffIds.length} diff_ids`);
  const out: LayerSpec[] = [];
  for (let i = 0; i < layers.length; i++) {
    const name = layers[i];
    const label = `layer ${i + 1} (${name})`;
    const blob = await store.get(name);
    if (!blob) throw new OciSourceError(`${store.describe}: ${label} is missing`);
    const blobHex = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(normMember(name))?.[1];
    out.push({ blob, label, diffId: diffIds[i], ...(blobHex ? { digest: `sha256:${blobHex}` } : {}) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Entry point

/** composefs-rs `parse_oci_layout_ref`: split at the last ':' unless the tail contains '/'. */
export function splitLayoutRef(s: string): [string, string | undefined] {
  const i = s.lastIndexOf(':');
  if (i === -1) return [s, undefined];
  const tag = s.slice(i + 1);
  if (tag.includes('/')) return [s, undefined];
  return [s.slice(0, i), tag];
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Splits `oci:` DIR[:REF]. Ref names may hold ':' and '/' (BuildKit names its image
 * `docker.io/library/base:latest`), which composefs-rs's split at the last ':' cannot name. So:
 * 1. the whole remainder, if it is an OCI layout (a directory with an `oci-layout` file): no REF;
 * 2. else the shortest prefix before a ':' that is an OCI layout: DIR, and all the rest is REF
 *    (the whole remainder is tried as a ref name first; a DIR may hold ':' too);
 * 3. else composefs-rs's rule ({@link splitLayoutRef}), whose DIR the error then names.
 */
export async function resolveLayoutRef(s: string): Promise<[string, string | undefined]> {
  const isLayout = (d: string) => isFile(path.join(d, 'oci-layout'));
  if (await isLayout(s)) return [s, undefined];
  for (let i = s.indexOf(':'); i !== -1; i = s.indexOf(':', i + 1)) {
    if (i > 0 && (await isLayout(s.slice(0, i)))) return [s.slice(0, i), s.slice(i + 1) || undefined];
  }
  return splitLayoutRef(s);
}

/** Splits FILE[:REF] preferring the longest existing file (REF may contain ':', e.g. "busybox:latest"). */
async function splitFileRef(s: string): Promise<[string, string | undefined]> {
  if (await isFile(s)) return [s, undefined];
  for (let i = s.indexOf(':'); i !== -1; i = s.indexOf(':', i + 1)) {
    if (await isFile(s.slice(0, i))) return [s.slice(0, i), s.slice(i + 1) || undefined];
  }
  return [s, undefined];
}

/** The layers of a source spec, bottom first, each with what to verify. */
async function layerSpecs(spec: string, want: Platform, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const colon = spec.indexOf(':');
  const kind = colon === -1 ? '' : spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (rest === '') throw new OciSourceError(`source '${spec}': missing path after '${kind}:'`);
  switch (kind) {
    case 'oci': {
      const [dir, ref] = await resolveLayoutRef(rest);
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new OciSourceError(`OCI layout ${dir} is not a directory`);
      return layoutLayers(new DirStore(dir), ref || undefined, want, meta);
    }
    case 'oci-archive': {
      const [file, ref] = await splitFileRef(rest);
      return layoutLayers(await ArchiveStore.open(file, 'oci-archive'), ref, want, meta);
    }
    case 'docker-archive': {
      const [file, ref] = await splitFileRef(rest);
      return dockerArchiveLayers(await ArchiveStore.open(file, 'docker-archive'), ref, meta);
    }
    case 'layers': {
      const files = rest.split(',').filter((f) => f !== '');
      const out: LayerSpec[] = [];
      for (const [i, f] of files.entries()) {
        const st = await stat(f).catch(() => undefined);
        if (!st?.isFile()) throw new OciSourceError(`layer file ${f} does not exist or is not a file`);
        out.push({ blob: fileRange(f, f, 0, st.size), label: `layer ${i + 1} (${f})` });
      }
      return out;
    }
    default:
      throw new OciSourceError(`source '${spec}': unknown OCI source kind '${kind}'`);
  }
}

/**
 * Loads an OCI source into the merged tree (composefs-rs `create_filesystem`; with
 * `opts.transform`, including `transform_for_oci`).
 */
export async function loadOciSource(spec: string, opts: OciSourceOptions): Promise<FileSystem> {
  const want = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
  const layers = await layerSpecs(spec, want, opts.metadata);
  const fs = newOciFileSystem();
  // Without a sink, file contents are hashed by worker threads while the main thread parses.
  // One thread fewer than cores: the main thread is busy too (reading, parsing, copying).
  const pool = opts.sink || layers.length === 0 ? undefined : new HashPool(opts.jobs ?? Math.max(1, availableParallelism() - 1));
  const progress = opts.progress;
  if (progress) progress.layers = layers.length;
  try {
    for (const [i, l] of layers.entries()) {
      if (opts.provenance) {
        opts.provenance.layer = i;
        opts.provenance.labels[i] = l.label;
      }
      if (progress) {
        progress.layer = i + 1;
        progress.label = l.label;
        progress.size = l.blob.size;
        progress.read = () => 0;
      }
      await applyVerifiedLayer(fs, l, opts.hash, { provenance: opts.provenance, sink: opts.sink, kept: opts.kept, pool, progress });
      if (progress) progress.read = () => l.blob.size;
    }
  } finally {
    await pool?.close();
  }
  if (opts.transform) transformForOci(fs, opts.transform);
  return fs;
}
