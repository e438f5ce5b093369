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
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { type ByteSource, FileByteSource, FileStreamSource, StreamByteSource } from './bytes.js';
import { type Compression, decompress, detectCompression, mediaTypeCompression } from './decompress.js';
import { KeptContent, Provenance, applyTar, newOciFileSystem } from './layers.js';
import { readTar, T, TarFormatError } from './tar-entry.js';

export class OciSourceError extends Error {
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
}

// ---------------------------------------------------------------------------------------------
// Blob stores

/** A readable byte range: a file, or a member of an uncompressed tar file. */
interface Blob {
  name: string;
  size: number;
  stream(): AsyncIterable<Buffer>;
  /** Where the bytes are, when they are a range of a file. */
  file?: { path: string; start: number };
}

interface Store {
  describe: string;
  /** undefined if absent. */
  get(name: string): Promise<Blob | undefined>;
}

function fileRange(file: string, name: string, start: number, size: number): Blob {
  return {
    name,
    size,
    file: { path: file, start },
    stream: () =>
      size === 0
        ? (async function* () {})()
        : (createReadStream(file, { start, end: start + size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>),
  };
}

class DirStore implements Store {
  constructor(readonly dir: string) {}
  get describe(): string {
    return `OCI layout ${this.dir}`;
  }
  async get(name: string): Promise<Blob | undefined> {
    const p = path.join(this.dir, name);
    try {
      const st = await stat(p);
      if (!st.isFile()) return undefined;
      return fileRange(p, name, 0, st.size);
    } catch {
      return undefined;
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
      if (head[0] === 0x1f && head[1] === 0x8b)
        throw new OciSourceError(`${kind} ${file} is gzip-compressed; decompress it first (e.g. gunzip)`);
      if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
        throw new OciSourceError(`${kind} ${file} is zstd-compressed; decompress it first`);
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

function checkDigest(d: unknown, what: string): string {
  if (typeof d !== 'string' || !DIGEST_RE.test(d)) throw new OciSourceError(`${what}: invalid or unsupported digest ${JSON.stringify(d)}`);
  return d;
}

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

function asDescriptor(x: unknown, what: string): Descriptor {
  if (typeof x !== 'object' || x === null) throw new OciSourceError(`${what}: descriptor is not an object`);
  const d = x as Record<string, unknown>;
  checkDigest(d.digest, what);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0)
    throw new OciSourceError(`${what}: descriptor has an invalid size`);
  return d as unknown as Descriptor;
}

async function getBlob(store: Store, desc: Descriptor, what: string): Promise<Blob> {
  const b = await store.get(blobPath(desc.digest));
  if (!b) throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} is missing`);
  if (b.size !== desc.size)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} has size ${b.size}, descriptor says ${desc.size}`);
  return b;
}

/**
 * Largest JSON document read (index.json, manifest.json, manifests, configs): 4 MiB, as
 * containers/image allows for manifests and configs (internal/iolimits MaxManifestBodySize,
 * MaxConfigBodySize; vendored in containers/buildah 5b1b18ee); real ones are KBs. Larger ones
 * are refused before they are read: JSON.parse of tens of MB of small values thrashes V8's
 * young generation, which cfs keeps small (src/cli/main.ts): minutes at 60 MB.
 */
export const MAX_JSON = 4 << 20;

function jsonTooLarge(what: string, size: number): OciSourceError {
  return new OciSourceError(`${what} is ${size} bytes, more than the ${MAX_JSON >> 20} MiB allowed for a JSON document`);
}

/** Reads a small JSON blob, verifying size and digest. */
async function readJsonBlob(store: Store, desc: Descriptor, what: string): Promise<unknown> {
  if (desc.size > MAX_JSON) throw jsonTooLarge(`${store.describe}: ${what} blob ${desc.digest}`, desc.size);
  const b = await getBlob(store, desc, what);
  const chunks: Buffer[] = [];
  for await (const c of b.stream()) chunks.push(c);
  const data = Buffer.concat(chunks);
  const [alg, hex] = desc.digest.split(':');
  const actual = createHash(alg).update(data).digest('hex');
  if (actual !== hex)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} does not match its digest (content is ${alg}:${actual})`);
  return parseJson(data, `${what} ${desc.digest}`);
}

function parseJson(data: Buffer, what: string): unknown {
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (e) {
    throw new OciSourceError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function readJsonMember(store: Store, name: string): Promise<unknown> {
  const b = await store.get(name);
  if (!b) throw new OciSourceError(`${store.describe}: ${name} is missing`);
  if (b.size > MAX_JSON) throw jsonTooLarge(`${store.describe}: ${name}`, b.size);
  const chunks: Buffer[] = [];
  for await (const c of b.stream()) chunks.push(c);
  return parseJson(Buffer.concat(chunks), `${store.describe}: ${name}`);
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
  const fh = await open(b.file.path, 'r').catch(() => undefined);
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
  const fh = await open(b.file.path, 'r').catch(() => undefined);
  return fh && new FileStreamSource(fh, Buffer.from(b.file.path), b.file.start, b.file.start + b.size);
}

/** Applies one layer, verifying the blob digest and diff_id while streaming. */
async function applyVerifiedLayer(
  fs: FileSystem,
  l: LayerSpec,
  hash: HashAlg,
  extra: Pick<OciSourceOptions, 'provenance' | 'sink' | 'kept'> & { pool?: HashPool },
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
  if (direct) src = direct;
  else {
    const raw = hex !== undefined ? tap(l.blob.stream(), blobHash, blobCount) : l.blob.stream();
    const decoded = decompress(raw, l.label);
    const plain = l.diffId !== undefined && !sameHash ? tap(decoded, diffHash, diffCount) : decoded;
    src = new StreamByteSource(plain);
  }
  try {
    await applyTar(fs, src, { hash, label: l.label, ...extra, streamMin });
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
  const avail = descs.map((d) => showPlatform(d.platform)).join(', ');
  throw new OciSourceError(`${where}: no image for platform ${showPlatform(want)} (available: ${avail || 'none'})`);
}

function manifestsOf(x: unknown, what: string): Descriptor[] {
  const m = (x as { manifests?: unknown }).manifests;
  if (!Array.isArray(m)) throw new OciSourceError(`${what}: "manifests" is not a list`);
  return m.map((d, i) => asDescriptor(d, `${what} manifests[${i}]`));
}

interface ResolvedImage {
  manifestDigest: string;
  manifest: { config: Descriptor; layers: Descriptor[] };
}

/** Follows indexes down to one image manifest. */
async function resolveDescriptor(store: Store, desc: Descriptor, want: Platform, depth = 0): Promise<ResolvedImage> {
  if (depth > 4) throw new OciSourceError(`${store.describe}: image indexes nested too deeply`);
  const json = (await readJsonBlob(store, desc, 'manifest')) as Record<string, unknown>;
  if (typeof json !== 'object' || json === null) throw new OciSourceError(`manifest ${desc.digest} is not a JSON object`);
  const mt = (json.mediaType as string | undefined) ?? desc.mediaType;
  if ((mt !== undefined && INDEX_TYPES.has(mt)) || (mt === undefined && Array.isArray(json.manifests))) {
    const list = manifestsOf(json, `index ${desc.digest}`);
    return resolveDescriptor(store, pickPlatform(list, want, `index ${desc.digest}`), want, depth + 1);
  }
  if (mt !== undefined && !MANIFEST_TYPES.has(mt))
    throw new OciSourceError(`${store.describe}: ${desc.digest} has unsupported media type ${mt}`);
  if (!Array.isArray(json.layers)) throw new OciSourceError(`manifest ${desc.digest}: "layers" is not a list`);
  const config = asDescriptor(json.config, `manifest ${desc.digest} config`);
  const layers = (json.layers as unknown[]).map((l, i) => asDescriptor(l, `manifest ${desc.digest} layers[${i}]`));
  return { manifestDigest: desc.digest, manifest: { config, layers } };
}

function diffIdsOf(config: unknown, what: string): string[] {
  const ids = (config as { rootfs?: { diff_ids?: unknown } })?.rootfs?.diff_ids;
  if (!Array.isArray(ids)) throw new OciSourceError(`${what}: config has no rootfs.diff_ids list`);
  return ids.map((d, i) => checkDigest(d, `${what} rootfs.diff_ids[${i}]`));
}

async function layoutLayers(store: Store, ref: string | undefined, want: Platform): Promise<LayerSpec[]> {
  const layoutFile = await store.get('oci-layout');
  if (!layoutFile) throw new OciSourceError(`${store.describe}: not an OCI image layout (no oci-layout file)`);
  const index = await readJsonMember(store, 'index.json');
  let descs = manifestsOf(index, `${store.describe}: index.json`);
  if (ref !== undefined) {
    const named = descs.filter((d) => d.annotations?.[REF_NAME] === ref);
    if (named.length === 0) {
      const names = descs.map((d) => d.annotations?.[REF_NAME]).filter((n) => n !== undefined);
      throw new OciSourceError(
        `${store.describe}: no image named ${JSON.stringify(ref)} (available: ${names.length ? names.join(', ') : 'none'})`,
      );
    }
    descs = named;
  }
  if (descs.length === 0) throw new OciSourceError(`${store.describe}: index.json lists no images`);
  let desc: Descriptor;
  if (descs.length === 1) desc = descs[0];
  else if (descs.every((d) => d.platform)) desc = pickPlatform(descs, want, `${store.describe}: index.json`);
  else {
    const names = descs.map((d) => d.annotations?.[REF_NAME] ?? d.digest).join(', ');
    throw new OciSourceError(`${store.describe}: index.json lists ${descs.length} images; choose one with :REF (${names})`);
  }
  const img = await resolveDescriptor(store, desc, want);
  const config = await readJsonBlob(store, img.manifest.config, 'config');
  const diffIds = diffIdsOf(config, `config ${img.manifest.config.digest}`);
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

async function dockerArchiveLayers(store: ArchiveStore, ref: string | undefined): Promise<LayerSpec[]> {
  const m = await readJsonMember(store, 'manifest.json');
  if (!Array.isArray(m) || m.length === 0) throw new OciSourceError(`${store.describe}: manifest.json lists no images`);
  type Entry = { Config?: unknown; RepoTags?: unknown; Layers?: unknown };
  const entries = m as Entry[];
  let entry: Entry | undefined;
  if (ref === undefined) {
    if (entries.length > 1) throw new OciSourceError(`${store.describe}: ${entries.length} images in the archive; choose one with :TAG or :@N`);
    entry = entries[0];
  } else if (/^@\d+$/.test(ref)) {
    entry = entries[Number(ref.slice(1))];
  } else {
    const tags = (e: Entry): string[] => (Array.isArray(e.RepoTags) ? (e.RepoTags as string[]) : []);
    entry =
      entries.find((e) => tags(e).includes(ref)) ??
      entries.find((e) => tags(e).includes(`${ref}:latest`)) ??
      entries.find((e) => tags(e).some((t) => t.endsWith(`/${ref}`) || t.endsWith(`/${ref}:latest`)));
  }
  if (!entry) throw new OciSourceError(`${store.describe}: no image ${JSON.stringify(ref)} in manifest.json`);
  if (typeof entry.Config !== 'string' || !Array.isArray(entry.Layers))
    throw new OciSourceError(`${store.describe}: malformed manifest.json entry`);
  const configName = entry.Config;
  const cb = await store.get(configName);
  if (!cb) throw new OciSourceError(`${store.describe}: config ${configName} is missing`);
  const chunks: Buffer[] = [];
  for await (const c of cb.stream()) chunks.push(c);
  const data = Buffer.concat(chunks);
  // The config's name is its sha256 ("<hex>.json" or "blobs/sha256/<hex>"): verify it.
  const hexName = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/.exec(configName)?.[1];
  if (hexName !== undefined) {
    const actual = createHash('sha256').update(data).digest('hex');
    if (actual !== hexName)
      throw new OciSourceError(`${store.describe}: config ${configName} does not match its digest (content is sha256:${actual})`);
  }
  const diffIds = diffIdsOf(parseJson(data, `config ${configName}`), `config ${configName}`);
  const layers = entry.Layers as unknown[];
  if (diffIds.length !== layers.length)
    throw new OciSourceError(`${store.describe}: ${layers.length} layers but config lists ${diffIds.length} diff_ids`);
  const out: LayerSpec[] = [];
  for (let i = 0; i < layers.length; i++) {
    const name = String(layers[i]);
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
async function layerSpecs(spec: string, want: Platform): Promise<LayerSpec[]> {
  const colon = spec.indexOf(':');
  const kind = colon === -1 ? '' : spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (rest === '') throw new OciSourceError(`source '${spec}': missing path after '${kind}:'`);
  switch (kind) {
    case 'oci': {
      const [dir, ref] = await resolveLayoutRef(rest);
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new OciSourceError(`OCI layout ${dir} is not a directory`);
      return layoutLayers(new DirStore(dir), ref || undefined, want);
    }
    case 'oci-archive': {
      const [file, ref] = await splitFileRef(rest);
      return layoutLayers(await ArchiveStore.open(file, 'oci-archive'), ref, want);
    }
    case 'docker-archive': {
      const [file, ref] = await splitFileRef(rest);
      return dockerArchiveLayers(await ArchiveStore.open(file, 'docker-archive'), ref);
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

/** True if `spec` names one of the sources this module loads. */
export function isOciSourceSpec(spec: string): boolean {
  return /^(oci|oci-archive|docker-archive|layers):/.test(spec);
}

/**
 * Loads an OCI source into the merged tree (composefs-rs `create_filesystem`; with
 * `opts.transform`, including `transform_for_oci`).
 */
export async function loadOciSource(spec: string, opts: OciSourceOptions): Promise<FileSystem> {
  const want = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
  const layers = await layerSpecs(spec, want);
  const fs = newOciFileSystem();
  // Without a sink, file contents are hashed by worker threads while the main thread parses.
  // One thread fewer than cores: the main thread is busy too (reading, parsing, copying).
  const pool = opts.sink || layers.length === 0 ? undefined : new HashPool(opts.jobs ?? Math.max(1, availableParallelism() - 1));
  try {
    for (const [i, l] of layers.entries()) {
      if (opts.provenance) {
        opts.provenance.layer = i;
        opts.provenance.labels[i] = l.label;
      }
      await applyVerifiedLayer(fs, l, opts.hash, { provenance: opts.provenance, sink: opts.sink, kept: opts.kept, pool });
    }
  } finally {
    await pool?.close();
  }
  if (opts.transform) transformForOci(fs, opts.transform);
  return fs;
}
