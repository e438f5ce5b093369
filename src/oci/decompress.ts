/**
 * Layer decompression, chosen by magic bytes: gzip (1f 8b), zstd (28 b5 2f fd, or a skippable
 * frame 5X 2a 4d 18), otherwise the bytes are taken as a plain tar. Node 20's zlib has no zstd, so
 * zstd goes through `fzstd` (pure JS, streaming). xz and bzip2 are recognised only to give a clear
 * error (OCI layers never use them). Every gzip member and every zstd frame is decoded.
 *
 * Note: composefs-rs picks the decoder from the descriptor's media type instead
 * (crates/composefs-oci/src/layer.rs `decompress_async`); for well-formed images the two agree.
 * Up to v0.9.0 its decoders stop after the first gzip member / zstd frame (async-compression
 * defaults); PR #381 (in v0.9.2) sets `multiple_members(true)`, which is what we do.
 * `mediaTypeCompression` lets callers cross-check.
 */
import { Readable, pipeline } from 'node:stream';
import zlib from 'node:zlib';
import { Decompress } from 'fzstd';
import { InputError } from '../errors.js';

export type Compression = 'gzip' | 'zstd' | 'none';

export class DecompressError extends InputError {
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
export function detectCompression(head: Buffer): Compression {
  if (startsWith(head, GZIP)) return 'gzip';
  if (startsWith(head, ZSTD)) return 'zstd';
  // A zstd stream may start with a skippable frame (magic 0x184D2A50..5F, RFC 8878 §3.1.2).
  if (head.length >= 4 && (head.readUInt32LE(0) & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) return 'zstd';
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

/** Zstandard frame magic (RFC 8878 §3.1.1), little-endian. */
const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frames: 0x184D2A50..0x184D2A5F (RFC 8878 §3.1.2). */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
/** Largest block a frame may hold, compressed or regenerated (RFC 8878 §3.1.1.2.4). */
const ZSTD_BLOCK_MAX = 128 << 10;
/**
 * Largest window we decode with: libzstd's default limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27),
 * which composefs-rs inherits (async-compression `ZstdDecoder::new`, crates/composefs-oci/src/layer.rs
 * at v0.9.0): frames asking for more are refused there too. fzstd would allocate the window up front.
 */
export const ZSTD_MAX_WINDOW = 1 << 27;
/** Decoded bytes collected before they are handed on (bounds memory whatever the ratio). */
const ZSTD_OUT_BATCH = 1 << 20;

/**
 * A zstd stream of any number of frames, decoded with a bound on memory.
 *
 * fzstd decodes every complete block of what it is given in one call, so a small input piece of
 * RLE blocks (4 bytes for 128 KiB each) would expand to gigabytes at once. We therefore walk the
 * frame and block headers ourselves and give the decoder input up to a block boundary only, at
 * most ~1 MiB of output at a time, pulling more input only when the consumer asks for more.
 * Skippable frames (zstd:chunked's TOC and footer, or a leading one) are dropped here, so
 * the decoder never sees them; every zstd frame is decoded (composefs-rs does since PR #381,
 * v0.9.2: `multiple_members(true)`).
 *
 * Our header walk only decides where to cut the input: the bytes themselves are validated by
 * fzstd, so a disagreement could cost batching, never correctness.
 */
async function* unzstd(src: AsyncIterable<Buffer>, label: string): AsyncGenerator<Buffer> {
  const fail = (msg: string): never => {
    throw new DecompressError(`${label}zstd decompression failed: ${msg}`);
  };
  let out: Buffer[] = [];
  let outBytes = 0;
  const d = new Decompress((chunk) => {
    if (chunk.length === 0) return;
    out.push(toBuffer(chunk));
    outBytes += chunk.length;
  });
  // fzstd 0.1.1 keeps an (empty) view of every input piece in its carry-over list `c` while
  // nothing is carried over (`l` = 0), which retains every input buffer until the end: a 230 MB
  // layer held ~230 MB. Clear that list when it carries nothing.
  const internals = d as unknown as { c?: unknown; l?: unknown };
  const push = (c: Uint8Array, final: boolean): void => {
    try {
      d.push(c, final);
    } catch (e) {
      fail((e as Error).message);
    }
    if (internals.l === 0 && Array.isArray(internals.c) && internals.c.length > 0) internals.c = [];
  };
  const it = src[Symbol.asyncIterator]();
  let eof = false;
  // Unconsumed input: buf[0..pos) is parsed and not yet given to the decoder.
  let buf = Buffer.alloc(0);
  let pos = 0;
  /** Stream offset of buf[0], for messages. */
  let base = 0;
  /** Makes `n` bytes available at `pos` (false at end of input). Concatenates once per need. */
  const ensure = async (n: number): Promise<boolean> => {
    if (buf.length - pos >= n) return true;
    const more: Buffer[] = [buf];
    let have = buf.length - pos;
    while (have < n && !eof) {
      const r = await it.next();
      if (r.done) eof = true;
      else if (r.value.length > 0) {
        more.push(r.value);
        have += r.value.length;
      }
    }
    if (more.length > 1) buf = Buffer.concat(more);
    return have >= n;
  };
  /** Gives the parsed input to the decoder. */
  const cut = (): void => {
    if (pos > 0) push(buf.subarray(0, pos), false);
    buf = buf.subarray(pos);
    base += pos;
    pos = 0;
  };
  const truncated = (): never => fail(`unexpected end of input at compressed offset ${base + pos}`);
  try {
    for (;;) {
      // Frame start.
      if (!(await ensure(4))) {
        if (buf.length - pos !== 0) truncated();
        break;
      }
      const magic = buf.readUInt32LE(pos);
      if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
        if (!(await ensure(8))) truncated();
        let skip = buf.readUInt32LE(pos + 4);
        cut();
        buf = buf.subarray(8);
        base += 8;
        for (;;) {
          const k = Math.min(skip, buf.length);
          buf = buf.subarray(k);
          base += k;
          skip -= k;
          if (skip === 0) break;
          if (!(await ensure(1))) truncated();
        }
        continue;
      }
      if (magic !== ZSTD_MAGIC) fail(`no zstd frame at compressed offset ${base + pos}`);
      if (!(await ensure(5))) truncated();
      const fhd = buf[pos + 4];
      const fcsFlag = fhd >> 6;
      const single = (fhd >> 5) & 1;
      const checksum = (fhd >> 2) & 1;
      const didFlag = fhd & 3;
      const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag;
      const headerLen = 5 + (single ? 0 : 1) + [0, 1, 2, 4][didFlag] + fcsBytes;
      if (!(await ensure(headerLen))) truncated();
      let window: number;
      if (single) {
        const at = headerLen - fcsBytes + pos;
        window =
          fcsBytes === 1 ? buf[at] : fcsBytes === 2 ? buf.readUInt16LE(at) + 256 : fcsBytes === 4 ? buf.readUInt32LE(at) : Number(buf.readBigUInt64LE(at));
      } else {
        const wd = buf[pos + 5];
        const wb = 2 ** (10 + (wd >> 3));
        window = wb + (wb / 8) * (wd & 7);
      }
      if (window > ZSTD_MAX_WINDOW)
        fail(`frame at compressed offset ${base + pos} needs a ${window}-byte window (limit ${ZSTD_MAX_WINDOW}, as libzstd's default)`);
      pos += headerLen;
      // Blocks, each handed to the decoder whole.
      for (let last = 0; !last; ) {
        if (!(await ensure(3))) truncated();
        const h = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16);
        last = h & 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) fail(`reserved block type at compressed offset ${base + pos}`);
        if (size > ZSTD_BLOCK_MAX) fail(`block of ${size} bytes at compressed offset ${base + pos}`);
        const len = 3 + (type === 1 ? 1 : size);
        if (!(await ensure(len))) truncated();
        pos += len;
        if (checksum && last) {
          if (!(await ensure(4))) truncated();
          pos += 4;
        }
        cut();
        if (outBytes >= ZSTD_OUT_BATCH) {
          const o = out;
          out = [];
          outBytes = 0;
          for (const x of o) yield x;
        }
      }
    }
    // A frame shorter than fzstd's look-ahead (18 bytes) is still buffered inside it.
    push(new Uint8Array(0), true);
    for (const x of out) yield x;
  } finally {
    if (!eof) await it.return?.();
  }
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
