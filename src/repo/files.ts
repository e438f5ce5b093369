/**
 * Writing files so that nothing half-written survives: every byte accounted for (write(2) may
 * write less than asked, e.g. on a nearly full filesystem, and a short write is not an error),
 * errors that name the file the user knows, and a registry of our temporary files so that an
 * interrupted run (SIGINT/SIGTERM, a closed standard output) removes them before it exits.
 */
import { unlinkSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

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

/** Registers a temporary file to remove if the process is interrupted before it is renamed. */
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
