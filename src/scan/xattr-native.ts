/**
 * Typed access to the native xattr addon (native/xattr.c, built by `npm install` into
 * build/Release/xattr.node). Node itself cannot read extended attributes.
 *
 * Lookup order for the addon file:
 *   1. the path in the environment variable CFS_XATTR_ADDON (the single-executable build
 *      extracts the addon and points this at it);
 *   2. build/Release/xattr.node in this module's directory or any parent directory (covers
 *      build/src/scan/*.js after `tsc` and dist/cfs.mjs after bundling).
 *
 * The addon is loaded lazily on first use, so commands that never read a directory do not
 * need it.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** One xattr as raw bytes, in the order the kernel listed them. */
export type RawXattr = [name: Buffer, value: Buffer];

interface XattrAddon {
  readXattrs(path: Buffer): RawXattr[];
  scanDir(dir: Buffer, alg: number, hashMax: number): Promise<Buffer>;
}

/** Errors thrown by the addon: like Node's own system errors, plus the raw path bytes. */
export interface XattrError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path: string;
  pathBuffer: Buffer;
}

let addon: XattrAddon | undefined;

/** Where the addon would be loaded from (for diagnostics), or undefined if not found. */
export function findXattrAddon(): string | undefined {
  const env = process.env.CFS_XATTR_ADDON;
  if (env) return env;
  let dir: string;
  try {
    dir = path.dirname(fileURLToPath(import.meta.url));
  } catch {
    dir = process.cwd();
  }
  for (;;) {
    const candidate = path.join(dir, 'build', 'Release', 'xattr.node');
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function load(): XattrAddon {
  if (addon) return addon;
  const file = findXattrAddon();
  if (!file) {
    throw new Error(
      'cannot read extended attributes: native addon build/Release/xattr.node not found ' +
        '(run `npm install` to build it, or set CFS_XATTR_ADDON to its path)',
    );
  }
  const mod = { exports: {} as XattrAddon };
  try {
    process.dlopen(mod, file);
  } catch (e) {
    throw new Error(`cannot load native xattr addon ${file}: ${(e as Error).message}`);
  }
  addon = mod.exports;
  return addon;
}

/** xattrs of one path, not following a final symlink (llistxattr + lgetxattr). */
export function readXattrs(p: Buffer): RawXattr[] {
  return load().readXattrs(p);
}

/**
 * One directory read whole on the libuv thread pool (native/scan.c): every entry's lstat,
 * inline content or symlink target, xattrs and, with `alg` 1 (SHA-256) or 2 (SHA-512), the
 * fs-verity digest of single-link regular files of 65..`hashMax` bytes. Resolves to the packed
 * records that src/scan/scan.ts decodes; a failure is the last record, naming the entry.
 */
export function scanDirNative(dir: Buffer, alg: number, hashMax: number): Promise<Buffer> {
  return load().scanDir(dir, alg, hashMax);
}
