/**
 * Writing output files (-o, --write-dumpfile-to) so that a failure never leaves a half-written
 * file behind, and so that nothing but a regular file is ever replaced. The rule, by what the
 * target is:
 *   `-` or `/dev/stdout`       written to standard output (fd 1), whatever it is
 *   missing, or a regular file  a temporary file in the same directory, written whole, fsync'ed,
 *                               renamed over the target (atomic: old content or new, never half)
 *   character device, FIFO      written through, in place (/dev/null, /dev/full, a tty, a named
 *                               pipe, /dev/fd/N): a stream has no "half-written file"; its write
 *                               errors are reported. A FIFO without a reader is an error, not a wait.
 *                               Reached through a symlink too (/dev/stderr, /proc/self/fd/N).
 *   symlink to anything else, directory, socket, block device: refused. Replacing a symlink
 *                               (or writing through it into a file) is never what a user meant
 *                               by `-o`, and in a shared /tmp it is how one is attacked.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, open, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { InputError } from '../errors.js';
import { nameError, openTemp, untrackTemp, writeAll } from '../repo/files.js';

type Chunks = Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>;

const bytes = (c: Uint8Array | string): Uint8Array => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c);

/** Whether an output argument means standard output. */
export function isStdout(target: string): boolean {
  return target === '-' || target === '/dev/stdout';
}

/** Writes to standard output, waiting for it to drain (errors end the process: see main.ts). */
export async function writeStdout(chunks: Chunks): Promise<void> {
  for await (const c of chunks) {
    if (!process.stdout.write(c)) await new Promise((r) => process.stdout.once('drain', r));
  }
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

type Plan = { how: 'stdout' } | { how: 'file' } | { how: 'through'; st: Stats };

/** How an output argument is written (see the top of this file), or why it is refused. */
async function plan(target: string): Promise<Plan> {
  if (isStdout(target)) return { how: 'stdout' };
  const st = await lstat(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw nameError(e, target);
  });
  if (!st || st.isFile()) return { how: 'file' };
  const through = st.isSymbolicLink() ? await stat(target).catch(() => undefined) : st;
  if (through && (through.isCharacterDevice() || through.isFIFO())) return { how: 'through', st: through };
  if (st.isSymbolicLink()) {
    throw new InputError(`${target}: is a symbolic link; cfs does not replace or write through symbolic links (give the path it points to)`);
  }
  throw new InputError(
    `${target}: is ${kindOf(st)}; cfs writes only to a new path, a regular file (replaced atomically), a character device or a FIFO`,
  );
}

/** Refuses an output argument that would be refused when written: call before the work. */
export async function checkOutput(target: string): Promise<void> {
  await plan(target);
}

/** Writes an output argument by the rule at the top of this file. */
export async function writeOutput(target: string, chunks: Chunks): Promise<void> {
  const p = await plan(target);
  if (p.how === 'stdout') return writeStdout(chunks);
  if (p.how === 'through') return writeThrough(target, p.st, chunks);
  return writeFileAtomic(target, chunks);
}

/** Writes into an existing character device or FIFO, without creating or truncating anything. */
async function writeThrough(target: string, st: Stats, chunks: Chunks): Promise<void> {
  const fifo = st.isFIFO();
  // O_NONBLOCK: opening a FIFO nobody reads fails (ENXIO) instead of waiting forever.
  const flags = constants.O_WRONLY | constants.O_NOCTTY | (fifo ? constants.O_NONBLOCK : 0);
  const fh = await open(target, flags).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENXIO' && fifo) throw new InputError(`${target}: no process is reading this FIFO`);
    throw e;
  });
  try {
    // The path may have been swapped since lstat: write only into what we meant to.
    const now = await fh.stat();
    if (!(now.isCharacterDevice() || now.isFIFO())) throw new InputError(`${target}: changed while being opened; not written`);
    for await (const c of chunks) await writeAll(fh, bytes(c), fifo);
  } catch (e) {
    throw nameError(e, target);
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Writes `chunks` to `target` atomically: a temporary file beside it (registered, so that an
 * interrupt removes it), written whole, fsync'ed, renamed over the target. Errors name `target`.
 */
export async function writeFileAtomic(target: string, chunks: Chunks): Promise<void> {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await openTemp(tmp);
    try {
      for await (const c of chunks) await writeAll(fh, bytes(c));
      await fh.sync();
    } finally {
      await fh.close();
    }
    // Between our lstat and now the target may have become something else: still only a
    // regular file (or nothing) is replaced.
    const st = await lstat(target).catch(() => undefined);
    if (st && !st.isFile()) throw new InputError(`${target}: is ${kindOf(st)} now; not replaced`);
    await rename(tmp, target);
    untrackTemp(tmp);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    untrackTemp(tmp);
    throw nameError(e, target);
  }
  // The rename is durable once the directory is synced; failing that is not worth an error.
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY).catch(() => undefined);
  if (!d) return;
  await d.sync().catch(() => {});
  await d.close().catch(() => {});
}
