/**
 * SOURCE arguments: every command builds its tree from one of these, and everything downstream
 * sees only the tree.
 *
 *   dumpfile:PATH   a composefs dumpfile (`-` = standard input)
 *   dir:PATH, PATH  a directory, e.g. a container root bind-mounted into a build stage
 *   oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], layers:A.tar,B.tar.gz
 *                   OCI layer tarballs (the same image outside the build)
 */
import { loadDumpfile } from './dumpfile.js';
import { loadOci } from './oci/load.js';
import type { ImageMetadata } from './oci/manifest.js';
import type { KeepWish, KeptContent, Provenance } from './tar/members.js';
import type { ObjectService } from '../objects/service.js';
import { Repository } from '../repo/repo.js';
import { loadDir } from './dir/dir.js';
import type { ContentReader } from '../transform/boot.js';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { UsageError } from '../errors.js';

/** A loaded source: the tree and the hash of its object ids (if it has external files). */
export interface LoadedSource {
  fs: FileSystem;
  objectHash: HashAlg | undefined;
  kind: 'dumpfile' | 'dir' | 'oci';
  description: string;
  /** OCI sources, when asked for: where each directory came from. */
  provenance?: Provenance;
  /** Reads a regular file's content (the SELinux policy files of the bootable transform). */
  read: ContentReader;
  /** Directory sources: the directory. */
  dirPath?: string;
}

/** A snapshot of a loader's progress, for {@link SourceOptions.onProgress}. */
export type LoadProgress =
  | { stage: 'scan'; path: string; entries: number; filesHashed: number; bytesHashed: bigint; done?: boolean }
  | { stage: 'layers'; spec: string; layer: number; layers: number; label: string; size: number; read: number; entries: number; done?: boolean };

export interface SourceOptions {
  /** Hash of object ids computed from file content. */
  hash: HashAlg;
  /** Hashing threads. */
  jobs: number;
  /** Whether `jobs` was asked for (-j): layer sources otherwise keep a core for decompression. */
  jobsGiven?: boolean;
  /** Store external files here while hashing. */
  repo?: Repository;
  /**
   * Called with a snapshot of the loader's progress from its own timer (unref'd, at most every
   * ~200 ms) and once at the end (`done`, also when loading fails).
   */
  onProgress?: (p: LoadProgress) => void;
  /** OCI sources: os/arch[/variant] to pick from an index (default: the host's). */
  platform?: string;
  /** Record directory provenance of OCI sources (for compare). */
  provenance?: boolean;
  /**
   * OCI sources: which file contents to keep for `read` (e.g. the bootable transform's
   * src/transform/boot.ts `bootReads`); default: none.
   */
  keep?: (path: Buffer) => KeepWish;
  /** OCI sources: keeps contents in this map (by leaf) as its `wants` asks; overrides `keep`. */
  kept?: KeptContent;
  /** OCI sources: filled with the image's manifest annotations and config labels. */
  metadata?: ImageMetadata;
  /**
   * Turns file contents into object ids (src/objects/service.ts); default: one made from `hash`,
   * `repo` and `jobs` for this load (and closed after it). A given service is not closed.
   */
  objects?: ObjectService;
}

function splitSpec(spec: string): { kind: string; rest: string } {
  const m = /^([a-z][a-z-]*):(.*)$/s.exec(spec);
  if (m) return { kind: m[1], rest: m[2] };
  return { kind: '', rest: spec };
}

/**
 * A parsed SOURCE. OCI kinds keep the text after `KIND:` as it is (`DIR[:REF]`, `FILE[:REF]`,
 * `A.tar,B.tar.gz`): where the path ends and the ref begins is only decided against the
 * filesystem, when the source is loaded.
 */
export type Source =
  | { kind: 'dir'; path: string }
  | { kind: 'dumpfile'; path: string /* '-' = standard input */ }
  | { kind: 'oci' | 'oci-archive' | 'docker-archive' | 'layers'; spec: string };

/** Parses a SOURCE argument (the one parser of SOURCE strings). */
export function parseSource(spec: string): Source {
  const { kind, rest } = splitSpec(spec);
  switch (kind) {
    case 'dumpfile':
      if (rest === '') throw new UsageError(`source '${spec}': missing path after 'dumpfile:'`);
      return { kind: 'dumpfile', path: rest };
    case 'dir':
    case '':
      if (rest === '') throw new UsageError(`source '${spec}': missing directory path`);
      return { kind: 'dir', path: rest };
    case 'oci':
    case 'oci-archive':
    case 'docker-archive':
    case 'layers':
      return { kind, spec };
    default:
      throw new UsageError(
        `source '${spec}': unknown source kind '${kind}'; expected a directory, dir:PATH, dumpfile:PATH, oci:DIR, oci-archive:FILE, docker-archive:FILE or layers:A.tar,... (see 'cfs --help')`,
      );
  }
}

/** Loads a SOURCE argument as it is, before any finishing rule. */
export function loadRawSource(spec: string, opts: SourceOptions): Promise<LoadedSource> {
  return loadRawTree(parseSource(spec), opts);
}

/** Loads a source as it is, before any finishing rule. */
export async function loadRawTree(source: Source, opts: SourceOptions): Promise<LoadedSource> {
  switch (source.kind) {
    case 'dumpfile':
      return loadDumpfile(source.path);
    case 'dir':
      return loadDir(source.path, opts);
    case 'oci':
    case 'oci-archive':
    case 'docker-archive':
    case 'layers':
      return loadOci(source.spec, opts);
  }
}

