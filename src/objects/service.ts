/**
 * The object service: the one place that decides how file contents become object ids (their
 * fs-verity digests), and whether they are also stored in a repository. Sources hand it content
 * (a file by path, or a stream of bytes such as a tar member) and get the id back; they never
 * hash or store by themselves.
 *
 * Two implementations, made by {@link objectService}:
 * - hash only: files by path are hashed natively on libuv's threads (no workers, no message per
 *   file) or, without the native addon, by the worker {@link HashPool}; streamed contents are
 *   hashed in one native call when small, else handed to the workers (ranges of a plain tar file
 *   are read by the worker itself) while the caller goes on parsing;
 * - storing (`--repo`): every content is hashed and copied into the {@link Repository} as it is
 *   read (files by path: by the workers, which copy as they hash).
 */
import { availableParallelism } from 'node:os';
import { FsVerityHasher, fsverityDigest, fsverityDigestFile, nativeHash } from '../fsverity/fsverity.js';
import { HashError, HashPool } from '../fsverity/pool.js';
import type { Repository } from '../repo/repo.js';
import { InputError } from '../errors.js';
import { DIGEST_SIZE, type HashAlg } from '../tree/tree.js';

/**
 * Streamed content as the service reads it (what a source/bytes.ts `ByteSource` offers): exactly
 * `n` bytes, or fewer at the end of input; `each` and `chunks` throw when the input ends first.
 */
export interface ContentSource {
  read(n: number): Promise<Buffer>;
  chunks(n: number): AsyncIterable<Uint8Array>;
  each(n: number, fn: (chunk: Buffer) => void | Promise<void>): Promise<void>;
}

/** Where the next bytes of a content source lie in a file (a plain tar read in place). */
export interface FileRange {
  path: Buffer;
  offset: number;
  /** Bytes of the file left to the source from `offset`. */
  left: number;
}

/** One streamed content to turn into an object. */
export interface ContentOptions {
  /** Keep (and return) at most this many leading bytes of the content (0: none). */
  keep?: number;
  /**
   * When the content is a range of a file that a worker may read for itself (the caller then
   * skips it instead of reading it).
   */
  file?: FileRange;
  /**
   * The calling thread also feeds a decompressor (gzip is inflated by one thread of its own):
   * fewer contents are worth handing to a worker then.
   */
  inflating?: boolean;
  /** Maps an error of hashing off-thread (reported by {@link ObjectService.settle}) to the caller's. */
  failure?: (e: Error) => Error;
}

export interface ContentResult {
  /** The id; when hashed off-thread, a buffer filled in before {@link ObjectService.settle} returns. */
  id: Buffer;
  /** The kept leading bytes (see {@link ContentOptions.keep}). */
  kept?: Buffer;
  /** Whether the content was read from the source (false: a worker reads the file range). */
  consumed: boolean;
}

export interface ObjectService {
  readonly alg: HashAlg;
  /** Contents are stored in a repository as well as hashed. */
  readonly stores: boolean;
  /**
   * Largest file a directory scanner may hash natively on the thread that reads its directory
   * (0: none; then every file goes through {@link hashFile}).
   */
  readonly inlineMax: number;
  /** How many {@link hashFile} calls are worth keeping in flight at once. */
  readonly fileConcurrency: number;
  /** Files and bytes hashed so far through {@link hashFile} and ranges (for progress). */
  readonly filesDone: number;
  readonly bytesDone: bigint;
  /** The id of the file at `path`, which has `size` bytes (an error if it changes meanwhile). */
  hashFile(path: Buffer, size: bigint): Promise<Buffer>;
  /** The id of `size` bytes of streamed content read from `src` (see {@link ContentOptions}). */
  hashContent(src: ContentSource, size: bigint, opts?: ContentOptions): Promise<ContentResult>;
  /** Waits until every id handed out by {@link hashContent} is filled in. */
  settle(): Promise<void>;
  /** Stops the workers (after {@link settle}, or to abandon the work). */
  close(): Promise<void>;
}

export interface ObjectServiceOptions {
  alg: HashAlg;
  /** Store every content here too. */
  repo?: Repository;
  /** Worker threads, when workers are used (default: one per core). */
  jobs?: number;
}

/** The object service for `opts`: hash only, or hash and store in `opts.repo`. */
export function objectService(opts: ObjectServiceOptions): ObjectService {
  return opts.repo ? new StoringObjects(opts.alg, opts.repo, opts.jobs) : new HashOnlyObjects(opts.alg, opts.jobs);
}

/**
 * Largest file hashed by the thread that reads its directory (with the directory's other
 * entries, one after another). Larger files are separate jobs, so that one directory of big
 * files is spread over every thread.
 */
const INLINE_HASH_MAX = 256 << 10;

/** Contents at least this large of a tar *file* are read and hashed by a worker on its own. */
const RANGE_MIN = 64 << 10;

/** Bounded bookkeeping: at most a few thousand ids waiting for their workers. */
const PENDING_MAX = 4096;

/** Collects the kept bytes of one content, up to its limit. */
class Keeper {
  private parts: Buffer[] = [];
  constructor(private left: number) {}
  push(c: Uint8Array): void {
    if (this.left <= 0) return;
    const take = c.length <= this.left ? c : c.subarray(0, this.left);
    this.parts.push(Buffer.from(take));
    this.left -= take.length;
  }
  get data(): Buffer {
    return Buffer.concat(this.parts);
  }
}

abstract class Objects implements ObjectService {
  protected pool: HashPool | undefined;
  protected directFiles = 0;
  protected directBytes = 0n;

  constructor(
    readonly alg: HashAlg,
    protected readonly jobs: number | undefined,
  ) {}

  abstract readonly stores: boolean;
  abstract readonly inlineMax: number;
  abstract readonly fileConcurrency: number;
  abstract hashFile(path: Buffer, size: bigint): Promise<Buffer>;
  abstract hashContent(src: ContentSource, size: bigint, opts?: ContentOptions): Promise<ContentResult>;

  protected threads(): number {
    return this.jobs ?? availableParallelism();
  }

  protected workers(): HashPool {
    this.pool ??= new HashPool(this.jobs);
    return this.pool;
  }

  get filesDone(): number {
    return this.directFiles + (this.pool?.filesDone ?? 0);
  }

  get bytesDone(): bigint {
    return this.directBytes + (this.pool?.bytesDone ?? 0n);
  }

  async settle(): Promise<void> {}

  async close(): Promise<void> {
    await this.pool?.close();
  }

  /** Hashes (and, given `out`, stores) content on this thread. */
  protected async hashHere(src: ContentSource, size: bigint, keep: number, out?: Awaited<ReturnType<Repository['objectWriter']>>): Promise<ContentResult> {
    const h = new FsVerityHasher(this.alg);
    const kept = keep > 0 ? new Keeper(keep) : undefined;
    try {
      for await (const c of src.chunks(Number(size))) {
        h.update(c);
        if (out) await out.write(c);
        kept?.push(c);
      }
    } catch (e) {
      await out?.abort();
      throw e;
    }
    const id = h.digest();
    await out?.commit(id);
    return { id, kept: kept?.data, consumed: true };
  }
}

class HashOnlyObjects extends Objects {
  readonly stores = false;
  /** Without the native addon, files go to the workers (which use the JS hasher). */
  private readonly direct = nativeHash() !== null;
  private pending: Promise<void>[] = [];

  get inlineMax(): number {
    return this.direct ? INLINE_HASH_MAX : 0;
  }

  get fileConcurrency(): number {
    const jobs = this.threads();
    // direct: enough large files queued to keep every libuv thread busy, few enough that
    // directory reads are not stuck behind them
    return this.direct ? 2 * Math.max(2, jobs) : Math.max(1024, jobs * 256);
  }

  async hashFile(path: Buffer, size: bigint): Promise<Buffer> {
    if (this.direct) {
      // Native, on libuv's thread pool next to the directory reads: no worker threads to
      // start, no message per file.
      const id = await fsverityDigestFile(path, this.alg, size);
      this.directFiles++;
      this.directBytes += size;
      return id;
    }
    return this.workers().hash(path, size, this.alg);
  }

  async hashContent(src: ContentSource, size: bigint, opts: ContentOptions = {}): Promise<ContentResult> {
    const keep = opts.keep ?? 0;
    const at = opts.file;
    if (at && keep === 0 && size >= RANGE_MIN && size <= BigInt(at.left)) {
      // A worker (or libuv's threads) reads the range from the file and hashes it; the caller
      // skips it.
      const p = this.workers().hashRange(at.path, at.offset, size, this.alg);
      return { id: await this.later(p, opts.failure), consumed: false };
    }
    // While gzip is inflated, with fewer than 2 hashing workers the cores are busy already, and
    // handing contents over costs more than it saves.
    const offThreadMin = !opts.inflating ? RANGE_MIN : this.threads() >= 2 ? 1 << 20 : Infinity;
    if (!at && Number(size) >= offThreadMin) {
      // A worker hashes the content while the caller goes on parsing: the digest is filled into
      // `id` (in place) before settle() returns.
      const pool = this.workers();
      const st = pool.stream(this.alg);
      const kept = keep > 0 ? new Keeper(keep) : undefined;
      await src.each(Number(size), (c) => {
        st.write(c);
        kept?.push(c);
        return pool.room();
      });
      const id = newId(this.alg);
      st.end((d) => id.set(d));
      return { id, kept: kept?.data, consumed: true };
    }
    if (size < BigInt(RANGE_MIN)) {
      // Small content: one read (usually a view of what is buffered) and one native call.
      const n = Number(size);
      const data = await src.read(n);
      if (data.length < n) throw new ShortContentError();
      return { id: fsverityDigest(data, this.alg), kept: keep > 0 ? Buffer.from(data.subarray(0, keep)) : undefined, consumed: true };
    }
    return this.hashHere(src, size, keep);
  }

  /** An id filled in when `digest` resolves (see {@link settle}). */
  private async later(digest: Promise<Buffer>, failure?: (e: Error) => Error): Promise<Buffer> {
    const id = newId(this.alg);
    const p = digest.then(
      (d) => {
        id.set(d);
      },
      (e: Error) => {
        throw failure ? failure(e) : e;
      },
    );
    p.catch(() => {}); // awaited (and reported) by settle()
    this.pending.push(p);
    if (this.pending.length >= PENDING_MAX) await Promise.all(this.pending.splice(0, PENDING_MAX / 2));
    return id;
  }

  override async settle(): Promise<void> {
    const pending = this.pending;
    this.pending = [];
    await Promise.all(pending);
    await this.pool?.flush();
  }
}

class StoringObjects extends Objects {
  readonly stores = true;
  readonly inlineMax = 0;

  constructor(
    alg: HashAlg,
    private readonly repo: Repository,
    jobs: number | undefined,
  ) {
    super(alg, jobs);
  }

  get fileConcurrency(): number {
    return Math.max(1024, this.threads() * 256);
  }

  async hashFile(path: Buffer, size: bigint): Promise<Buffer> {
    // The workers copy each file into a temporary object as they hash it.
    const repo = this.repo;
    const tmp = await repo.createTemp();
    let id: Buffer;
    try {
      id = await this.workers().hash(path, size, this.alg, tmp);
    } catch (e) {
      await repo.discardTemp(tmp);
      // A failed copy is the repository's problem, not the source file's.
      throw e instanceof HashError && e.inCopy ? repo.error(Object.assign(new Error(e.reason), { code: e.code, syscall: 'write' }), tmp) : e;
    }
    await repo.commitTemp(tmp, id, size);
    return id;
  }

  async hashContent(src: ContentSource, size: bigint, opts: ContentOptions = {}): Promise<ContentResult> {
    return this.hashHere(src, size, opts.keep ?? 0, await this.repo.objectWriter());
  }
}

/** The content source ended before the content's size (callers report it with their context). */
export class ShortContentError extends InputError {
  constructor() {
    super('unexpected end of input inside file content');
  }
}

/**
 * A zeroed id buffer, filled in when its digest arrives. From Node's shared pool (an
 * ArrayBuffer of its own per file costs more than the 32 or 64 bytes it holds).
 */
function newId(alg: HashAlg): Buffer {
  return Buffer.allocUnsafe(DIGEST_SIZE[alg]).fill(0);
}
