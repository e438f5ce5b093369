/**
 * `cfs compare A B`: why two views of one image give different digests. Differences come from
 * src/tree/diff.ts; here each gets a likely cause when one is recognisable from the kinds of the
 * two sources (a directory source is the mounted view, an OCI source the tarball view).
 */
import type { Provenance } from '../oci/layers.js';
import { countBelow, type Difference } from '../tree/diff.js';
import type { Directory, FileSystem } from '../tree/tree.js';

export type SideKind = 'dir' | 'oci' | 'dumpfile';

export interface Side {
  kind: SideKind;
  fs: FileSystem;
  provenance?: Provenance;
}

/** A difference with its likely cause. */
export interface Explained extends Difference {
  cause?: string;
}

function implied(side: Side, d: unknown): string | undefined {
  if (!side.provenance || !d || (d as Directory).kind !== 'dir') return undefined;
  const layer = side.provenance.impliedIn(d as Directory);
  if (layer === undefined) return undefined;
  const label = side.provenance.labels[layer] ?? `layer ${layer + 1}`;
  return `implied parent directory: ${label} changes its entries but has no entry for the directory itself, so extraction gave it a live mtime the tarball view does not have`;
}

/** Attaches likely causes, looking at which side is the mounted (directory) view. */
export function explain(diffs: Difference[], a: Side, b: Side): Explained[] {
  const mounted = a.kind === 'dir' && b.kind !== 'dir' ? 'a' : b.kind === 'dir' && a.kind !== 'dir' ? 'b' : undefined;
  const tarSide = mounted === 'a' ? b : mounted === 'b' ? a : undefined;
  return diffs.map((d) => {
    const e: Explained = { ...d };
    const mv = mounted === 'a' ? d.a : d.b;
    const tv = mounted === 'a' ? d.b : d.a;
    const tarInode = mounted === 'a' ? d.inodeB : d.inodeA;
    const mountInode = mounted === 'a' ? d.inodeA : d.inodeB;
    if (d.field === 'mtime' && mounted) {
      e.cause = implied(tarSide!, tarInode);
      if (!e.cause && mv && tv && !mv.endsWith('.000000000') && tv.endsWith('.000000000')) {
        e.cause =
          'live mtime: the mounted view has nanoseconds a tar entry cannot carry (the directory or file was modified after extraction, e.g. by a RUN step or through a mount)';
      }
    } else if (d.field.startsWith('xattr ') && mounted && mv !== undefined && tv === undefined) {
      e.cause = 'xattr only in the mounted view: set by the build host or the storage driver, not by any layer';
    } else if (d.field === 'presence' && mounted && mv !== undefined && tv === undefined) {
      const dir = mountInode && mountInode.kind === 'dir' ? mountInode : undefined;
      e.cause = dir
        ? countBelow(dir) === 0
          ? 'mount-target stub: an empty directory no layer has, as RUN --mount creates for its target'
          : `directory in the mounted view only (with ${countBelow(dir)} entries below): created outside the layers`
        : 'in the mounted view only: created outside the layers (e.g. through a mount during the build)';
    } else if (d.field === 'presence' && mounted && mv === undefined && tv !== undefined) {
      e.cause = 'in the tarball view only: removed from the mounted view outside the layers (or hidden by a mount)';
    }
    return e;
  });
}

/** Human-readable lines. */
export function formatDifferences(diffs: Explained[], nameA: string, nameB: string): string {
  const lines: string[] = [];
  for (const d of diffs) {
    const p = d.path.toString('utf8');
    const va = d.a ?? '(absent)';
    const vb = d.b ?? '(absent)';
    lines.push(`${p}: ${d.field}: ${va} (${nameA}) vs ${vb} (${nameB})`);
    if (d.cause) lines.push(`    likely cause: ${d.cause}`);
  }
  return lines.join('\n') + (lines.length ? '\n' : '');
}

/**
 * A tree extracted from layer tarballs has whole-second directory mtimes (tar entries carry no
 * fraction, normally); directories changed after extraction have live nanoseconds. A mix of the
 * two in a directory source predicts that its digest will not match the tarball view's.
 */
export function liveMtimeHint(fs: FileSystem): string | undefined {
  let whole = 0;
  const live: string[] = [];
  let liveCount = 0;
  const stack: [string, Directory][] = [['', fs.root]];
  while (stack.length > 0) {
    const [p, d] = stack.pop()!;
    // the root and /run take /usr's mtime: not evidence either way
    if (p !== '' && p !== '/run') {
      if (d.stat.mtimeNsec === 0) whole++;
      else {
        liveCount++;
        if (live.length < 5) live.push(p);
      }
    }
    for (const [k, v] of d.entries) if (v.kind === 'dir') stack.push([`${p}/${Buffer.from(k, 'latin1').toString('utf8')}`, v]);
  }
  if (liveCount === 0 || whole < liveCount) return undefined;
  return `${liveCount} of ${whole + liveCount} directories have sub-second mtimes (${live.join(', ')}${liveCount > live.length ? ', …' : ''}), the rest whole seconds as extracted from layer tarballs: the tarball view of this image will likely give a different digest (run 'cfs compare DIR oci:...' to see why)`;
}
