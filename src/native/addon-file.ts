/**
 * Loading the native addon that the single executable (dist/cfs) carries inside itself.
 *
 * dlopen needs a file, and cfs runs as root in build stages beside other users' files, so no
 * file that exists before this run is ever trusted, whatever its name, owner or directory: the
 * bytes are written into an unnamed file (open(2) with O_TMPFILE) of the first directory that
 * takes one, and the library is loaded through `/proc/self/fd/N` of that descriptor. No other
 * process can open, replace or modify an inode without a name that only this process holds a
 * descriptor of (opening it through /proc/PID/fd needs ptrace rights over this process). Where
 * the filesystem has no O_TMPFILE, the file is created (O_EXCL, O_NOFOLLOW) in a fresh private
 * directory (mkdtemp, 0700) and unlinked, with the directory, before it is loaded: again only
 * the descriptor reaches it, even if another user renamed the directory meanwhile.
 *
 * The descriptor stays open for the life of the process (it is close-on-exec), so worker threads
 * load the same path. A directory that refuses (missing, read-only, full, mounted noexec, FUSE)
 * is skipped; when all do, the error names each one and why.
 *
 * Without /proc (a bare chroot) there is no descriptor path: the file is then created the same
 * way in a private directory but loaded by its name, and only where no other user can rename
 * anything on the way to it (every directory from / down belongs to root or us and, if others
 * may write to it, is sticky with the next entry belonging to root or us); the name is removed
 * right after loading (later loads of the same name, by worker threads, are answered by the
 * dynamic loader from the library already loaded).
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdtempSync,
  openSync,
  realpathSync,
  rmdirSync,
  statfsSync,
  statSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import path from 'node:path';

/** A directory the addon may be written to, and the variable that named it ('' for a default). */
export interface AddonDir {
  dir: string;
  from: string;
}

/**
 * Where to write the embedded addon, in order: $CFS_CACHE_DIR, $TMPDIR, /tmp, /dev/shm, /var/tmp,
 * $XDG_RUNTIME_DIR (each once; relative paths resolved against the working directory).
 */
export function embeddedAddonDirs(env: NodeJS.ProcessEnv = process.env): AddonDir[] {
  const out: AddonDir[] = [];
  const add = (dir: string | undefined, from: string): void => {
    if (!dir) return;
    const abs = path.resolve(dir);
    if (!out.some((d) => d.dir === abs)) out.push({ dir: abs, from });
  };
  add(env.CFS_CACHE_DIR, 'CFS_CACHE_DIR');
  add(env.TMPDIR, 'TMPDIR');
  add('/tmp', '');
  add('/dev/shm', '');
  add('/var/tmp', '');
  add(env.XDG_RUNTIME_DIR, 'XDG_RUNTIME_DIR');
  return out;
}

/** No directory could take the addon; `message` names each with the reason. */
export class AddonUnavailableError extends Error {
  constructor(readonly failures: { dir: AddonDir; reason: string }[]) {
    super(
      failures.length === 0
        ? 'no directory to write it to'
        : failures.map((f) => `${f.dir.dir}${f.dir.from ? ` (${f.dir.from})` : ''}: ${f.reason}`).join('; '),
    );
    this.name = 'AddonUnavailableError';
  }
}

/** Linux's O_TMPFILE (__O_TMPFILE | O_DIRECTORY; __O_TMPFILE is 020000000 on x86-64 and arm64). */
const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY;

/** Errors meaning "this filesystem (or kernel) has no O_TMPFILE": use a private directory. */
const NO_TMPFILE = new Set(['EOPNOTSUPP', 'ENOTSUP', 'EISDIR', 'EINVAL']);

function errnoReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  // "EROFS: read-only file system, open '/tmp'" -> "read-only file system"
  const m = /^E[A-Z0-9]+: ([^,]+)/.exec(err.message ?? '');
  return m ? m[1] : String(err.message ?? e);
}

/** Writes all of `bytes` at the descriptor's start (a short write is retried, never ignored). */
function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off, off);
}

/**
 * A new, unnamed file in `dir` holding `bytes`; its descriptor. Throws with a short reason.
 * `tmpfile: false` skips O_TMPFILE (tests take the other path with it).
 */
function unnamedFile(dir: string, bytes: Uint8Array, tmpfile: boolean): number {
  let fd: number | undefined;
  if (tmpfile) {
    try {
      // O_EXCL: the file can never be given a name (linkat) later.
      fd = openSync(dir, O_TMPFILE | constants.O_RDWR | constants.O_EXCL, 0o500);
    } catch (e) {
      if (!NO_TMPFILE.has((e as NodeJS.ErrnoException).code ?? '')) throw new Error(errnoReason(e));
    }
  }
  if (fd === undefined) {
    let priv: string;
    try {
      priv = mkdtempSync(path.join(dir, '.cfs-addon-'));
    } catch (e) {
      throw new Error(errnoReason(e));
    }
    const file = path.join(priv, 'cfs_native.node');
    try {
      fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o500);
    } catch (e) {
      throw new Error(errnoReason(e));
    } finally {
      // Gone before anything is written: only the descriptor reaches the inode from here on.
      removeBoth(file, priv);
    }
  }
  try {
    writeAll(fd, bytes);
    const st = fstatSync(fd);
    if (st.size !== bytes.length || st.nlink !== 0) throw new Error('the written file changed under us');
    return fd;
  } catch (e) {
    closeSync(fd);
    throw (e as NodeJS.ErrnoException).code ? new Error(errnoReason(e)) : e;
  }
}

/** `/proc/self/fd/N`, checked to lead to the descriptor's own inode (a mounted procfs). */
function fdPath(fd: number): string | undefined {
  const p = `/proc/self/fd/${fd}`;
  try {
    const a = fstatSync(fd);
    const b = statSync(p);
    return a.dev === b.dev && a.ino === b.ino ? p : undefined;
  } catch {
    return undefined;
  }
}

/** Whether /proc/self/fd leads to this process's descriptors. */
function procWorks(): boolean {
  const fd = openSync('/', 'r');
  try {
    return fdPath(fd) !== undefined;
  } finally {
    closeSync(fd);
  }
}

const euid = (): number => process.geteuid?.() ?? -1;
const trusted = (st: Stats): boolean => st.uid === euid() || st.uid === 0;

/**
 * Why another user could rename something on the path from / to `priv` (a real path, no
 * symlinks), or undefined when no one but root and us can.
 */
function renameRisk(priv: string): string | undefined {
  let child: Stats | undefined;
  let childPath = '';
  for (let d = priv; ; d = path.dirname(d)) {
    const st = lstatSync(d);
    if (!st.isDirectory()) return `${d} is not a directory`;
    if (!trusted(st)) return `${d} belongs to uid ${st.uid}`;
    if (child !== undefined && (st.mode & 0o022) !== 0) {
      if ((st.mode & 0o1000) === 0) return `others may write to ${d}, and it is not sticky`;
      if (!trusted(child)) return `${childPath} belongs to uid ${child.uid}`;
    }
    if (d === '/') return undefined;
    child = st;
    childPath = d;
  }
}

/**
 * Without /proc: the addon as a named file in a fresh private directory of `dir`, loaded by that
 * name where no other user can rename anything on the way, then removed. Throws a short reason.
 */
function loadByName(dir: string, bytes: Uint8Array): { file: string; exports: object } {
  let priv: string;
  try {
    priv = mkdtempSync(path.join(realpathSync(dir), '.cfs-addon-'));
  } catch (e) {
    throw new Error(errnoReason(e));
  }
  const file = path.join(priv, 'cfs_native.node');
  try {
    const risk = renameRisk(priv);
    if (risk !== undefined) throw new Error(`not safe to load from without /proc: ${risk}`);
    let fd: number;
    try {
      fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o500);
    } catch (e) {
      throw new Error(errnoReason(e));
    }
    try {
      writeAll(fd, bytes);
      const a = fstatSync(fd);
      const b = lstatSync(file);
      if (a.dev !== b.dev || a.ino !== b.ino || a.size !== bytes.length || a.nlink !== 1)
        throw new Error('the written file changed under us');
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code ? new Error(errnoReason(e)) : e;
    } finally {
      closeSync(fd);
    }
    if (onFuse(file)) throw new Error('a FUSE filesystem (its server could change what is loaded)');
    const mod = { exports: {} };
    try {
      process.dlopen(mod, file);
    } catch (e) {
      throw new Error(dlopenReason(e, file));
    }
    return { file, exports: mod.exports };
  } finally {
    removeBoth(file, priv);
  }
}

/**
 * Removes our file and then its private directory, quietly: the file may not have been created,
 * and a directory someone else renamed away is theirs, not ours to clean.
 */
function removeBoth(file: string, dir: string): void {
  try {
    unlinkSync(file);
  } catch {
    /* not created */
  }
  try {
    rmdirSync(dir);
  } catch {
    /* gone or not ours */
  }
}

function dlopenReason(e: unknown, file: string): string {
  const msg = (e as Error).message.replace(`${file}: `, '');
  return /failed to map segment|operation not permitted/i.test(msg)
    ? `cannot run code from it (mounted noexec?): ${msg}`
    : `cannot load the addon from it: ${msg}`;
}

/** FUSE_SUPER_MAGIC (linux/magic.h). */
const FUSE_MAGIC = 0x65735546;

/** Whether the file (by its /proc/self/fd path: the filesystem it is really on) is on FUSE. */
function onFuse(file: string): boolean {
  try {
    return statfsSync(file).type === FUSE_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Writes the addon `bytes` into an unnamed file in the first of `dirs` that takes one and loads
 * it. Returns the path to load it by again (`/proc/self/fd/N`, valid for the process's life) and
 * the module's exports. Throws AddonUnavailableError naming every directory tried.
 */
export function materializeAddon(
  bytes: Uint8Array,
  dirs: AddonDir[],
  options: { tmpfile?: boolean; byName?: boolean } = {},
): { file: string; exports: object } {
  const failures: { dir: AddonDir; reason: string }[] = [];
  if (options.byName ?? !procWorks()) {
    for (const dir of dirs) {
      try {
        return loadByName(dir.dir, bytes);
      } catch (e) {
        failures.push({ dir, reason: (e as Error).message });
      }
    }
    throw new AddonUnavailableError(failures);
  }
  for (const dir of dirs) {
    let fd: number;
    try {
      fd = unnamedFile(dir.dir, bytes, options.tmpfile ?? process.platform === 'linux');
    } catch (e) {
      failures.push({ dir, reason: (e as Error).message });
      continue;
    }
    const file = fdPath(fd);
    if (file === undefined) {
      closeSync(fd);
      failures.push({ dir, reason: '/proc/self/fd does not lead to the file written' });
      continue;
    }
    if (onFuse(file)) {
      closeSync(fd);
      // Its server, possibly another user's (allow_other), answers the reads dlopen makes.
      failures.push({ dir, reason: 'a FUSE filesystem (its server could change what is loaded)' });
      continue;
    }
    const mod = { exports: {} };
    try {
      process.dlopen(mod, file);
    } catch (e) {
      closeSync(fd);
      failures.push({ dir, reason: dlopenReason(e, file) });
      continue;
    }
    return { file, exports: mod.exports };
  }
  throw new AddonUnavailableError(failures);
}
