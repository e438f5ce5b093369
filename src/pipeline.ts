/**
 * The data path composed: SOURCE → raw tree → rules → final tree (the image and id follow in the
 * callers for now; see docs/architecture.md).
 */
import { loadRawSource, type LoadedSource, type SourceOptions } from './source/load.js';
import { bootReads } from './transform/boot.js';
import { TransformError } from './transform/transform.js';
import { applyRules, type Rules } from './transform/rules.js';

/** What loading a source and finishing its tree takes. */
export type PipelineOptions = SourceOptions & Rules;

/** Loads a SOURCE argument into its final tree. */
export async function loadSource(spec: string, opts: PipelineOptions): Promise<LoadedSource> {
  // The bootable transform names the files it will read back; sources that keep no contents
  // (OCI layers) keep those.
  const loaded = await loadRawSource(spec, opts.bootable && !opts.keep ? { ...opts, keep: bootReads } : opts);
  try {
    await applyRules(loaded, opts);
  } catch (e) {
    if (e instanceof TransformError) throw new Error(`${loaded.description}: ${e.message} (${e.hint})`);
    throw e;
  }
  return loaded;
}
