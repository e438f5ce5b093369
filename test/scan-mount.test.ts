/**
 * The in-build path end to end: an edge-case root filesystem on disk -> `cfs create-image
 * --repo` -> kernel mount (erofs + overlayfs with the object store as data-only lower layer).
 * The mounted view must equal the source directory as the finishing rules transform it, read
 * independently with lstat/readlink/read/getfattr, for every format and hash.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SKIP_FIXTURE, buildFixture } from './fixture.js';
import { IN_CI, runCfs } from './helpers.js';
import { mountComposefs, readMountedTree, requireMount, type Observed } from './mount-helpers.js';

let base = '';
let src = '';
let cleanupFixture: (() => Promise<void>) | undefined;
let source: Map<string, Observed>;

before(async () => {
  if (SKIP_FIXTURE) return;
  base = mkdtempSync(path.join(tmpdir(), 'cfs-scanmount-'));
  src = path.join(base, 'root');
  mkdirSync(src);
  ({ cleanup: cleanupFixture } = await buildFixture(src));
  source = readMountedTree(src);
});

after(async () => {
  await cleanupFixture?.();
  if (base) rmSync(base, { recursive: true, force: true });
});

function skipOrFail(t: { skip: (m: string) => void }): boolean {
  if (!SKIP_FIXTURE) return false;
  if (IN_CI) throw new Error(`fixture cannot be built under CI: ${SKIP_FIXTURE}`);
  t.skip(SKIP_FIXTURE);
  return true;
}

/** The source as composefs-rs's rules (allowlist-only, /usr -> root, /run emptied) and format V turn it. */
function expectedView(version: number): Map<string, Observed> {
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
function groups(m: Map<string, Observed>): string[] {
  const by = new Map<bigint, string[]>();
  for (const [p, o] of m) if (o.type !== 'dir') by.set(o.ino, [...(by.get(o.ino) ?? []), p]);
  return [...by.values()].filter((g) => g.length > 1).map((g) => g.sort().join('|')).sort();
}

function strip(o: Observed): Omit<Observed, 'ino'> & { size?: bigint } {
  const { ino: _ino, ...rest } = o;
  if (o.type === 'dir') delete (rest as { size?: bigint }).size;
  return rest;
}

for (const alg of ['sha256', 'sha512'] as const) {
  for (const version of [0, 1, 2] as const) {
    test(`scanned fixture, mounted by the kernel, equals the transformed source (V${version}, ${alg})`, { timeout: 300_000 }, (t) => {
      if (skipOrFail(t) || !requireMount(t)) return;
      const work = mkdtempSync(path.join(tmpdir(), 'cfs-m-'));
      let unmount: (() => void) | undefined;
      try {
        const repo = path.join(work, 'repo');
        const image = path.join(work, 'image.cfs');
        const r = runCfs(['--hash', alg, '--erofs-version', String(version), 'create-image', '--repo', repo, src, '-o', image]);
        assert.equal(r.status, 0, r.stderr);
        // the id printed is the fs-verity digest of the image, and compute-id agrees
        const id = r.stdout.toString().trim();
        const c = runCfs(['--hash', alg, '--erofs-version', String(version), 'compute-id', src]);
        assert.equal(`${alg}:${c.stdout.toString().trim()}`, id);
        assert.ok(readFileSync(path.join(repo, 'images', id.split(':')[1])).equals(readFileSync(image)));
        const m = mountComposefs(image, path.join(repo, 'objects'), work);
        unmount = m.unmount;
        const seen = readMountedTree(m.root);
        const want = expectedView(version);
        assert.deepEqual([...seen.keys()].sort(), [...want.keys()].sort(), 'same paths');
        for (const [p, w] of want) assert.deepEqual(strip(seen.get(p)!), strip(w), `path ${JSON.stringify(p)}`);
        assert.deepEqual(groups(seen), groups(want), 'hardlink groups');
      } finally {
        unmount?.();
        rmSync(work, { recursive: true, force: true });
      }
    });
  }
}

test('the dumpfile of a scanned tree, fed back as dumpfile:, gives the same id', (t) => {
  if (skipOrFail(t)) return;
  for (const v of ['1', '2']) {
    const d = runCfs(['--erofs-version', v, 'create-dumpfile', src]);
    assert.equal(d.status, 0, d.stderr);
    const fromDump = runCfs(['--erofs-version', v, 'compute-id', 'dumpfile:-'], d.stdout);
    const fromDir = runCfs(['--erofs-version', v, 'compute-id', src]);
    assert.equal(fromDump.status, 0, fromDump.stderr);
    assert.equal(fromDump.stdout.toString(), fromDir.stdout.toString());
  }
});
