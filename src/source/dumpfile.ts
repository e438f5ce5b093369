/** Dumpfile sources: the bytes of a composefs dumpfile, from a file or standard input. */
import { readFile } from 'node:fs/promises';
import { parseDumpfile } from '../dumpfile/parse.js';
import { UsageError } from '../errors.js';
import type { ContentReader } from '../transform/boot.js';
import type { LoadedSource } from './load.js';

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

/** Loads a dumpfile (`-`: standard input) as it is. */
export async function loadDumpfile(path: string): Promise<LoadedSource> {
  const rest = path;
  const text = rest === '-' ? await readStdin() : await readDumpfile(rest);
  const { fs, objectHash } = parseDumpfile(text);
  const read: ContentReader = async () => {
    throw new UsageError('a dumpfile source holds no file contents: cannot read the SELinux policy for --bootable');
  };
  return { fs, objectHash, kind: 'dumpfile', description: rest === '-' ? 'dumpfile from standard input' : `dumpfile ${rest}`, read };
}
