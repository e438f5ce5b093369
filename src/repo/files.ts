/**
 * Writing files so that nothing half-written survives: every byte accounted for (write(2) may
 * write less than asked, e.g. on a nearly full filesystem, and a short write is not an error),
 * errors that name the file the user knows, and a registry of our temporary files so that an
 * interrupted run (SIGINT/SIGTERM, a closed standard output) removes them before it exits.
 */
import { unlinkSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Writes all of `data` at the file position, looping over short writes. With `retryAgain`, an
 * EAGAIN (a non-blocking FIFO that is full) waits and retries instead of failing.
 */
export async function writeAll(fh: FileHandle, data: Uint8Array, retryAgain = false): Promise<void> {
  let off = 0;
  let pause = 1;
  while (off < data.length) {
    let n: number;
    try {
      ({ bytesWritten: n } = await fh.write(data, off, data.length - off));
    } catch (e) {
      if (retryAgain && (e as NodeJS.ErrnoException).code === 'EAGAIN') {
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 50);
        continue;
      }
      throw e;
    }
    // write(2) returns 0 only when it cannot make progress: never loop on it.
    if (n <= 0) throw Object.assign(new Error('EIO: write made no progress, write'), { code: 'EIO', syscall: 'write' });
    off += n;
    pause = 1;
  }
}

/** The strerror-like reason of a Node system error ("no space left on device"), else its message. */
export function errnoReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const m = typeof err?.message === 'string' ? /^[A-Z0-9_]+: ([^,]+)/.exec(err.message) : null;
  if (m) return m[1];
  return err?.code ?? String((e as Error)?.message ?? e);
}

/**
 * Gives a system error the path the user named (Node leaves it off write/fsync errors, and the
 * temporary file's name would mean nothing to them), keeping code and syscall.
 */
export function nameError(e: unknown, file: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err instanceof Error && typeof err.code === 'string') {
    err.path = file;
    if (!err.syscall) err.syscall = 'write';
  }
  return e;
}

const temps = new Set<string>();
/** Set once the process is ending on an interrupt: no new temporary file may appear. */
let ending = false;
/** Creations of temporary files under way (open/symlink queued on libuv's thread pool). */
let creating = 0;
let whenIdle: (() => void) | undefined;

/**
 * Creates temporary file `file` with `create` and registers it, so that an interrupt removes
 * it. Creations are counted: a creation still queued on the thread pool when a signal arrives
 * would otherwise make its file after the cleanup ran. Once the process is ending, a new
 * creation never starts (and never settles: the process exits).
 */
export async function createTemp<T>(file: string, create: () => Promise<T>): Promise<T> {
  if (ending) return new Promise<T>(() => {});
  temps.add(file);
  creating++;
  try {
    return await create();
  } catch (e) {
    // not created (EEXIST: someone else's): not ours to remove
    temps.delete(file);
    throw e;
  } finally {
    creating--;
    if (creating === 0) whenIdle?.();
  }
}

/** Creates (O_EXCL) and opens a registered temporary file. */
export function openTemp(file: string): Promise<FileHandle> {
  return createTemp(file, () => open(file, 'wx', 0o644));
}

/** Registers a temporary file that already exists. */
export function trackTemp(file: string): void {
  temps.add(file);
}

/** The temporary file is gone (renamed into place or removed): forget it. */
export function untrackTemp(file: string): void {
  temps.delete(file);
}

/** The temporary files currently registered. */
export function trackedTemps(): ReadonlySet<string> {
  return temps;
}

/**
 * Ends the process with `code` once no temporary file is being created, removing every one we
 * made. A second call (a second Ctrl-C), or 2 s without the creations settling, ends it at once.
 */
export function exitRemovingTemps(code: number): void {
  const finish = () => {
    abandonTemps();
    process.exit(code);
  };
  if (ending || creating === 0) return finish();
  ending = true;
  whenIdle = finish;
  setTimeout(finish, 2000).unref();
}

/**
 * Removes every registered temporary file, synchronously (for signal handlers and exit paths,
 * where no further I/O callback will run).
 */
export function abandonTemps(): void {
  for (const f of temps) {
    try {
      unlinkSync(f);
    } catch {
      /* already gone */
    }
  }
  temps.clear();
}
