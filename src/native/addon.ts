/**
 * Typed access to the native xattr addon (native/xattr.c, built by `npm install` into
 * build/Release/xattr.node). Node itself cannot read extended attributes.
 *
 * Where the addon comes from, first match:
 *   1. the file named by the environment variable CFS_XATTR_ADDON (an explicit choice);
 *   2. in the single executable (dist/cfs): the copy embedded in it, written into an unnamed
 *      file and loaded through its descriptor (src/scan/addon-file.ts); never a file found on
 *      disk;
 *   3. otherwise build/Release/xattr.node of this package: searched from this module's directory
 *      up to the package root (the first directory with a package.json), never above it, so
 *      nothing outside the package (a parent directory, the working directory) is ever loaded.
 *
 * The addon is loaded lazily on first use, so commands that never read a directory do not
 * need it.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddonUnavailableError, embeddedAddonDirs, materializeAddon } from './addon-file.js';

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

/** The addon could not be found or loaded (not about any path being read). */
export class NativeAddonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NativeAddonError';
  }
}

/**
 * The single executable's prelude (scripts/bundle.mjs) provides the embedded addon's bytes
 * through this hook; its presence is what marks the single executable.
 */
type EmbeddedHook = () => Uint8Array | undefined;
const embedded = (globalThis as { __cfsEmbeddedAddon?: EmbeddedHook }).__cfsEmbeddedAddon;

let addon: XattrAddon | undefined;
/** Where the embedded addon was loaded from, or why it could not be. */
let embeddedResult: { file: string } | { error: string } | undefined;

function loadEmbedded(hook: EmbeddedHook): { file: string } | { error: string } {
  if (embeddedResult) return embeddedResult;
  const bytes = hook();
  if (!bytes) return (embeddedResult = { error: `${process.execPath} holds no native addon` });
  try {
    embeddedResult = { file: materializeAddon(bytes, embeddedAddonDirs()).file };
  } catch (e) {
    if (!(e instanceof AddonUnavailableError)) throw e;
    embeddedResult = {
      error:
        `cannot load the native addon embedded in ${process.execPath}: no directory took it: ${e.message} ` +
        '(set CFS_CACHE_DIR to a writable directory that allows executables)',
    };
  }
  return embeddedResult;
}

/** The package root above this module (first directory with a package.json), if any. */
function packageRoot(): string | undefined {
  let dir: string;
  try {
    dir = path.dirname(fileURLToPath(import.meta.url));
  } catch {
    return undefined; // no module location (embedded worker code): never guess from the cwd
  }
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** build/Release/xattr.node between this module's directory and the package root. */
function packagedAddon(): string | undefined {
  const root = packageRoot();
  if (root === undefined) return undefined;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'build', 'Release', 'xattr.node');
    if (existsSync(candidate)) return candidate;
    if (dir === root) return undefined;
    dir = path.dirname(dir);
  }
}

/** Where the addon is loaded from, or undefined if it is not available. */
export function findXattrAddon(): string | undefined {
  const env = process.env.CFS_XATTR_ADDON;
  if (env) return env;
  if (embedded) {
    const r = loadEmbedded(embedded);
    return 'file' in r ? r.file : undefined;
  }
  return packagedAddon();
}

function load(): XattrAddon {
  if (addon) return addon;
  const file = findXattrAddon();
  if (!file) {
    if (embedded && embeddedResult && 'error' in embeddedResult) throw new NativeAddonError(embeddedResult.error);
    const root = packageRoot();
    throw new NativeAddonError(
      `native addon build/Release/xattr.node not found${root ? ` in ${root}` : ''} ` +
        '(run `npm install` there to build it, or set CFS_XATTR_ADDON to its path)',
    );
  }
  const mod = { exports: {} as XattrAddon };
  try {
    process.dlopen(mod, file);
  } catch (e) {
    throw new NativeAddonError(`cannot load native xattr addon ${file}: ${(e as Error).message}`);
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
