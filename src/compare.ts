/**
 * `cfs compare A B`: why two views of one image give different digests. Differences come from
 * src/tree/diff.ts; here each gets a cause, named from the values on both sides and from which
 * side is the mounted view (a directory source) and which the shipped layers (an OCI source).
 * The causes are the ways an engine's in-build view and its committed layers were seen to
 * differ (buildah, podman, Docker BuildKit): see CAUSES.
 */
import type { Provenance } from './oci/layers.js';
import { countBelow, type Difference } from './tree/diff.js';
import { type Directory, type FileSystem, type Inode, type Stat } from './tree/tree.js';
import { forEachStat } from './transform/transform.js';
import type { MtimeView } from './transform/mtimes.js';

export type SideKind = 'dir' | 'oci' | 'dumpfile';

export interface Side {
  kind: SideKind;
  fs: FileSystem;
  provenance?: Provenance;
}

export type CauseId =
  | 'root-from-usr'
  | 'subsecond-mtime'
  | 'clamped-mtime'
  | 'layer-subsecond-mtime'
  | 'layer-not-clamped'
  | 'hardlinks-split'
  | 'implied-parent'
  | 'dir-without-layer-entry'
  | 'stale-mount'
  | 'mount-stub'
  | 'host-xattr'
  | 'mtime-changed'
  | 'other';

/** What each cause means and what to do about it; `{E}` is the epoch found. */
const CAUSES: Record<CauseId, { title: string; fix?: string }> = {
  'root-from-usr': {
    title: "root (and /run) take /usr's metadata (the finishing rules): a difference of /usr shows here too",
  },
  'subsecond-mtime': {
    title: 'sub-second mtimes the layer writer drops: the directory has a fraction of a second, the layers the same whole seconds (every engine writes whole-second tar mtimes, whether the file came from ADD, COPY or RUN)',
    fix: 'compute the id of the directory with --layer-mtimes seconds',
  },
  'clamped-mtime': {
    title: 'mtimes clamped to an epoch: the layers carry {E} (the latest mtime in them, shared), the directory a later time (BuildKit rewrite-timestamp=true with SOURCE_DATE_EPOCH)',
    fix: 'compute the id of the directory with --clamp-mtime {E} (and --layer-mtimes seconds)',
  },
  'layer-subsecond-mtime': {
    title: "sub-second mtimes the layers carry and the directory view lacks: blobs written with PAX times (e.g. a FROM image's own layers) are shipped as they are",
    fix: 'do not use --layer-mtimes seconds for this image: compute the id outside the build from the exported image',
  },
  'layer-not-clamped': {
    title: "mtimes later than --clamp-mtime in the layers: BuildKit does not rewrite layers it shares with the base image",
    fix: 'do not use --clamp-mtime for this image: compute the id outside the build from the exported image',
  },
  'hardlinks-split': {
    title: 'hardlinks split by the layer writer: the same content, but the names are linked differently (e.g. BuildKit on vfs or the containerd store stores a link to a lower layer\'s file as a copy)',
    fix: 'the in-build view cannot give the shipped id: compute it outside the build from the exported image',
  },
  'implied-parent': {
    title: 'implied parent directory: a layer changed its entries but has no entry for the directory itself, so the layers keep its earlier metadata while the directory on disk was modified',
    fix: 'the in-build view cannot give the shipped id: compute it outside the build from the exported image',
  },
  'dir-without-layer-entry': {
    title: "directory changed without a layer entry: its whole seconds differ (re-created, or only its mtime changed, which a vfs diff skips), the layers keep an earlier entry's mtime",
    fix: 'the in-build view cannot give the shipped id: compute it outside the build from the exported image',
  },
  'stale-mount': {
    title: 'contents differ: the directory is not the committed image (a stale stage, e.g. a base stage served from the cache mounts the image before its last step, buildah #4375), or it was changed after the commit',
    fix: 'make the digest step mount the committed image (or compute the id outside the build from the exported image)',
  },
  'mount-stub': {
    title: 'mount-target stub: an empty directory no layer has, as RUN --mount creates for its target (and the mtime of the directory it was made in)',
    fix: 'mount outside the tree, or exclude the stub',
  },
  'host-xattr': {
    title: 'xattr only in the directory: set by the build host or the storage driver, not by any layer',
  },
  'mtime-changed': {
    title: 'mtime differs in whole seconds with the same content: changed after the layer was written (or a stale stage)',
  },
  other: { title: 'other metadata differences (mode, owner, xattrs): no known engine effect' },
};

/** A difference with its cause. */
export interface Explained extends Difference {
  cause: CauseId;
  /** Per-path detail (which layer), if any. */
  note?: string;
}

/** One line of the summary. */
export interface CauseSummary {
  cause: CauseId;
  title: string;
  fix?: string;
  /** Distinct paths with a difference of this cause. */
  paths: number;
  differences: number;
}

export interface ExplainOptions {
  /** The view each side was read with (to recognise a view that went too far). */
  viewA?: MtimeView;
  viewB?: MtimeView;
  /** Both sides went through the finishing rules (root and /run take /usr's metadata). */
  propagated: boolean;
}

const CONTENT_FIELDS = new Set(['type', 'size', 'content', 'target', 'rdev', 'presence']);

function ns(s: Stat): bigint {
  return s.mtimeSec * 1_000_000_000n + BigInt(s.mtimeNsec);
}

/** The latest mtime of a tree (the root, which takes /usr's, aside). */
function latestMtime(fs: FileSystem): { at: bigint; sec: bigint } {
  let at = -(1n << 127n);
  let sec = 0n;
  forEachStat(fs, (s) => {
    if (s === fs.root.stat) return;
    const v = ns(s);
    if (v > at) {
      at = v;
      sec = s.mtimeSec;
    }
  });
  return { at, sec };
}

/**
 * Attaches a cause to every difference. `a` and `b` are the two sides; when one is a
 * directory and the other not, the directory is the mounted view (M) and the other the layers
 * (T); otherwise A plays M.
 */
export function explain(diffs: Difference[], a: Side, b: Side, opts: ExplainOptions): Explained[] {
  const swap = b.kind === 'dir' && a.kind !== 'dir';
  const tSide = swap ? a : b;
  const viewM = swap ? opts.viewB : opts.viewA;
  const latestT = latestMtime(tSide.fs);
  const clamped = clampEvidence(diffs, swap, latestT.at);
  const pathsWithContent = new Set<string>();
  const staleDirs = new Set<string>();
  const stubParents = new Set<string>();
  for (const d of diffs) {
    if (isStub(d, swap)) stubParents.add(parentOf(d.path.toString('latin1')));
    if (!CONTENT_FIELDS.has(d.field) || isStub(d, swap)) continue;
    const p = d.path.toString('latin1');
    pathsWithContent.add(p);
    if (d.field === 'presence') staleDirs.add(parentOf(p));
  }
  return diffs.map((d) => {
    const p = d.path.toString('latin1');
    const mv = swap ? d.b : d.a;
    const tv = swap ? d.a : d.b;
    const mInode = swap ? d.inodeB : d.inodeA;
    const tInode = swap ? d.inodeA : d.inodeB;
    const e: Explained = { ...d, cause: 'other' };
    if (d.field === 'presence') {
      e.cause = isStub(d, swap) ? 'mount-stub' : 'stale-mount';
    } else if (CONTENT_FIELDS.has(d.field)) {
      e.cause = 'stale-mount';
    } else if (opts.propagated && (p === '/' || (p === '/run' && d.field === 'mtime'))) {
      e.cause = 'root-from-usr';
    } else if (d.field === 'nlink') {
      e.cause = pathsWithContent.has(p) ? 'stale-mount' : 'hardlinks-split';
    } else if (d.field.startsWith('xattr ')) {
      e.cause = mv !== undefined && tv === undefined ? 'host-xattr' : 'other';
    } else if (d.field === 'mtime' && mInode && tInode) {
      Object.assign(e, mtimeCause(p, mInode, tInode, tSide, clamped ? latestT : undefined, viewM, pathsWithContent, staleDirs, stubParents));
    }
    return e;
  });
}

function mtimeCause(
  p: string,
  m: Inode,
  t: Inode,
  tSide: Side,
  latestT: { at: bigint; sec: bigint } | undefined,
  viewM: MtimeView | undefined,
  pathsWithContent: Set<string>,
  staleDirs: Set<string>,
  stubParents: Set<string>,
): { cause: CauseId; note?: string } {
  const ms = m.stat;
  const ts = t.stat;
  if (pathsWithContent.has(p)) return { cause: 'stale-mount' };
  if (ms.mtimeSec === ts.mtimeSec) {
    if (ms.mtimeNsec !== 0 && ts.mtimeNsec === 0) return { cause: 'subsecond-mtime' };
    if (ms.mtimeNsec === 0 && ts.mtimeNsec !== 0) return { cause: 'layer-subsecond-mtime' };
  }
  const clamp = viewM?.clampMtime;
  if (clamp !== undefined && ms.mtimeSec === clamp && ms.mtimeNsec === 0 && ns(ts) > clamp * 1_000_000_000n) return { cause: 'layer-not-clamped' };
  // A directory whose entries differ: that is what changed it (concrete evidence, before the
  // tree-wide guesses below).
  if (m.kind === 'dir' && staleDirs.has(p)) return { cause: 'stale-mount' };
  if (m.kind === 'dir' && stubParents.has(p)) return { cause: 'mount-stub' };
  // Clamping leaves the epoch as the latest mtime of the layers; the mounted view is later.
  if (latestT && ns(ts) === latestT.at && ns(ms) > latestT.at && ts.mtimeNsec === 0) return { cause: 'clamped-mtime', note: `epoch ${latestT.sec}` };
  if (t.kind === 'dir' && tSide.provenance) {
    const layer = tSide.provenance.impliedIn(t as Directory);
    if (layer !== undefined) return { cause: 'implied-parent', note: tSide.provenance.labels[layer] ?? `layer ${layer + 1}` };
  }
  if (m.kind === 'dir') return { cause: 'dir-without-layer-entry' };
  return { cause: 'mtime-changed' };
}

/**
 * Whether the layers look clamped: of the mtimes the mounted view has later than anything in
 * the layers, most are exactly the layers' latest mtime (the epoch). A tree merely
 * touched after the commit has those paths at their own earlier times instead.
 */
function clampEvidence(diffs: Difference[], swap: boolean, latest: bigint): boolean {
  let atLatest = 0;
  let other = 0;
  for (const d of diffs) {
    if (d.field !== 'mtime') continue;
    const m = swap ? d.inodeB : d.inodeA;
    const t = swap ? d.inodeA : d.inodeB;
    if (!m || !t || ns(m.stat) <= latest) continue;
    if (ns(t.stat) === latest) atLatest++;
    else other++;
  }
  return atLatest > other;
}

/** An empty directory only in the mounted view. */
function isStub(d: Difference, swap: boolean): boolean {
  if (d.field !== 'presence') return false;
  const m = swap ? d.inodeB : d.inodeA;
  const t = swap ? d.inodeA : d.inodeB;
  return t === undefined && m !== undefined && m.kind === 'dir' && countBelow(m) === 0;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

const ORDER = Object.keys(CAUSES) as CauseId[];

/** Counts per cause, most paths first. */
export function summarize(diffs: Explained[]): CauseSummary[] {
  const by = new Map<CauseId, { paths: Set<string>; n: number; epoch?: string }>();
  for (const d of diffs) {
    let s = by.get(d.cause);
    if (!s) by.set(d.cause, (s = { paths: new Set(), n: 0 }));
    s.paths.add(d.path.toString('latin1'));
    s.n++;
    if (d.cause === 'clamped-mtime' && d.note) s.epoch = d.note.slice('epoch '.length);
  }
  const out: CauseSummary[] = [];
  for (const [cause, s] of by) {
    const c = CAUSES[cause];
    const fill = (x: string) => x.replaceAll('{E}', s.epoch ?? 'EPOCH');
    out.push({ cause, title: fill(c.title), ...(c.fix ? { fix: fill(c.fix) } : {}), paths: s.paths.size, differences: s.n });
  }
  return out.sort((x, y) => y.paths - x.paths || ORDER.indexOf(x.cause) - ORDER.indexOf(y.cause));
}
