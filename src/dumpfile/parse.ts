/**
 * Parses a composefs dumpfile into a tree with composefs-rs v0.9.0 semantics
 * (`Entry::parse` + `dumpfile_to_filesystem`), so that the same text gives the same tree and
 * therefore the same image as `cfsctl` / `mkcomposefs --from-file`.
 *
 * Every error names the line number and the reason.
 */
import { isUtf8 } from 'node:buffer';
import { EscapeError, unescape } from './escape.js';
import {
  Directory,
  FileSystem,
  HashAlg,
  Inode,
  Leaf,
  LeafContent,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  Stat,
  nameKey,
} from '../tree/tree.js';
import { xattrListProblem, xattrNameProblem, xattrValueProblem } from '../tree/validate.js';
import { InputError } from '../errors.js';

/**
 * Limits of composefs-rs's parser. Its PATH_MAX (4096) is not enforced: a directory scan can
 * produce longer paths, and their dumpfile must read back.
 */
export const MAX_INLINE_CONTENT = 512;
export const SYMLINK_MAX = 1024;

/** A dumpfile error: `line` is 1-based (0 when it concerns the whole file). */
export class DumpfileError extends InputError {
  constructor(
    readonly line: number,
    readonly reason: string,
  ) {
    super(line > 0 ? `dumpfile line ${line}: ${oneLine(reason)}` : `dumpfile: ${oneLine(reason)}`);
  }
}

/**
 * Reasons quote the offending bytes (paths, fields): control bytes as \xHH keep the message one
 * line, and a long quote is cut in the middle (the start says what, the end often why).
 */
function oneLine(s: string): string {
  const t = s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return t.length <= 300 ? t : `${t.slice(0, 220)}…${t.slice(-60)}`;
}

export interface ParseOptions {
  /**
   * Hash of the object ids (DIGEST fields and object-path PAYLOADs), as composefs-rs's ObjectID
   * type. Default: taken from the first of them (64 hex digits = sha256, 128 = sha512); every
   * other one must then have the same length.
   */
  objectHash?: HashAlg;
}

/** Result of parsing: the tree and the object hash its digests use (undefined if none). */
export interface ParsedDumpfile {
  fs: FileSystem;
  objectHash: HashAlg | undefined;
}

class LineError extends Error {}

function fail(reason: string): never {
  throw new LineError(reason);
}

// Rust's integer FromStr: optional '+', then at least one digit, nothing else.
const UNSIGNED = /^\+?[0-9]+$/;

function parseUnsigned(field: string, name: string, bits: 32 | 64): bigint {
  if (!UNSIGNED.test(field)) fail(`invalid ${name} '${field}'`);
  const v = BigInt(field);
  if (v >= 1n << BigInt(bits)) fail(`${name} '${field}' does not fit in ${bits} bits`);
  return v;
}

function parseU32(field: string, name: string): number {
  return Number(parseUnsigned(field, name, 32));
}

function parseMode(field: string): number {
  if (!/^\+?[0-7]+$/.test(field)) fail(`invalid mode '${field}'`);
  const v = parseInt(field.replace('+', ''), 8);
  if (v > 0xffffffff) fail(`mode '${field}' does not fit in 32 bits`);
  return v;
}

/** `-` means absent. */
function optional(f: Buffer): Buffer | undefined {
  return f.length === 1 && f[0] === 0x2d ? undefined : f;
}

function unesc(f: Buffer, what: string, max?: number): Buffer {
  try {
    return unescape(f, max);
  } catch (e) {
    if (e instanceof EscapeError) fail(`${what}: ${e.message}`);
    throw e;
  }
}

function noNul(b: Buffer, what: string): Buffer {
  if (b.includes(0)) fail(`${what}: embedded NUL`);
  return b;
}

function unescapePath(f: Buffer, what: string): Buffer {
  const p = noNul(unesc(f, what), what);
  if (p.length === 0) fail(`${what}: empty path`);
  return p;
}

/** Absolute, no empty, `.` or `..` components: what composefs-rs calls canonical. */
function canonicalPath(f: Buffer, what: string): Buffer {
  const p = unescapePath(f, what);
  if (p[0] !== 0x2f) fail(`${what}: not an absolute path`);
  if (p.length === 1) return p;
  const parts = p.subarray(1).toString('latin1').split('/');
  for (const c of parts) {
    if (c === '') fail(`${what}: empty path component (// or trailing /)`);
    if (c === '.' || c === '..') fail(`${what}: invalid path component '${c}'`);
  }
  return p;
}

/** Lines as composefs-rs `str::lines()` gives them: split on \n, a trailing \r dropped. */
function* lines(text: Buffer): Generator<[number, Buffer]> {
  let start = 0;
  let n = 0;
  while (start < text.length) {
    let end = text.indexOf(0x0a, start);
    const next = end === -1 ? text.length : end + 1;
    if (end === -1) end = text.length;
    let line = text.subarray(start, end);
    if (end < text.length && line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    yield [++n, line];
    start = next;
  }
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);
function isBlank(line: Buffer): boolean {
  for (const c of line) if (!WS.has(c)) return false;
  return true;
}

/** Splits on single spaces (consecutive spaces give empty fields, as Rust's split(' ')). */
function splitSpaces(line: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (;;) {
    const i = line.indexOf(0x20, start);
    if (i === -1) {
      out.push(line.subarray(start));
      return out;
    }
    out.push(line.subarray(start, i));
    start = i + 1;
  }
}

interface ParsedEntry {
  path: Buffer;
  /** null = hardlink to `target`. */
  inode: { dir: boolean; stat: Stat; content?: LeafContent } | null;
  target?: Buffer;
}

class Parser {
  objectHash: HashAlg | undefined;
  constructor(opts: ParseOptions) {
    this.objectHash = opts.objectHash;
    this.hashFrom = 'as asked';
  }

  /** Where the object hash was settled, for the message when a later id disagrees. */
  private hashFrom: string;

  /** Settles or checks the object hash against an id of `alg` found in `what`. */
  private useHash(alg: HashAlg, what: string, line: number): void {
    if (this.objectHash === undefined) {
      this.objectHash = alg;
      this.hashFrom = `line ${line}`;
    } else if (this.objectHash !== alg) {
      fail(`${what} is a ${alg} object id, but this dumpfile's object ids are ${this.objectHash} (${this.hashFrom}); one dumpfile uses one hash`);
    }
  }

  private digest(hex: string, line: number): Buffer {
    const alg: HashAlg | undefined = hex.length === 64 ? 'sha256' : hex.length === 128 ? 'sha512' : undefined;
    if (alg === undefined || !/^[0-9a-fA-F]*$/.test(hex)) {
      fail(`invalid digest '${hex}': expected 64 (sha256) or 128 (sha512) hex digits`);
    }
    this.useHash(alg, `digest '${hex.slice(0, 16)}…'`, line);
    return Buffer.from(hex, 'hex');
  }

  /**
   * composefs-rs `from_object_pathname` (crates/composefs/src/fsverity/hashvalue.rs, v0.9.0):
   * the trailing `xx/yyyy…` of a payload, anything before it ignored. composefs-rs knows the
   * length from its ObjectID type: cfsctl instantiates it from `--hash`, default sha512
   * (crates/composefs-ctl/src/lib.rs, `run_cmd_without_repo::<Sha512HashValue>`), its
   * mkcomposefs always uses sha256 (mkcomposefs.rs `read_dumpfile`). Our `--hash` is the image
   * id's hash only (a sha256-object dumpfile has sha512 ids too), so the path itself says it:
   * the two forms cannot be confused, a 64-digit path has a '/' where a 128-digit one has a digit.
   */
  private idFromObjectPath(payload: Buffer, line: number): Buffer {
    const s = payload.toString('latin1');
    const tailOf = (digits: number): string | null => {
      if (s.length < digits + 1) return null;
      const t = s.slice(s.length - digits - 1);
      return /^[0-9a-fA-F]{2}\/[0-9a-fA-F]+$/.test(t) ? t : null;
    };
    const t512 = tailOf(128);
    const t256 = t512 === null ? tailOf(64) : null;
    const t = t512 ?? t256;
    if (t === null) {
      fail(`payload '${s}' is not an object path (…/xx/ and the rest of a 64- or 128-digit hex digest)`);
    }
    this.useHash(t512 !== null ? 'sha512' : 'sha256', `object path '${s.slice(0, 24)}…'`, line);
    return Buffer.from(t.slice(0, 2) + t.slice(3), 'hex');
  }

  entry(line: Buffer, n: number): ParsedEntry {
    const f = splitSpaces(line);
    let i = 0;
    const next = (name: string): Buffer => {
      if (i >= f.length) fail(`missing ${name}`);
      return f[i++];
    };
    const path = canonicalPath(next('path'), 'path');
    parseUnsigned(next('size').toString('latin1'), 'size', 64);
    const size = BigInt(f[1].toString('latin1'));
    const modeField = next('mode').toString('latin1');
    const at = modeField.indexOf('@');
    if (at !== -1) {
      const mode = parseMode(modeField.slice(at + 1));
      if ((mode & S_IFMT) === S_IFDIR) fail('invalid hardlinked directory');
      for (const name of ['nlink', 'uid', 'gid', 'rdev', 'mtime']) next(name);
      const payload = optional(next('payload'));
      if (!payload) fail('hardlink without a target (PAYLOAD)');
      return { path, inode: null, target: canonicalPath(payload, 'hardlink target') };
    }
    const mode = parseMode(modeField);
    const nlink = parseU32(next('nlink').toString('latin1'), 'nlink');
    const uid = parseU32(next('uid').toString('latin1'), 'uid');
    const gid = parseU32(next('gid').toString('latin1'), 'gid');
    const rdev = parseUnsigned(next('rdev').toString('latin1'), 'rdev', 64);
    const mtime = next('mtime').toString('latin1');
    const dot = mtime.indexOf('.');
    if (dot === -1) fail(`missing . in mtime '${mtime}'`);
    // composefs-rs takes u64 (2^64-1 wraps to -1) and refuses a '-'; C mkcomposefs takes negative
    // seconds. We take both, so our own output (which prints negative seconds) reads back.
    const secText = mtime.slice(0, dot);
    let sec: bigint;
    if (secText.startsWith('-')) {
      sec = -parseUnsigned(secText.slice(1), 'mtime seconds', 64);
      if (sec < -(1n << 63n)) fail(`mtime seconds '${secText}' is below the signed 64-bit range`);
    } else sec = parseUnsigned(secText, 'mtime seconds', 64);
    const nsec = parseUnsigned(mtime.slice(dot + 1), 'mtime nanoseconds', 64);
    const payload = optional(next('payload'));
    const content = optional(next('content'));
    const digest = optional(next('digest'));

    const xattrs: [Buffer, Buffer][] = [];
    let nameTotal = 0;
    for (; i < f.length; i++) {
      const eq = f[i].indexOf(0x3d);
      if (eq === -1) fail(`missing = in xattr '${f[i].toString('latin1')}'`);
      // The limits of ../tree/validate.ts, shared with the image writer and reader.
      const key = unesc(f[i].subarray(0, eq), 'xattr name');
      const badName = xattrNameProblem(key);
      if (badName !== null) fail(badName);
      const value = unesc(f[i].subarray(eq + 1), 'xattr value');
      const badValue = xattrValueProblem(key, value);
      if (badValue !== null) fail(badValue);
      nameTotal += key.length;
      const tooMany = xattrListProblem(nameTotal, xattrs.length + 1);
      if (tooMany !== null) fail(tooMany);
      xattrs.push([key, value]);
    }
    // composefs-rs sorts (name, value) pairs, then inserts into a map: for a repeated name the
    // greatest value wins.
    xattrs.sort((a, b) => Buffer.compare(a[0], b[0]) || Buffer.compare(a[1], b[1]));

    const noContent = () => {
      if (content) fail('entry cannot have content');
      if (digest) fail('entry cannot have fsverity digest');
    };
    const noRdev = () => {
      if (rdev !== 0n) fail(`entry cannot have device (rdev) ${rdev}`);
    };

    let c: LeafContent | undefined;
    let dir = false;
    switch (mode & S_IFMT) {
      case S_IFREG:
        noRdev();
        if (payload) {
          const p = unescapePath(payload, 'payload');
          if (digest) c = { type: 'external', id: this.digest(digest.toString('latin1'), n), size };
          else c = { type: 'external-no-verity', id: this.idFromObjectPath(p, n), size };
        } else {
          const data = content ? unesc(content, 'content', MAX_INLINE_CONTENT) : Buffer.alloc(0);
          if (digest) fail('inline file cannot have fsverity digest');
          c = data.length === 0 && size > 0n ? { type: 'sparse', size } : { type: 'inline', data: Buffer.from(data) };
        }
        break;
      case S_IFLNK: {
        noContent();
        noRdev();
        if (!payload) fail('symlink without a target (PAYLOAD)');
        const target = unescapePath(payload, 'symlink target');
        if (target.length > SYMLINK_MAX) fail(`symlink target length ${target.length} exceeds limit ${SYMLINK_MAX}`);
        c = { type: 'symlink', target: Buffer.from(target) };
        break;
      }
      case S_IFIFO:
        noContent();
        noRdev();
        c = { type: 'fifo' };
        break;
      case S_IFSOCK:
        noContent();
        noRdev();
        c = { type: 'socket' };
        break;
      case S_IFCHR:
      case S_IFBLK: {
        noContent();
        const isChar = (mode & S_IFMT) === S_IFCHR;
        if (isChar && rdev === 0n && nlink > 1) fail('whiteout entry (character device 0:0) has nlink > 1');
        c = isChar ? { type: 'chardev', rdev } : { type: 'blockdev', rdev };
        break;
      }
      case S_IFDIR:
        noContent();
        noRdev();
        dir = true;
        break;
      default:
        fail(`unhandled file type in mode ${mode.toString(8)}`);
    }
    if (nsec >= 1_000_000_000n) fail(`invalid mtime nanoseconds ${nsec} (must be < 1000000000)`);
    const stat: Stat = {
      mode: mode & 0o7777,
      uid,
      gid,
      mtimeSec: BigInt.asIntN(64, sec),
      mtimeNsec: Number(nsec),
      xattrs: new Map(xattrs.map(([k, v]) => [nameKey(k), Buffer.from(v)])),
    };
    return { path, inode: { dir, stat, content: c } };
  }
}

function parentAndName(path: Buffer): [string[], string] {
  const parts = path.subarray(1).toString('latin1').split('/');
  const name = parts.pop()!;
  return [parts, name];
}

/**
 * Parses a dumpfile. The text must be UTF-8 (composefs-rs reads it as a `&str`); escaped bytes
 * may be anything.
 */
export function parseDumpfile(text: Buffer, opts: ParseOptions = {}): ParsedDumpfile {
  if (!isUtf8(text)) {
    throw new DumpfileError(0, 'not valid UTF-8; raw bytes must be escaped as \\xHH');
  }
  const parser = new Parser(opts);
  let fs: FileSystem | undefined;
  const byPath = new Map<string, Leaf>();
  const created = new Set<Leaf>();
  for (const [n, line] of lines(text)) {
    if (isBlank(line)) continue;
    try {
      const e = parser.entry(line, n);
      if (!fs) {
        if (e.path.length !== 1) fail(`dumpfile must start with the root directory entry '/', found '${e.path.toString('latin1')}'`);
      }
      if (e.path.length === 1) {
        if (!e.inode || !e.inode.dir) fail('the root must be a directory');
        if (!fs) fs = new FileSystem(new Directory(e.inode.stat));
        else fs.root.stat = e.inode.stat;
        continue;
      }
      const [parents, name] = parentAndName(e.path);
      let inode: Inode;
      if (!e.inode) {
        const leaf = byPath.get(e.target!.toString('latin1'));
        if (!leaf) fail(`hardlink target not found: '${e.target!.toString('latin1')}'`);
        inode = leaf;
      } else if (e.inode.dir) {
        inode = new Directory(e.inode.stat);
      } else {
        const leaf = new Leaf(e.inode.stat, e.inode.content!);
        created.add(leaf);
        inode = leaf;
      }
      if (inode.kind === 'leaf') byPath.set(e.path.toString('latin1'), inode);
      let dir: Directory = fs!.root;
      for (const p of parents) {
        const d = dir.entries.get(p);
        if (!d || d.kind !== 'dir') fail(`parent directory not found: '/${parents.join('/')}'`);
        dir = d;
      }
      dir.entries.set(name, inode);
    } catch (err) {
      if (err instanceof LineError) throw new DumpfileError(n, err.message);
      throw err;
    }
  }
  if (!fs) throw new DumpfileError(0, 'empty dumpfile: expected the root directory entry');
  checkOrphans(fs, created);
  return { fs, objectHash: parser.objectHash };
}

/** A replaced path can leave leaves no entry refers to; composefs-rs refuses such trees. */
function checkOrphans(fs: FileSystem, created: Set<Leaf>): void {
  const stack: Directory[] = [fs.root];
  while (stack.length > 0) {
    for (const v of stack.pop()!.entries.values()) {
      if (v.kind === 'dir') stack.push(v);
      else created.delete(v);
    }
  }
  if (created.size > 0) {
    throw new DumpfileError(0, `${created.size} orphaned leaves: a path was given twice and the later line replaced an earlier subtree`);
  }
}

