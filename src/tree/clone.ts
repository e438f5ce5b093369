/** Deep copies of trees, so several transforms can start from one scanned tree. */
import { Directory, FileSystem, Leaf, cloneStat, type Inode, type LeafContent } from './tree.js';

/**
 * Copies a tree: every directory, leaf and stat is new (hardlinks stay shared within the copy),
 * so transforms on the copy never touch the original. `mapContent` may rewrite leaf contents
 * (e.g. swap external ids for another hash's).
 */
export function cloneTree(fs: FileSystem, mapContent: (c: LeafContent) => LeafContent = (c) => c): FileSystem {
  const leaves = new Map<Leaf, Leaf>();
  const root = new Directory(cloneStat(fs.root.stat));
  const stack: [Directory, Directory][] = [[fs.root, root]];
  while (stack.length > 0) {
    const [from, to] = stack.pop()!;
    for (const [name, inode] of from.entries) {
      let copy: Inode;
      if (inode.kind === 'dir') {
        const d = new Directory(cloneStat(inode.stat));
        stack.push([inode, d]);
        copy = d;
      } else {
        let l = leaves.get(inode);
        if (!l) {
          l = new Leaf(cloneStat(inode.stat), mapContent(inode.content));
          leaves.set(inode, l);
        }
        copy = l;
      }
      to.entries.set(name, copy);
    }
  }
  return new FileSystem(root);
}
