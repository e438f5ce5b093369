/**
 * What `cfs compare` and `cfs compute-id` print about differences: the human-readable report of
 * src/compare.ts's explained differences, and the sub-second mtime warning.
 */
import { traverse, type Directory, type FileSystem } from '../tree/tree.js';
import type { CauseSummary, Explained } from '../compare.js';

/** Paths listed per cause unless every path is asked for. */
export const PATHS_PER_CAUSE = 20;

/** The human-readable report: the summary, then the paths grouped by cause. */
export function formatReport(diffs: Explained[], summary: CauseSummary[], o: { all: boolean; nameA: string; nameB: string }): string {
  const lines: string[] = [];
  const paths = new Set(diffs.map((d) => d.path.toString('latin1'))).size;
  const w = String(Math.max(...summary.map((s) => s.paths))).length;
  lines.push(`${paths} path(s) differ, by cause:`);
  for (const s of summary) lines.push(`  ${String(s.paths).padStart(w)}  ${s.cause}`);
  for (const s of summary) {
    lines.push('', `${s.cause} (${s.paths} path(s)): ${s.title}`);
    if (s.fix) lines.push(`  fix: ${s.fix}`);
    const shown = new Set<string>();
    const all = new Set<string>();
    for (const d of diffs) {
      if (d.cause !== s.cause) continue;
      const k = d.path.toString('latin1');
      all.add(k);
      if (o.all || shown.size < PATHS_PER_CAUSE) shown.add(k);
      if (!shown.has(k)) continue;
      const va = d.a ?? '(absent)';
      const vb = d.b ?? '(absent)';
      lines.push(`  ${d.path.toString('utf8')}: ${d.field}: ${va} (${o.nameA}) vs ${vb} (${o.nameB})${d.note ? ` [${d.note}]` : ''}`);
    }
    const hidden = all.size - shown.size;
    if (hidden > 0) lines.push(`  …and ${hidden} more path(s) (--all lists every path)`);
  }
  return lines.join('\n') + '\n';
}

/**
 * One line for `compute-id` on a directory: how many inodes have a sub-second mtime, which no
 * layer tarball an engine writes carries. The root is skipped when it takes /usr's metadata.
 */
export function subsecondHint(fs: FileSystem, rootFromUsr: boolean): string | undefined {
  // Counting allocates nothing per entry (trees of millions of paths); paths are only made for
  // the examples, lazily, in dumpfile order.
  let n = 0;
  let total = 0;
  const stack: Directory[] = [fs.root];
  if (!rootFromUsr) {
    total++;
    if (fs.root.stat.mtimeNsec !== 0) n++;
  }
  while (stack.length > 0) {
    for (const v of stack.pop()!.entries.values()) {
      total++;
      if (v.stat.mtimeNsec !== 0) n++;
      if (v.kind === 'dir') stack.push(v);
    }
  }
  if (n === 0) return undefined;
  const examples: string[] = [];
  for (const e of traverse(fs)) {
    if (examples.length === 3) break;
    if (e.inode.stat.mtimeNsec !== 0 && !(rootFromUsr && e.inode === fs.root)) examples.push(e.path.toString('utf8'));
  }
  return (
    `${n} of ${total} paths have sub-second mtimes (${examples.join(', ')}${n > examples.length ? ', …' : ''}), which the layer tarballs ` +
    `container engines write do not carry: the shipped image will likely have another id. For the id of the shipped layers use ` +
    `--layer-mtimes seconds (and --clamp-mtime EPOCH with BuildKit rewrite-timestamp); --layer-mtimes keep silences this`
  );
}
