/** Dumpfile sources: the bytes of a composefs dumpfile, from a file or standard input. */
import { readFile } from 'node:fs/promises';

/** Reads a dumpfile, naming it in errors (a directory gives EISDIR from read(), without a path). */
export async function readDumpfile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw new Error(`dumpfile ${file} is a directory, not a dumpfile`);
    throw e; // errors of open() carry the path
  }
}

/** Reads all of standard input. */
export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
