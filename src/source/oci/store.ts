/**
 * Blob stores of OCI sources (an image layout directory, an archive read in place) and verified
 * blob reads: every layer is checked against its digest and diff_id while it is applied.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc, createReadStream } from 'node:fs';
import { type FileHandle, lstat, open } from 'node:fs/promises';
import path from 'node:path';
import type { FileSystem } from '../../tree/tree.js';
import { type ByteSource, FileByteSource, FileStreamSource, StreamByteSource } from '../bytes.js';
import { type Compression, decompress, detectCompression } from '../decompress.js';
import { type KeptContent, type Provenance, applyTar } from '../tar/members.js';
import { readTar, T, TarFormatError } from '../tar/reader.js';
import type { ObjectService } from '../../objects/service.js';
import { InputError } from '../../errors.js';

export class OciSourceError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'OciSourceError';
  }
}

/** A readable byte range: a file, or a member of an uncompressed tar file. */
export interface Blob {
  name: string;
  size: number;
  stream(): AsyncIterable<Buffer>;
  /** Where the bytes are, when they are a range of a file (`nofollow`: open without following a symlink). */
  file?: { path: string; start: number; nofollow: boolean };
}

export interface Store {
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

export function fileRange(file: string, name: string, start: number, size: number, nofollow = false): Blob {
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
export class DirStore implements Store {
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
export function normMember(name: string): string {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

export class ArchiveStore implements Store {
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

async function hashBlob(b: Blob, alg: string): Promise<{ hex: string; size: number }> {
  const h = createHash(alg);
  let size = 0;
  for await (const c of b.stream()) {
    h.update(c);
    size += c.length;
  }
  return { hex: h.digest('hex'), size };
}

export async function readAll(b: Blob): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of b.stream()) chunks.push(c);
  return Buffer.concat(chunks);
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

export interface LayerSpec {
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

/** Applies one layer, verifying the blob digest and diff_id while streaming. */
export async function applyVerifiedLayer(
  fs: FileSystem,
  l: LayerSpec,
  extra: { objects: ObjectService; provenance?: Provenance; kept?: KeptContent; progress?: LayerProgress },
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
  // Read in place when the object service may have workers read members from the file.
  const direct = kind === 'none' && hex === undefined && l.diffId === undefined && !extra.objects.stores ? await openPlainTar(l.blob) : undefined;
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
    await applyTar(fs, src, { label: l.label, ...extra, counter: progress, inflating: kind === 'gzip' });
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
