/**
 * Field-by-field comparison of two trees, for `cfs compare`: what differs at which path. It
 * looks at exactly what reaches an image (type, mode, owner, mtime, xattrs, content, link
 * counts), so two trees with no differences give the same image in every format.
 */
import { Directory, Inode, Leaf, keyBytes, leafLinkCounts, type FileSystem, type Stat } from './tree.js';
import { escapeField, escapeXattr } from '../dumpfile/escape.js';

/** One difference. `a`/`b` are printable values (`undefined` = absent on that side). */
export interface Difference {
  path: Buffer;
  field: string;
  a?: string;
  b?: string;
  /** The inodes involved, for cause heuristics. */
  inodeA?: Inode;
  inodeB?: Inode;
}

export interface DiffOptions {
  /** Compare mtime nanoseconds (V0/V1 store them; V2 does not). */
  nanoseconds: boolean;
}

function kind(i: Inode): string {
  return i.kind === 'dir' ? 'directory' : i.content.type;
}

function mtime(s: Stat): string {
  return `${s.mtimeSec}.${String(s.mtimeNsec).padStart(9, '0')}`;
}

function content(l: Leaf): [string, string][] {
  const c = l.content;
  switch (c.type) {
    case 'inline':
      return [['size', String(c.data.length)], ['content', escapeField(c.data)]];
    case 'external':
    case 'external-no-verity':
      return [['size', String(c.size)], ['content', `fsverity:${c.id.toString('hex')}`]];
    case 'sparse':
      return [['size', String(c.size)]];
    case 'symlink':
      return [['target', escapeField(c.target)]];
    case 'chardev':
    case 'blockdev':
      return [['rdev', String(c.rdev)]];
    default:
      return [];
  }
}

/** Compares two trees; differences in depth-first, byte-sorted path order. */
export function diffTrees(a: FileSystem, b: FileSystem, opts: DiffOptions): Difference[] {
  const out: Difference[] = [];
  const linksA = leafLinkCounts(a);
  const linksB = leafLinkCounts(b);
  const slash = Buffer.from('/');
  const stack: [Buffer, Inode, Inode][] = [[slash, a.root, b.root]];
  while (stack.length > 0) {
    const [path, ia, ib] = stack.pop()!;
    const add = (field: string, va?: string, vb?: string) => out.push({ path, field, a: va, b: vb, inodeA: ia, inodeB: ib });
    if (kind(ia) !== kind(ib)) {
      add('type', kind(ia), kind(ib));
      continue;
    }
    const sa = ia.stat;
    const sb = ib.stat;
    // Tar headers may carry type bits in the mode; images keep only the permission bits.
    const ma = sa.mode & 0o7777;
    const mb = sb.mode & 0o7777;
    if (ma !== mb) add('mode', ma.toString(8), mb.toString(8));
    if (sa.uid !== sb.uid) add('uid', String(sa.uid), String(sb.uid));
    if (sa.gid !== sb.gid) add('gid', String(sa.gid), String(sb.gid));
    if (sa.mtimeSec !== sb.mtimeSec || (opts.nanoseconds && sa.mtimeNsec !== sb.mtimeNsec)) add('mtime', mtime(sa), mtime(sb));
    for (const k of new Set([...sa.xattrs.keys(), ...sb.xattrs.keys()])) {
      const xa = sa.xattrs.get(k);
      const xb = sb.xattrs.get(k);
      if (xa && xb && xa.equals(xb)) continue;
      add(`xattr ${escapeXattr(keyBytes(k))}`, xa && escapeXattr(xa), xb && escapeXattr(xb));
    }
    if (ia.kind === 'leaf' && ib.kind === 'leaf') {
      const ca = new Map(content(ia));
      for (const [f, vb] of content(ib)) if (ca.get(f) !== vb) add(f, ca.get(f), vb);
      const na = linksA.get(ia) ?? 1;
      const nb = linksB.get(ib) ?? 1;
      if (na !== nb) add('nlink', String(na), String(nb));
    }
    if (ia.kind === 'dir' && ib.kind === 'dir') {
      const names = [...new Set([...ia.entries.keys(), ...ib.entries.keys()])].sort().reverse();
      for (const n of names) {
        const child = Buffer.concat([path.length === 1 ? Buffer.alloc(0) : path, slash, keyBytes(n)]);
        const ca = ia.entries.get(n);
        const cb = ib.entries.get(n);
        if (ca && cb) stack.push([child, ca, cb]);
        else out.push({ path: child, field: 'presence', a: ca && kind(ca), b: cb && kind(cb), inodeA: ca, inodeB: cb });
      }
    }
  }
  return out.sort((x, y) => comparePaths(x.path, y.path));
}

/** Depth-first order of absolute paths: component by component, bytes within a component. */
export function comparePaths(x: Buffer, y: Buffer): number {
  const a = x.toString('latin1').split('/');
  const b = y.toString('latin1').split('/');
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

/** Number of entries below a directory (for "and N entries below"). */
export function countBelow(d: Directory): number {
  let n = 0;
  const stack = [d];
  while (stack.length) {
    for (const v of stack.pop()!.entries.values()) {
      n++;
      if (v.kind === 'dir') stack.push(v);
    }
  }
  return n;
}
