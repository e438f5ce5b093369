/**
 * The finishing rules applied to every container root filesystem: composefs-rs v0.9.0
 * `FileSystem::transform_for_oci` (crates/composefs/src/generic_tree.rs), used by
 * `read_container_root` (mounted directories) and by the OCI layer path. Spec: tree-rules.md
 * §2.8 and §9.
 *
 * Steps, in composefs-rs's order:
 *  1. copy_root_metadata_from_usr: the root's mode, uid, gid, mtime seconds AND nanoseconds
 *     and its whole xattr map are replaced by /usr's. /usr missing -> `Directory entry "usr"
 *     does not exist`; /usr not a directory (a symlink counts) -> `Directory entry "usr" is not
 *     a subdirectory`.
 *  2. canonicalize_run: if /run exists it must be a directory (else `Directory entry "run" is
 *     not a subdirectory`); its entries are removed and its mtime seconds and nanoseconds set to
 *     /usr's. Its mode, uid, gid and xattrs are kept (xattrs are filtered in step 3 like all).
 *  3. filter_xattrs on every Stat (every directory including the root, every leaf once):
 *     'allowlist-only' keeps exactly `security.capability`; 'keep-user-xattrs' also keeps every
 *     name starting with the bytes `user.`.
 *  4. compact(): drops leaves orphaned by step 2. Our tree has no leaf table (leaves are
 *     objects referenced from directories), so nothing is needed.
 *
 * `cfsctl create-image|compute-id|create-dumpfile --no-propagate-usr-to-root` does not call
 * transform_for_oci at all (it uses `read_filesystem` instead of `read_container_root`): no
 * root copy, /run kept with its contents, and NO xattr filtering — `--xattrs` is ignored.
 * `transformForOci(fs, { propagateUsrToRoot: false, ... })` therefore leaves the tree
 * untouched.
 */
import { type Directory, type FileSystem, type Inode, type Leaf, type Stat, type Xattrs } from '../tree/tree.js';
import { InputError } from '../errors.js';
import type { Rules } from './rules.js';

/** The values of cfsctl's `--xattrs` flag (composefs-rs `XattrFiltering`), default first. */
export const XATTR_FILTER_MODES = ['allowlist-only', 'keep-user-xattrs'] as const;
export type XattrFilterMode = (typeof XATTR_FILTER_MODES)[number];
/** The default mode (`XattrFiltering::default()`, used by bootc and `oci pull`). */
export const DEFAULT_XATTR_FILTER_MODE: XattrFilterMode = 'allowlist-only';

/** xattrs kept by every mode (composefs-rs CONTAINER_XATTR_ALLOWLIST). */
export const CONTAINER_XATTR_ALLOWLIST: readonly string[] = ['security.capability'];

/** Parses a `--xattrs` value; the error text is composefs-rs's `XattrFilteringParseError`. */
export function parseXattrFilterMode(s: string): XattrFilterMode {
  if ((XATTR_FILTER_MODES as readonly string[]).includes(s)) return s as XattrFilterMode;
  const expected = XATTR_FILTER_MODES.map((m) => JSON.stringify(m)).join(' or ');
  throw new Error(`invalid xattr filtering mode ${JSON.stringify(s)} (expected ${expected})`);
}

/** True if the (latin1-keyed) xattr name is in {@link CONTAINER_XATTR_ALLOWLIST}. */
export function isAllowedContainerXattr(name: string): boolean {
  return CONTAINER_XATTR_ALLOWLIST.includes(name);
}

/** The keep-predicate of a mode, on latin1 xattr name keys (byte-wise comparison). */
export function xattrPredicate(mode: XattrFilterMode): (name: string) => boolean {
  switch (mode) {
    case 'allowlist-only':
      return isAllowedContainerXattr;
    case 'keep-user-xattrs':
      return (name) => isAllowedContainerXattr(name) || name.startsWith('user.');
  }
}

/** Errors of the tree transforms; messages are composefs-rs's `ImageError` texts. */
export class TransformError extends InputError {
  constructor(
    readonly code: 'NotFound' | 'NotADirectory',
    readonly entry: string,
  ) {
    super(
      code === 'NotFound'
        ? `Directory entry ${JSON.stringify(entry)} does not exist`
        : `Directory entry ${JSON.stringify(entry)} is not a subdirectory`,
    );
    this.name = 'TransformError';
  }

  /** What the rule is and how to do without it, for a message to users (composefs-rs has none). */
  get hint(): string {
    return this.entry === 'usr'
      ? "the image root takes /usr's metadata (cfsctl's transform_for_oci); --no-propagate-usr-to-root keeps the tree as it is"
      : `/${this.entry} is emptied (cfsctl's transform_for_oci); --no-propagate-usr-to-root keeps the tree as it is`;
  }
}

/** A top-level directory by name: undefined if absent, error if present but not a directory. */
function topDirOpt(fs: FileSystem, name: string): Directory | undefined {
  const e: Inode | undefined = fs.root.entries.get(name);
  if (e === undefined) return undefined;
  if (e.kind !== 'dir') throw new TransformError('NotADirectory', name);
  return e;
}

function topDir(fs: FileSystem, name: string): Directory {
  const d = topDirOpt(fs, name);
  if (!d) throw new TransformError('NotFound', name);
  return d;
}

/** Step 1: root metadata := /usr's (mode, uid, gid, mtime sec+nsec, whole xattr map). */
export function copyRootMetadataFromUsr(fs: FileSystem): void {
  const usr = topDir(fs, 'usr').stat;
  const root = fs.root.stat;
  root.mode = usr.mode;
  root.uid = usr.uid;
  root.gid = usr.gid;
  root.mtimeSec = usr.mtimeSec;
  root.mtimeNsec = usr.mtimeNsec;
  root.xattrs = new Map(usr.xattrs);
}

/** Step 2: empty /run (if present) and give it /usr's mtime (sec+nsec). */
export function canonicalizeRun(fs: FileSystem): void {
  const run = topDirOpt(fs, 'run');
  if (!run) return;
  const usr = topDir(fs, 'usr').stat;
  run.stat.mtimeSec = usr.mtimeSec;
  run.stat.mtimeNsec = usr.mtimeNsec;
  run.entries.clear();
}

/** Calls `fn` on every Stat once: each directory (root first) and each distinct leaf. */
export function forEachStat(fs: FileSystem, fn: (stat: Stat) => void): void {
  const leaves = new Set<Leaf>();
  const stack: Directory[] = [fs.root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    fn(d.stat);
    for (const v of d.entries.values()) {
      if (v.kind === 'dir') stack.push(v);
      else if (!leaves.has(v)) {
        leaves.add(v);
        fn(v.stat);
      }
    }
  }
}

/** Keeps only the xattrs whose (latin1) names satisfy `keep`, on every Stat. */
export function filterXattrs(fs: FileSystem, keep: (name: string) => boolean): void {
  forEachStat(fs, (stat) => {
    let drop = false;
    for (const k of stat.xattrs.keys()) {
      if (!keep(k)) {
        drop = true;
        break;
      }
    }
    if (!drop) return;
    const kept: Xattrs = new Map();
    for (const [k, v] of stat.xattrs) if (keep(k)) kept.set(k, v);
    stat.xattrs = kept; // a fresh map: never mutate one that might be shared
  });
}

/**
 * composefs-rs `transform_for_oci` (see the file comment), with the part of the one {@link Rules}
 * it reads (`propagateUsrToRoot: false` = cfsctl `--no-propagate-usr-to-root`: the whole transform
 * is skipped). Mutates `fs` in place.
 */
export function transformForOci(fs: FileSystem, opts: Pick<Rules, 'propagateUsrToRoot' | 'xattrs'>): void {
  if (!opts.propagateUsrToRoot) return;
  copyRootMetadataFromUsr(fs);
  canonicalizeRun(fs);
  filterXattrs(fs, xattrPredicate(opts.xattrs));
}
