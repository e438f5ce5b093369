/**
 * Writing output files so that a failure never leaves a half-written file behind: data goes to
 * a temporary file in the same directory, is fsync'ed, then renamed over the target.
 */
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** Writes `chunks` to `target` atomically (temp file + fsync + rename). */
export async function writeFileAtomic(target: string, chunks: Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>): Promise<void> {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o644);
  let ok = false;
  try {
    for await (const c of chunks) await fh.write(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await unlink(tmp).catch(() => {});
  }
  try {
    await rename(tmp, target);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}
