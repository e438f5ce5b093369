/**
 * What a tree may hold to be written as a composefs EROFS image and read back, shared by the
 * image writer (tree -> image), the image reader (image -> tree) and the dumpfile parser, so
 * that each accepts exactly what the others accept: an image we write, `cfs dump` reads; a
 * dumpfile `cfs dump` prints, we parse.
 *
 * The checks return the reason (or null); callers add where (path, line, offset).
 *
 * Limits, and where they come from:
 * - xattr name: 1..255 bytes, no NUL. 255 is Linux's XATTR_NAME_MAX and composefs-rs v0.9.0's
 *   dumpfile limit (crates/composefs/src/dumpfile_parse.rs `XATTR_NAME_MAX`); an EROFS entry
 *   stores the name after its prefix in a u8 (`e_name_len`), so every name of at most 255
 *   bytes fits. An empty name has no Linux meaning and no dumpfile form (`=value`).
 * - xattr value: at most 65535 bytes (EROFS `e_value_size` is a u16; composefs-rs
 *   `XATTR_SIZE_MAX`).
 * - xattr names of one inode: at most 65535 bytes together (composefs-rs `XATTR_LIST_MAX`,
 *   which counts the name bytes; Linux's listxattr cannot return more either).
 * - directory entry name: 1..4084 bytes (a dirent header and its name must fit in one 4096-byte
 *   block: composefs-rs erofs/writer.rs `assert!(entry_size <= 4096)`), no `/` or NUL, not `.`
 *   or `..`.
 * - device number: 32 bits (EROFS `i_u`; composefs-rs writer.rs "device number exceeds EROFS
 *   u32 limit").
 *
 * What only the writer's layout decides (an inode's shared-xattr count, a u8, and its xattr
 * body size, bounded by the u16 `i_xattr_icount`) is checked by the writer after sharing.
 */

import type { Stat } from './tree.js';

export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65535;
export const XATTR_LIST_MAX = 65535;
export const ENTRY_NAME_MAX = 4096 - 12;
export const RDEV_MAX = 0xffffffffn;

/** Why `name` (latin1 key or bytes) cannot be an xattr name, or null. */
export function xattrNameProblem(name: string | Buffer): string | null {
  if (name.length === 0) return 'xattr with an empty name';
  if (name.length > XATTR_NAME_MAX) return `xattr name of ${name.length} bytes is too long (at most ${XATTR_NAME_MAX})`;
  if (typeof name === 'string' ? name.includes('\0') : name.includes(0)) return `xattr name ${quote(name)} contains a NUL byte`;
  return null;
}

/** Why `value` cannot be the value of xattr `name`, or null. */
export function xattrValueProblem(name: string | Buffer, value: Buffer): string | null {
  if (value.length > XATTR_SIZE_MAX) return `xattr ${quote(name)} has a ${value.length}-byte value (at most ${XATTR_SIZE_MAX})`;
  return null;
}

/** Why the names of one inode's xattrs, `total` bytes together, are too many, or null. */
export function xattrListProblem(total: number, count: number): string | null {
  if (total > XATTR_LIST_MAX) return `too many xattrs: ${count} names of ${total} bytes together (at most ${XATTR_LIST_MAX})`;
  return null;
}

/** Why the xattrs of a stat cannot be stored, or null. */
export function statXattrsProblem(stat: Stat): string | null {
  const x = stat.xattrs;
  if (x.size === 0) return null;
  let total = 0;
  for (const [k, v] of x) {
    const p = xattrNameProblem(k) ?? xattrValueProblem(k, v);
    if (p !== null) return p;
    total += k.length;
  }
  return xattrListProblem(total, x.size);
}

/** Why `name` (latin1 key or bytes) cannot be a directory entry name, or null. */
export function entryNameProblem(name: string | Buffer): string | null {
  const s = typeof name === 'string' ? name : name.toString('latin1');
  if (s.length === 0) return 'empty directory entry name';
  if (s === '.' || s === '..') return `invalid directory entry name ${quote(s)}`;
  if (s.includes('/') || s.includes('\0')) return `invalid directory entry name ${quote(s)} (contains "/" or NUL)`;
  if (s.length > ENTRY_NAME_MAX) return `directory entry name of ${s.length} bytes is too long (at most ${ENTRY_NAME_MAX})`;
  return null;
}

/** Why `rdev` cannot be a device number in an image, or null. */
export function rdevProblem(rdev: bigint): string | null {
  if (rdev < 0n || rdev > RDEV_MAX) return `device number ${rdev} exceeds the EROFS 32-bit limit`;
  return null;
}

/** A name for messages: JSON-quoted latin1, cut to a readable length. */
export function quote(name: string | Buffer): string {
  const s = typeof name === 'string' ? name : name.toString('latin1');
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

/** "/a/b" from a parent path ("" for the root's children) and a latin1 name key, for messages. */
export function childPath(parent: string, name: string): string {
  return `${parent}/${name}`;
}

/** A path (latin1 key form) for messages: bytes shown as UTF-8 where they are. */
export function showPath(path: string): string {
  if (path === '') return '/';
  const b = Buffer.from(path, 'latin1');
  return b.toString('utf8');
}
