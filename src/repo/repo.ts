/**
 * An object store laid out like a composefs-rs repository (v0.9.0):
 *
 *   meta.json                     algorithm and EROFS format (exact cfsctl init bytes)
 *   objects/xx/yyyy…              content addressed by fs-verity digest
 *   images/<hex> -> ../objects/xx/yyyy…
 *   images/refs/<name> -> ../<hex>
 *
 * Every write is a temporary file + fsync + link into place, so readers never see a partial
 * object, a crash leaves at most a stray temporary file, and two processes filling the same
 * repository at once are safe (the second link finds the object and drops its copy).
 * We do not enable fs-verity on files (most build filesystems cannot), so for composefs-rs the
 * repository is an insecure one: mount it with `cfsctl --insecure`.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, readlink, rename, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ErofsVersion } from '../erofs/writer.js';
import type { HashAlg } from '../tree/tree.js';

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
export class RepoError extends Error {}

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

export class Repository implements ObjectSink {
  private constructor(
    readonly dir: string,
    readonly hash: HashAlg,
    readonly defaultVersion: number,
  ) {}

  /**
   * Opens DIR, creating it (as `cfsctl init` would) when it has no meta.json. An existing
   * repository must use `hash`; its format is reported in `defaultVersion`.
   */
  static async openOrCreate(dir: string, hash: HashAlg, version: ErofsVersion): Promise<Repository> {
    const metaPath = path.join(dir, 'meta.json');
    let text: string | undefined;
    try {
      text = await readFile(metaPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text === undefined) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await mkdir(path.join(dir, 'objects'), { recursive: true });
      await mkdir(path.join(dir, 'images', 'refs'), { recursive: true });
      try {
        await writeNew(metaPath, Buffer.from(metaJson(hash, version)));
      } catch (e) {
        // Another process initialised it first: open what it wrote.
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') return Repository.openOrCreate(dir, hash, version);
        throw e;
      }
      return new Repository(dir, hash, version);
    }
    let meta: Meta;
    try {
      meta = JSON.parse(text) as Meta;
    } catch {
      throw new RepoError(`${metaPath}: not valid JSON`);
    }
    if (meta.version !== 1) throw new RepoError(`${metaPath}: unsupported repository version ${meta.version}`);
    if ((meta.features?.incompatible ?? []).length > 0) {
      throw new RepoError(`${metaPath}: unknown incompatible features ${meta.features!.incompatible!.join(', ')}`);
    }
    const want = `fsverity-${hash}-12`;
    if (meta.algorithm !== want) {
      throw new RepoError(`${dir}: repository uses ${meta.algorithm}, but --hash ${hash} was asked for`);
    }
    await mkdir(path.join(dir, 'objects'), { recursive: true });
    await mkdir(path.join(dir, 'images', 'refs'), { recursive: true });
    return new Repository(dir, hash, effectiveFormat(meta));
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
   * Moves a finished temporary file into place as object `id`. If the object already exists
   * (written earlier or by a concurrent process), the temporary copy is dropped.
   */
  async commitTemp(tmp: string, id: Buffer): Promise<void> {
    const dest = this.objectPath(id);
    await mkdir(path.dirname(dest), { recursive: true });
    try {
      await link(tmp, dest);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        await unlink(tmp).catch(() => {});
        throw e;
      }
    }
    await unlink(tmp);
  }

  /** A writer for one object whose id is known only at the end (streamed content). */
  async objectWriter(): Promise<ObjectWriter> {
    const tmp = this.tempPath();
    const fh = await open(tmp, 'wx', 0o644);
    let closed = false;
    const close = async () => {
      if (!closed) {
        closed = true;
        await fh.close();
      }
    };
    return {
      write: async (chunk) => {
        await fh.write(chunk);
      },
      commit: async (id) => {
        try {
          await fh.sync();
          await close();
          await this.commitTemp(tmp, id);
        } catch (e) {
          await close().catch(() => {});
          await unlink(tmp).catch(() => {});
          throw e;
        }
      },
      abort: async () => {
        await close().catch(() => {});
        await unlink(tmp).catch(() => {});
      },
    };
  }

  /** Stores bytes as object `id` (idempotent). */
  async storeBytes(id: Buffer, data: Buffer): Promise<void> {
    const tmp = this.tempPath();
    await writeNew(tmp, data);
    await this.commitTemp(tmp, id);
  }

  /** Stores an image object and links images/<hex> (and images/refs/<name>). */
  async storeImage(id: Buffer, image: Buffer, name?: string): Promise<void> {
    await this.storeBytes(id, image);
    const hex = id.toString('hex');
    await replaceSymlink(path.join('..', 'objects', hex.slice(0, 2), hex.slice(2)), path.join(this.dir, 'images', hex));
    if (name !== undefined) {
      if (name === '' || name.includes('/') || name === '.' || name === '..') {
        throw new RepoError(`invalid image name '${name}': a name may not be empty or contain '/'`);
      }
      await replaceSymlink(path.join('..', hex), path.join(this.dir, 'images', 'refs', name));
    }
  }
}

/**
 * Creates `file` with `data`, failing with EEXIST if it exists. The content is complete before
 * the name appears (written to a temporary file, then hard-linked): a concurrent reader never
 * sees a half-written file.
 */
async function writeNew(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', 0o644);
  try {
    try {
      await fh.write(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, file);
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

/** Points `linkPath` at `target`, atomically replacing any existing link. */
async function replaceSymlink(target: string, linkPath: string): Promise<void> {
  try {
    if ((await readlink(linkPath)) === target) return;
  } catch {
    /* absent */
  }
  const tmp = `${linkPath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await symlink(target, tmp);
  await rename(tmp, linkPath);
}
