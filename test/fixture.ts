/**
 * An edge-case root filesystem built on disk by the tests themselves (as root): every file type,
 * odd modes, ids, names, mtimes, xattrs, hardlinks, deep and long paths. `Fixture.expect`
 * records what was made, path by path.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { keyBytes, nameKey } from '../src/tree/tree.js';

export const isRoot = process.getuid?.() === 0;
export const NEED_ROOT = isRoot ? false : 'needs root (mknod, chown, trusted.* xattrs, setcap): run the tests as root';
const hasTool = (t: string) => spawnSync('sh', ['-c', `command -v ${t}`]).status === 0;
const TOOLS_MISSING = ['setfattr', 'getfattr', 'setcap', 'mknod', 'mkfifo', 'touch'].filter((t) => !hasTool(t));
/** Why the fixture cannot be built here (false = it can). Under CI=true callers must fail instead. */
export const SKIP_FIXTURE: string | false =
  NEED_ROOT || (TOOLS_MISSING.length > 0 ? `missing tools: ${TOOLS_MISSING.join(', ')} (apt-get install attr libcap2-bin coreutils)` : false);

export const B = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));
export const cat = (...parts: (string | Buffer)[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

/** Raw xattr value via getfattr (independent of our addon). */
export function getfattrHex(p: string, name: string): Buffer {
  const out = run('getfattr', ['-h', '-e', 'hex', '-n', name, '--absolute-names', p]);
  const line = out.split('\n').find((l) => l.startsWith(name + '='));
  assert.ok(line, `getfattr ${name} ${p}: ${out}`);
  return Buffer.from(line.slice(name.length + 3), 'hex'); // "name=0x..."
}

// ------------------------------------------------------------------------------------------------
// Fixture with expectations

export type Kind = 'dir' | 'inline' | 'external' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';
export interface Expect {
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  mtime?: [bigint, number];
  xattrs: Map<string, Buffer>;
  content?: Buffer;
  target?: Buffer;
  rdev?: bigint;
  /** Paths (relative, latin1 keys joined) that must share this leaf. */
  sameAs?: string;
}

export class Fixture {
  readonly expect = new Map<string, Expect>(); // key: relative path as latin1 ("" = root)
  readonly dirMtimes: [string, bigint, number][] = [];
  constructor(readonly root: string) {}

  /**
   * A path the kernel accepts for `rel`: absolute when short, else (paths beyond PATH_MAX) the
   * base name after chdir-ing step by step into its parent. Fixture operations are synchronous,
   * so the cwd stays put until the next call; `buildFixture` restores it.
   */
  abs(rel: Buffer | string): Buffer {
    const full = rel.length === 0 ? B(this.root) : cat(this.root, '/', rel);
    if (full.length < 3000) return full;
    const r = typeof rel === 'string' ? B(rel) : rel;
    const parts = r.toString('latin1').split('/');
    process.chdir(this.root);
    for (const part of parts.slice(0, -1)) process.chdir(keyBytes(part).toString());
    return keyBytes(parts[parts.length - 1]);
  }
  private key(rel: Buffer | string): string {
    return typeof rel === 'string' ? nameKey(B(rel)) : nameKey(rel);
  }
  private rec(rel: Buffer | string, e: Partial<Expect> & { kind: Kind }): Expect {
    const full: Expect = { mode: 0o644, uid: 0, gid: 0, xattrs: new Map(), ...e };
    this.expect.set(this.key(rel), full);
    return full;
  }
  get(rel: Buffer | string): Expect {
    return this.expect.get(this.key(rel))!;
  }

  dir(rel: Buffer | string, mode = 0o755): Expect {
    const p = this.abs(rel);
    if (rel.length > 0) fs.mkdirSync(p);
    fs.chmodSync(p, mode);
    return this.rec(rel, { kind: 'dir', mode });
  }
  file(rel: Buffer | string, content: Buffer, mode = 0o644): Expect {
    const p = this.abs(rel);
    fs.writeFileSync(p, content);
    fs.chmodSync(p, mode);
    return this.rec(rel, { kind: content.length <= 64 ? 'inline' : 'external', mode, content });
  }
  symlink(rel: Buffer | string, target: Buffer): Expect {
    fs.symlinkSync(target, this.abs(rel));
    return this.rec(rel, { kind: 'symlink', mode: 0o777, target });
  }
  node(rel: string, kind: 'chardev' | 'blockdev', major: number, minor: number, mode = 0o640): Expect {
    const p = this.abs(rel).toString();
    run('mknod', ['-m', mode.toString(8), p, kind === 'chardev' ? 'c' : 'b', String(major), String(minor)]);
    return this.rec(rel, { kind, mode, rdev: makedev(major, minor) });
  }
  fifo(rel: string, mode = 0o600): Expect {
    run('mkfifo', ['-m', mode.toString(8), this.abs(rel).toString()]);
    return this.rec(rel, { kind: 'fifo', mode });
  }
  link(existing: Buffer | string, rel: Buffer | string): void {
    const src = this.abs(existing); // may chdir; `rel` must then be short
    fs.linkSync(src, this.abs(rel));
    const e = this.get(existing);
    this.expect.set(this.key(rel), { ...e, sameAs: this.key(existing) });
  }
  chown(rel: Buffer | string, uid: number, gid: number): void {
    fs.lchownSync(this.abs(rel), uid, gid);
    const e = this.get(rel);
    e.uid = uid;
    e.gid = gid;
  }
  /** Sets an xattr with setfattr (hex value); `-h` so symlinks themselves get it. */
  xattr(rel: string, name: string, value: Buffer): void {
    run('setfattr', ['-h', '-n', name, '-v', '0x' + value.toString('hex'), this.abs(rel).toString()]);
    this.get(rel).xattrs.set(name, value);
  }
  setcap(rel: string, caps: string): void {
    const p = this.abs(rel).toString();
    run('setcap', [caps, p]);
    this.get(rel).xattrs.set('security.capability', getfattrHex(p, 'security.capability'));
  }
  /** mtime via touch (nanosecond precision, negative and far-future times). */
  mtime(rel: string, sec: bigint, nsec: number): void {
    const e = this.get(rel);
    if (e.kind === 'dir') {
      this.dirMtimes.push([rel, sec, nsec]);
      return;
    }
    touch(this.abs(rel).toString(), sec, nsec);
    e.mtime = [sec, nsec];
  }
  /** Directory mtimes last (creating entries changes them), deepest first. */
  finish(): void {
    this.dirMtimes.sort((a, b) => b[0].length - a[0].length);
    for (const [rel, sec, nsec] of this.dirMtimes) {
      touch(this.abs(rel).toString(), sec, nsec);
      this.get(rel).mtime = [sec, nsec];
    }
  }
}

function touch(p: string, sec: bigint, nsec: number): void {
  // @S.N with S possibly negative: touch parses "@-2.5" as -2 + (-0.5); build the exact value.
  const total = sec * 1_000_000_000n + BigInt(nsec);
  const neg = total < 0n;
  const abs = neg ? -total : total;
  const s = `${neg ? '-' : ''}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
  run('touch', ['-h', '-m', '-d', `@${s}`, p]);
}

/** glibc makedev. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

export async function buildFixture(base: string): Promise<{ fx: Fixture; cleanup: () => Promise<void> }> {
  const cwd = process.cwd();
  try {
    return await buildFixtureIn(base);
  } finally {
    process.chdir(cwd);
  }
}

/** rm -rf that copes with paths beyond PATH_MAX (Node's rmSync does not). */
export function rmTree(p: string): void {
  run('rm', ['-rf', '--', p]);
}

async function buildFixtureIn(base: string): Promise<{ fx: Fixture; cleanup: () => Promise<void> }> {
  const fx = new Fixture(base);
  fx.dir('', 0o711);
  fx.chown('', 4242, 4343);
  fx.xattr('', 'user.rootdir', B('root-xattr'));
  fx.mtime('', 1234567890n, 987654321);

  // /usr: the root copies its metadata
  fx.dir('usr', 0o750);
  fx.chown('usr', 70000, 80000);
  fx.xattr('usr', 'user.usr', B([0, 1, 2, 255]));
  fx.xattr('usr', 'trusted.usr', B('t'));
  fx.xattr('usr', 'security.capability', B([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  fx.mtime('usr', 1700000000n, 123456789);
  fx.dir('usr/bin');
  fx.file('usr/bin/ping', crypto.randomBytes(5000), 0o755);
  fx.setcap('usr/bin/ping', 'cap_net_raw+ep');
  fx.xattr('usr/bin/ping', 'user.keep', B('me'));
  fx.xattr('usr/bin/ping', 'trusted.drop', B('me'));

  // /run with content
  fx.dir('run', 0o700);
  fx.chown('run', 11, 12);
  fx.xattr('run', 'user.run', B('r'));
  fx.mtime('run', 99n, 1);
  fx.dir('run/sub');
  fx.file('run/sub/pidfile', B('123\n'));
  fx.file('run/big', crypto.randomBytes(100));

  // regular files of the interesting sizes, content checked byte for byte
  fx.dir('files');
  for (const n of [0, 1, 63, 64, 65, 4095, 4096, 4097, 3 * 4096 * 128 + 17]) fx.file(`files/f${n}`, crypto.randomBytes(n));
  // special permission bits and ids
  fx.file('files/setuid', B('x'), 0o4755);
  fx.file('files/setgid', B('x'), 0o2755);
  fx.file('files/allbits', B('x'), 0o7777);
  fx.file('files/mode000', B('secret'), 0o000);
  fx.file('files/bigids', B('ids'), 0o600);
  fx.chown('files/bigids', 65536, 4294967294);
  fx.file('files/bigids2', B('ids'), 0o600);
  fx.chown('files/bigids2', 2147483648, 100000);
  fx.dir('files/sticky', 0o1777);
  fx.dir('files/dir000', 0o000);
  fx.file('files/dir000/inside', B('hidden'), 0o000);
  fx.dir('files/setgiddir', 0o2775);

  // xattrs on many kinds of inodes, including binary values and a large value
  fx.xattr('files/f65', 'user.bin', B([0, 0xff, 0x80, 0x0a]));
  fx.xattr('files/f65', 'user.empty', Buffer.alloc(0));
  fx.xattr('files/f65', 'trusted.big', crypto.randomBytes(4000));
  fx.xattr('files/sticky', 'trusted.dirx', B('d'));

  // mtimes
  fx.mtime('files/f0', 0n, 0);
  fx.mtime('files/f1', 4102444800n, 0); // 2100-01-01
  fx.mtime('files/f63', 4102444800n, 999999999);
  fx.mtime('files/f64', 1700000000n, 500000000);
  fx.mtime('files/f4096', -2n, 500000000); // -1.5 s: floor semantics
  fx.mtime('files/sticky', 1n, 1);

  // names
  fx.dir('names');
  const nonUtf8 = B([0xff, 0xfe, 0x80, 0x2e, 0xc3]);
  fx.file(cat('names/', nonUtf8), B('not utf-8'));
  fx.dir(cat('names/', B([0xe9, 0x74, 0xe9])));
  fx.file(cat('names/', B([0xe9, 0x74, 0xe9]), '/', B([0x01, 0x7f])), B('ctl'));
  fx.file('names/new\nline', B('nl'));
  fx.file('names/ space ', B('sp'));
  fx.file('names/' + 'n'.repeat(255), B('long'));
  fx.dir('names/' + 'd'.repeat(255));
  fx.file('names/' + 'd'.repeat(255) + '/' + 'f'.repeat(255), crypto.randomBytes(70));
  fx.file('names/.hidden', B('h'));
  fx.file('names/..x', B('h'));

  // big directory
  fx.dir('many');
  for (let i = 0; i < 600; i++) fx.file(`many/e${String(i).padStart(4, '0')}`, B(String(i)));

  // deep nesting (60 levels) and a path far beyond PATH_MAX (22 * 256 bytes)
  let deep = 'deep';
  fx.dir(deep);
  for (let i = 1; i < 60; i++) {
    deep += `/l${i}`;
    fx.dir(deep);
  }
  fx.file(deep + '/bottom', crypto.randomBytes(10));
  fx.file(deep + '/bottombig', crypto.randomBytes(5000));
  let long = 'long';
  fx.dir(long);
  for (let i = 0; i < 22; i++) {
    long += '/' + String.fromCharCode(97 + (i % 26)).repeat(255);
    fx.dir(long);
  }
  fx.file(long + '/leaf', B('deep inline'));
  fx.file(long + '/leafbig', crypto.randomBytes(9000));
  fx.symlink(long + '/sym', B('../target'));
  fx.node(long + '/dev', 'chardev', 1, 3);
  fx.link(long + '/leafbig', 'long/hardlink-to-deep');
  fx.xattr(long + '/leaf', 'user.deep', B('yes'));
  fx.mtime(long + '/leaf', 42n, 42);
  fx.mtime(long, 43n, 43);

  // symlinks
  fx.dir('links');
  fx.symlink('links/short', B('t'));
  fx.symlink('links/dangling', B('/does/not/exist'));
  fx.symlink('links/todir', B('../files'));
  fx.symlink('links/abs', B('/usr/bin'));
  fx.symlink('links/t1024', B('x'.repeat(1023) + 'y'));
  fx.symlink('links/nonutf8', B([0xff, 0x2f, 0x80]));
  fx.xattr('links/short', 'trusted.sym', B('on-the-link'));
  fx.mtime('links/short', 5n, 6);

  // special files
  fx.dir('dev');
  fx.node('dev/null', 'chardev', 1, 3, 0o666);
  fx.node('dev/whiteout', 'chardev', 0, 0, 0o000);
  fx.node('dev/bigdev', 'blockdev', 259, 1048575, 0o660); // 20-bit minor
  fx.node('dev/bigmajor', 'chardev', 4095, 255);
  fx.node('dev/sda', 'blockdev', 8, 0);
  fx.fifo('dev/fifo');
  fx.xattr('dev/fifo', 'trusted.fifo', B('f'));
  fx.mtime('dev/fifo', 7n, 8);
  const sockPath = fx.abs('dev/sock').toString();
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => resolve());
  });
  fs.chmodSync(sockPath, 0o751);
  fx.expect.set('dev/sock', { kind: 'socket', mode: 0o751, uid: 0, gid: 0, xattrs: new Map() });

  // hardlinks within and across directories, of several inode kinds
  fx.dir('hl');
  fx.dir('hl/other');
  fx.file('hl/a', crypto.randomBytes(100), 0o640);
  fx.xattr('hl/a', 'user.hl', B('shared'));
  fx.mtime('hl/a', 1600000000n, 1);
  fx.link('hl/a', 'hl/b');
  fx.link('hl/a', 'hl/other/c');
  fx.link('hl/a', 'usr/bin/hl-from-usr');
  fx.file('hl/small', B('small'));
  fx.link('hl/small', 'hl/other/small2');
  fx.symlink('hl/sym', B('target'));
  fx.link('hl/sym', 'hl/other/sym2'); // link(2) does not follow symlinks
  fx.fifo('hl/fifo');
  fx.link('hl/fifo', 'hl/other/fifo2');
  fx.node('hl/dev', 'chardev', 5, 1);
  fx.link('hl/dev', 'hl/other/dev2');
  fx.file('hl/notlinked', B('small')); // same content, different inode: not shared

  for (const d of ['files', 'names', 'many', 'links', 'dev', 'hl', 'hl/other', 'deep', 'long']) fx.mtime(d, 1000n + BigInt(d.length), d.length);
  fx.finish();

  return {
    fx,
    cleanup: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmTree(base);
    },
  };
}

