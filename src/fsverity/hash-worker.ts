/**
 * Worker-thread side of the hashing pool: hashes one file per job, optionally copying it into
 * a temporary file as it goes (for the object store), so file data is read exactly once.
 */
import { parentPort } from 'node:worker_threads';
import { open } from 'node:fs/promises';
import { FsVerityHasher } from './fsverity.js';
import type { HashAlg } from '../tree/tree.js';

/** A job sent to a worker. */
export interface HashJob {
  id: number;
  path: Uint8Array;
  alg: HashAlg;
  /** Size seen when the file was listed; a different size read is an error. */
  size: string;
  /** When set, the content is also written to this (new) file. */
  copyTo?: string;
}

/** A worker's answer. */
export type HashResult =
  | { id: number; digest: Uint8Array }
  | { id: number; error: { message: string; code?: string } };

const READ_SIZE = 1 << 20;
const buf = Buffer.allocUnsafe(READ_SIZE);

async function hashJob(job: HashJob): Promise<Buffer> {
  const path = Buffer.from(job.path);
  const fh = await open(path, 'r');
  const out = job.copyTo ? await open(job.copyTo, 'wx', 0o644) : undefined;
  try {
    const hasher = new FsVerityHasher(job.alg);
    const size = BigInt(job.size);
    let total = 0n;
    // Never read past the size the file had when listed (plus one byte to notice growth): a file
    // appended to faster than we read must not keep us, or a copy in the repository, growing.
    for (;;) {
      const want = Number(BigInt(READ_SIZE) < size - total + 1n ? BigInt(READ_SIZE) : size - total + 1n);
      const { bytesRead } = await fh.read(buf, 0, want, null);
      if (bytesRead === 0) break;
      total += BigInt(bytesRead);
      if (total > size) break;
      const chunk = buf.subarray(0, bytesRead);
      hasher.update(chunk);
      if (out) await out.write(chunk);
    }
    if (total !== size) {
      const how = total > size ? 'grew' : 'shrank';
      throw Object.assign(new Error(`file changed while being hashed (it ${how}: ${job.size} bytes when listed)`), { code: 'ECHANGED' });
    }
    if (out) await out.sync();
    return hasher.digest();
  } finally {
    await fh.close();
    await out?.close();
  }
}

/** Serves jobs on the worker's message port. */
export function runHashWorker(): void {
  if (!parentPort) throw new Error('runHashWorker: not in a worker thread');
  const port = parentPort;
  port.on('message', (job: HashJob) => {
    hashJob(job).then(
      (digest) => port.postMessage({ id: job.id, digest } satisfies HashResult),
      (e: NodeJS.ErrnoException) => port.postMessage({ id: job.id, error: { message: e.message, code: e.code } } satisfies HashResult),
    );
  });
}

// When this module is itself the worker's entry point (unbundled builds), start serving.
if (parentPort && (globalThis as { __cfsBundled?: boolean }).__cfsBundled !== true) runHashWorker();
