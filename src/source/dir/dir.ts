/**
 * The directory source: a directory scanned into a raw tree (scan.ts), its files hashed — and
 * stored, with a repository — as they are met. Prints nothing: progress goes to
 * `opts.onProgress`.
 */
import { readFile, stat } from 'node:fs/promises';
import { fsverityDigestFile, nativeHash } from '../../fsverity/fsverity.js';
import { HashError, HashPool } from '../../fsverity/pool.js';
import { scanDirectory, type ScanCounters } from './scan.js';
import type { FileSystem } from '../../tree/tree.js';
import type { ContentReader } from '../../transform/boot.js';
import { UsageError } from '../../errors.js';
import type { LoadedSource, LoadProgress, SourceOptions } from '../load.js';

/**
 * Largest file hashed by the thread that reads its directory (with the directory's other
 * entries, one after another). Larger files are separate jobs, so that one directory of big
 * files is spread over every thread.
 */
const INLINE_HASH_MAX = 256 << 10;

/** How often the progress callback hears from a running scan. */
const PROGRESS_MS = 200;

/** Loads the directory `dir` as it is, before any finishing rule. */
export async function loadDir(dir: string, opts: SourceOptions): Promise<LoadedSource> {
  const fs = await scanDir(dir, opts);
  // File contents are only ever read back for the SELinux policy, from the directory itself.
  const base = Buffer.from(dir);
  const read: ContentReader = (p) => readFile(Buffer.concat([base, p]));
  return { fs, objectHash: opts.hash, kind: 'dir', description: `directory ${dir}`, read, dirPath: dir };
}

async function scanDir(dir: string, opts: SourceOptions): Promise<FileSystem> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    throw new UsageError(`source '${dir}': ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
  }
  if (!st.isDirectory()) throw new UsageError(`source '${dir}' is not a directory`);
  const objects = fileObjects(opts);
  const counters: ScanCounters = { entries: 0, hashedFiles: 0, hashedBytes: 0 };
  const onProgress = opts.onProgress;
  const report = (done: boolean): void =>
    onProgress?.({
      stage: 'scan',
      path: dir,
      entries: counters.entries,
      filesHashed: objects.filesDone + counters.hashedFiles,
      bytesHashed: objects.bytesDone + BigInt(counters.hashedBytes),
      done,
    } satisfies LoadProgress);
  const timer = onProgress ? setInterval(() => report(false), PROGRESS_MS).unref() : undefined;
  try {
    return await scanDirectory(dir, {
      hashFile: (p, size) => objects.hashFile(p, size),
      hashConcurrency: objects.fileConcurrency,
      inlineHash: objects.inlineMax > 0 ? { alg: opts.hash, maxSize: objects.inlineMax } : undefined,
      dirConcurrency: Math.max(2, opts.jobs),
      counters,
    });
  } finally {
    clearInterval(timer);
    report(true);
    await objects.close();
  }
}

/** How the files of a directory become objects (the part of the object service a scan uses). */
interface FileObjects {
  /** Largest file hashed by the thread that reads its directory (0: none). */
  readonly inlineMax: number;
  /** How many {@link hashFile} calls are worth keeping in flight. */
  readonly fileConcurrency: number;
  /** Files and bytes done by {@link hashFile}. */
  readonly filesDone: number;
  readonly bytesDone: bigint;
  hashFile(path: Buffer, size: bigint): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Without --repo, hashing is native and runs on libuv's thread pool next to the directory
 * reads: no worker threads to start, no message per file. With --repo (files are copied as
 * they are hashed) or without native hashing, the worker pool does it.
 */
function fileObjects(opts: SourceOptions): FileObjects {
  const repo = opts.repo;
  const direct = !repo && nativeHash() !== null;
  let pool: HashPool | undefined;
  let files = 0;
  let bytes = 0n;
  return {
    inlineMax: direct ? INLINE_HASH_MAX : 0,
    // direct: enough large files queued to keep every libuv thread busy, few enough that
    // directory reads are not stuck behind them
    fileConcurrency: direct ? 2 * Math.max(2, opts.jobs) : Math.max(1024, opts.jobs * 256),
    get filesDone() {
      return files + (pool?.filesDone ?? 0);
    },
    get bytesDone() {
      return bytes + (pool?.bytesDone ?? 0n);
    },
    async hashFile(p, size) {
      if (direct) {
        const id = await fsverityDigestFile(p, opts.hash, size);
        files++;
        bytes += size;
        return id;
      }
      pool ??= new HashPool(opts.jobs);
      if (!repo) return pool.hash(p, size, opts.hash);
      const tmp = await repo.createTemp();
      let id: Buffer;
      try {
        id = await pool.hash(p, size, opts.hash, tmp);
      } catch (e) {
        await repo.discardTemp(tmp);
        // A failed copy is the repository's problem, not the source file's.
        throw e instanceof HashError && e.inCopy ? repo.error(Object.assign(new Error(e.reason), { code: e.code, syscall: 'write' }), tmp) : e;
      }
      await repo.commitTemp(tmp, id, size);
      return id;
    },
    async close() {
      await pool?.close();
    },
  };
}
