/**
 * A tiny tar writer for tests: every byte under the test's control (ustar, GNU and v7 headers,
 * PAX records with raw byte values, GNU long names/links, arbitrary typeflags and raw fields).
 */

import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export type Format = 'ustar' | 'gnu' | 'v7';

export interface HeaderFields {
  name: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number;
  /** Typeflag character ('0', '5', 'x', ...) or byte. */
  type?: string | number;
  linkname?: string | Buffer;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  /** ustar prefix field. */
  prefix?: string | Buffer;
  format?: Format;
  /** Raw overrides: byte offset -> bytes (applied before the checksum). */
  raw?: [number, Buffer | string][];
  /** Corrupt the checksum. */
  badChecksum?: boolean;
}

function put(block: Buffer, off: number, len: number, v: string | Buffer): void {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  if (b.length > len) throw new Error(`field at ${off} too long (${b.length} > ${len})`);
  b.copy(block, off);
}

function octal(v: number, len: number): string {
  return v.toString(8).padStart(len - 1, '0') + '\0';
}

/** One 512-byte header block. */
export function header(f: HeaderFields): Buffer {
  const b = Buffer.alloc(512);
  const format = f.format ?? 'ustar';
  put(b, 0, 100, f.name);
  put(b, 100, 8, octal(f.mode ?? 0o644, 8));
  put(b, 108, 8, octal(f.uid ?? 0, 8));
  put(b, 116, 8, octal(f.gid ?? 0, 8));
  put(b, 124, 12, octal(f.size ?? 0, 12));
  put(b, 136, 12, octal(f.mtime ?? 0, 12));
  const t = f.type ?? '0';
  b[156] = typeof t === 'number' ? t : t.charCodeAt(0);
  if (f.linkname !== undefined) put(b, 157, 100, f.linkname);
  if (format === 'ustar') {
    put(b, 257, 6, 'ustar\0');
    put(b, 263, 2, '00');
  } else if (format === 'gnu') {
    put(b, 257, 6, 'ustar ');
    put(b, 263, 2, ' \0');
  }
  if (format !== 'v7') {
    put(b, 265, 32, f.uname ?? '');
    put(b, 297, 32, f.gname ?? '');
    put(b, 329, 8, octal(f.devmajor ?? 0, 8));
    put(b, 337, 8, octal(f.devminor ?? 0, 8));
  }
  if (f.prefix !== undefined) put(b, 345, 155, f.prefix);
  for (const [off, v] of f.raw ?? []) put(b, off, (typeof v === 'string' ? Buffer.from(v) : v).length, v);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  if (f.badChecksum) sum += 1;
  put(b, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return b;
}

function pad(data: Buffer): Buffer {
  const n = (512 - (data.length % 512)) % 512;
  return n === 0 ? data : Buffer.concat([data, Buffer.alloc(n)]);
}

/** One PAX record "LEN key=value\n" with the self-inclusive length. */
export function paxRecord(key: string | Buffer, value: string | Buffer): Buffer {
  const k = typeof key === 'string' ? Buffer.from(key) : key;
  const v = typeof value === 'string' ? Buffer.from(value) : value;
  const body = k.length + v.length + 3; // ' ' '=' '\n'
  let len = body + String(body).length;
  if (String(len).length !== String(body).length) len = body + String(len).length;
  return Buffer.concat([Buffer.from(`${len} `), k, Buffer.from('='), v, Buffer.from('\n')]);
}

export interface EntryOpts extends Partial<HeaderFields> {
  /** PAX records to put in an 'x' header before the member. */
  pax?: [string | Buffer, string | Buffer][];
  /** GNU long name ('L') before the member (the header name is then truncated). */
  gnuLongName?: string | Buffer;
  gnuLongLink?: string | Buffer;
}

/** Builds a tar archive member by member. */
export class TarBuilder {
  private parts: Buffer[] = [];

  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  private ext(type: string, name: string, data: Buffer, format: Format): void {
    this.parts.push(header({ name, type, size: data.length, format, mode: 0o644 }), pad(data));
  }

  entry(name: string | Buffer, data: Buffer | string = Buffer.alloc(0), o: EntryOpts = {}): this {
    const content = typeof data === 'string' ? Buffer.from(data) : data;
    const format = o.format ?? (o.gnuLongName || o.gnuLongLink ? 'gnu' : 'ustar');
    if (o.pax) this.ext('x', 'PaxHeaders/x', Buffer.concat(o.pax.map(([k, v]) => paxRecord(k, v))), format);
    if (o.gnuLongLink !== undefined)
      this.ext('K', '././@LongLink', Buffer.concat([Buffer.from(o.gnuLongLink), Buffer.from([0])]), 'gnu');
    if (o.gnuLongName !== undefined)
      this.ext('L', '././@LongLink', Buffer.concat([Buffer.from(o.gnuLongName), Buffer.from([0])]), 'gnu');
    let hname: string | Buffer = name;
    if (Buffer.byteLength(name) > 100) hname = Buffer.from(name).subarray(0, 100);
    const { pax: _p, gnuLongName: _g, gnuLongLink: _k, ...fields } = o;
    this.parts.push(header({ size: content.length, format, ...fields, name: hname }), pad(content));
    return this;
  }

  file(name: string | Buffer, data: Buffer | string, o: EntryOpts = {}): this {
    return this.entry(name, data, { type: '0', mode: 0o644, ...o });
  }
  dir(name: string | Buffer, o: EntryOpts = {}): this {
    return this.entry(name, Buffer.alloc(0), { type: '5', mode: 0o755, ...o });
  }
  symlink(name: string | Buffer, target: string | Buffer, o: EntryOpts = {}): this {
    return this.entry(name, Buffer.alloc(0), { type: '2', mode: 0o777, linkname: target, ...o });
  }
  hardlink(name: string | Buffer, target: string | Buffer, o: EntryOpts = {}): this {
    return this.entry(name, Buffer.alloc(0), { type: '1', mode: 0o644, linkname: target, ...o });
  }

  /** The archive with `zeroBlocks` end-of-archive blocks (default 2). */
  build(zeroBlocks = 2): Buffer {
    return Buffer.concat([...this.parts, Buffer.alloc(512 * zeroBlocks)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Compressed streams and image layouts built byte by byte

/**
 * A zstd frame of `blocks` RLE blocks of 128 KiB zeros (4 bytes each: a bomb of 32 KiB per GiB),
 * window 2^windowLog (RFC 8878 §3.1.1: Window_Descriptor = (windowLog - 10) << 3).
 */
export function zstdRleFrame(blocks: number, windowLog = 17, byte = 0): Buffer {
  const out = Buffer.alloc(6 + 4 * blocks);
  out.writeUInt32LE(0xfd2fb528, 0);
  out[4] = 0; // no content size, no checksum, no dictionary, not single-segment
  out[5] = (windowLog - 10) << 3;
  for (let i = 0; i < blocks; i++) {
    const h = (i === blocks - 1 ? 1 : 0) | (1 << 1) | ((128 << 10) << 3);
    const o = 6 + 4 * i;
    out[o] = h & 0xff;
    out[o + 1] = (h >> 8) & 0xff;
    out[o + 2] = (h >> 16) & 0xff;
    out[o + 3] = byte;
  }
  return out;
}

/** A zstd skippable frame (magic 0x184D2A50 + `nibble`) carrying `data`. */
export function zstdSkippable(data: Buffer, nibble = 0): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50 + nibble, 0);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}


export function sha256hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface LayoutLayer {
  blob: Buffer;
  /** The uncompressed tar (its sha256 is the diff_id). */
  plain: Buffer;
  mediaType: string;
}

/** Writes an OCI image layout with one image named `ref`; returns the digests written. */
export function writeOciLayout(
  dir: string,
  layers: LayoutLayer[],
  ref = 'latest',
): { manifest: string; config: string; blobs: string[] } {
  mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
  const put = (b: Buffer): string => {
    const h = sha256hex(b);
    writeFileSync(path.join(dir, 'blobs/sha256', h), b);
    return `sha256:${h}`;
  };
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha256hex(l.plain)}`) } }),
  );
  const configDigest = put(config);
  const blobs = layers.map((l) => put(l.blob));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: layers.map((l, i) => ({ mediaType: l.mediaType, digest: blobs[i], size: l.blob.length })),
    }),
  );
  const md = put(manifest);
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': ref } },
      ],
    }),
  );
  return { manifest: md, config: configDigest, blobs };
}
