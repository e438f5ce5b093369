/**
 * SOURCE arguments: every command builds its tree from one of these, and everything downstream
 * sees only the tree.
 *
 *   dumpfile:PATH   a composefs dumpfile (`-` = standard input)
 *   dir:PATH, PATH  a directory, e.g. a container root bind-mounted into a build stage
 *   oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], layers:A.tar,B.tar.gz
 *                   OCI layer tarballs (the same image outside the build)
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseDumpfile } from '../dumpfile/parse.js';
import { HashPool } from '../fsverity/pool.js';
import { loadOciSource } from '../oci/image.js';
import { Provenance } from '../oci/layers.js';
import { Repository } from '../repo/repo.js';
import { scanDirectory } from '../scan/scan.js';
import { transformForBoot, type ContentReader } from '../transform/boot.js';
import { canonicalizeRun, copyRootMetadataFromUsr, transformForOci, type XattrFilterMode } from '../transform/transform.js';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { UsageError } from './errors.js';
import { Progress, human } from './progress.js';

/** A loaded source: the tree and the hash of its object ids (if it has external files). */
export interface LoadedSource {
  fs: FileSystem;
  objectHash: HashAlg | undefined;
  kind: 'dumpfile' | 'dir' | 'oci';
  description: string;
  /** OCI sources, when asked for: where each directory came from. */
  provenance?: Provenance;
}

export interface SourceOptions {
  /** Hash of object ids computed from file content. */
  hash: HashAlg;
  /** Hashing threads. */
  jobs: number;
  /** cfsctl's transform_for_oci; false = `--no-propagate-usr-to-root` (raw tree). */
  propagateUsrToRoot: boolean;
  xattrs: XattrFilterMode;
  bootable: boolean;
  /** Store external files here while hashing. */
  repo?: Repository;
  progress: boolean;
  /** OCI sources: os/arch[/variant] to pick from an index (default: the host's). */
  platform?: string;
  /** Record directory provenance of OCI sources (for compare). */
  provenance?: boolean;
  /** OCI sources: keep every xattr (composefs-rs before v0.8.0). */
  tarKeepsAllXattrs?: boolean;
}

/** Reads all of standard input. */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function splitSpec(spec: string): { kind: string; rest: string } {
  const m = /^([a-z][a-z-]*):(.*)$/s.exec(spec);
  if (m) return { kind: m[1], rest: m[2] };
  return { kind: '', rest: spec };
}

async function loadDirectory(dir: string, opts: SourceOptions): Promise<FileSystem> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    throw new UsageError(`source '${dir}': ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
  }
  if (!st.isDirectory()) throw new UsageError(`source '${dir}' is not a directory`);
  const pool = new HashPool(opts.jobs);
  const repo = opts.repo;
  let files = 0;
  const progress = new Progress(opts.progress, () => `scanning ${dir}: ${files} files listed, ${pool.filesDone} hashed (${human(pool.bytesDone)})`);
  progress.start();
  try {
    const hashFile = async (p: Buffer, size: bigint): Promise<Buffer> => {
      files++;
      if (!repo) return pool.hash(p, size, opts.hash);
      const tmp = repo.tempPath();
      try {
        const id = await pool.hash(p, size, opts.hash, tmp);
        await repo.commitTemp(tmp, id);
        return id;
      } catch (e) {
        await import('node:fs/promises').then((f) => f.unlink(tmp)).catch(() => {});
        throw e;
      }
    };
    const fs = await scanDirectory(dir, { hashFile, hashConcurrency: Math.max(64, opts.jobs * 8) });
    if (opts.propagateUsrToRoot) transformForOci(fs, { propagateUsrToRoot: true, xattrs: opts.xattrs });
    if (opts.bootable) {
      // Only the SELinux policy files are ever read back, from the directory itself.
      const read: ContentReader = (p) => readFile(path.join(dir, p.toString('latin1')));
      await transformForBoot(fs, read);
    }
    return fs;
  } finally {
    progress.stop();
    await pool.close();
  }
}

/** Loads a SOURCE argument into a tree. */
export async function loadSource(spec: string, opts: SourceOptions): Promise<LoadedSource> {
  const { kind, rest } = splitSpec(spec);
  switch (kind) {
    case 'dumpfile': {
      if (rest === '') throw new UsageError(`source '${spec}': missing path after 'dumpfile:'`);
      const text = rest === '-' ? await readStdin() : await readFile(rest);
      const { fs, objectHash } = parseDumpfile(text);
      if (opts.bootable) {
        await transformForBoot(fs, async () => {
          throw new UsageError('a dumpfile source holds no file contents: cannot read the SELinux policy for --bootable');
        });
      }
      return { fs, objectHash, kind: 'dumpfile', description: rest === '-' ? 'dumpfile from standard input' : `dumpfile ${rest}` };
    }
    case 'dir':
    case '': {
      if (rest === '') throw new UsageError(`source '${spec}': missing directory path`);
      const fs = await loadDirectory(rest, opts);
      return { fs, objectHash: opts.hash, kind: 'dir', description: `directory ${rest}` };
    }
    case 'oci':
    case 'oci-archive':
    case 'docker-archive':
    case 'layers': {
      const provenance = opts.provenance ? new Provenance() : undefined;
      const fs = await loadOciSource(spec, {
        hash: opts.hash,
        platform: opts.platform,
        transform: opts.tarKeepsAllXattrs ? undefined : { propagateUsrToRoot: opts.propagateUsrToRoot, xattrs: opts.xattrs },
        provenance,
        sink: opts.repo,
      });
      if (opts.tarKeepsAllXattrs && opts.propagateUsrToRoot) {
        // transform_for_oci as before composefs-rs v0.8.0: no xattr filter on the tar path
        copyRootMetadataFromUsr(fs);
        canonicalizeRun(fs);
      }
      if (opts.bootable) {
        await transformForBoot(fs, async () => {
          throw new UsageError('--bootable with an OCI source whose /etc/selinux/config is larger than 64 bytes is not supported yet');
        });
      }
      return { fs, objectHash: opts.hash, kind: 'oci', description: spec, provenance };
    }
    default:
      throw new UsageError(
        `source '${spec}': unknown source kind '${kind}'; expected a directory, dir:PATH, dumpfile:PATH, oci:DIR, oci-archive:FILE, docker-archive:FILE or layers:A.tar,... (see 'cfs --help')`,
      );
  }
}
