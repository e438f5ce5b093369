/**
 * Layer decompression, chosen by magic bytes: gzip (1f 8b), zstd (28 b5 2f fd), otherwise the bytes
 * are taken as a plain tar. Node 20's zlib has no zstd, so zstd goes through `fzstd` (pure JS,
 * streaming). xz and bzip2 are recognised only to give a clear error (OCI layers never use them).
 *
 * Note: composefs-rs picks the decoder from the descriptor's media type instead; for well-formed
 * images the two agree. `mediaTypeCompression` lets callers cross-check.
 */
import { Readable, pipeline } from 'node:stream';
import zlib from 'node:zlib';
import { Decompress } from 'fzstd';

export type Compression = 'gzip' | 'zstd' | 'none';

export class DecompressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecompressError';
  }
}

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];
const XZ = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const BZIP2 = [0x42, 0x5a, 0x68];

function startsWith(b: Uint8Array, magic: number[]): boolean {
  if (b.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (b[i] !== magic[i]) return false;
  return true;
}

/** Compression of a stream from its first bytes (at least 6 if available). */
export function detectCompression(head: Uint8Array): Compression {
  if (startsWith(head, GZIP)) return 'gzip';
  if (startsWith(head, ZSTD)) return 'zstd';
  if (startsWith(head, XZ)) throw new DecompressError('xz-compressed layers are not supported');
  if (startsWith(head, BZIP2) && head.length >= 4 && head[3] >= 0x31 && head[3] <= 0x39)
    throw new DecompressError('bzip2-compressed layers are not supported');
  return 'none';
}

/** What an OCI/Docker layer media type says about compression (undefined if not a tar layer type). */
export function mediaTypeCompression(mediaType: string): Compression | undefined {
  switch (mediaType) {
    case 'application/vnd.oci.image.layer.v1.tar':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar':
    case 'application/vnd.docker.image.rootfs.diff.tar':
      return 'none';
    case 'application/vnd.oci.image.layer.v1.tar+gzip':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip':
    case 'application/vnd.docker.image.rootfs.diff.tar.gzip':
    case 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip':
      return 'gzip';
    case 'application/vnd.oci.image.layer.v1.tar+zstd':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd':
      return 'zstd';
    default:
      return undefined;
  }
}

function toBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/** Re-joins a consumed head with the rest of an iterator. */
async function* rejoin(head: Buffer[], it: AsyncIterator<Uint8Array>): AsyncGenerator<Buffer> {
  for (const h of head) yield h;
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    if (r.value.length > 0) yield toBuffer(r.value);
  }
}

async function* gunzip(src: AsyncIterable<Buffer>, label: string): AsyncGenerator<Buffer> {
  // Large output chunks: every chunk costs a round trip through the stream machinery on the main
  // thread, and the default 16 KiB makes that the bottleneck of fast layers.
  const z = zlib.createGunzip({ chunkSize: 1 << 20 });
  pipeline(Readable.from(src, { objectMode: false }), z, () => {});
  try {
    for await (const c of z) yield c as Buffer;
  } catch (e) {
    throw new DecompressError(`${label}gzip decompression failed: ${(e as Error).message}`);
  } finally {
    z.destroy();
  }
}

async function* unzstd(src: AsyncIterable<Buffer>, label: string): AsyncGenerator<Buffer> {
  let out: Uint8Array[] = [];
  const d = new Decompress((chunk) => {
    out.push(chunk);
  });
  const push = (c: Uint8Array, final: boolean): void => {
    try {
      d.push(c, final);
    } catch (e) {
      throw new DecompressError(`${label}zstd decompression failed: ${(e as Error).message}`);
    }
  };
  for await (const c of src) {
    push(c, false);
    if (out.length > 0) {
      const o = out;
      out = [];
      for (const x of o) yield toBuffer(x);
    }
  }
  push(new Uint8Array(0), true);
  for (const x of out) yield toBuffer(x);
}

/**
 * Decompresses a layer stream according to its magic bytes; plain input is passed through.
 * `label` (e.g. "layer 2") prefixes error messages.
 */
export async function* decompress(src: AsyncIterable<Uint8Array>, label?: string): AsyncGenerator<Buffer> {
  const it = src[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  while (have < 6) {
    const r = await it.next();
    if (r.done) break;
    if (r.value.length === 0) continue;
    head.push(toBuffer(r.value));
    have += r.value.length;
  }
  const prefix = label ? `${label}: ` : '';
  let kind: Compression;
  try {
    kind = detectCompression(Buffer.concat(head));
  } catch (e) {
    throw new DecompressError(prefix + (e as Error).message);
  }
  const rest = rejoin(head, it);
  if (kind === 'gzip') yield* gunzip(rest, prefix);
  else if (kind === 'zstd') yield* unzstd(rest, prefix);
  else yield* rest;
}
