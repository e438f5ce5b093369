/**
 * A pool of worker threads that compute fs-verity digests of files in parallel (one per core by
 * default). Hashing is the hot path of the whole tool; metadata scanning continues on the main
 * thread while the workers read and hash.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { HashAlg } from '../tree/tree.js';
import type { HashJob, HashResult } from './hash-worker.js';

let workerEntry: string | URL = new URL('./hash-worker.js', import.meta.url);
let workerData: unknown = undefined;

/**
 * Sets the script workers run. The bundled CLI points this at itself (it dispatches on
 * `workerData`), since a single-file bundle has no separate worker file.
 */
export function setWorkerEntry(entry: string | URL, data?: unknown): void {
  workerEntry = entry;
  workerData = data;
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

interface Pending {
  resolve: (d: Buffer) => void;
  reject: (e: Error) => void;
  path: Buffer;
}

/** The pool. Call {@link HashPool.close} when done, or the process will not exit. */
export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: HashJob[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: Error | undefined;
  /** Bytes hashed so far (for progress). */
  bytesDone = 0n;
  filesDone = 0;

  constructor(readonly jobs = availableParallelism()) {
    for (let i = 0; i < Math.max(1, jobs); i++) {
      const w = new Worker(typeof workerEntry === 'string' ? workerEntry : fileURLToPath(workerEntry), { workerData });
      w.on('message', (r: HashResult) => this.onResult(w, r));
      w.on('error', (e) => this.fail(e));
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private onResult(w: Worker, r: HashResult): void {
    const p = this.pending.get(r.id);
    this.pending.delete(r.id);
    const next = this.queue.shift();
    if (next) w.postMessage(next);
    else this.idle.push(w);
    if (!p) return;
    if ('error' in r) p.reject(new HashError(p.path, r.error.message, r.error.code));
    else {
      this.filesDone++;
      p.resolve(Buffer.from(r.digest));
    }
  }

  /** fs-verity digest of the file at `path`, which must have `size` bytes; with `copyTo`, also copies it there. */
  hash(path: Buffer, size: bigint, alg: HashAlg, copyTo?: string): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const job: HashJob = { id, path, alg, size: size.toString(), copyTo };
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (d) => {
          this.bytesDone += size;
          resolve(d);
        },
        reject,
        path,
      });
      const w = this.idle.pop();
      if (w) w.postMessage(job);
      else this.queue.push(job);
    });
  }

  /** Stops the workers. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
