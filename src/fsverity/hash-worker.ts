/**
 * Worker-thread side of the hashing pool. A message is a batch of jobs; the worker hashes them
 * one after another with *synchronous* I/O (blocking this thread is the point: no thread-pool
 * round trip per read) and answers with one message per batch. The pool keeps more than one
 * batch queued per worker, so a worker never waits for the main thread between batches.
 *
 * A file is read in 1 MiB pieces and hashed by FsVerityHasher (native when the addon is there),
 * optionally copied into a temporary file as it goes (for the object store), so file data is
 * read exactly once. Pure digests without a copy do not come here when the addon is there: they
 * run as native jobs on libuv's thread pool (src/cli/source.ts, HashPool.hashRange).
 *
 * This module is kept small: bundled builds embed it (with fsverity.ts) as a separate script
 * that starts in milliseconds instead of loading the whole CLI.
 */
import { parentPort, workerData } from 'node:worker_threads';
import fs from 'node:fs';
import { ALG_NUMBER, FsVerityHasher } from './fsverity.js';
import { useAddonFile } from '../native/addon.js';
import type { HashAlg } from '../tree/tree.js';

/** A job sent to a worker. */
export interface HashJob {
  id: number;
  path: Uint8Array;
  alg: HashAlg;
  /** Size seen when the file was listed; a different size read is an error. */
  size: number;
  /** When set, the content is also written to this (new) file. */
  copyTo?: string;
  /** When set, the content is the `size` bytes at this offset of the file (a member of a tar file). */
  offset?: number;
}

/**
 * A batch of jobs as one message: every path in one byte array (cloning one array is far
 * cheaper than cloning a small object per file), `ends[i]` = end of path i in it.
 */
export interface HashBatch {
  paths: Uint8Array;
  ends: Uint32Array;
  sizes: Float64Array;
  /** fs-verity algorithm number (1 = SHA-256, 2 = SHA-512) of each job. */
  algs: Uint8Array;
  /** Per job, or undefined when no job of the batch copies. */
  copyTo?: (string | undefined)[];
  /** Per job (-1: whole file), or undefined when no job of the batch is a range. */
  offsets?: Float64Array;
}

/**
 * A worker's answer to one batch, jobs in batch order: job i's digest is
 * `digests[64 * i .. 64 * i + digestLen[i])`; digestLen[i] = 0 means it failed (see errors).
 */
export interface HashBatchResult {
  digests: Uint8Array;
  digestLen: Uint8Array;
  errors: { index: number; message: string; code?: string; copy?: boolean }[];
}

/** Packs jobs into one batch message. */
export function packBatch(jobs: HashJob[]): HashBatch {
  let total = 0;
  for (const j of jobs) total += j.path.length;
  const paths = new Uint8Array(total);
  const ends = new Uint32Array(jobs.length);
  const sizes = new Float64Array(jobs.length);
  const algs = new Uint8Array(jobs.length);
  let copyTo: (string | undefined)[] | undefined;
  let offsets: Float64Array | undefined;
  let off = 0;
  jobs.forEach((j, i) => {
    paths.set(j.path, off);
    off += j.path.length;
    ends[i] = off;
    sizes[i] = j.size;
    algs[i] = ALG_NUMBER[j.alg];
    if (j.copyTo !== undefined) (copyTo ??= new Array<string | undefined>(jobs.length).fill(undefined))[i] = j.copyTo;
    if (j.offset !== undefined) (offsets ??= new Float64Array(jobs.length).fill(-1))[i] = j.offset;
  });
  const b: HashBatch = copyTo ? { paths, ends, sizes, algs, copyTo } : { paths, ends, sizes, algs };
  if (offsets) b.offsets = offsets;
  return b;
}

/**
 * A batch of in-memory content (files of a tar stream), as one message: `data` holds segments
 * back to back, segment i = data[segEnds[i-1] .. segEnds[i]) belongs to stream `segStream[i]`.
 * A stream's segments may span several messages (always to the same worker, in order); the
 * segment with bit 0 of `segFlags` set is its last. Bits 1-2 are the fs-verity algorithm number.
 */
export interface BufferBatch {
  kind: 'bufs';
  data: Uint8Array;
  segEnds: Uint32Array;
  segStream: Float64Array;
  segFlags: Uint8Array;
}

/** The answer to one BufferBatch: digests of the streams it finished (digest i = digests[64i ..+ lens[i])). */
export interface BufferBatchResult {
  kind: 'bufs';
  /** Bytes of the batch (for the pool's flow control). */
  bytes: number;
  ids: Float64Array;
  digests: Uint8Array;
  lens: Uint8Array;
  /** The batch's whole buffer, handed back for reuse. */
  data: Uint8Array;
}

/** Open content streams of this worker, by stream id. */
const streams = new Map<number, FsVerityHasher>();

function hashBufferBatch(b: BufferBatch): BufferBatchResult {
  const n = b.segEnds.length;
  const ids: number[] = [];
  const digests: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = b.segEnds[i];
    const id = b.segStream[i];
    const flags = b.segFlags[i];
    let h = streams.get(id);
    if (!h) {
      h = new FsVerityHasher(flags >> 1 === 1 ? 'sha256' : 'sha512');
      streams.set(id, h);
    }
    if (end > start) h.update(b.data.subarray(start, end));
    start = end;
    if (flags & 1) {
      streams.delete(id);
      ids.push(id);
      digests.push(h.digest());
    }
  }
  const out = new Uint8Array(64 * ids.length);
  const lens = new Uint8Array(ids.length);
  digests.forEach((d, i) => {
    out.set(d, 64 * i);
    lens[i] = d.length;
  });
  return { kind: 'bufs', bytes: b.data.length, ids: Float64Array.from(ids), digests: out, lens, data: new Uint8Array(b.data.buffer) };
}

/** What the pool passes as workerData. */
export interface HashWorkerData {
  cfsWorker: 'hash';
  /** The native addon file the parent loaded (undefined: pure JS). */
  addon?: string;
}

const READ_SIZE = 1 << 20;
let buf: Buffer | undefined;

function changed(size: number, total: number): Error {
  const how = total > size ? 'grew' : 'shrank';
  return Object.assign(new Error(`file changed while being hashed (it ${how}: ${size} bytes when listed)`), { code: 'ECHANGED' });
}

/** A range of a file (`size` bytes at `offset`): read with positional reads and hashed. */
function hashRange(job: HashJob, offset: number): Uint8Array {
  const { size } = job;
  buf ??= Buffer.allocUnsafe(READ_SIZE);
  const fd = fs.openSync(Buffer.from(job.path.buffer, job.path.byteOffset, job.path.byteLength), 'r');
  try {
    const hasher = new FsVerityHasher(job.alg);
    let total = 0;
    while (total < size) {
      const bytesRead = fs.readSync(fd, buf, 0, Math.min(READ_SIZE, size - total), offset + total);
      if (bytesRead === 0) break;
      hasher.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      total += bytesRead;
    }
    if (total !== size) throw changed(size, total);
    return hasher.digest();
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs a step of writing the copy, marking its errors as the copy's (not the source's). */
function inCopy<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof Error) (e as Error & { cfsCopy?: boolean }).cfsCopy = true;
    throw e;
  }
}

function hashJob(job: HashJob): Uint8Array {
  const { size } = job;
  if (job.offset !== undefined) return hashRange(job, job.offset);
  buf ??= Buffer.allocUnsafe(READ_SIZE);
  const fd = fs.openSync(Buffer.from(job.path.buffer, job.path.byteOffset, job.path.byteLength), 'r');
  let out: number | undefined;
  try {
    // The caller created copyTo (and removes it on an interrupt): never re-create it here.
    if (job.copyTo) out = inCopy(() => fs.openSync(job.copyTo!, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW));
    const hasher = new FsVerityHasher(job.alg);
    let total = 0;
    // Never read past the size the file had when listed (plus one byte to notice growth): a file
    // appended to faster than we read must not keep us, or a copy in the repository, growing.
    for (;;) {
      const want = Math.min(READ_SIZE, size - total + 1);
      const bytesRead = fs.readSync(fd, buf, 0, want, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > size) break;
      const chunk = buf.subarray(0, bytesRead);
      hasher.update(chunk);
      if (out !== undefined) {
        const fd = out;
        inCopy(() => {
          for (let off = 0; off < chunk.length; ) off += fs.writeSync(fd, chunk, off, chunk.length - off);
        });
      }
    }
    if (total !== size) throw changed(size, total);
    if (out !== undefined) {
      const fd = out;
      inCopy(() => fs.fsyncSync(fd));
    }
    return hasher.digest();
  } finally {
    fs.closeSync(fd);
    if (out !== undefined) fs.closeSync(out);
  }
}

/** Serves batches of jobs on the worker's message port. */
export function runHashWorker(): void {
  if (!parentPort) throw new Error('runHashWorker: not in a worker thread');
  const port = parentPort;
  useAddonFile((workerData as HashWorkerData | undefined)?.addon ?? null);
  port.on('message', (b: HashBatch | BufferBatch) => {
    if ('kind' in b) {
      const r = hashBufferBatch(b);
      port.postMessage(r, [r.ids.buffer, r.digests.buffer, r.lens.buffer, r.data.buffer] as ArrayBuffer[]);
      return;
    }
    const n = b.ends.length;
    const digests = new Uint8Array(64 * n);
    const digestLen = new Uint8Array(n);
    const errors: HashBatchResult['errors'] = [];
    let start = 0;
    for (let i = 0; i < n; i++) {
      const end = b.ends[i];
      const job: HashJob = { id: i, path: b.paths.subarray(start, end), alg: b.algs[i] === 1 ? 'sha256' : 'sha512', size: b.sizes[i], copyTo: b.copyTo?.[i] };
      const offset = b.offsets?.[i];
      if (offset !== undefined && offset >= 0) job.offset = offset;
      start = end;
      try {
        const digest = hashJob(job);
        digests.set(digest, 64 * i);
        digestLen[i] = digest.length;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // The addon words system errors like strerror ("No such file…"); Node like libuv ("no such file…").
        const message = err.syscall ? err.message.replace(/^([A-Z0-9_]+: )([A-Z])(?=[a-z])/, (_, c: string, l: string) => c + l.toLowerCase()) : err.message;
        errors.push({ index: i, message, code: err.code, copy: (err as { cfsCopy?: boolean }).cfsCopy });
      }
    }
    const result: HashBatchResult = { digests, digestLen, errors };
    port.postMessage(result, [digests.buffer, digestLen.buffer]);
  });
}

// When this module is itself the worker's entry point (unbundled builds, or the embedded worker
// script of bundled ones), start serving.
// The bundle flag is tested first: the CLI bundle (which includes this module) then never touches
// node:worker_threads, which it loads only when a pool starts.
if ((globalThis as { __cfsBundled?: boolean }).__cfsBundled !== true && parentPort && (workerData as HashWorkerData | undefined)?.cfsWorker === 'hash') {
  runHashWorker();
}
