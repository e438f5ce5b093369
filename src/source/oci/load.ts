/**
 * OCI sources (oci:, oci-archive:, docker-archive:, layers:) as the dispatcher loads them: the
 * object service, the kept contents and the progress snapshots around {@link loadOciSource}.
 */
import { availableParallelism } from 'node:os';
import { UsageError } from '../../errors.js';
import { objectService } from '../../objects/service.js';
import type { ContentReader } from '../../transform/boot.js';
import type { FileSystem } from '../../tree/tree.js';
import type { LoadedSource, SourceOptions } from '../load.js';
import { KeptContent, Provenance } from '../tar/members.js';
import { type LayerProgress, loadOciSource } from './image.js';

/** How often the progress callback hears from a running load. */
const PROGRESS_MS = 200;

/** Loads an OCI SOURCE (`KIND:…` as given) as it is, before any finishing rule. */
export async function loadOci(spec: string, opts: SourceOptions): Promise<LoadedSource> {
  const provenance = opts.provenance ? new Provenance() : undefined;
  const kept = opts.kept ?? new KeptContent(opts.keep);
  const counters: LayerProgress = { layer: 0, layers: 0, label: '', size: 0, read: () => 0, entries: 0 };
  const onProgress = opts.onProgress;
  const report = (done?: boolean) =>
    onProgress?.({ stage: 'layers', spec, layer: counters.layer, layers: counters.layers, label: counters.label, size: counters.size, read: counters.read(), entries: counters.entries, ...(done ? { done } : {}) });
  // One hashing thread fewer than cores unless -j says: the main thread reads, inflates and parses.
  const jobs = opts.jobsGiven ? opts.jobs : Math.max(1, availableParallelism() - 1);
  const objects = opts.objects ?? objectService({ alg: opts.hash, repo: opts.repo, jobs });
  const timer = onProgress && setInterval(report, PROGRESS_MS);
  timer?.unref();
  report();
  let fs: FileSystem;
  try {
    fs = await loadOciSource(spec, {
      metadata: opts.metadata,
      objects,
      platform: opts.platform,
      provenance,
      kept,
      progress: onProgress ? counters : undefined,
    });
  } finally {
    clearInterval(timer);
    report(true);
    if (!opts.objects) await objects.close();
  }
  const read: ContentReader = async (p, leaf) => {
    const c = kept.byLeaf.get(leaf);
    if (!c) throw new UsageError(`--bootable with an OCI source: the content of ${p.toString('utf8')} was not kept`);
    return c;
  };
  return { fs, objectHash: objects.alg, kind: 'oci', description: spec, provenance, read };
}
