/**
 * The trees the writer refuses, with the path of the offending entry: the shared tree rules,
 * link counts, and the xattr limits only sharing settles.
 */

import { BLOCK_SIZE, XATTR_IBODY_HEADER_SIZE } from './format.js';
import { Directory, FileSystem, type Inode, Leaf, type Stat } from '../tree/tree.js';
import { childPath, entryNameProblem, rdevProblem, showPath, statXattrsProblem } from '../tree/validate.js';
import { Inodes } from './inodes.js';

// ------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------

/** Numbers writer passes (see Leaf.seenInPass). */
let passCounter = 0;

/**
 * Rejects trees the writer cannot represent (the rules of ../tree/validate.ts, shared with the
 * reader and the dumpfile parser; errors name the path), and counts leaf links on the way (a
 * leaf's nlink is the number of entries referring to it), leaves and directories. `nlinks`
 * holds only the leaves with more than one link: every other leaf has nlink 1.
 */
export function validateAndCountLinks(fs: FileSystem): { nlinks: Map<Leaf, number>; dirs: number; leaves: number; anyMulti: boolean } {
  const pass = ++passCounter;
  const nlinks = new Map<Leaf, number>();
  const seenDirs = new Set<Directory>([fs.root]);
  // Directory paths (latin1 keys, "" = the root) ride along: one string per directory, none per leaf.
  const stack: Directory[] = [fs.root];
  const paths: string[] = [''];
  let leaves = 0;
  checkStat(fs.root.stat, '');
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const dirPath = paths.pop()!;
    // Keys and values walked side by side: no [name, child] pair per entry.
    const values = dir.entries.values();
    for (const name of dir.entries.keys()) {
      const child = values.next().value as Inode;
      const bad = entryNameProblem(name);
      if (bad !== null) throw new Error(`${showPath(dirPath)}: ${bad}`);
      if (child.kind === 'dir') {
        const path = childPath(dirPath, name);
        if (seenDirs.has(child)) throw new Error(`${showPath(path)}: directory appears more than once in the tree`);
        seenDirs.add(child);
        checkStat(child.stat, path);
        stack.push(child);
        paths.push(path);
      } else if (child.seenInPass !== pass) {
        child.seenInPass = pass;
        leaves++;
        if (child.stat.xattrs.size > 0) checkStat(child.stat, childPath(dirPath, name));
        validateLeaf(child, 1, dirPath, name);
      } else {
        nlinks.set(child, (nlinks.get(child) ?? 1) + 1);
      }
    }
  }
  for (const [leaf, n] of nlinks) {
    if (n > 1 && leaf.content.type === 'chardev' && leaf.content.rdev === 0n) {
      const where = pathOf(fs, leaf);
      throw new Error(`${where === null ? 'a whiteout' : showPath(where)}: invalid composefs filesystem: whiteout inode has nlink > 1`);
    }
  }
  return { nlinks, dirs: seenDirs.size, leaves, anyMulti: nlinks.size > 0 };
}

function checkStat(stat: Stat, path: string): void {
  const bad = statXattrsProblem(stat);
  if (bad !== null) throw new Error(`${showPath(path)}: ${bad}`);
}

/** Throws the problem of a leaf, naming its path. */
function failLeaf(dirPath: string, name: string, why: string): never {
  throw new Error(`${showPath(childPath(dirPath, name))}: ${why}`);
}

function validateLeaf(leaf: Leaf, nlink: number, dirPath: string, name: string): void {
  const c = leaf.content;
  switch (c.type) {
    case 'chardev':
    case 'blockdev': {
      const bad = rdevProblem(c.rdev);
      if (bad !== null) failLeaf(dirPath, name, bad);
      if (c.type === 'chardev' && c.rdev === 0n && nlink > 1) failLeaf(dirPath, name, 'invalid composefs filesystem: whiteout inode has nlink > 1');
      break;
    }
    case 'external':
    case 'external-no-verity':
      if (c.id.length !== 32 && c.id.length !== 64) failLeaf(dirPath, name, `external object id has ${c.id.length} bytes; expected 32 or 64`);
      if (c.size < 0n || c.size > 0xffffffffffffffffn) failLeaf(dirPath, name, `file size ${c.size} out of range`);
      break;
    case 'sparse':
      if (c.size < 0n || c.size > 0xffffffffffffffffn) failLeaf(dirPath, name, `file size ${c.size} out of range`);
      break;
    case 'symlink':
      // One data block is all a (promoted) symlink target gets.
      if (c.target.length > BLOCK_SIZE) failLeaf(dirPath, name, `symlink target of ${c.target.length} bytes is too long (at most ${BLOCK_SIZE})`);
      break;
    default:
      break;
  }
}

/** The path of `node` in the tree (latin1 key form), found by a walk: for error messages only. */
function pathOf(fs: FileSystem, node: Inode): string | null {
  if (node === fs.root) return '';
  const stack: Directory[] = [fs.root];
  const paths: string[] = [''];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const dirPath = paths.pop()!;
    for (const [name, child] of dir.entries) {
      if (child === node) return childPath(dirPath, name);
      if (child.kind === 'dir') {
        stack.push(child);
        paths.push(childPath(dirPath, name));
      }
    }
  }
  return null;
}

/** Largest xattr body `i_xattr_icount` (a u16) can describe: 12 + 4 * (65535 - 1) bytes. */
const MAX_XATTR_BODY = XATTR_IBODY_HEADER_SIZE + 4 * (0xffff - 1);
/** `h_shared_count` is a u8. */
const MAX_SHARED_REFS = 0xff;

/**
 * The limits only sharing settles: an inode's count of shared references and the size of its
 * xattr body. composefs-rs truncates both (`as u8`, `as u16`: a corrupt image); we refuse.
 */
export function checkXattrBodies(fs: FileSystem, inos: Inodes, xsize: Int32Array): void {
  for (let i = 0; i < inos.n; i++) {
    const x = inos.xa[i];
    if (x === null) continue;
    let why: string | null = null;
    if (x.shared.length > MAX_SHARED_REFS) {
      why = `${x.shared.length} of its xattrs are shared with other files; an EROFS inode can reference at most ${MAX_SHARED_REFS}`;
    } else if (xsize[i] > MAX_XATTR_BODY) {
      why = `its xattrs take ${xsize[i]} bytes; an EROFS inode's xattr area holds at most ${MAX_XATTR_BODY} (i_xattr_icount is 16-bit)`;
    }
    if (why !== null) {
      const where = pathOf(fs, inos.node[i]);
      throw new Error(`${where === null ? 'an inode' : showPath(where)}: ${why}`);
    }
  }
}
