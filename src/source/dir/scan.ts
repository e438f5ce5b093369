/**
 * Reading a mounted directory into the tree model: composefs-rs v0.9.0 `read_filesystem`
 * (`crates/composefs/src/fs.rs`, `FilesystemScanner`), the first half of `read_container_root`.
 * The finishing rules (root <- /usr, /run emptied, xattr filter) live in
 * src/transform/transform.ts.
 *
 * Rules reproduced (spec tree-rules.md §2.2-§2.7):
 *  - every entry but "." and ".." is kept, names as raw bytes;
 *  - Stat: mode = st_mode & 0o7777, uid, gid, mtime seconds *and* nanoseconds (floor
 *    semantics for pre-1970 times), all xattrs read without following symlinks (composefs-rs
 *    lists them through /proc/self/fd/N of an O_PATH|O_NOFOLLOW fd, which is the same as
 *    llistxattr/lgetxattr on the path);
 *  - regular files with st_size <= 64 are Inline, read with ONE read() of st_size bytes (a
 *    short read silently truncates, as in composefs-rs); larger files are External with their
 *    fs-verity digest and st_size;
 *  - symlink targets are the raw readlink bytes; devices keep the raw 64-bit st_rdev;
 *  - hardlinks: every non-directory is keyed by (st_dev, st_ino) — st_nlink is never looked
 *    at (fuse-overlayfs misreports it) — and later names share the first leaf (HardlinkBehavior
 *    Tracked, what cfsctl and bootc use). 'break' gives every name its own leaf (the
 *    mkcomposefs personality).
 *  - the file type from readdir() must agree with lstat(), else "File type changed".
 *
 * Mount points / devices: composefs-rs does NOT stop at filesystem boundaries. It descends
 * with openat(dirfd, name, O_DIRECTORY|O_NOFOLLOW), which enters whatever is mounted on a
 * directory, and never compares st_dev with the parent's. Mounted filesystems (including
 * /proc, /sys, tmpfs, bind mounts) are therefore scanned like any other directory, their root
 * directory contributing the *mounted* root's stat. The hardlink key includes st_dev, so equal
 * inode numbers on different filesystems never merge; but a bind mount that exposes the same
 * filesystem twice makes every file under it a hardlink of its twin (same dev, same ino). We
 * do exactly the same: lstat() of a path resolves through mounts just like openat+fstat.
 * A filesystem without xattr support (llistxattr -> ENOTSUP) is an error there and here.
 *
 * Differences that cannot affect a successful result: composefs-rs walks depth-first in
 * readdir order, we read several directories at once and take them as they finish. Which name
 * of a hardlinked inode is met first can therefore differ, but all names share one inode, so
 * the stat and content are the same. A DT_UNKNOWN readdir type is resolved by fstatat where
 * composefs-rs fails ("File type changed between readdir() and fstat()"); such filesystems
 * are rare.
 *
 * Performance: each directory is read whole by native code on the libuv thread pool
 * (native/scan.c: readdir, fstatat, inline contents, symlink targets, xattrs and, with
 * `inlineHash`, the digests of small files) and comes back as one packed buffer, so a
 * 500k-entry tree costs about one JS<->C crossing per directory. Several directories are read
 * at once while this thread builds the tree from the finished ones. Larger files are hashed
 * through `opts.hashFile`, at most `hashConcurrency` at a time.
 *
 * The source path itself: like composefs-rs (openat with O_NOFOLLOW), a source whose last
 * component is a symlink is rejected unless written with a trailing slash; intermediate
 * symlinks are followed.
 *
 * Paths longer than the kernel's PATH_MAX (4096) are handled: such directories are opened
 * piecewise and accessed through /proc/self/fd/N, like composefs-rs's dirfd-relative walk.
 */
import fs, { constants as fsc } from 'node:fs';
import { constants as osc } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import type { BigIntStats } from 'node:fs';
import {
  Directory,
  FileSystem,
  Leaf,
  nameKey,
  type HashAlg,
  type LeafContent,
  type Stat,
  type Xattrs,
} from '../../tree/tree.js';
import { NativeAddonError, readXattrs, scanDirNative, type RawXattr } from '../../scan/xattr-native.js';
import { ALG_NUMBER } from '../../fsverity/fsverity.js';
import { RepoError } from '../../repo/repo.js';

export interface ScanOptions {
  /**
   * Computes the fs-verity digest of a regular file larger than 64 bytes. `size` is the
   * st_size seen by the scan; the hasher should fail if it reads a different number of bytes.
   * For files whose real path exceeds PATH_MAX the path is `/proc/self/fd/N/name`: valid in
   * this process (any thread) until the returned promise settles, not in child processes.
   */
  hashFile: (path: Buffer, size: bigint) => Promise<Buffer>;
  /** 'tracked' (default, cfsctl/bootc): (dev, ino) sharing. 'break': every name its own leaf. */
  hardlinks?: 'tracked' | 'break';
  /** Outstanding hashFile calls (default 64); further files wait. */
  hashConcurrency?: number;
  /**
   * Hash single-link regular files of 65..maxSize bytes while reading their directory (on the
   * libuv thread pool, native hashing) instead of through `hashFile`. Only for pure digests:
   * nothing is copied.
   */
  inlineHash?: { alg: HashAlg; maxSize: number };
  /** Directories read at once (default 4). */
  dirConcurrency?: number;
  /** Updated as the scan goes (for progress reports). */
  counters?: ScanCounters;
}

/** What a scan has done so far. */
export interface ScanCounters {
  /** Entries listed (every name but the root). */
  entries: number;
  /** Files hashed while reading their directory (`inlineHash`), and their bytes. */
  hashedFiles: number;
  hashedBytes: number;
}

/** Longest path we hand to the kernel directly; longer ones go through /proc/self/fd/N. */
const MAX_DIRECT_PATH = 3800;
/** Files waiting for a hash slot before the walk pauses (bounds memory on huge trees). */
const MAX_QUEUED_HASHES = 8192;
const SLASH = Buffer.from('/');
const NS_PER_SEC = 1_000_000_000n;

/** Human-readable form of a raw path for messages (invalid UTF-8 shown as U+FFFD, like to_string_lossy). */
export function showPath(p: Buffer): string {
  return p.toString('utf8');
}

function joinPath(dir: Buffer, name: Buffer): Buffer {
  if (dir.length > 0 && dir[dir.length - 1] === 0x2f) return Buffer.concat([dir, name]);
  return Buffer.concat([dir, SLASH, name]);
}

/** (sec, nsec) from a nanosecond timestamp, flooring so that nsec is always 0..1e9-1. */
export function splitNs(ns: bigint): { sec: bigint; nsec: number } {
  let sec = ns / NS_PER_SEC;
  let rem = ns - sec * NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  return { sec, nsec: Number(rem) };
}

/**
 * The xattr map of every scanned inode without xattrs (most of them): one shared instance
 * instead of an empty Map per inode. Safe because no code edits a stat's map in place: the
 * transforms give a stat a fresh map before changing it.
 */
const NO_XATTRS: Xattrs = new Map();
/** Content of every empty inline file (zero bytes: nothing to share or mutate). */
const EMPTY_DATA = Buffer.alloc(0);

function toXattrs(raw: RawXattr[]): Xattrs {
  if (raw.length === 0) return NO_XATTRS;
  const x: Xattrs = new Map();
  for (const [name, value] of raw) x.set(nameKey(name), value);
  return x;
}

function statOf(st: BigIntStats, xattrs: Xattrs): Stat {
  const { sec, nsec } = splitNs(st.mtimeNs);
  return {
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeSec: sec,
    mtimeNsec: nsec,
    xattrs,
  };
}

/** Error naming the path, keeping the system error as cause and its code. */
function scanError(what: string, p: Buffer, cause?: unknown): Error {
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  const err = new Error(`${what} ${showPath(p)}${detail}`, cause === undefined ? undefined : { cause });
  const code = (cause as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') (err as Error & { code: string }).code = code;
  return err;
}

/**
 * A directory opened for access when its real path is too long for the kernel. Reference
 * counted: the directory walk and every pending hash of a file inside it hold it.
 */
class DirAnchor {
  private refs = 1;
  readonly procPath: Buffer;
  constructor(private readonly fd: number) {
    this.procPath = Buffer.from(`/proc/self/fd/${fd}`);
  }
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0) fs.closeSync(this.fd);
  }
}

const DIR_OPEN_FLAGS = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW;

/**
 * Opens the directory at `real` (longer than MAX_DIRECT_PATH) piecewise: each step opens at
 * most MAX_DIRECT_PATH bytes relative to the previous step's fd. All components are
 * directories the walk already saw; the last is opened with O_NOFOLLOW, as direct paths are.
 */
function openLongDir(real: Buffer): DirAnchor {
  let fd: number | undefined;
  let pos = 0;
  try {
    while (pos < real.length) {
      const prefix = fd !== undefined ? Buffer.from(`/proc/self/fd/${fd}/`) : Buffer.alloc(0);
      const room = MAX_DIRECT_PATH - prefix.length;
      let end = real.length;
      if (end - pos > room) {
        end = real.lastIndexOf(0x2f, pos + room);
        if (end <= pos) throw Object.assign(new Error('path component too long'), { code: 'ENAMETOOLONG' });
      }
      const piece = Buffer.concat([prefix, real.subarray(pos, end)]);
      const next = fs.openSync(piece, end === real.length ? DIR_OPEN_FLAGS : fsc.O_RDONLY | fsc.O_DIRECTORY);
      if (fd !== undefined) fs.closeSync(fd);
      fd = next;
      pos = end;
      while (pos < real.length && real[pos] === 0x2f) pos++;
    }
    if (fd === undefined) throw new Error('empty path');
    return new DirAnchor(fd);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    throw e;
  }
}

interface DirTask {
  dir: Directory;
  /** The real path (for messages, and for access when short enough). */
  real: Buffer;
}

/**
 * Scans the directory tree at `root` (composefs-rs `read_filesystem`). The result still has
 * the on-disk root metadata, /run contents and every xattr; apply `transformForOci` for
 * `read_container_root`.
 */
export async function scanDirectory(root: string | Buffer, opts: ScanOptions): Promise<FileSystem> {
  const rootPath = Buffer.from(root);
  if (rootPath.length === 0) throw new Error('scan: empty source path');
  const tracked = (opts.hardlinks ?? 'tracked') === 'tracked';

  // --- the root -----------------------------------------------------------------------------
  let rootSt: BigIntStats;
  try {
    rootSt = fs.lstatSync(rootPath, { bigint: true });
  } catch (e) {
    throw scanError('cannot read source directory', rootPath, e);
  }
  if (!rootSt.isDirectory()) {
    const what = rootSt.isSymbolicLink() ? 'is a symbolic link, not a directory' : 'is not a directory';
    throw new Error(`source ${showPath(rootPath)} ${what}`);
  }
  let rootXattrs: RawXattr[];
  try {
    rootXattrs = readXattrs(rootPath);
  } catch (e) {
    if (e instanceof NativeAddonError) throw e; // about the addon, not this path
    throw scanError('cannot read extended attributes of', rootPath, e);
  }
  const rootDir = new Directory(statOf(rootSt, toXattrs(rootXattrs)));

  // --- hashing of large files, concurrent with the walk ---------------------------------------
  // A FIFO of files to hash (plain records, no promise per file: 500k-file trees stay small and
  // linear), at most `limit` hashFile calls outstanding. The walk pauses while too many wait.
  interface HashTask {
    leaf: Leaf;
    access: Buffer;
    real: Buffer;
    size: bigint;
    anchor: DirAnchor | undefined;
  }
  const limit = Math.max(1, opts.hashConcurrency ?? 64);
  let queue: (HashTask | undefined)[] = [];
  let head = 0;
  let running = 0;
  let hashError: unknown;
  let aborted = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const runTask = async (t: HashTask): Promise<void> => {
    try {
      if (hashError !== undefined || aborted) return;
      const id = await opts.hashFile(t.access, t.size);
      t.leaf.content = { type: 'external', id, size: t.size };
    } catch (e) {
      // A repository error (writing the copy) is not about this file: keep it as it is.
      hashError ??= e instanceof RepoError ? e : scanError('cannot hash', t.real, e);
    } finally {
      running--;
      t.anchor?.release();
      pump();
      notify();
    }
  };
  const pump = (): void => {
    while (running < limit && head < queue.length) {
      const t = queue[head]!;
      queue[head++] = undefined;
      running++;
      void runTask(t);
    }
    if (head === queue.length) {
      queue = [];
      head = 0;
    } else if (head > 4096 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
  };
  const startHash = (leaf: Leaf, access: Buffer, real: Buffer, size: bigint, anchor: DirAnchor | undefined): void => {
    anchor?.retain();
    queue.push({ leaf, access, real, size, anchor });
    if (running < limit) pump();
  };
  /** Waits until fewer than `max` files are queued (0: until every hash has finished). */
  const drain = async (max: number): Promise<void> => {
    while (running > 0 || queue.length - head > max) {
      if (hashError !== undefined || aborted) {
        // Queued files are skipped, releasing what they hold.
        for (let i = head; i < queue.length; i++) queue[i]?.anchor?.release();
        queue = [];
        head = 0;
        if (running === 0) return;
      }
      if (max > 0 && queue.length - head <= max) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };

  // --- the walk -------------------------------------------------------------------------------
  // st_dev -> st_ino -> first leaf; numbers when exact (no key string per file)
  const seen = new Map<number | bigint, Map<number | bigint, Leaf>>();
  let lastDev: number | bigint = -1;
  let lastDevMap: Map<number | bigint, Leaf> | undefined;
  const inodesOf = (dev: number | bigint): Map<number | bigint, Leaf> => {
    if (dev === lastDev && lastDevMap) return lastDevMap;
    let m = seen.get(dev);
    if (!m) seen.set(dev, (m = new Map()));
    lastDev = dev;
    lastDevMap = m;
    return m;
  };
  const inlineAlg = opts.inlineHash ? ALG_NUMBER[opts.inlineHash.alg] : 0;
  const inlineMax = opts.inlineHash?.maxSize ?? 0;
  const counters = opts.counters;

  /** Builds the entries of one directory from its packed native records (see native/scan.c). */
  const addEntries = (task: DirTask, anchor: DirAnchor | undefined, buf: Buffer, stack: DirTask[]): void => {
    const { dir, real } = task;
    const access = anchor ? anchor.procPath : real;
    const r = new Records(buf);
    while (r.more()) {
      const tag = r.u8();
      const nameStart = r.pos + 2;
      const nameLen = r.u16();
      r.pos += nameLen;
      if (tag === 2) throw recordError(r, real, buf.subarray(nameStart, nameStart + nameLen));
      const kind = r.u8();
      const mode = r.u32() & 0o7777;
      const uid = r.u32();
      const gid = r.u32();
      const nsec = r.u32();
      const mtimeSec = r.secs();
      const sizeLo = r.u32();
      const sizeHi = r.u32();
      const dev = r.u64Key();
      const ino = r.u64Key();
      const rdevAt = r.pos;
      r.pos += 8;
      const ckind = r.u8();
      let cStart = 0;
      let cLen = 0;
      if (ckind === 3) cLen = r.u8();
      else if (ckind !== 0) cLen = r.u32();
      cStart = r.pos;
      r.pos += cLen;
      const nx = r.u16();
      let xattrs = NO_XATTRS;
      if (nx > 0) {
        xattrs = new Map();
        for (let k = 0; k < nx; k++) {
          const xl = r.u16();
          const xname = buf.toString('latin1', r.pos, r.pos + xl);
          r.pos += xl;
          const vl = r.u32();
          xattrs.set(xname, Buffer.from(buf.subarray(r.pos, r.pos + vl)));
          r.pos += vl;
        }
      }
      const key = buf.toString('latin1', nameStart, nameStart + nameLen);
      if (counters) counters.entries++;
      const inodes = tracked && kind !== KIND_DIR ? inodesOf(dev) : undefined;
      if (inodes) {
        const prev = inodes.get(ino);
        if (prev) {
          // composefs-rs still reads this name's xattrs (and would fail on error) but
          // discards its stat: the first leaf stays.
          dir.entries.set(key, prev);
          continue;
        }
      }
      const stat: Stat = { mode, uid, gid, mtimeSec, mtimeNsec: nsec, xattrs };
      if (kind === KIND_DIR) {
        const child = new Directory(stat);
        dir.entries.set(key, child);
        stack.push({ dir: child, real: joinPath(real, buf.subarray(nameStart, nameStart + nameLen)) });
        continue;
      }
      let content: LeafContent;
      let hashAt: bigint | undefined;
      switch (kind) {
        case KIND_REG: {
          if (ckind === 1) content = { type: 'inline', data: cLen === 0 ? EMPTY_DATA : Buffer.from(buf.subarray(cStart, cStart + cLen)) };
          else {
            const size = BigInt(sizeHi) * 0x100000000n + BigInt(sizeLo);
            if (ckind === 3) {
              content = { type: 'external', id: Buffer.from(buf.subarray(cStart, cStart + cLen)), size };
              if (counters) {
                counters.hashedFiles++;
                counters.hashedBytes += Number(size);
              }
            } else {
              content = { type: 'external', id: Buffer.alloc(0), size }; // id set by the hash job
              hashAt = size;
            }
          }
          break;
        }
        case KIND_LNK:
          content = { type: 'symlink', target: Buffer.from(buf.subarray(cStart, cStart + cLen)) };
          break;
        case KIND_CHR:
          content = { type: 'chardev', rdev: buf.readBigUInt64LE(rdevAt) };
          break;
        case KIND_BLK:
          content = { type: 'blockdev', rdev: buf.readBigUInt64LE(rdevAt) };
          break;
        case KIND_FIFO:
          content = { type: 'fifo' };
          break;
        default:
          content = { type: 'socket' };
      }
      const leaf = new Leaf(stat, content);
      if (inodes) inodes.set(ino, leaf);
      dir.entries.set(key, leaf);
      if (hashAt !== undefined) {
        const name = buf.subarray(nameStart, nameStart + nameLen);
        const childAccess = joinPath(access, name);
        startHash(leaf, childAccess, anchor ? joinPath(real, name) : childAccess, hashAt, anchor);
      }
    }
  };

  /** Reads one directory on the thread pool; resolves once its entries are in the tree. */
  const scanOne = async (task: DirTask, stack: DirTask[]): Promise<void> => {
    let anchor: DirAnchor | undefined;
    if (task.real.length > MAX_DIRECT_PATH) {
      try {
        anchor = openLongDir(task.real);
      } catch (e) {
        throw scanError('cannot open directory', task.real, e);
      }
    }
    try {
      const buf = await scanDirNative(anchor ? anchor.procPath : task.real, inlineAlg, inlineMax);
      if (hashError !== undefined || aborted) return;
      addEntries(task, anchor, buf, stack);
    } catch (e) {
      if ((e as { cfsScan?: boolean }).cfsScan || e instanceof NativeAddonError) throw e;
      throw scanError('cannot read directory', task.real, e);
    } finally {
      anchor?.release();
    }
  };

  // Several directories are read at once (the thread pool works while this thread builds the
  // tree); results are taken in the order they finish, which changes nothing in the tree.
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  let settled: (() => void) | undefined;
  const maxInflight = Math.max(1, opts.dirConcurrency ?? 4);
  try {
    const stack: DirTask[] = [{ dir: rootDir, real: rootPath }];
    while ((stack.length > 0 || inflight.size > 0) && failure === undefined && hashError === undefined) {
      while (stack.length > 0 && inflight.size < maxInflight) {
        const p: Promise<void> = scanOne(stack.pop()!, stack).then(
          () => {
            inflight.delete(p);
            settled?.();
          },
          (e: unknown) => {
            inflight.delete(p);
            failure ??= e;
            settled?.();
          },
        );
        inflight.add(p);
      }
      if (inflight.size > 0) await new Promise<void>((resolve) => (settled = resolve));
      settled = undefined;
      if (queue.length - head > MAX_QUEUED_HASHES) await drain(MAX_QUEUED_HASHES / 2);
    }
    if (failure !== undefined) throw failure;
  } catch (e) {
    aborted = true; // queued hashes are skipped
    throw e;
  } finally {
    // Even on failure, wait for the running hashes and directory reads so no descriptor outlives the call.
    await Promise.allSettled([...inflight]);
    await drain(0);
  }
  if (hashError !== undefined) throw hashError;
  return new FileSystem(rootDir);
}

const KIND_DIR = 1;
const KIND_REG = 2;
const KIND_LNK = 3;
const KIND_CHR = 4;
const KIND_BLK = 5;
const KIND_FIFO = 6;

/** A cursor over the packed records of native/scan.c. */
class Records {
  pos = 0;
  private lastSecLo = -1;
  private lastSecHi = -1;
  private lastSec = 0n;
  constructor(readonly b: Buffer) {}
  more(): boolean {
    return this.pos < this.b.length;
  }
  u8(): number {
    return this.b[this.pos++];
  }
  u16(): number {
    const v = this.b[this.pos] | (this.b[this.pos + 1] << 8);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  /** A signed 64-bit seconds value; files of a directory mostly share it, so they share the bigint. */
  secs(): bigint {
    const lo = this.u32();
    const hi = this.b.readInt32LE(this.pos);
    this.pos += 4;
    if (lo !== this.lastSecLo || hi !== this.lastSecHi) {
      this.lastSecLo = lo;
      this.lastSecHi = hi;
      this.lastSec = BigInt(hi) * 0x100000000n + BigInt(lo);
    }
    return this.lastSec;
  }
  /** An unsigned 64-bit value as a Map key: a number when exact, else a bigint. */
  u64Key(): number | bigint {
    const lo = this.u32();
    const hi = this.u32();
    return hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
  }
}

const ERRNO_NAMES = getSystemErrorMap();
// Error record ops (native/scan.c).
const OP_OPEN_DIR = 1;
const OP_STAT = 2;
const OP_TYPE = 3;
const OP_READ = 4;
const OP_XATTR = 5;
const OP_CHANGED = 7;
const ESTALE_TYPE = osc.errno.ESTALE;

/** The error an error record describes, naming the entry (or the directory itself). */
function recordError(r: Records, dirReal: Buffer, name: Buffer): Error {
  const op = r.u8();
  const errno = r.u32();
  const lo = r.u32();
  const listed = r.u32() * 0x100000000 + lo;
  const sysLen = r.u8();
  const syscall = r.b.toString('latin1', r.pos, r.pos + sysLen);
  const p = name.length > 0 ? joinPath(dirReal, name) : dirReal;
  let cause: Error;
  if (op === OP_CHANGED) {
    // errno is 1 when the file grew, 0 when it shrank; the number is its size when listed
    const how = errno === 1 ? 'grew' : 'shrank';
    cause = Object.assign(new Error(`file changed while being hashed (it ${how}: ${listed} bytes when listed)`), { code: 'ECHANGED' });
  } else {
    const [code, desc] = ERRNO_NAMES.get(-errno) ?? [`E${errno}`, `error ${errno}`];
    cause = Object.assign(new Error(`${code}: ${desc}, ${syscall} '${showPath(p)}'`), { code, errno: -errno, syscall });
  }
  const what =
    op === OP_OPEN_DIR
      ? 'cannot read directory'
      : op === OP_STAT
        ? 'cannot stat'
        : op === OP_TYPE
          ? errno === ESTALE_TYPE
            ? 'File type changed between readdir() and lstat():'
            : 'unsupported file type:'
          : op === OP_READ
            ? 'cannot read'
            : op === OP_XATTR
              ? 'cannot read extended attributes of'
              : 'cannot hash';
  const err = op === OP_TYPE ? scanError(what, p) : scanError(what, p, cause);
  return Object.assign(err, { cfsScan: true });
}
