/**
 * SOURCE arguments: every command builds its tree from one of these, and everything downstream
 * sees only the tree.
 *
 *   dumpfile:PATH   a composefs dumpfile (`-` = standard input)
 *
 * Directory and OCI sources are further kinds added here.
 */
import { readFile } from 'node:fs/promises';
import { parseDumpfile } from '../dumpfile/parse.js';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { UsageError } from './errors.js';

/** A loaded source: the tree and the hash of its object ids (if it has external files). */
export interface LoadedSource {
  fs: FileSystem;
  objectHash: HashAlg | undefined;
  description: string;
}

export interface SourceOptions {
  hash: HashAlg;
}

/** Reads all of standard input. */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Loads a SOURCE argument into a tree. */
export async function loadSource(spec: string, _opts: SourceOptions): Promise<LoadedSource> {
  const colon = spec.indexOf(':');
  const kind = colon === -1 ? '' : spec.slice(0, colon);
  const rest = colon === -1 ? spec : spec.slice(colon + 1);
  switch (kind) {
    case 'dumpfile': {
      if (rest === '') throw new UsageError(`source '${spec}': missing path after 'dumpfile:'`);
      const text = rest === '-' ? await readStdin() : await readFile(rest);
      const { fs, objectHash } = parseDumpfile(text);
      return { fs, objectHash, description: rest === '-' ? 'dumpfile from standard input' : `dumpfile ${rest}` };
    }
    default:
      throw new UsageError(
        `source '${spec}': unknown source kind${kind ? ` '${kind}'` : ''}; expected dumpfile:PATH (see 'cfs --help')`,
      );
  }
}
