/**
 * Reading a mounted directory into the tree model: composefs-rs v0.9.0 `read_filesystem`
 * (`crates/composefs/src/fs.rs`, `FilesystemScanner`), the first half of `read_container_root`.
 * This file is the walk; entries.ts turns each directory's records into `Stat`, xattrs and
 * content, hash-queue.ts hands large files to hashing, paths.ts reaches long paths.
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
import fs from 'node:fs';
import { Directory, FileSystem, type HashAlg, type Stat } from '../../tree/tree.js';
import { NativeAddonError, readXattrs, scanDirNative, type RawXattr } from '../../native/addon.js';
import { ALG_NUMBER } from '../../fsverity/fsverity.js';
import { EntryBuilder, isScanError, rootStat } from './entries.js';
import { HashQueue } from './hash-queue.js';
import { DirAnchor, MAX_DIRECT_PATH, joinPath, openLongDir, scanError, showPath } from './paths.js';

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

/** Files waiting for a hash slot before the walk pauses (bounds memory on huge trees). */
const MAX_QUEUED_HASHES = 8192;

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
  const rootDir = new Directory(readRoot(rootPath));
  const hashes = new HashQueue(opts.hashFile, Math.max(1, opts.hashConcurrency ?? 64));
  const entries = new EntryBuilder((opts.hardlinks ?? 'tracked') === 'tracked', opts.counters);
  const inlineAlg = opts.inlineHash ? ALG_NUMBER[opts.inlineHash.alg] : 0;
  const inlineMax = opts.inlineHash?.maxSize ?? 0;

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
      if (hashes.stopped) return;
      const { real } = task;
      const access = anchor ? anchor.procPath : real;
      entries.add(task.dir, real, buf, {
        subdir: (child, name) => stack.push({ dir: child, real: joinPath(real, name) }),
        file: (content, name) => {
          const childAccess = joinPath(access, name);
          hashes.add(content, childAccess, anchor ? joinPath(real, name) : childAccess, anchor);
        },
      });
    } catch (e) {
      if (isScanError(e) || e instanceof NativeAddonError) throw e;
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
    while ((stack.length > 0 || inflight.size > 0) && failure === undefined && hashes.error === undefined) {
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
      if (hashes.waiting > MAX_QUEUED_HASHES) await hashes.drain(MAX_QUEUED_HASHES / 2);
    }
    if (failure !== undefined) throw failure;
  } catch (e) {
    hashes.abort(); // queued hashes are skipped
    throw e;
  } finally {
    // Even on failure, wait for the running hashes and directory reads so no descriptor outlives the call.
    await Promise.allSettled([...inflight]);
    await hashes.drain(0);
  }
  if (hashes.error !== undefined) throw hashes.error;
  return new FileSystem(rootDir);
}

/**
 * The stat of the source directory: like composefs-rs (openat with O_NOFOLLOW), a source whose
 * last component is a symlink is rejected unless written with a trailing slash.
 */
function readRoot(rootPath: Buffer): Stat {
  let rootSt: fs.BigIntStats;
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
  return rootStat(rootSt, rootXattrs);
}
