/**
 * A pool of worker threads that compute fs-verity digests of files in parallel (one per core by
 * default). Hashing is the hot path of the whole tool; metadata scanning continues on the main
 * thread while the workers read and hash.
 *
 * Jobs go to workers in batches (up to BATCH_FILES files or BATCH_BYTES bytes), and every worker
 * has up to MAX_INFLIGHT batches queued, so it goes straight from one batch to the next while
 * the main thread is busy walking the tree. Workers run a small dedicated script: in bundled
 * builds its code is embedded as a string (`__CFS_HASH_WORKER_CODE__`, see scripts/bundle.mjs)
 * and started with `eval`, so a worker does not load the whole CLI.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { HashAlg } from '../tree/tree.js';
import { packBatch, type BufferBatch, type BufferBatchResult, type HashBatchResult, type HashJob, type HashWorkerData } from './hash-worker.js';
import { ALG_NUMBER } from './fsverity.js';
import { nativeHash } from './fsverity.js';
import { loadedAddonFile } from '../native/addon.js';
import { InputError } from '../errors.js';

declare const __CFS_HASH_WORKER_CODE__: string | undefined;
/** The worker script, embedded by the bundler (undefined in unbundled builds). */
const embeddedWorker: string | undefined = typeof __CFS_HASH_WORKER_CODE__ === 'string' ? __CFS_HASH_WORKER_CODE__ : undefined;

/** The worker script of unbundled builds. */
const workerEntry = new URL('./hash-worker.js', import.meta.url);

/** An error from hashing one file, naming it. */
export class HashError extends InputError {
  constructor(
    readonly path: Buffer,
    /** The error without the path. */
    readonly reason: string,
    readonly code?: string,
    /** The error was writing the copy (`copyTo`), not reading `path`. */
    readonly inCopy = false,
  ) {
    super(`${path.toString('latin1')}: ${reason}`);
  }
}

/** Files per batch message. */
const BATCH_FILES = 64;
/** Bytes per batch message (a larger single file is a batch of its own). */
const BATCH_BYTES = 4 << 20;
/** Batches queued per worker. */
const MAX_INFLIGHT = 3;

interface Pending {
  job: HashJob;
  resolve: (d: Buffer) => void;
  reject: (e: Error) => void;
  path: Buffer;
  size: bigint;
}

/** Bytes per in-memory content batch (see {@link HashPool.stream}). */
const BUF_BATCH = 1 << 20;
/** Default limit of in-memory content sent to workers and not hashed yet. */
const BUF_MAX_INFLIGHT = 32 << 20;

/** A content batch being filled for one worker. */
interface OpenBufBatch {
  data: Uint8Array;
  used: number;
  ends: number[];
  ids: number[];
  flags: number[];
}

/** In-memory content hashed by a worker: feed with write(), finish with end(). */
export interface ContentStream {
  /** Copies `data` into the batch being filled (the caller may reuse its buffer at once). */
  write(data: Uint8Array): void;
  /** No more data: `done` receives the fs-verity digest once a worker has computed it. */
  end(done: (digest: Buffer) => void): void;
}

interface Slot {
  worker: Worker;
  inflight: number;
  /** Content batches sent and not answered. */
  bufInflight: number;
  /** Content bytes sent and not answered. */
  bufBytes: number;
  /** The content batch being filled, if any. */
  open: OpenBufBatch | undefined;
  /** Batches sent and not answered yet, oldest first (a worker answers in order). */
  batches: Pending[][];
}

/** The pool. Call {@link HashPool.close} when done, or the process will not exit. */
export class HashPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private queueHead = 0;
  private nextId = 1;
  private failure: Error | undefined;
  private pumpScheduled = false;
  private closed = false;
  /** Bytes hashed so far (for progress). */
  bytesDone = 0n;
  filesDone = 0;

  constructor(readonly jobs = availableParallelism()) {}

  /** Starts the workers on first use: a pool that native hashing leaves idle costs nothing. */
  private start(): void {
    if (this.slots.length > 0) return;
    const data: HashWorkerData = { cfsWorker: 'hash', addon: nativeHash() ? loadedAddonFile() : undefined };
    for (let i = 0; i < Math.max(1, this.jobs); i++) {
      const w = embeddedWorker
        ? new Worker(embeddedWorker, { eval: true, workerData: data })
        : new Worker(fileURLToPath(workerEntry), { workerData: data });
      const slot: Slot = { worker: w, inflight: 0, batches: [], bufInflight: 0, bufBytes: 0, open: undefined };
      w.on('message', (r: HashBatchResult | BufferBatchResult) => ('kind' in r ? this.onBufResults(slot, r) : this.onResults(slot, r)));
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => {
        if (!this.closed) this.fail(new Error(`hash worker exited unexpectedly (code ${code})`));
      });
      // Idle workers must not keep the process alive: they are referenced only while working.
      w.unref();
      this.slots.push(slot);
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const s of this.slots) {
      for (const b of s.batches) for (const p of b) p.reject(e);
      s.batches = [];
    }
    for (let i = this.queueHead; i < this.queue.length; i++) this.queue[i].reject(e);
    this.queue.length = 0;
    this.queueHead = 0;
    this.streamDone.clear();
    this.wakeWaiters();
  }

  // -------------------------------------------------------------------------------------------
  // In-memory content (tar members): batches of segments, a stream always on the same worker.

  private nextStream = 1;
  /** Completion callbacks of streams ended and not answered yet. */
  private readonly streamDone = new Map<number, (digest: Buffer) => void>();
  private bufBytesTotal = 0;
  private waiters: (() => void)[] = [];
  /** Batch buffers handed back by workers (reused: fresh ones cost page faults and GC pressure). */
  private freeBufs: Uint8Array[] = [];
  private flushWaiters: (() => void)[] = [];
  /** Limit of content bytes in flight (sent to workers or waiting in batches). */
  bufLimit = BUF_MAX_INFLIGHT;

  private wakeWaiters(all = true): void {
    const w = this.waiters;
    const f = this.flushWaiters;
    this.flushWaiters = [];
    if (all || this.bufBytesTotal < this.bufLimit) {
      this.waiters = [];
      for (const x of w) x();
    }
    for (const x of f) x();
  }

  private sendBufBatch(slot: Slot): void {
    const b = slot.open;
    if (!b || b.ends.length === 0) return;
    slot.open = undefined;
    const msg: BufferBatch = {
      kind: 'bufs',
      data: b.used === b.data.length ? b.data : b.data.subarray(0, b.used),
      segEnds: Uint32Array.from(b.ends),
      segStream: Float64Array.from(b.ids),
      segFlags: Uint8Array.from(b.flags),
    };
    if (slot.inflight + slot.bufInflight === 0) slot.worker.ref();
    slot.bufInflight++;
    slot.worker.postMessage(msg, [msg.data.buffer, msg.segEnds.buffer, msg.segStream.buffer, msg.segFlags.buffer] as ArrayBuffer[]);
  }

  private onBufResults(slot: Slot, r: BufferBatchResult): void {
    slot.bufInflight--;
    slot.bufBytes -= r.bytes;
    if (r.data.length === BUF_BATCH && this.freeBufs.length < 64) this.freeBufs.push(r.data);
    this.bufBytesTotal -= r.bytes;
    // A worker with nothing left to do takes the batch being filled for it, unless it is small
    // and the main thread is not waiting (small messages cost more than they save).
    if (slot.bufInflight === 0 && slot.open && (slot.open.used >= BUF_BATCH / 8 || this.waiters.length > 0)) this.sendBufBatch(slot);
    if (slot.inflight + slot.bufInflight === 0) slot.worker.unref();
    for (let i = 0; i < r.ids.length; i++) {
      const done = this.streamDone.get(r.ids[i]);
      if (!done) continue;
      this.streamDone.delete(r.ids[i]);
      this.filesDone++;
      done(Buffer.from(r.digests.buffer, r.digests.byteOffset + 64 * i, r.lens[i]));
    }
    this.wakeWaiters(false);
  }

  /** Appends one segment of stream `id` to the slot's open batch (splitting over batches). */
  private addSegment(slot: Slot, id: number, flags: number, data: Uint8Array): void {
    let off = 0;
    do {
      let b = slot.open;
      if (!b) b = slot.open = { data: this.freeBufs.pop() ?? Buffer.allocUnsafeSlow(BUF_BATCH), used: 0, ends: [], ids: [], flags: [] };
      const k = Math.min(data.length - off, b.data.length - b.used);
      if (k > 0) b.data.set(off === 0 && k === data.length ? data : data.subarray(off, off + k), b.used);
      b.used += k;
      off += k;
      const last = off === data.length;
      b.ends.push(b.used);
      b.ids.push(id);
      b.flags.push(last ? flags : flags & ~1);
      slot.bufBytes += k;
      this.bufBytesTotal += k;
      this.bytesDone += BigInt(k);
      if (b.used === b.data.length) this.sendBufBatch(slot);
    } while (off < data.length);
  }

  /**
   * A stream of in-memory content whose fs-verity digest a worker computes. Content is copied
   * into per-worker batches; call {@link room} to bound memory and {@link flush} before waiting
   * for digests.
   */
  stream(alg: HashAlg): ContentStream {
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error('HashPool: closed');
    this.start();
    const id = this.nextStream++;
    let slot = this.slots[0];
    for (const s of this.slots) if (s.bufBytes + (s.open?.used ?? 0) < slot.bufBytes + (slot.open?.used ?? 0)) slot = s;
    const a = ALG_NUMBER[alg] << 1;
    let ended = false;
    return {
      write: (data) => {
        if (ended) throw new Error('ContentStream: write after end');
        if (data.length > 0) this.addSegment(slot, id, a, data);
      },
      end: (done) => {
        if (ended) throw new Error('ContentStream: end twice');
        ended = true;
        if (this.failure) throw this.failure;
        this.streamDone.set(id, done);
        this.addSegment(slot, id, a | 1, new Uint8Array(0));
      },
    };
  }

  /** undefined when there is room for more content, else a promise resolved when there is. */
  room(): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    if (this.bufBytesTotal < this.bufLimit) return undefined;
    // An idle worker's open batch must go out, or nothing may ever free room.
    for (const s of this.slots) if (s.bufInflight === 0) this.sendBufBatch(s);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push(() => (this.failure ? reject(this.failure) : resolve()));
    });
  }

  /** Sends all open batches and waits until every ended stream's callback has run. */
  async flush(): Promise<void> {
    for (const s of this.slots) this.sendBufBatch(s);
    while (this.streamDone.size > 0 || this.bufBytesTotal > 0) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => this.flushWaiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  private onResults(slot: Slot, r: HashBatchResult): void {
    slot.inflight--;
    if (slot.inflight + slot.bufInflight === 0) slot.worker.unref();
    const batch = slot.batches.shift();
    this.pump();
    if (!batch) return; // failed meanwhile: already rejected
    const errors = new Map<number, { message: string; code?: string; copy?: boolean }>();
    for (const e of r.errors) errors.set(e.index, e);
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i];
      const len = r.digestLen[i];
      if (len === 0) {
        const err = errors.get(i) ?? { message: 'hash worker returned no result' };
        p.reject(new HashError(p.path, err.message, err.code, err.copy === true));
      } else {
        this.filesDone++;
        this.bytesDone += p.size;
        p.resolve(Buffer.from(r.digests.buffer, r.digests.byteOffset + 64 * i, len));
      }
    }
  }

  /**
   * Sends queued jobs to workers with room, in batches. Few queued jobs are split evenly over
   * the workers with room, so that every core gets work even when the caller keeps only a few
   * dozen files outstanding.
   */
  private pump(): void {
    this.pumpScheduled = false;
    while (this.queueHead < this.queue.length) {
      let best: Slot | undefined;
      let withRoom = 0;
      for (const s of this.slots) {
        if (s.inflight >= MAX_INFLIGHT) continue;
        withRoom++;
        if (!best || s.inflight < best.inflight) best = s;
      }
      if (!best) break;
      const waiting = this.queue.length - this.queueHead;
      const maxFiles = Math.min(BATCH_FILES, Math.ceil(waiting / withRoom));
      const batch: Pending[] = [];
      const jobs: HashJob[] = [];
      let bytes = 0;
      while (this.queueHead < this.queue.length && batch.length < maxFiles && (batch.length === 0 || bytes < BATCH_BYTES)) {
        const p = this.queue[this.queueHead];
        this.queue[this.queueHead++] = undefined as unknown as Pending;
        batch.push(p);
        jobs.push(p.job);
        bytes += p.job.size;
      }
      if (this.queueHead === this.queue.length) {
        this.queue.length = 0;
        this.queueHead = 0;
      }
      if (best.inflight + best.bufInflight === 0) best.worker.ref();
      best.inflight++;
      best.batches.push(batch);
      const msg = packBatch(jobs);
      best.worker.postMessage(msg, [msg.paths.buffer, msg.ends.buffer, msg.sizes.buffer, msg.algs.buffer] as ArrayBuffer[]);
    }
  }

  /**
   * fs-verity digest of the file at `path`, which must have `size` bytes; with `copyTo` (an
   * existing empty file: it is not created), also copies it there.
   */
  hash(path: Buffer, size: bigint, alg: HashAlg, copyTo?: string): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('HashPool: closed'));
    this.start();
    const id = this.nextId++;
    // Batches copy the path bytes into one array of their own.
    const job: HashJob = { id, path, alg, size: Number(size), copyTo };
    return new Promise<Buffer>((resolve, reject) => {
      this.queue.push({ job, resolve, reject, path, size });
      // Jobs arriving in the same tick go out together.
      if (!this.pumpScheduled) {
        this.pumpScheduled = true;
        queueMicrotask(() => this.pump());
      }
    });
  }

  /**
   * fs-verity digest of `size` bytes at `offset` in the file at `path` (e.g. a member of an
   * uncompressed tar file), read by a worker.
   */
  hashRange(path: Buffer, offset: number, size: bigint, alg: HashAlg): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('HashPool: closed'));
    const nat = nativeHash();
    if (nat) {
      // Read (pread) and hashed in C on libuv's thread pool: no worker, no message. Queued
      // there at once: libuv's threads take jobs without this thread's event loop turning.
      return nat.verityFileAsync(path, ALG_NUMBER[alg], Number(size), offset).then((r) => {
        if (typeof r === 'number') throw new HashError(path, `file changed while being hashed (${r} of ${size} bytes at offset ${offset})`, 'ECHANGED');
        this.filesDone++;
        this.bytesDone += size;
        return r;
      });
    }
    this.start();
    const job: HashJob = { id: this.nextId++, path, alg, size: Number(size), offset };
    return new Promise<Buffer>((resolve, reject) => {
      this.queue.push({ job, resolve, reject, path, size });
      if (!this.pumpScheduled) {
        this.pumpScheduled = true;
        queueMicrotask(() => this.pump());
      }
    });
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    // Terminate without waiting for the exits: an idle worker is unreferenced, and awaiting its
    // termination would leave nothing to keep the event loop alive.
    for (const s of this.slots) {
      s.worker.unref();
      void s.worker.terminate().catch(() => {});
    }
  }
}
