/**
 * Pull-style byte sources for the tar reader: "give me exactly N bytes", "skip N bytes", "stream N
 * bytes in chunks". Two implementations: one over any async stream of chunks (layers, which are
 * decompressed on the fly), one over a file with random access (outer archives, which we index
 * without reading the blobs inside them).
 */
import type { FileHandle } from 'node:fs/promises';

export interface ByteSource {
  /** Bytes consumed so far (offset of the next byte). */
  readonly position: number;
  /** Exactly `n` bytes, or fewer (possibly zero) if the input ends first. */
  read(n: number): Promise<Buffer>;
  /** Streams exactly `n` bytes as chunks; throws `ShortInputError` if the input ends first. */
  chunks(n: number): AsyncGenerator<Buffer>;
  /** Skips exactly `n` bytes; returns false if the input ended first. */
  skip(n: number): Promise<boolean>;
  /** Reads and discards everything left (so hashes over the whole input complete). */
  drain(): Promise<void>;
}

export class ShortInputError extends Error {}

/** A ByteSource over an async iterable of chunks, with a queue (no quadratic concatenation). */
export class StreamByteSource implements ByteSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private queue: Buffer[] = [];
  private queued = 0;
  private eof = false;
  position = 0;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  /** Pulls chunks until at least `n` bytes are queued or the input ends. */
  private async fill(n: number): Promise<void> {
    while (this.queued < n && !this.eof) {
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        break;
      }
      const c = r.value;
      if (c.length === 0) continue;
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      this.queue.push(b);
      this.queued += b.length;
    }
  }

  /** Takes up to `n` queued bytes as one buffer (copying only when spanning chunks). */
  private take(n: number): Buffer {
    n = Math.min(n, this.queued);
    if (n === 0) return Buffer.alloc(0);
    const first = this.queue[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.queue.shift();
      else this.queue[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.queue[0];
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) this.queue.shift();
        else this.queue[0] = c.subarray(k);
      }
    }
    this.queued -= n;
    this.position += n;
    return out;
  }

  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.take(n);
  }

  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.queued === 0) await this.fill(1);
      if (this.queued === 0) throw new ShortInputError(`unexpected end of input (${left} more bytes expected)`);
      const k = Math.min(left, this.queue[0].length);
      left -= k;
      yield this.take(k);
    }
  }

  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (this.queued === 0) await this.fill(1);
      if (this.queued === 0) return false;
      const k = Math.min(left, this.queue[0].length);
      this.take(k);
      left -= k;
    }
    return true;
  }

  /** Stops reading early: releases the underlying iterator (closing files, decoders). */
  async close(): Promise<void> {
    this.queue = [];
    this.queued = 0;
    if (!this.eof) {
      this.eof = true;
      await this.it.return?.();
    }
  }

  async drain(): Promise<void> {
    this.queue = [];
    this.position += this.queued;
    this.queued = 0;
    while (!this.eof) {
      const r = await this.it.next();
      if (r.done) this.eof = true;
      else this.position += r.value.length;
    }
  }
}

/** A ByteSource over a range of an open file: skipping is free, reading is positional. */
export class FileByteSource implements ByteSource {
  position: number;
  constructor(
    private readonly fh: FileHandle,
    start: number,
    private readonly end: number,
  ) {
    this.position = start;
  }

  async read(n: number): Promise<Buffer> {
    const want = Math.max(0, Math.min(n, this.end - this.position));
    const buf = Buffer.alloc(want);
    let off = 0;
    while (off < want) {
      const { bytesRead } = await this.fh.read(buf, off, want - off, this.position + off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    this.position += off;
    return off === want ? buf : buf.subarray(0, off);
  }

  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      const b = await this.read(Math.min(left, 1 << 20));
      if (b.length === 0) throw new ShortInputError(`unexpected end of input (${left} more bytes expected)`);
      left -= b.length;
      yield b;
    }
  }

  async skip(n: number): Promise<boolean> {
    if (this.position + n > this.end) {
      this.position = this.end;
      return false;
    }
    this.position += n;
    return true;
  }

  async drain(): Promise<void> {
    this.position = this.end;
  }
}
