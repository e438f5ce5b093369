/**
 * Kernel oracle: mount a composefs image (EROFS loop mount + overlayfs with the object store as
 * a data-only lower layer) and read the mounted tree back with plain syscalls and getfattr —
 * nothing from our own reader is involved.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IN_CI } from './helpers.js';

/** Whether this process can mount (root with the mount capability, erofs + overlay present). */
export function canMount(): { ok: boolean; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'not running as root' };
  const fsList = readFileSync('/proc/filesystems', 'utf8');
  if (!/\berofs\b/.test(fsList)) {
    try {
      execFileSync('modprobe', ['erofs'], { stdio: 'ignore' });
    } catch {
      /* checked below */
    }
  }
  const again = readFileSync('/proc/filesystems', 'utf8');
  if (!/\berofs\b/.test(again)) return { ok: false, why: 'kernel has no erofs support' };
  if (!/\boverlay\b/.test(again)) return { ok: false, why: 'kernel has no overlayfs support' };
  return { ok: true, why: '' };
}

/** Skips (outside CI) or fails (under CI=true) when mounting is impossible. Returns true to proceed. */
export function requireMount(t: { skip: (m: string) => void }): boolean {
  const { ok, why } = canMount();
  if (ok) return true;
  if (IN_CI) throw new Error(`kernel mount test cannot run under CI: ${why}`);
  t.skip(`kernel mount not possible here (${why}); run as root to include it`);
  return false;
}

/** Mounts IMAGE with OBJECTS as data-only lower layer under `work`; returns the merged dir and an unmount function. */
export function mountComposefs(image: string, objects: string, work: string): { root: string; unmount: () => void } {
  const lower = path.join(work, 'erofs');
  const root = path.join(work, 'merged');
  mkdirSync(lower, { recursive: true });
  mkdirSync(root, { recursive: true });
  execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', image, lower]);
  try {
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,metacopy=on,redirect_dir=on,lowerdir=${lower}::${objects}`, root]);
  } catch (e) {
    execFileSync('umount', [lower]);
    throw e;
  }
  return {
    root,
    unmount: () => {
      execFileSync('umount', [root]);
      execFileSync('umount', [lower]);
    },
  };
}

/** Writes each object of `objects` (id hex -> content) into a composefs object directory. */
export function writeObjects(dir: string, objects: Map<string, Buffer>): void {
  for (const [hex, data] of objects) {
    const sub = path.join(dir, hex.slice(0, 2));
    mkdirSync(sub, { recursive: true });
    writeFileSync(path.join(sub, hex.slice(2)), data);
  }
}

/** What the kernel shows of one path. */
export interface Observed {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: string;
  size: bigint;
  nlink: bigint;
  ino: bigint;
  content?: string;
  target?: string;
  rdev?: bigint;
  xattrs: Map<string, string>;
}

const TYPES: [number, string][] = [
  [0o040000, 'dir'],
  [0o100000, 'reg'],
  [0o120000, 'lnk'],
  [0o020000, 'chr'],
  [0o060000, 'blk'],
  [0o010000, 'fifo'],
  [0o140000, 'sock'],
];

/** Parses `getfattr -R -d -m - -e hex -h --absolute-names` output: path (latin1) -> name -> hex value. */
function readAllXattrs(root: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let text: Buffer;
  try {
    text = execFileSync('getfattr', ['-R', '-d', '-m', '-', '-e', 'hex', '-h', '--absolute-names', root], { maxBuffer: 1 << 28 });
  } catch (e) {
    // getfattr exits non-zero when some file has no xattrs support; its stdout still holds the rest.
    text = (e as { stdout: Buffer }).stdout;
  }
  let cur: Map<string, string> | undefined;
  for (const line of text.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      cur = new Map();
      out.set(unescapeGetfattr(line.slice(8)), cur);
    } else if (cur && line.includes('=')) {
      const eq = line.indexOf('=');
      cur.set(unescapeGetfattr(line.slice(0, eq)), line.slice(eq + 1).replace(/^0x/, ''));
    }
  }
  return out;
}

/** getfattr escapes unusual bytes in names as \ooo (octal). */
function unescapeGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * A path the kernel accepts for `full`: itself when short, else its base name after chdir-ing
 * step by step into its parent (paths beyond PATH_MAX). The caller restores the cwd.
 */
function reachable(full: Buffer): Buffer {
  if (full.length < 3500) return full;
  const parts = full.toString('latin1').split('/');
  process.chdir('/');
  for (const part of parts.slice(1, -1)) process.chdir(Buffer.from(part, 'latin1').toString());
  return Buffer.from(parts[parts.length - 1], 'latin1');
}

/** mtime as "SEC.NSEC" with floor semantics (-1.5 s = "-2.500000000"). */
function mtimeText(ns: bigint): string {
  let sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += 1_000_000_000n;
  }
  return `${sec}.${nsec}`;
}

/**
 * Reads a directory tree (mounted image or source) with plain syscalls: path (latin1, "/" for
 * the root) -> what lstat/readlink/read/getfattr show. Regular file content is summarised as
 * its sha256. Copes with paths beyond PATH_MAX.
 */
export function readMountedTree(root: string): Map<string, Observed> {
  const xattrs = readAllXattrs(root);
  const out = new Map<string, Observed>();
  const rootBuf = Buffer.from(root);
  const stack: Buffer[] = [Buffer.alloc(0)];
  const cwd = process.cwd();
  try {
    while (stack.length > 0) {
      const rel = stack.pop()!;
      const full = Buffer.concat([rootBuf, rel]);
      const p = reachable(full);
      let st;
      try {
        st = lstatSync(p, { bigint: true });
      } catch (e) {
        // overlayfs lists a whiteout of its lower layer in readdir but hides it from lookup
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' && rel.length > 0) continue;
        throw e;
      }
      const fmt = Number(st.mode) & 0o170000;
      const type = TYPES.find(([b]) => b === fmt)?.[1] ?? `unknown(${fmt.toString(8)})`;
      const key = rel.length === 0 ? '/' : rel.toString('latin1');
      const o: Observed = {
        type,
        mode: Number(st.mode) & 0o7777,
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtime: mtimeText(st.mtimeNs),
        size: st.size,
        nlink: st.nlink,
        ino: st.ino,
        xattrs: xattrs.get(full.toString('latin1')) ?? new Map(),
      };
      if (type === 'reg') o.content = createHash('sha256').update(readFileSync(p)).digest('hex');
      if (type === 'lnk') o.target = (readlinkSync(p, { encoding: 'buffer' }) as Buffer).toString('latin1');
      if (type === 'chr' || type === 'blk') o.rdev = st.rdev;
      out.set(key, o);
      if (type === 'dir') {
        for (const name of readdirSync(p, { encoding: 'buffer' }) as Buffer[]) {
          stack.push(Buffer.concat([rel, Buffer.from('/'), name]));
        }
      }
    }
  } finally {
    process.chdir(cwd);
  }
  return out;
}

/**
 * What a mount of the image of `source` (a tree read with readMountedTree) must show:
 * composefs-rs's finishing rules (allowlist-only xattrs, root takes /usr's metadata, /run
 * emptied) and what format `version` and overlayfs make of it.
 */
export function expectedView(source: Map<string, Observed>, version: number): Map<string, Observed> {
  const usr = source.get('/usr')!;
  const out = new Map<string, Observed>();
  for (const [p, o] of source) {
    if (p.startsWith('/run/')) continue;
    // The scan follows no mounts' whiteouts: a user char 0:0 in V2 is a real overlay whiteout.
    if (version === 2 && o.type === 'chr' && o.rdev === 0n) continue;
    const e: Observed = { ...o, xattrs: new Map([...o.xattrs].filter(([k]) => k === 'security.capability')) };
    if (p === '/') Object.assign(e, { mode: usr.mode, uid: usr.uid, gid: usr.gid, mtime: usr.mtime, xattrs: new Map([...usr.xattrs].filter(([k]) => k === 'security.capability')) });
    if (p === '/run') e.mtime = usr.mtime;
    if (version === 2) e.mtime = e.mtime.replace(/\.\d+$/, '.0');
    out.set(p, e);
  }
  // V0/V1 escape user whiteouts; overlayfs shows the markers on their parent directory.
  if (version !== 2) {
    for (const [p, e] of out) {
      if (e.type !== 'chr' || e.rdev !== 0n) continue;
      // the whiteout itself: an empty regular file carrying the (unescaped) whiteout markers
      delete e.rdev;
      Object.assign(e, {
        type: 'reg',
        size: 0n,
        content: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
        xattrs: new Map([...e.xattrs, ['trusted.overlay.whiteout', ''], ['user.overlay.whiteout', '']]),
      });
      const parent = out.get(p.slice(0, p.lastIndexOf('/')) || '/')!;
      parent.xattrs = new Map([...parent.xattrs, ['trusted.overlay.whiteouts', ''], ['user.overlay.whiteouts', '']]);
      if (version === 1) parent.xattrs = new Map([...parent.xattrs, ['trusted.overlay.opaque', '78'], ['user.overlay.opaque', '78']]);
    }
  }
  // nlink: directories 2 + subdirectories, leaves the number of names in the tree
  const byIno = new Map<bigint, number>();
  for (const [p, e] of out) {
    if (e.type === 'dir') {
      const prefix = p === '/' ? '/' : p + '/';
      let subdirs = 0;
      for (const [q, f] of out) if (f.type === 'dir' && q.startsWith(prefix) && q !== p && !q.slice(prefix.length).includes('/')) subdirs++;
      e.nlink = BigInt(2 + subdirs);
    } else byIno.set(e.ino, (byIno.get(e.ino) ?? 0) + 1);
  }
  for (const e of out.values()) if (e.type !== 'dir') e.nlink = BigInt(byIno.get(e.ino)!);
  return out;
}

/** Hardlink groups as sets of paths, independent of inode numbers. */
export function hardlinkGroups(m: Map<string, Observed>): string[] {
  const by = new Map<bigint, string[]>();
  for (const [p, o] of m) if (o.type !== 'dir') by.set(o.ino, [...(by.get(o.ino) ?? []), p]);
  return [...by.values()].filter((g) => g.length > 1).map((g) => g.sort().join('|')).sort();
}

export function withoutIno(o: Observed): Omit<Observed, 'ino'> & { size?: bigint } {
  const { ino: _ino, ...rest } = o;
  if (o.type === 'dir') delete (rest as { size?: bigint }).size;
  return rest;
}

