/** Summary counts of a tree, for --json output and progress reports. */
import { FileSystem, Leaf } from './tree.js';

export interface TreeCounts {
  directories: number;
  /** Distinct non-directory inodes. */
  leaves: number;
  /** Directory entries naming a leaf already named elsewhere. */
  extraHardlinks: number;
  inlineFiles: number;
  externalFiles: number;
  externalBytes: string;
  symlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
  sparseFiles: number;
}

export function treeCounts(fs: FileSystem): TreeCounts {
  const c = { directories: 0, leaves: 0, extraHardlinks: 0, inlineFiles: 0, externalFiles: 0, symlinks: 0, devices: 0, fifos: 0, sockets: 0, sparseFiles: 0 };
  let bytes = 0n;
  const seen = new Set<Leaf>();
  const stack = [fs.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    c.directories++;
    for (const v of d.entries.values()) {
      if (v.kind === 'dir') {
        stack.push(v);
        continue;
      }
      if (seen.has(v)) {
        c.extraHardlinks++;
        continue;
      }
      seen.add(v);
      c.leaves++;
      const t = v.content;
      if (t.type === 'inline') c.inlineFiles++;
      else if (t.type === 'external' || t.type === 'external-no-verity') {
        c.externalFiles++;
        bytes += t.size;
      } else if (t.type === 'symlink') c.symlinks++;
      else if (t.type === 'chardev' || t.type === 'blockdev') c.devices++;
      else if (t.type === 'fifo') c.fifos++;
      else if (t.type === 'socket') c.sockets++;
      else c.sparseFiles++;
    }
  }
  return { ...c, externalBytes: bytes.toString() };
}
