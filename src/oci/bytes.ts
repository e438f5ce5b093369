/**
 * Pull-style byte sources for the tar reader: "give me exactly N bytes", "skip N bytes", "stream N
 * bytes in chunks". Two implementations: one over any async stream of chunks (layers, which are
 * decompressed on the fly), one over a file with random access (outer archives, which we index
 * without reading the blobs inside them).
 */
import type { FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { InputError } from '../errors.js';

export interface ByteSource {
  /** Bytes consumed so far (offset of the next byte). */
  readonly position: number;
  /** Exactly `n` bytes, or fewer (possibly zero) if the input ends first. */
  read(n: number): Promise<Buffer>;
  /** Streams exactly `n` bytes as chunks; throws `ShortInputError` if the input ends first. */
  chunks(n: number): AsyncGenerator<Buffer>;
  /**
   * Passes exactly `n` bytes to `fn` as chunks (awaiting what it returns, if anything); throws
   * `ShortInputError` if the input ends first. Cheaper than `chunks` (no generator, no promise per
   * chunk when the data is already buffered). A chunk is valid only during the call.
   */
  each(n: number, fn: (chunk: Buffer) => void | Promise<void>): Promise<void>;
  /** Skips exactly `n` bytes; returns false if the input ended first. */
  skip(n: number): Promise<boolean>;
  /** Reads and discards everything left (so hashes over the whole input complete). */
  drain(): Promise<void>;
}

export class ShortInputError extends InputError {}

/**
 * The queue both sequential sources share: chunks pulled by `fill`, consumed from the head
 * without copying (a copy only when one read spans chunks).
 */
abstract class QueuedSource implements ByteSource {
  protected queue: Buffer[] = [];
  /** Bytes of queue[0] already consumed (avoids re-slicing the head chunk on every take). */
  protected headOff = 0;
  protected queued = 0;
  position = 0;

  /** Pulls chunks until at least `n` bytes are queued or the input ends. */
  protected abstract fill(n: number): Promise<void>;
  abstract drain(): Promise<void>;

  protected enqueue(b: Buffer): void {
    this.queue.push(b);
    this.queued += b.length;
  }

  /** Consumes `k` bytes (at most what is left of the head chunk) and returns them, uncopied. */
  protected takeHead(k: number): Buffer {
    const first = this.queue[0];
    const off = this.headOff;
    let out: Buffer;
    if (off + k === first.length) {
      out = off === 0 ? first : first.subarray(off);
      this.queue.shift();
      this.headOff = 0;
    } else {
      out = first.subarray(off, off + k);
      this.headOff = off + k;
    }
    this.queued -= k;
    this.position += k;
    return out;
  }

  /** Bytes left in the head chunk. */
  protected headLeft(): number {
    return this.queue[0].length - this.headOff;
  }

  /** Drops whatever is queued. */
  protected clearQueue(): void {
    this.queue = [];
    this.headOff = 0;
    this.queued = 0;
  }

  async read(n: number): Promise<Buffer> {
    if (this.queued < n) await this.fill(n);
    n = Math.min(n, this.queued);
    if (n === 0) return Buffer.alloc(0);
    if (this.headLeft() >= n) return this.takeHead(n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.takeHead(Math.min(this.headLeft(), n - off));
      c.copy(out, off);
      off += c.length;
    }
    return out;
  }

  /** The next piece of at most `left` bytes (what is buffered, or one fill). */
  private async nextPiece(left: number): Promise<Buffer> {
    if (this.queued === 0) await this.fill(1);
    if (this.queued === 0) throw new ShortInputError(`unexpected end of input (${left} more bytes expected)`);
    return this.takeHead(Math.min(left, this.headLeft()));
  }

  async *chunks(n: number): AsyncGenerator<Buffer> {
    for (let left = n; left > 0; ) {
      const c = await this.nextPiece(left);
      left -= c.length;
      yield c;
    }
  }

  async each(n: number, fn: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    for (let left = n; left > 0; ) {
      const c = await this.nextPiece(left);
      left -= c.length;
      const r = fn(c);
      if (r) await r;
    }
  }

  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (this.queued === 0) await this.fill(1);
      if (this.queued === 0) return false;
      left -= this.takeHead(Math.min(left, this.headLeft())).length;
    }
    return true;
  }
}

/** A ByteSource over an async iterable of chunks, with a queue (no quadratic concatenation). */
export class StreamByteSource extends QueuedSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private eof = false;

  constructor(src: AsyncIterable<Uint8Array>) {
    super();
    this.it = src[Symbol.asyncIterator]();
  }

  protected async fill(n: number): Promise<void> {
    while (this.queued < n && !this.eof) {
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        break;
      }
      const c = r.value;
      if (c.length === 0) continue;
      this.enqueue(Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    }
  }

  /** Stops reading early: releases the underlying iterator (closing files, decoders). */
  async close(): Promise<void> {
    this.clearQueue();
    if (!this.eof) {
      this.eof = true;
      await this.it.return?.();
    }
  }

  async drain(): Promise<void> {
    this.position += this.queued;
    this.clearQueue();
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

  async each(n: number, fn: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    for await (const c of this.chunks(n)) {
      const r = fn(c);
      if (r) await r;
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

/** Where the next bytes of a source are in a file, for sources that read one (see {@link FileStreamSource}). */
export interface FileBacked {
  /** The file, the file offset of the next byte, and how many bytes the source has left. */
  fileAt(): { path: Buffer; offset: number; left: number };
}

/**
 * A sequential ByteSource over a range of a file, read in positional reads. Skipping past
 * what is buffered costs nothing (no read), so member contents that a worker thread reads for
 * itself (see `HashPool.hashRange`) never pass through this thread.
 */
export class FileStreamSource extends QueuedSource implements FileBacked {
  /** File offset of the next byte to read into the queue. */
  private filePos: number;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: Buffer,
    private readonly start: number,
    private readonly end: number,
    // Small reads: members of 64 KiB and more are hashed where they lie (see HashPool.hashRange),
    // so a large read would mostly fetch bytes this thread skips, and hold more memory.
    private readonly readSize = 64 << 10,
  ) {
    super();
    this.filePos = start;
  }

  fileAt(): { path: Buffer; offset: number; left: number } {
    const offset = this.start + this.position;
    return { path: this.path, offset, left: this.end - offset };
  }

  protected async fill(n: number): Promise<void> {
    while (this.queued < n && this.filePos < this.end) {
      const want = Math.min(Math.max(this.readSize, n - this.queued), this.end - this.filePos);
      const b = Buffer.allocUnsafeSlow(want);
      let off = 0;
      // Synchronous positional reads: an asynchronous read would wait in libuv's thread pool
      // behind the members being hashed there, leaving this (the parsing) thread idle.
      while (off < want) {
        const bytesRead = readSync(this.fh.fd, b, off, want - off, this.filePos + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      if (off === 0) {
        this.filePos = this.end; // the file shrank: treat as end of input
        break;
      }
      this.filePos += off;
      this.enqueue(off === want ? b : b.subarray(0, off));
    }
  }

  override async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0 && this.queued > 0) left -= this.takeHead(Math.min(left, this.headLeft())).length;
    if (left === 0) return true;
    // Nothing buffered: move the read position instead of reading.
    const room = this.end - this.filePos;
    const k = Math.min(left, room);
    this.filePos += k;
    this.position += k;
    return k === left;
  }

  async drain(): Promise<void> {
    this.position += this.queued + (this.end - this.filePos);
    this.clearQueue();
    this.filePos = this.end;
  }

  /** Closes the file. */
  async close(): Promise<void> {
    this.clearQueue();
    await this.fh.close();
  }
}

/** The file behind a ByteSource, if it reads one sequentially. */
export function fileBacked(src: ByteSource): FileBacked | undefined {
  return src instanceof FileStreamSource ? src : undefined;
}
