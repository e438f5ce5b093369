/**
 * The bootable transform (composefs-rs v0.9.0 `transform_for_boot`): /boot and /sysroot are
 * emptied and take /usr's mtime *seconds* (v0.9.0 to v0.9.2 leave their nanoseconds, mode, owner
 * and xattrs alone; composefs-rs main after PR #396, 2026-09-18, copies the nanoseconds too:
 * `empty_toplevel_dirs` in crates/composefs-boot/src/lib.rs at 235f25b9); then every path is
 * relabelled from the SELinux policy inside the tree, or, when the tree has none,
 * `security.selinux` is removed everywhere (src/transform/selinux/).
 */
import { Directory, FileSystem, Leaf } from '../tree/tree.js';
import { selabel } from './selinux/relabel.js';
import { TransformError } from './transform.js';
import { InputError } from '../errors.js';

/** Reads the content of a regular-file leaf (inline data, or the file behind an external one). */
export type ContentReader = (path: Buffer, leaf: Leaf) => Promise<Buffer | undefined>;

/** The tree cannot take the bootable transform. */
export class BootTransformError extends InputError {}

/** composefs-rs's errors, prefixed so the user knows which step needs the directory. */
function topDir(fs: FileSystem, name: string): Directory {
  const e = fs.root.entries.get(name);
  const why = !e ? new TransformError('NotFound', name) : e.kind !== 'dir' ? new TransformError('NotADirectory', name) : undefined;
  if (why) throw new BootTransformError(`bootable transform needs a /${name} directory: ${why.message}`);
  return e as Directory;
}

/** Which composefs-rs revision's bootable transform to apply. */
export interface BootOptions {
  /** /boot and /sysroot also take /usr's mtime nanoseconds (composefs-rs #396). */
  mtimeNsec?: boolean;
}

/** Step 2 of transform_for_boot: empty /boot and /sysroot, mtime from /usr. */
export function emptyToplevelDirs(fs: FileSystem, opts: BootOptions = {}): void {
  const usr = topDir(fs, 'usr').stat;
  for (const name of ['boot', 'sysroot']) {
    const d = topDir(fs, name);
    d.entries.clear();
    d.stat.mtimeSec = usr.mtimeSec;
    if (opts.mtimeNsec) d.stat.mtimeNsec = usr.mtimeNsec;
  }
}

/** transform_for_boot; `read` supplies the content of the policy files when not inline. */
export async function transformForBoot(fs: FileSystem, read: ContentReader, opts: BootOptions = {}): Promise<void> {
  emptyToplevelDirs(fs, opts);
  await selabel(fs, read);
}
