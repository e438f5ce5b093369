/**
 * OCI image sources -> the tree composefs-rs builds for them (`create_filesystem`):
 *
 *   oci:DIR[:REF]              OCI image layout directory
 *   oci-archive:FILE[:REF]     the same, as a tar (read in place, never extracted)
 *   docker-archive:FILE[:REF]  `docker save` / `podman save` output (manifest.json + layer tars)
 *   layers:A.tar,B.tar.gz,...  bare layer tarballs, bottom first (no digests to verify)
 *
 * REF for OCI layouts is the `org.opencontainers.image.ref.name` annotation (optional when the
 * index names one image); split as composefs-rs `parse_oci_layout_ref` does (last ':' unless what
 * follows contains '/'). For docker archives REF is a RepoTags entry or `@N` (Nth image).
 * Image indexes / manifest lists are resolved for a platform (default: the host's, e.g. linux/amd64).
 *
 * Every blob read is verified while streaming: size and digest of manifests, configs and layer
 * blobs against their descriptors, and each layer's uncompressed sha256 against the config's
 * rootfs.diff_ids. A mismatch is an error naming the blob.
 */
import { type ObjectService, objectService } from '../../objects/service.js';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { FileSystem, HashAlg } from '../../tree/tree.js';
import { KeptContent, Provenance, newOciFileSystem } from '../tar/members.js';
import { dockerArchiveLayers } from './docker-archive.js';
import { type ImageMetadata, type Platform, hostPlatform, layoutLayers, parsePlatform } from './manifest.js';
import { ArchiveStore, DirStore, type LayerProgress, type LayerSpec, OciSourceError, applyVerifiedLayer, fileRange } from './store.js';

interface OciSourceCommon {
  /** "os/arch[/variant]"; default: the host (linux/amd64 on x64). */
  platform?: string;
  /** Filled with where each directory came from (for `cfs compare`). */
  provenance?: Provenance;
  /** Keeps the contents it asks for, e.g. the SELinux policy files (for --bootable). */
  kept?: KeptContent;
  /** Filled with the image's manifest annotations and config labels (where the source has them). */
  metadata?: ImageMetadata;
  /** Filled in as layers are read, for a progress display (read it from a timer). */
  progress?: LayerProgress;
}

/**
 * How to load an OCI source: file contents become object ids through `objects` (hash only, or
 * hash and store), or, without one, through a hash-only service of `hash` with `jobs` hashing
 * threads (default: one fewer than cores), closed when loading ends.
 */
export type OciSourceOptions = OciSourceCommon & ({ objects: ObjectService; hash?: undefined; jobs?: undefined } | { objects?: undefined; hash: HashAlg; jobs?: number });

export type { LayerProgress } from './store.js';

/** composefs-rs `parse_oci_layout_ref`: split at the last ':' unless the tail contains '/'. */
export function splitLayoutRef(s: string): [string, string | undefined] {
  const i = s.lastIndexOf(':');
  if (i === -1) return [s, undefined];
  const tag = s.slice(i + 1);
  if (tag.includes('/')) return [s, undefined];
  return [s.slice(0, i), tag];
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Splits `oci:` DIR[:REF]. Ref names may hold ':' and '/' (BuildKit names its image
 * `docker.io/library/base:latest`), which composefs-rs's split at the last ':' cannot name. So:
 * 1. the whole remainder, if it is an OCI layout (a directory with an `oci-layout` file): no REF;
 * 2. else the shortest prefix before a ':' that is an OCI layout: DIR, and all the rest is REF
 *    (the whole remainder is tried as a ref name first; a DIR may hold ':' too);
 * 3. else composefs-rs's rule ({@link splitLayoutRef}), whose DIR the error then names.
 */
export async function resolveLayoutRef(s: string): Promise<[string, string | undefined]> {
  const isLayout = (d: string) => isFile(path.join(d, 'oci-layout'));
  if (await isLayout(s)) return [s, undefined];
  for (let i = s.indexOf(':'); i !== -1; i = s.indexOf(':', i + 1)) {
    if (i > 0 && (await isLayout(s.slice(0, i)))) return [s.slice(0, i), s.slice(i + 1) || undefined];
  }
  return splitLayoutRef(s);
}

/** Splits FILE[:REF] preferring the longest existing file (REF may contain ':', e.g. "busybox:latest"). */
async function splitFileRef(s: string): Promise<[string, string | undefined]> {
  if (await isFile(s)) return [s, undefined];
  for (let i = s.indexOf(':'); i !== -1; i = s.indexOf(':', i + 1)) {
    if (await isFile(s.slice(0, i))) return [s.slice(0, i), s.slice(i + 1) || undefined];
  }
  return [s, undefined];
}

/** The layers of a source spec, bottom first, each with what to verify. */
async function layerSpecs(spec: string, want: Platform, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const colon = spec.indexOf(':');
  const kind = colon === -1 ? '' : spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (rest === '') throw new OciSourceError(`source '${spec}': missing path after '${kind}:'`);
  switch (kind) {
    case 'oci': {
      const [dir, ref] = await resolveLayoutRef(rest);
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new OciSourceError(`OCI layout ${dir} is not a directory`);
      return layoutLayers(new DirStore(dir), ref || undefined, want, meta);
    }
    case 'oci-archive': {
      const [file, ref] = await splitFileRef(rest);
      return layoutLayers(await ArchiveStore.open(file, 'oci-archive'), ref, want, meta);
    }
    case 'docker-archive': {
      const [file, ref] = await splitFileRef(rest);
      return dockerArchiveLayers(await ArchiveStore.open(file, 'docker-archive'), ref, meta);
    }
    case 'layers': {
      const files = rest.split(',').filter((f) => f !== '');
      const out: LayerSpec[] = [];
      for (const [i, f] of files.entries()) {
        const st = await stat(f).catch(() => undefined);
        if (!st?.isFile()) throw new OciSourceError(`layer file ${f} does not exist or is not a file`);
        out.push({ blob: fileRange(f, f, 0, st.size), label: `layer ${i + 1} (${f})` });
      }
      return out;
    }
    default:
      throw new OciSourceError(`source '${spec}': unknown OCI source kind '${kind}'`);
  }
}

/** Loads an OCI source into the merged tree (composefs-rs `create_filesystem`). */
export async function loadOciSource(spec: string, opts: OciSourceOptions): Promise<FileSystem> {
  const want = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
  const layers = await layerSpecs(spec, want, opts.metadata);
  const fs = newOciFileSystem();
  // One hashing thread fewer than cores: the main thread is busy too (reading, parsing, copying).
  const objects = opts.objects ?? objectService({ alg: opts.hash, jobs: opts.jobs ?? Math.max(1, availableParallelism() - 1) });
  const progress = opts.progress;
  if (progress) progress.layers = layers.length;
  try {
    for (const [i, l] of layers.entries()) {
      if (opts.provenance) {
        opts.provenance.layer = i;
        opts.provenance.labels[i] = l.label;
      }
      if (progress) {
        progress.layer = i + 1;
        progress.label = l.label;
        progress.size = l.blob.size;
        progress.read = () => 0;
      }
      await applyVerifiedLayer(fs, l, { objects, provenance: opts.provenance, kept: opts.kept, progress });
      if (progress) progress.read = () => l.blob.size;
    }
  } finally {
    if (!opts.objects) await objects.close();
  }
  return fs;
}
