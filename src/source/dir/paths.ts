/**
 * Raw paths of the directory source: joining, showing them in messages, and reaching
 * directories whose real path is longer than the kernel takes (PATH_MAX 4096) the way
 * composefs-rs's dirfd-relative walk does: opened piecewise, then used through /proc/self/fd/N.
 */
import fs, { constants as fsc } from 'node:fs';

/** Longest path we hand to the kernel directly; longer ones go through /proc/self/fd/N. */
export const MAX_DIRECT_PATH = 3800;
const SLASH = Buffer.from('/');

/** Human-readable form of a raw path for messages (invalid UTF-8 shown as U+FFFD, like to_string_lossy). */
export function showPath(p: Buffer): string {
  return p.toString('utf8');
}

export function joinPath(dir: Buffer, name: Buffer): Buffer {
  if (dir.length > 0 && dir[dir.length - 1] === 0x2f) return Buffer.concat([dir, name]);
  return Buffer.concat([dir, SLASH, name]);
}

/** Error naming the path, keeping the system error as cause and its code. */
export function scanError(what: string, p: Buffer, cause?: unknown): Error {
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
export class DirAnchor {
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
export function openLongDir(real: Buffer): DirAnchor {
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
