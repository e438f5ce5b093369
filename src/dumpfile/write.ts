/**
 * Writes a tree as a composefs dumpfile exactly as composefs-rs `write_dumpfile` does:
 * depth-first pre-order in byte order of names, one line per path; the first path of a
 * hardlinked leaf carries the full line, later ones are `PATH 0 @120000 - - - - 0.0 FIRST - -`.
 */
import { escapeField, escapeXattr } from './escape.js';
import {
  FileSystem,
  Leaf,
  Stat,
  leafLinkCounts,
  sortedXattrs,
  typeBits,
  traverse,
} from '../tree/tree.js';

/** Object path of an id: `xx/yyyy…` (lowercase hex). */
export function objectPath(id: Buffer): string {
  const hex = id.toString('hex');
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}

function fields(
  path: Buffer,
  stat: Stat,
  type: number,
  size: bigint | number,
  nlink: number,
  rdev: bigint,
  payload: string,
  content: string,
  digest: string,
): string {
  let line = `${escapeField(path)} ${size} ${((stat.mode | type) >>> 0).toString(8)} ${nlink} ${stat.uid} ${stat.gid} ${rdev} ${stat.mtimeSec}.${stat.mtimeNsec} ${payload} ${content} ${digest}`;
  for (const [k, v] of sortedXattrs(stat.xattrs)) line += ` ${escapeXattr(k)}=${escapeXattr(v)}`;
  return line;
}

function leafLine(path: Buffer, leaf: Leaf, nlink: number): string {
  const { stat, content: c } = leaf;
  const t = typeBits(leaf);
  switch (c.type) {
    case 'inline':
      return fields(path, stat, t, c.data.length, nlink, 0n, '-', escapeField(c.data), '-');
    case 'external':
    case 'external-no-verity':
      // composefs-rs prints a digest for both kinds, so no-verity becomes external on re-parse.
      return fields(path, stat, t, c.size, nlink, 0n, objectPath(c.id), '-', c.id.toString('hex'));
    case 'sparse':
      return fields(path, stat, t, c.size, nlink, 0n, '-', '-', '-');
    case 'symlink':
      return fields(path, stat, t, c.target.length, nlink, 0n, escapeField(c.target), '-', '-');
    case 'chardev':
    case 'blockdev':
      return fields(path, stat, t, 0, nlink, c.rdev, '-', '-', '-');
    case 'fifo':
    case 'socket':
      return fields(path, stat, t, 0, nlink, 0n, '-', '-', '-');
  }
}

/**
 * Yields the dumpfile as text chunks (a few hundred lines each), so a caller can stream a huge
 * tree to a file or pipe without building one giant string.
 */
export function* dumpfileChunks(fs: FileSystem): Generator<string> {
  const nlinks = leafLinkCounts(fs);
  const firstPath = new Map<Leaf, Buffer>();
  let lines: string[] = [];
  for (const { path, inode } of traverse(fs)) {
    if (inode.kind === 'dir') {
      lines.push(fields(path, inode.stat, typeBits(inode), 0, 2 + inode.subdirCount(), 0n, '-', '-', '-'));
    } else {
      const n = nlinks.get(inode) ?? 1;
      const first = n > 1 ? firstPath.get(inode) : undefined;
      if (first) {
        lines.push(`${escapeField(path)} 0 @120000 - - - - 0.0 ${escapeField(first)} - -`);
      } else {
        if (n > 1) firstPath.set(inode, path);
        lines.push(leafLine(path, inode, n));
      }
    }
    if (lines.length >= 512) {
      yield lines.join('\n') + '\n';
      lines = [];
    }
  }
  if (lines.length > 0) yield lines.join('\n') + '\n';
}

/** The whole dumpfile as bytes. */
export function writeDumpfile(fs: FileSystem): Buffer {
  return Buffer.from([...dumpfileChunks(fs)].join(''), 'latin1');
}
