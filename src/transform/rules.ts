/**
 * The finishing rules that turn a raw tree into the final one (cfsctl's transform_for_oci, the
 * bootable transform, the engine-faithful mtime view), in the order composefs-rs applies them.
 */
import type { LoadedSource } from '../source/load.js';
import type { Inode } from '../tree/tree.js';
import { transformForBoot, type ContentReader } from './boot.js';
import { applyMtimeView, type MtimeView } from './mtimes.js';
import { canonicalizeRun, copyRootMetadataFromUsr, transformForOci, type XattrFilterMode } from './transform.js';

/** Which rules turn a raw tree into the final one. */
export interface Rules {
  /** cfsctl's transform_for_oci; false = `--no-propagate-usr-to-root` (raw tree). */
  propagateUsrToRoot: boolean;
  /** Which xattrs transform_for_oci keeps (cfsctl `--xattrs`); unused when propagateUsrToRoot is false. */
  xattrs: XattrFilterMode;
  bootable: boolean;
  /** OCI sources: keep every xattr (composefs-rs before v0.8.0). */
  tarKeepsAllXattrs?: boolean;
  /** Bootable: /boot and /sysroot take /usr's mtime nanoseconds too (composefs-rs #396). */
  bootMtimeNsec?: boolean;
  /**
   * The engine-faithful view (--layer-mtimes, --clamp-mtime), applied to the raw tree before
   * every other rule: the root then takes /usr's mtime as the shipped layers carry it.
   */
  mtimes?: MtimeView;
}

/** Applies the finishing rules to a raw tree of `source`, in place. */
export async function applyRules(source: Pick<LoadedSource, 'fs' | 'kind' | 'read'>, rules: Rules): Promise<void> {
  const fs = source.fs;
  if (rules.mtimes) applyMtimeView(fs, rules.mtimes);
  if (source.kind !== 'dumpfile' && rules.propagateUsrToRoot) {
    if (source.kind === 'oci' && rules.tarKeepsAllXattrs) {
      // transform_for_oci as before composefs-rs v0.8.0: no xattr filter on the tar path
      copyRootMetadataFromUsr(fs);
      canonicalizeRun(fs);
    } else transformForOci(fs, rules);
  }
  if (rules.bootable) await transformForBoot(fs, source.read, { mtimeNsec: rules.bootMtimeNsec === true });
}

/**
 * A reader for copies of `raw`'s tree (cloneTree makes new leaves, and the contents an OCI
 * source kept are found by the original leaf): looks the path up in the raw tree first.
 */
export function readerForCopies(raw: Pick<LoadedSource, 'fs' | 'read'>): ContentReader {
  return async (p, leaf) => {
    let node: Inode | undefined = raw.fs.root;
    for (const c of p.toString('latin1').split('/')) {
      if (c === '') continue;
      node = node?.kind === 'dir' ? node.entries.get(c) : undefined;
    }
    return raw.read(p, node?.kind === 'leaf' ? node : leaf);
  };
}

