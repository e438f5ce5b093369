/**
 * What the directory source makes of lstat and xattrs: one directory's packed native records
 * (native/scan.c) become tree entries — `Stat`, xattrs, content — with hardlinks shared the
 * way composefs-rs v0.9.0 `read_filesystem` (`crates/composefs/src/fs.rs`) shares them; and
 * the error record becomes the error naming the entry.
 */
import { constants as osc } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import type { BigIntStats } from 'node:fs';
import { Directory, Leaf, nameKey, type LeafContent, type Stat, type Xattrs } from '../../tree/tree.js';

/** A regular file's content in the image: its id (fs-verity digest) and size. */
export type ExternalContent = Extract<LeafContent, { type: 'external' }>;
import type { RawXattr } from '../../native/addon.js';
import { joinPath, scanError, showPath } from './paths.js';
import type { ScanCounters } from './scan.js';

const NS_PER_SEC = 1_000_000_000n;

/** (sec, nsec) from a nanosecond timestamp, flooring so that nsec is always 0..1e9-1. */
export function splitNs(ns: bigint): { sec: bigint; nsec: number } {
  let sec = ns / NS_PER_SEC;
  let rem = ns - sec * NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  return { sec, nsec: Number(rem) };
}

/**
 * The xattr map of every scanned inode without xattrs (most of them): one shared instance
 * instead of an empty Map per inode. Safe because no code edits a stat's map in place: the
 * transforms give a stat a fresh map before changing it.
 */
const NO_XATTRS: Xattrs = new Map();
/** Content of every empty inline file (zero bytes: nothing to share or mutate). */
const EMPTY_DATA = Buffer.alloc(0);
/** The id of a file until hashing gives it its own (replaced, never written into). */
const NO_ID = Buffer.alloc(0);

function toXattrs(raw: RawXattr[]): Xattrs {
  if (raw.length === 0) return NO_XATTRS;
  const x: Xattrs = new Map();
  for (const [name, value] of raw) x.set(nameKey(name), value);
  return x;
}

/** The stat of the source directory itself (read with lstat and llistxattr, not natively). */
export function rootStat(st: BigIntStats, xattrs: RawXattr[]): Stat {
  const { sec, nsec } = splitNs(st.mtimeNs);
  return {
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeSec: sec,
    mtimeNsec: nsec,
    xattrs: toXattrs(xattrs),
  };
}

/** Where the entries of one directory go besides the tree. */
export interface EntryTarget {
  /** A subdirectory to read. */
  subdir(child: Directory, name: Buffer): void;
  /** The content of a regular file whose id the hashing hand-off fills in. */
  file(content: ExternalContent, name: Buffer): void;
}

const KIND_DIR = 1;
const KIND_REG = 2;
const KIND_LNK = 3;
const KIND_CHR = 4;
const KIND_BLK = 5;
const KIND_FIFO = 6;

/**
 * Builds tree entries from native records, sharing leaves between names of one inode.
 * Hardlinks (HardlinkBehavior Tracked, what cfsctl and bootc use): every non-directory is
 * keyed by (st_dev, st_ino) — st_nlink is never looked at (fuse-overlayfs misreports it) — and
 * later names share the first leaf. 'break' gives every name its own leaf (the mkcomposefs
 * personality).
 */
export class EntryBuilder {
  // st_dev -> st_ino -> first leaf; numbers when exact (no key string per file)
  private readonly seen = new Map<number | bigint, Map<number | bigint, Leaf>>();
  private lastDev: number | bigint = -1;
  private lastDevMap: Map<number | bigint, Leaf> | undefined;

  constructor(
    private readonly tracked: boolean,
    private readonly counters: ScanCounters | undefined,
  ) {}

  private inodesOf(dev: number | bigint): Map<number | bigint, Leaf> {
    if (dev === this.lastDev && this.lastDevMap) return this.lastDevMap;
    let m = this.seen.get(dev);
    if (!m) this.seen.set(dev, (m = new Map()));
    this.lastDev = dev;
    this.lastDevMap = m;
    return m;
  }

  /** Adds the entries of `dir` (at `real`) from its packed records `buf`. */
  add(dir: Directory, real: Buffer, buf: Buffer, to: EntryTarget): void {
    const counters = this.counters;
    const r = new Records(buf);
    while (r.more()) {
      const tag = r.u8();
      const nameStart = r.pos + 2;
      const nameLen = r.u16();
      r.pos += nameLen;
      if (tag === 2) throw recordError(r, real, buf.subarray(nameStart, nameStart + nameLen));
      const kind = r.u8();
      const mode = r.u32() & 0o7777;
      const uid = r.u32();
      const gid = r.u32();
      const nsec = r.u32();
      const mtimeSec = r.secs();
      const sizeLo = r.u32();
      const sizeHi = r.u32();
      const dev = r.u64Key();
      const ino = r.u64Key();
      const rdevAt = r.pos;
      r.pos += 8;
      const ckind = r.u8();
      let cStart = 0;
      let cLen = 0;
      if (ckind === 3) cLen = r.u8();
      else if (ckind !== 0) cLen = r.u32();
      cStart = r.pos;
      r.pos += cLen;
      const nx = r.u16();
      let xattrs = NO_XATTRS;
      if (nx > 0) {
        xattrs = new Map();
        for (let k = 0; k < nx; k++) {
          const xl = r.u16();
          const xname = buf.toString('latin1', r.pos, r.pos + xl);
          r.pos += xl;
          const vl = r.u32();
          xattrs.set(xname, copyOut(buf, r.pos, vl));
          r.pos += vl;
        }
      }
      const key = buf.toString('latin1', nameStart, nameStart + nameLen);
      if (counters) counters.entries++;
      const inodes = this.tracked && kind !== KIND_DIR ? this.inodesOf(dev) : undefined;
      if (inodes) {
        const prev = inodes.get(ino);
        if (prev) {
          // composefs-rs still reads this name's xattrs (and would fail on error) but
          // discards its stat: the first leaf stays.
          dir.entries.set(key, prev);
          continue;
        }
      }
      const stat: Stat = { mode, uid, gid, mtimeSec, mtimeNsec: nsec, xattrs };
      if (kind === KIND_DIR) {
        const child = new Directory(stat);
        dir.entries.set(key, child);
        to.subdir(child, buf.subarray(nameStart, nameStart + nameLen));
        continue;
      }
      let content: LeafContent;
      let toHash: ExternalContent | undefined;
      switch (kind) {
        case KIND_REG: {
          if (ckind === 1) content = { type: 'inline', data: cLen === 0 ? EMPTY_DATA : copyOut(buf, cStart, cLen) };
          else {
            // one bigint, not four, for the common size below 4 GiB
            const size = sizeHi === 0 ? BigInt(sizeLo) : BigInt(sizeHi) * 0x100000000n + BigInt(sizeLo);
            if (ckind === 3) {
              content = { type: 'external', id: copyOut(buf, cStart, cLen), size };
              if (counters) {
                counters.hashedFiles++;
                counters.hashedBytes += Number(size);
              }
            } else {
              content = toHash = { type: 'external', id: NO_ID, size }; // the hash hand-off sets the id
            }
          }
          break;
        }
        case KIND_LNK:
          content = { type: 'symlink', target: copyOut(buf, cStart, cLen) };
          break;
        case KIND_CHR:
          content = { type: 'chardev', rdev: buf.readBigUInt64LE(rdevAt) };
          break;
        case KIND_BLK:
          content = { type: 'blockdev', rdev: buf.readBigUInt64LE(rdevAt) };
          break;
        case KIND_FIFO:
          content = { type: 'fifo' };
          break;
        default:
          content = { type: 'socket' };
      }
      const leaf = new Leaf(stat, content);
      if (inodes) inodes.set(ino, leaf);
      dir.entries.set(key, leaf);
      if (toHash !== undefined) to.file(toHash, buf.subarray(nameStart, nameStart + nameLen));
    }
  }
}

/**
 * `len` bytes of `buf` from `at` in a buffer of their own (from Node's pool when small): one
 * object per value, where `Buffer.from(buf.subarray(...))` makes two. Values are short (ids,
 * symlink targets, inline contents of at most 64 bytes, xattr values), so a loop copies them
 * faster than a call into the runtime would.
 */
function copyOut(buf: Buffer, at: number, len: number): Buffer {
  const out = Buffer.allocUnsafe(len);
  if (len > 256) buf.copy(out, 0, at, at + len);
  else for (let i = 0; i < len; i++) out[i] = buf[at + i];
  return out;
}

/** A cursor over the packed records of native/scan.c. */
class Records {
  pos = 0;
  private lastSecLo = -1;
  private lastSecHi = -1;
  private lastSec = 0n;
  constructor(readonly b: Buffer) {}
  more(): boolean {
    return this.pos < this.b.length;
  }
  u8(): number {
    return this.b[this.pos++];
  }
  u16(): number {
    const v = this.b[this.pos] | (this.b[this.pos + 1] << 8);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const b = this.b;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) + b[p + 3] * 0x1000000;
  }
  /** A signed 64-bit seconds value; files of a directory mostly share it, so they share the bigint. */
  secs(): bigint {
    const lo = this.u32();
    const hi = this.u32() | 0;
    if (lo !== this.lastSecLo || hi !== this.lastSecHi) {
      this.lastSecLo = lo;
      this.lastSecHi = hi;
      this.lastSec = BigInt(hi) * 0x100000000n + BigInt(lo);
    }
    return this.lastSec;
  }
  /** An unsigned 64-bit value as a Map key: a number when exact, else a bigint. */
  u64Key(): number | bigint {
    const lo = this.u32();
    const hi = this.u32();
    return hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
  }
}

const ERRNO_NAMES = getSystemErrorMap();
// Error record ops (native/scan.c).
const OP_OPEN_DIR = 1;
const OP_STAT = 2;
const OP_TYPE = 3;
const OP_READ = 4;
const OP_XATTR = 5;
const OP_CHANGED = 7;
const ESTALE_TYPE = osc.errno.ESTALE;

/** Marks an error that already names its path (not to be wrapped again). */
export function isScanError(e: unknown): boolean {
  return (e as { cfsScan?: boolean } | null)?.cfsScan === true;
}

/** The error an error record describes, naming the entry (or the directory itself). */
function recordError(r: Records, dirReal: Buffer, name: Buffer): Error {
  const op = r.u8();
  const errno = r.u32();
  const lo = r.u32();
  const listed = r.u32() * 0x100000000 + lo;
  const sysLen = r.u8();
  const syscall = r.b.toString('latin1', r.pos, r.pos + sysLen);
  const p = name.length > 0 ? joinPath(dirReal, name) : dirReal;
  let cause: Error;
  if (op === OP_CHANGED) {
    // errno is 1 when the file grew, 0 when it shrank; the number is its size when listed
    const how = errno === 1 ? 'grew' : 'shrank';
    cause = Object.assign(new Error(`file changed while being hashed (it ${how}: ${listed} bytes when listed)`), { code: 'ECHANGED' });
  } else {
    const [code, desc] = ERRNO_NAMES.get(-errno) ?? [`E${errno}`, `error ${errno}`];
    cause = Object.assign(new Error(`${code}: ${desc}, ${syscall} '${showPath(p)}'`), { code, errno: -errno, syscall });
  }
  const what =
    op === OP_OPEN_DIR
      ? 'cannot read directory'
      : op === OP_STAT
        ? 'cannot stat'
        : op === OP_TYPE
          ? errno === ESTALE_TYPE
            ? 'File type changed between readdir() and lstat():'
            : 'unsupported file type:'
          : op === OP_READ
            ? 'cannot read'
            : op === OP_XATTR
              ? 'cannot read extended attributes of'
              : 'cannot hash';
  const err = op === OP_TYPE ? scanError(what, p) : scanError(what, p, cause);
  return Object.assign(err, { cfsScan: true });
}
