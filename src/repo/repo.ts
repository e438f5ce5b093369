/**
 * An object store laid out like a composefs-rs repository (v0.9.0):
 *
 *   meta.json                     algorithm and EROFS format (exact cfsctl init bytes)
 *   objects/xx/yyyy…              content addressed by fs-verity digest
 *   images/<hex> -> ../objects/xx/yyyy…
 *   images/refs/<name> -> ../<hex>
 *
 * Every write is a temporary file, written whole (short writes looped over) + fsync + link into
 * place, so readers never see a partial object, and two processes filling the same repository
 * at once are safe (the second link finds the object and drops its copy).
 * We do not enable fs-verity on files (most build filesystems cannot), so for composefs-rs the
 * repository is an insecure one: mount it with `cfsctl --insecure`.
 *
 * What we trust, and what not:
 * - The repository path may be a symlink; what it resolves to must be a directory that holds
 *   meta.json (a repository), or is empty, or holds only repository entries (objects, images,
 *   streams: one being initialised). Anything else (`/`, a home directory) is refused: we never
 *   scatter meta.json/objects/images into a directory that is not ours.
 * - Inside it nothing is followed: meta.json is opened O_NOFOLLOW; objects/, images/,
 *   images/refs/ and every objects/XX/ must be real directories; objects are put in place with
 *   link/rename, which never follow a symlink at the destination.
 * - An object that already exists is trusted only when it is a regular file of the right size
 *   (composefs-rs v0.9.0 checks the size too: `link_tmpfile_as_object`,
 *   crates/composefs/src/repository.rs at 90f30e8). That catches what an interrupted or
 *   short-written earlier run leaves (a truncated file). The image object, which refs point at
 *   and which is a few MB at most, is also compared byte for byte. File objects are not re-read:
 *   that would read the whole existing store again on every run (twice the I/O of a rerun),
 *   and a repository with fs-verity enabled has the kernel check content on every read. A wrong
 *   object is replaced atomically (rename over it).
 * - Temporary files are `objects/.tmp-PID-<16 hex>` and `NAME.tmp-PID-<8 hex>`. The CLI removes
 *   its own on SIGINT/SIGTERM (see files.ts); opening a repository removes those left by others
 *   when they are older than an hour AND their PID is not a running process (a writer that is
 *   still alive keeps its files; an hour-old, untouched temporary is not being written: a
 *   writer updates its file's mtime as it goes).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readFile, readdir, readlink, realpath, rename, stat, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createTemp, errnoReason, openTemp, untrackTemp, writeAll } from './files.js';
import type { ErofsVersion } from '../erofs/writer.js';
import type { HashAlg } from '../tree/tree.js';
import { InputError } from '../errors.js';

/** The exact meta.json `cfsctl init` writes for an algorithm and default format. */
export function metaJson(hash: HashAlg, version: ErofsVersion): string {
  const roCompat = version === 1 ? '[\n      "v1_erofs"\n    ]' : '[]';
  return `{
  "version": 1,
  "algorithm": "fsverity-${hash}-12",
  "features": {
    "compatible": [],
    "read-only-compatible": ${roCompat},
    "incompatible": []
  },
  "erofs_formats": {
    "default": ${version}
  }
}
`;
}

/** A repository error naming the repository path. */
export class RepoError extends InputError {
  code?: string;
}

interface Meta {
  version?: number;
  algorithm?: string;
  features?: { 'read-only-compatible'?: string[]; incompatible?: string[] };
  erofs_formats?: { default?: number };
}

/** The effective default format of a meta.json (composefs-rs `format_config`). */
function effectiveFormat(m: Meta): number {
  if (m.erofs_formats && m.erofs_formats.default !== 2) return m.erofs_formats.default ?? 2;
  if (m.features?.['read-only-compatible']?.includes('v1_erofs')) return 1;
  return 2;
}

/** Streams one object into the repository; `commit` names it, `abort` drops it. */
export interface ObjectWriter {
  write(chunk: Uint8Array): Promise<void>;
  commit(id: Buffer): Promise<void>;
  abort(): Promise<void>;
}

/** Where streamed external files go when objects are wanted (a {@link Repository}). */
export interface ObjectSink {
  objectWriter(): Promise<ObjectWriter>;
}

/** Entries of a composefs-rs repository directory (v0.9.0 layout). */
const REPO_ENTRIES = new Set(['meta.json', 'objects', 'images', 'streams']);
/** Temporary files of ours, with the creating PID in group 1. */
const OBJECT_TEMP = /^\.tmp-(\d+)-[0-9a-f]{16}$/;
const NAMED_TEMP = /\.tmp-(\d+)-[0-9a-f]{8}$/;
/** A stale temporary is at least this old (ms since its last write). */
const STALE_AFTER = 3600_000;

/** Refuses an image name composefs-rs could not use as images/refs/NAME (before any work). */
export function checkImageName(name: string): void {
  if (name === '' || name.includes('/') || name === '.' || name === '..') {
    throw new RepoError(`invalid image name '${name}': a name may not be empty, '.' or '..', or contain '/'`);
  }
  if (NAMED_TEMP.test(name)) throw new RepoError(`invalid image name '${name}': names ending in .tmp-PID-XXXXXXXX are our temporary files`);
}

/**
 * Whether `p` (existing or not) lies inside directory `ancestor` or is it: compared by device
 * and inode while walking up from `p`'s real path, so symlinked and bind-mounted aliases count.
 */
export async function isInside(p: string, ancestor: string): Promise<boolean> {
  const a = await stat(ancestor).catch(() => undefined);
  if (!a?.isDirectory()) return false;
  let cur = path.resolve(p);
  while (!(await stat(cur).catch(() => undefined))) {
    const up = path.dirname(cur);
    if (up === cur) return false;
    cur = up;
  }
  cur = await realpath(cur);
  for (;;) {
    const st = await stat(cur).catch(() => undefined);
    if (st && st.dev === a.dev && st.ino === a.ino) return true;
    const up = path.dirname(cur);
    if (up === cur) return false;
    cur = up;
  }
}

function pidRunning(pid: number): boolean {
  if (!(pid > 0) || pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class Repository implements ObjectSink {
  /** objects/XX directories known to be real directories. */
  private readonly fanouts = new Set<string>();

  private constructor(
    /** The resolved repository directory (what all I/O uses). */
    readonly dir: string,
    /** The path as the user gave it (what messages show). */
    readonly shown: string,
    readonly hash: HashAlg,
    readonly defaultVersion: number,
  ) {}

  /**
   * Opens DIR, creating it (as `cfsctl init` would) when it has no meta.json; see the rules at
   * the top of this file. An existing repository must use `hash`; its format is reported in
   * `defaultVersion`. Fails early (a probe file) when the objects cannot be written.
   */
  static async openOrCreate(dir: string, hash: HashAlg, version: ErofsVersion): Promise<Repository> {
    const resolved = await resolveRepoDir(dir);
    const fail = (e: unknown, file?: string) => repoError(dir, resolved, e, file);
    const metaPath = path.join(resolved, 'meta.json');
    let text: string | undefined;
    try {
      // O_NONBLOCK: a FIFO planted as meta.json must not hang the open.
      const fh = await open(metaPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        const st = await fh.stat();
        if (!st.isFile()) throw new RepoError(`repository ${dir}: meta.json is not a regular file`);
        // cfsctl writes a few hundred bytes
        if (st.size > 65536) throw new RepoError(`repository ${dir}: meta.json is ${st.size} bytes; not a repository's meta.json`);
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (e instanceof RepoError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw new RepoError(`repository ${dir}: meta.json is a symbolic link; refusing to follow it`);
      if (code !== 'ENOENT') throw fail(e, metaPath);
    }
    if (text === undefined) {
      try {
        await writeNew(metaPath, Buffer.from(metaJson(hash, version)));
      } catch (e) {
        // Another process initialised it first: open what it wrote.
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return Repository.openOrCreate(dir, hash, version);
        throw fail(e);
      }
      const repo = new Repository(resolved, dir, hash, version);
      await repo.prepare();
      return repo;
    }
    let meta: Meta;
    try {
      meta = JSON.parse(text) as Meta;
    } catch {
      throw new RepoError(`${path.join(dir, 'meta.json')}: not valid JSON`);
    }
    if (meta === null || typeof meta !== 'object') throw new RepoError(`${path.join(dir, 'meta.json')}: not a JSON object`);
    if (meta.version !== 1) throw new RepoError(`${path.join(dir, 'meta.json')}: unsupported repository version ${meta.version}`);
    if (!Array.isArray(meta.features?.incompatible ?? [])) throw new RepoError(`${path.join(dir, 'meta.json')}: features.incompatible is not a list`);
    if ((meta.features?.incompatible ?? []).length > 0) {
      throw new RepoError(`${path.join(dir, 'meta.json')}: unknown incompatible features ${meta.features!.incompatible!.join(', ')}`);
    }
    const want = `fsverity-${hash}-12`;
    if (meta.algorithm !== want) {
      throw new RepoError(`${dir}: repository uses ${meta.algorithm}, but --hash ${hash} was asked for`);
    }
    const repo = new Repository(resolved, dir, hash, effectiveFormat(meta));
    await repo.prepare();
    return repo;
  }

  /** Makes sure the directories are real ones, sweeps stale temporaries, probes writability. */
  private async prepare(): Promise<void> {
    for (const d of ['objects', 'images', path.join('images', 'refs')]) await this.ensureDir(path.join(this.dir, d));
    await this.sweep();
    const probe = await this.createTemp();
    await this.discardTemp(probe);
  }

  /** Creates directory `p` inside the repository, or checks that what is there is one. */
  private async ensureDir(p: string): Promise<void> {
    try {
      await mkdir(p, { mode: 0o755 });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw this.error(e, p);
    }
    const st = await lstat(p).catch((e: unknown) => {
      throw this.error(e, p);
    });
    const rel = path.relative(this.dir, p);
    if (st.isSymbolicLink()) throw new RepoError(`repository ${this.shown}: ${rel} is a symbolic link; refusing to follow it`);
    if (!st.isDirectory()) throw new RepoError(`repository ${this.shown}: ${rel} is not a directory`);
  }

  /** Removes temporary files of processes that are gone, untouched for an hour (see top). */
  private async sweep(): Promise<void> {
    const now = Date.now();
    const one = async (rel: string, re: RegExp) => {
      const d = path.join(this.dir, rel);
      const names = await readdir(d).catch(() => [] as string[]);
      for (const n of names) {
        const m = re.exec(n);
        if (!m) continue;
        const p = path.join(d, n);
        const st = await lstat(p).catch(() => undefined);
        if (!st || st.isDirectory() || now - st.mtimeMs < STALE_AFTER || pidRunning(Number(m[1]))) continue;
        await unlink(p).catch(() => {});
      }
    };
    await one('objects', OBJECT_TEMP);
    await one('.', /^meta\.json\.tmp-(\d+)-[0-9a-f]{8}$/);
    await one('images', /^[0-9a-f]+\.tmp-(\d+)-[0-9a-f]{8}$/);
    await one(path.join('images', 'refs'), NAMED_TEMP);
  }

  /** A repository error: names the repository, the reason and what failed inside it. */
  error(e: unknown, file?: string): RepoError {
    return repoError(this.shown, this.dir, e, file);
  }

  /** Path of an object by id. */
  objectPath(id: Buffer): string {
    const hex = id.toString('hex');
    return path.join(this.dir, 'objects', hex.slice(0, 2), hex.slice(2));
  }

  /** A fresh temporary file name inside the repository (same filesystem as the objects). */
  tempPath(): string {
    return path.join(this.dir, 'objects', `.tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  /**
   * Creates an empty temporary file for a copy made elsewhere (a hash worker opens it without
   * O_CREAT: if an interrupt removed it meanwhile, the copy fails instead of leaving a file).
   */
  async createTemp(): Promise<string> {
    const tmp = this.tempPath();
    try {
      await (await openTemp(tmp)).close();
    } catch (e) {
      throw this.error(e, tmp);
    }
    return tmp;
  }

  /** Removes a temporary file that will not be committed. */
  async discardTemp(tmp: string): Promise<void> {
    await unlink(tmp).catch(() => {});
    untrackTemp(tmp);
  }

  /**
   * Moves a finished temporary file of `size` bytes into place as object `id`. If the object
   * already exists (written earlier or by a concurrent process) and is sound, the temporary copy
   * is dropped; if it is not (see top; `content` asks for a byte comparison), it is replaced.
   */
  async commitTemp(tmp: string, id: Buffer, size: number | bigint, content?: Uint8Array): Promise<void> {
    const dest = this.objectPath(id);
    try {
      // Whatever went wrong before (a short copy), a file of the wrong size never gets the name.
      const have = (await lstat(tmp, { bigint: true })).size;
      if (have !== BigInt(size)) throw new RepoError(`repository ${this.shown}: internal error: ${path.basename(tmp)} has ${have} bytes, expected ${size}; not stored`);
      await this.ensureFanout(path.dirname(dest));
      try {
        await link(tmp, dest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        if (!(await sound(dest, BigInt(size), content))) {
          await rename(tmp, dest);
          untrackTemp(tmp);
          return;
        }
      }
      await unlink(tmp);
      untrackTemp(tmp);
    } catch (e) {
      await this.discardTemp(tmp);
      throw this.error(e, dest);
    }
  }

  private async ensureFanout(d: string): Promise<void> {
    if (this.fanouts.has(d)) return;
    await this.ensureDir(d);
    this.fanouts.add(d);
  }

  /** A writer for one object whose id is known only at the end (streamed content). */
  async objectWriter(): Promise<ObjectWriter> {
    const tmp = this.tempPath();
    const fh = await openTemp(tmp).catch((e: unknown) => {
      throw this.error(e, tmp);
    });
    let size = 0;
    let closed = false;
    const close = async () => {
      if (!closed) {
        closed = true;
        await fh.close();
      }
    };
    const drop = async () => {
      await close().catch(() => {});
      await this.discardTemp(tmp);
    };
    return {
      write: async (chunk) => {
        try {
          await writeAll(fh, chunk);
        } catch (e) {
          await drop();
          throw this.error(e, tmp);
        }
        size += chunk.length;
      },
      commit: async (id) => {
        try {
          await fh.sync();
          await close();
        } catch (e) {
          await drop();
          throw this.error(e, tmp);
        }
        await this.commitTemp(tmp, id, size);
      },
      abort: drop,
    };
  }

  /** Stores bytes as object `id` (idempotent); `verify` compares an existing copy byte for byte. */
  async storeBytes(id: Buffer, data: Buffer, verify = false): Promise<void> {
    const tmp = this.tempPath();
    try {
      await writeTempFile(tmp, data);
    } catch (e) {
      await this.discardTemp(tmp);
      throw this.error(e, tmp);
    }
    await this.commitTemp(tmp, id, data.length, verify ? data : undefined);
  }

  /** Stores an image object and links images/<hex> (and images/refs/<name>). */
  async storeImage(id: Buffer, image: Buffer, name?: string): Promise<void> {
    if (name !== undefined) checkImageName(name);
    await this.storeBytes(id, image, true);
    const hex = id.toString('hex');
    try {
      await replaceSymlink(path.join('..', 'objects', hex.slice(0, 2), hex.slice(2)), path.join(this.dir, 'images', hex));
      if (name !== undefined) await replaceSymlink(path.join('..', hex), path.join(this.dir, 'images', 'refs', name));
    } catch (e) {
      throw this.error(e);
    }
  }
}

/** Whether an existing object is a regular file of `size` bytes (and, given, of `content`). */
async function sound(dest: string, size: bigint, content?: Uint8Array): Promise<boolean> {
  const st = await lstat(dest, { bigint: true }).catch(() => undefined);
  if (!st || !st.isFile() || st.size !== size) return false;
  if (!content) return true;
  const have = await readFile(dest).catch(() => undefined);
  return have !== undefined && have.equals(content);
}

function repoError(shown: string, dir: string, e: unknown, file?: string): RepoError {
  if (e instanceof RepoError) return e;
  const err = e as NodeJS.ErrnoException;
  const at = file ?? (err.path !== undefined ? String(err.path) : undefined);
  const rel = at !== undefined ? path.relative(dir, at) : '';
  const what = [err.syscall, rel && !rel.startsWith('..') ? rel : at].filter(Boolean).join(' ');
  const r = new RepoError(`repository ${shown}: ${errnoReason(e)}${what ? ` (${what})` : ''}`);
  r.code = err.code;
  return r;
}

/** Resolves the --repo path and checks that it is a directory we may fill (see top). */
async function resolveRepoDir(dir: string): Promise<string> {
  const fail = (what: string) => new RepoError(`repository ${dir}: ${what}`);
  const lst = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw fail(`${errnoReason(e)} (lstat)`);
  });
  if (!lst) {
    await mkdirs(dir, 0o700).catch((e: NodeJS.ErrnoException) => {
      throw fail(`${errnoReason(e)} (mkdir ${e.path ?? dir})`);
    });
  }
  const real = await realpath(dir).catch((e: unknown) => {
    throw fail(lst?.isSymbolicLink() ? 'a symbolic link to nothing' : `${errnoReason(e)} (realpath)`);
  });
  const via = real === path.resolve(dir) ? '' : ` (resolves to ${real})`;
  const st = await stat(real);
  if (!st.isDirectory()) throw fail(`not a directory${via}`);
  const names = await readdir(real).catch((e: unknown) => {
    throw fail(`${errnoReason(e)} (scandir)`);
  });
  if (!names.includes('meta.json')) {
    const foreign = names.filter((n) => !REPO_ENTRIES.has(n) && !NAMED_TEMP.test(n));
    if (foreign.length > 0) {
      const some = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? ', …' : '');
      throw fail(
        `not a composefs repository${via}: no meta.json, and not empty (${some}); refusing to write into it: give a new or empty directory, or an existing repository`,
      );
    }
  }
  return real;
}

/**
 * `mkdir -p`, one component at a time: a recursive mkdir reports ENOENT for every failure (on a
 * read-only filesystem too), this one the real cause (EROFS, EACCES) of the component that failed.
 */
async function mkdirs(dir: string, mode: number): Promise<void> {
  try {
    await mkdir(dir, { mode });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = path.dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw e;
    await mkdirs(parent, 0o755);
    await mkdir(dir, { mode }).catch((e2: NodeJS.ErrnoException) => {
      if (e2.code !== 'EEXIST') throw e2;
    });
  }
}

/**
 * Creates `file` with `data`, failing with EEXIST if it exists. The content is complete before
 * the name appears (written to a temporary file, then hard-linked): a concurrent reader never
 * sees a half-written file.
 */
async function writeNew(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeTempFile(tmp, data);
    await link(tmp, file);
  } finally {
    await unlink(tmp).catch(() => {});
    untrackTemp(tmp);
  }
}

/** Creates the (tracked) temporary file `tmp` holding all of `data`, synced to disk. */
async function writeTempFile(tmp: string, data: Buffer): Promise<void> {
  const fh = await openTemp(tmp);
  try {
    await writeAll(fh, data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Points `linkPath` at `target`, atomically replacing any existing link. */
async function replaceSymlink(target: string, linkPath: string): Promise<void> {
  try {
    if ((await readlink(linkPath)) === target) return;
  } catch {
    /* absent, or not a symlink: replaced below */
  }
  const tmp = `${linkPath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await createTemp(tmp, () => symlink(target, tmp));
    await rename(tmp, linkPath);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  } finally {
    untrackTemp(tmp);
  }
}
