/**
 * SELinux relabelling for the bootable transform: composefs-rs v0.9.0 `selabel`
 * (crates/composefs-boot/src/selabel.rs). Spec: tree-rules.md §6.2–6.3. The policy is read
 * by policy.ts; its patterns are compiled and matched by matcher.ts.
 */
import { type Directory, type FileSystem, Leaf, type Stat, XATTR_SECURITY_SELINUX, cloneStat } from '../../tree/tree.js';
import { type Policy, type PolicyReader, loadPolicy, lookupLabel } from './policy.js';

function setLabel(stat: Stat, label: Buffer | undefined): void {
  if (label) {
    stat.xattrs = new Map(stat.xattrs);
    stat.xattrs.set(XATTR_SECURITY_SELINUX, label);
  } else if (stat.xattrs.has(XATTR_SECURITY_SELINUX)) {
    stat.xattrs = new Map(stat.xattrs);
    stat.xattrs.delete(XATTR_SECURITY_SELINUX);
  }
}

function leafType(leaf: Leaf): string {
  switch (leaf.content.type) {
    case 'symlink':
      return 'l';
    case 'fifo':
      return 'p';
    case 'socket':
      return 's';
    case 'blockdev':
      return 'b';
    case 'chardev':
      return 'c';
    default:
      return '-';
  }
}

/** Rust `PathBuf::push` of a plain name. */
function pushPath(base: string, name: string): string {
  return base === '' || base.endsWith('/') ? base + name : `${base}/${name}`;
}

function sameLabel(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

/**
 * Relabels every directory and leaf from `policy` exactly like composefs-rs `relabel_dir`
 * (depth-first, byte-sorted; substitutions applied per path and inherited by children;
 * hardlinks split when a later path gets a label different from the first path's).
 */
export function relabel(fs: FileSystem, policy: Policy): void {
  const labelled = new Map<Leaf, Buffer | undefined>();
  type Frame = { dir: Directory; path: string; items: [string, Directory | Leaf][]; i: number };
  const enter = (dir: Directory, path: string): Frame => {
    setLabel(dir.stat, lookupLabel(policy, path, 'd'));
    return { dir, path, items: dir.sorted(), i: 0 };
  };
  const stack: Frame[] = [enter(fs.root, '/')];
  while (stack.length) {
    const top = stack[stack.length - 1];
    if (top.i >= top.items.length) {
      stack.pop();
      continue;
    }
    const [name, child] = top.items[top.i++];
    const p = pushPath(top.path, name);
    const eff = policy.aliases.get(p) ?? p;
    if (child.kind === 'dir') {
      stack.push(enter(child, eff));
      continue;
    }
    const label = lookupLabel(policy, eff, leafType(child));
    let target = child;
    if (labelled.has(child)) {
      if (!sameLabel(labelled.get(child), label)) {
        target = new Leaf(cloneStat(child.stat), child.content);
        top.dir.entries.set(name, target);
      }
    }
    setLabel(target.stat, label);
    if (!labelled.has(target)) labelled.set(target, label);
  }
}

/** Removes `security.selinux` from every directory and leaf (the no-policy case). */
function stripSelinux(fs: FileSystem): void {
  const seen = new Set<Leaf>();
  const stack: Directory[] = [fs.root];
  while (stack.length) {
    const d = stack.pop()!;
    setLabel(d.stat, undefined);
    for (const e of d.entries.values()) {
      if (e.kind === 'dir') stack.push(e);
      else if (!seen.has(e)) {
        seen.add(e);
        setLabel(e.stat, undefined);
      }
    }
  }
}

/** composefs-rs `selabel`: relabel from the tree's policy, or strip. Returns true if a policy was applied. */
export async function selabel(fs: FileSystem, read: PolicyReader): Promise<boolean> {
  const policy = await loadPolicy(fs, read);
  if (!policy) {
    stripSelinux(fs);
    return false;
  }
  relabel(fs, policy);
  return true;
}
