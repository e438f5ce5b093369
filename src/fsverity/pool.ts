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
import { packBatch, type HashBatchResult, type HashJob, type HashWorkerData } from './hash-worker.js';
import { nativeHashAddonFile } from './fsverity.js';

declare const __CFS_HASH_WORKER_CODE__: string | undefined;
/** The worker script, embedded by the bundler (undefined in unbundled builds). */
const embeddedWorker: string | undefined = typeof __CFS_HASH_WORKER_CODE__ === 'string' ? __CFS_HASH_WORKER_CODE__ : undefined;

let workerEntry: string | URL = new URL('./hash-worker.js', import.meta.url);
let workerData: Record<string, unknown> | undefined = undefined;

/**
 * Sets the script workers run (when no worker script is embedded). The bundled CLI points this
 * at itself (it dispatches on `workerData`).
 */
export function setWorkerEntry(entry: string | URL, data?: unknown): void {
  workerEntry = entry;
  workerData = data as Record<string, unknown> | undefined;
}

/** An error from hashing one file, naming it. */
export class HashError extends Error {
  constructor(
    readonly path: Buffer,
    message: string,
    readonly code?: string,
  ) {
    super(`${path.toString('latin1')}: ${message}`);
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

interface Slot {
  worker: Worker;
  inflight: number;
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

  constructor(readonly jobs = availableParallelism()) {
    const data: HashWorkerData = { ...workerData, cfsWorker: 'hash', addon: nativeHashAddonFile() };
    for (let i = 0; i < Math.max(1, jobs); i++) {
      const w = embeddedWorker
        ? new Worker(embeddedWorker, { eval: true, workerData: data })
        : new Worker(typeof workerEntry === 'string' ? workerEntry : fileURLToPath(workerEntry), { workerData: data });
      const slot: Slot = { worker: w, inflight: 0, batches: [] };
      w.on('message', (r: HashBatchResult) => this.onResults(slot, r));
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
  }

  private onResults(slot: Slot, r: HashBatchResult): void {
    slot.inflight--;
    if (slot.inflight === 0) slot.worker.unref();
    const batch = slot.batches.shift();
    this.pump();
    if (!batch) return; // failed meanwhile: already rejected
    const errors = new Map<number, { message: string; code?: string }>();
    for (const e of r.errors) errors.set(e.index, e);
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i];
      const len = r.digestLen[i];
      if (len === 0) {
        const err = errors.get(i) ?? { message: 'hash worker returned no result' };
        p.reject(new HashError(p.path, err.message, err.code));
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
      if (best.inflight === 0) best.worker.ref();
      best.inflight++;
      best.batches.push(batch);
      const msg = packBatch(jobs);
      best.worker.postMessage(msg, [msg.paths.buffer, msg.ends.buffer, msg.sizes.buffer, msg.algs.buffer] as ArrayBuffer[]);
    }
  }

  /** fs-verity digest of the file at `path`, which must have `size` bytes; with `copyTo`, also copies it there. */
  hash(path: Buffer, size: bigint, alg: HashAlg, copyTo?: string): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('HashPool: closed'));
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

  /** Stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
