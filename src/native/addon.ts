/**
 * The native addon (native/*.c, `cfs_native.node`), loaded once and typed once: the directory
 * scan, xattrs and fs-verity hashing all go through {@link NativeAddon}. Node itself cannot read
 * extended attributes, and its own file calls cost a thread-pool round trip each.
 *
 * Where the addon comes from, first match:
 *   1. worker threads: the file their parent loaded ({@link useAddonFile}), never searched;
 *   2. the file named by CFS_NATIVE_ADDON (or its older name CFS_XATTR_ADDON): an explicit choice;
 *   3. in the single executable (dist/cfs): the copy embedded in it, written into an unnamed
 *      file and loaded through its descriptor (./addon-file.ts); never a file found on disk;
 *   4. otherwise a file of this package, searched from this module's directory up to the package
 *      root (the first directory with a package.json), never above it, so nothing outside the
 *      package (a parent directory, the working directory) is ever loaded. In each directory:
 *      `build/Release/cfs_native.node` (built from source by node-gyp), then the prebuilt
 *      `prebuilds/linux-x64/cfs_native.napi.node` that the npm package ships (the
 *      prebuildify / node-gyp-build layout; N-API, so one file serves every Node >= 20). The
 *      first that loads wins: a prebuild that cannot load here (another libc) gives way to a
 *      local build, as scripts/install.mjs does at install time.
 *
 * Loaded lazily on first use, so commands that never read a directory or hash do not need it.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddonUnavailableError, embeddedAddonDirs, materializeAddon } from './addon-file.js';

/** The addon's file name; the SEA asset and the prebuild carry the same name. */
const ADDON_NAME = 'cfs_native.node';
/** The prebuild inside the package (relative to the package root), for this platform. */
const PREBUILD = path.join('prebuilds', `${process.platform}-${process.arch}`, 'cfs_native.napi.node');

/** One xattr as raw bytes, in the order the kernel listed them. */
export type RawXattr = [name: Buffer, value: Buffer];

/**
 * What native/module.c exports. Failures are `Error`s like Node's system errors (`code`,
 * negative `errno`, `syscall`, `path`) plus `pathBuffer` with the raw path bytes.
 */
export interface NativeAddon {
  /** xattrs of one path, not following a final symlink (llistxattr + lgetxattr); native/xattrs.c. */
  readXattrs(path: Buffer): RawXattr[];
  /**
   * One directory read whole on the libuv thread pool (native/scan.c): every entry's lstat,
   * inline content or symlink target, xattrs and, with `alg` 1 (SHA-256) or 2 (SHA-512), the
   * fs-verity digest of single-link regular files of 65..`hashMax` bytes. Resolves to packed
   * records (src/scan/scan.ts decodes them); a failure is the last record, naming the entry.
   */
  scanDir(dir: Buffer, alg: number, hashMax: number): Promise<Buffer>;
  /** Whether the SHA functions of the OpenSSL inside node were found (native/verity.c). */
  hashAvailable(): boolean;
  /**
   * How SHA-256 data blocks are hashed: 'x2' (two at a time with the CPU's SHA extensions,
   * native/sha256x2.c) or 'single' (OpenSSL's SHA-256, one block at a time).
   */
  sha256Blocks(): 'x2' | 'single';
  /**
   * fs-verity digest of a file, read and hashed on the libuv thread pool (at most size + 1
   * bytes): the digest, or the bytes read when ≠ size. With an offset: the digest of the `size`
   * bytes there (pread).
   */
  verityFileAsync(path: Uint8Array, alg: number, size: number, offset?: number): Promise<Buffer | number>;
  /** fs-verity digest of an in-memory buffer into out, in one call. */
  verityBuffer(data: Uint8Array, alg: number, out: Uint8Array): void;
  /** Incremental digest: a handle, fed by verityUpdate, finished (and freed) by verityDigest. */
  verityNew(alg: number): object;
  verityUpdate(handle: object, data: Uint8Array): void;
  verityDigest(handle: object, out: Uint8Array): void;
}

const FUNCTIONS: (keyof NativeAddon)[] = [
  'readXattrs',
  'scanDir',
  'hashAvailable',
  'sha256Blocks',
  'verityFileAsync',
  'verityBuffer',
  'verityNew',
  'verityUpdate',
  'verityDigest',
];

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

/** The one load of this thread: the addon and its file, or why there is none. */
let loaded: { addon: NativeAddon; file: string } | { error: NativeAddonError } | undefined;
/** Set in worker threads: the file the parent loaded, or null for none. */
let assigned: string | null | undefined;

/**
 * Worker threads: load exactly `file` (the one their parent loaded, see {@link loadedAddonFile}),
 * or nothing when null. A worker never searches: embedded worker code has no location to start from.
 */
export function useAddonFile(file: string | null): void {
  assigned = file;
  loaded = undefined;
}

/** The file the addon of this thread was loaded from (to hand to worker threads), if it loaded. */
export function loadedAddonFile(): string | undefined {
  load();
  return loaded && 'file' in loaded ? loaded.file : undefined;
}

/** The addon, loading it on first use; throws {@link NativeAddonError} when it is not available. */
export function nativeAddon(): NativeAddon {
  const r = load();
  if ('error' in r) throw r.error;
  return r.addon;
}

/** The addon, or null when it is not available (callers that have a JavaScript fallback). */
export function nativeAddonOrNull(): NativeAddon | null {
  try {
    const r = load();
    return 'addon' in r ? r.addon : null;
  } catch {
    return null; // an unexpected failure materialising the embedded copy: nativeAddon() shows it
  }
}

/** xattrs of one path, not following a final symlink (llistxattr + lgetxattr). */
export function readXattrs(p: Buffer): RawXattr[] {
  return nativeAddon().readXattrs(p);
}

/** {@link NativeAddon.scanDir}. */
export function scanDirNative(dir: Buffer, alg: number, hashMax: number): Promise<Buffer> {
  return nativeAddon().scanDir(dir, alg, hashMax);
}

function load(): { addon: NativeAddon; file: string } | { error: NativeAddonError } {
  if (loaded) return loaded;
  if (assigned !== undefined) {
    return (loaded = assigned === null ? { error: new NativeAddonError('no native addon (the parent thread had none)') } : fromFile(assigned));
  }
  const env = process.env.CFS_NATIVE_ADDON || process.env.CFS_XATTR_ADDON;
  if (env) return (loaded = fromFile(env));
  if (embedded) return (loaded = fromEmbedded(embedded));
  return (loaded = fromPackage());
}

/** Checks that a module's exports are this addon's (a stale or foreign file is refused). */
function typed(exports: object, file: string): { addon: NativeAddon; file: string } | { error: NativeAddonError } {
  const missing = FUNCTIONS.filter((f) => typeof (exports as Record<string, unknown>)[f] !== 'function');
  if (missing.length > 0) {
    return { error: new NativeAddonError(`${file} is not this version's native addon (no ${missing.join(', ')})`) };
  }
  return { addon: exports as NativeAddon, file };
}

function dlopen(file: string): { exports: object } | { reason: string } {
  const mod = { exports: {} };
  try {
    process.dlopen(mod, file);
    return mod;
  } catch (e) {
    return { reason: (e as Error).message };
  }
}

function fromFile(file: string): { addon: NativeAddon; file: string } | { error: NativeAddonError } {
  const m = dlopen(file);
  if ('reason' in m) return { error: new NativeAddonError(`cannot load the native addon ${file}: ${m.reason}`) };
  return typed(m.exports, file);
}

function fromEmbedded(hook: EmbeddedHook): { addon: NativeAddon; file: string } | { error: NativeAddonError } {
  const bytes = hook();
  if (!bytes) return { error: new NativeAddonError(`${process.execPath} holds no native addon`) };
  try {
    // materializeAddon has loaded it already: its exports are the one load.
    const m = materializeAddon(bytes, embeddedAddonDirs());
    return typed(m.exports, m.file);
  } catch (e) {
    if (!(e instanceof AddonUnavailableError)) throw e;
    return {
      error: new NativeAddonError(
        `cannot load the native addon embedded in ${process.execPath}: no directory took it: ${e.message} ` +
          '(set CFS_CACHE_DIR to a writable directory that allows executables)',
      ),
    };
  }
}

/** This module's directory, or undefined without a module location (embedded worker code). */
function moduleDir(): string | undefined {
  try {
    return path.dirname(fileURLToPath(import.meta.url));
  } catch {
    return undefined; // never guess from the working directory
  }
}

/** The package root above `dir` (first directory with a package.json), if any. */
function packageRoot(dir: string): string | undefined {
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The addon files of this package, in the order they are tried (see the header). */
function packagedAddonCandidates(): { root: string | undefined; files: string[] } {
  const start = moduleDir();
  const root = start === undefined ? undefined : packageRoot(start);
  const files: string[] = [];
  if (start === undefined || root === undefined) return { root, files };
  for (let dir = start; ; dir = path.dirname(dir)) {
    for (const rel of [path.join('build', 'Release', ADDON_NAME), PREBUILD]) {
      const f = path.join(dir, rel);
      if (existsSync(f)) files.push(f);
    }
    if (dir === root) return { root, files };
  }
}

function fromPackage(): { addon: NativeAddon; file: string } | { error: NativeAddonError } {
  const { root, files } = packagedAddonCandidates();
  if (files.length === 0) {
    return {
      error: new NativeAddonError(
        `native addon ${ADDON_NAME} not found${root ? ` in ${root}` : ''} (neither build/Release/${ADDON_NAME} nor ${PREBUILD}; ` +
          'run `npm rebuild composefs-ts` (or `npm install` in a checkout) to build it, or set CFS_NATIVE_ADDON to its path)',
      ),
    };
  }
  const failures: string[] = [];
  for (const file of files) {
    const m = dlopen(file);
    if ('reason' in m) {
      failures.push(m.reason.startsWith(file) ? m.reason : `${file}: ${m.reason}`);
      continue;
    }
    const r = typed(m.exports, file);
    if ('addon' in r) return r;
    failures.push(r.error.message);
  }
  return {
    error: new NativeAddonError(
      `cannot load the native addon: ${failures.join('; ')} (run \`npm rebuild composefs-ts\` to build it from source)`,
    ),
  };
}
