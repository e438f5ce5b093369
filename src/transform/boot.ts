/**
 * The bootable transform (composefs-rs `transform_for_boot`), as far as it goes without an
 * SELinux policy: /boot and /sysroot are emptied and take /usr's mtime *seconds* (v0.9.0 leaves
 * their nanoseconds, mode, owner and xattrs alone), then, when the tree carries no SELinux
 * policy, `security.selinux` is removed everywhere. Relabelling from a policy inside the tree
 * is not implemented yet: such trees are refused rather than given a wrong digest.
 */
import { Directory, FileSystem, Leaf, lookup } from '../tree/tree.js';
import { TransformError, forEachStat } from './transform.js';

/** Reads the content of a regular-file leaf (inline data, or the file behind an external one). */
export type ContentReader = (path: Buffer, leaf: Leaf) => Promise<Buffer | undefined>;

/** composefs-rs's errors, prefixed so the user knows which step needs the directory. */
function topDir(fs: FileSystem, name: string): Directory {
  const e = fs.root.entries.get(name);
  const why = !e ? new TransformError('NotFound', name) : e.kind !== 'dir' ? new TransformError('NotADirectory', name) : undefined;
  if (why) throw new BootTransformError(`bootable transform needs a /${name} directory: ${why.message}`);
  return e as Directory;
}

/** The tree cannot take the bootable transform. */
export class BootTransformError extends Error {}

/** Step 2 of transform_for_boot: empty /boot and /sysroot, mtime seconds from /usr. */
export function emptyToplevelDirs(fs: FileSystem): void {
  const usr = topDir(fs, 'usr').stat;
  for (const name of ['boot', 'sysroot']) {
    const d = topDir(fs, name);
    d.entries.clear();
    d.stat.mtimeSec = usr.mtimeSec;
  }
}

/** The SELINUXTYPE named by /etc/selinux/config, or undefined when the tree has no policy. */
export async function selinuxPolicyName(fs: FileSystem, read: ContentReader): Promise<string | undefined> {
  const selinux = lookup(fs, Buffer.from('/etc/selinux'));
  if (!selinux || selinux.kind !== 'dir') return undefined;
  const cfg = lookup(fs, Buffer.from('/etc/selinux/config'));
  if (!cfg || cfg.kind !== 'leaf') return undefined;
  const c = cfg.content;
  if (c.type === 'sparse') return undefined;
  const text = c.type === 'inline' ? c.data : await read(Buffer.from('/etc/selinux/config'), cfg);
  if (!text) return undefined;
  for (const line of text.toString('latin1').split('\n')) {
    const eq = line.indexOf('=');
    if (eq === -1) continue;
    if (line.slice(0, eq).trim().toUpperCase() === 'SELINUXTYPE') return line.slice(eq + 1).trim();
  }
  return undefined;
}

/** Thrown for trees that need SELinux relabelling, which is not implemented yet. */
export class BootTransformUnsupported extends Error {}

/** transform_for_boot for trees without an SELinux policy. */
export async function transformForBoot(fs: FileSystem, read: ContentReader): Promise<void> {
  emptyToplevelDirs(fs);
  const policy = await selinuxPolicyName(fs, read);
  if (policy !== undefined) {
    throw new BootTransformUnsupported(
      `the tree has an SELinux policy (/etc/selinux/config: SELINUXTYPE=${policy}); relabelling for --bootable is not implemented yet, so the bootable digest cannot be computed`,
    );
  }
  forEachStat(fs, (stat) => {
    if (stat.xattrs.has('security.selinux')) {
      stat.xattrs = new Map(stat.xattrs);
      stat.xattrs.delete('security.selinux');
    }
  });
}
