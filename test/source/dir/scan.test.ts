/**
 * Directory scanner (src/scan/scan.ts) and the OCI finishing rules (src/transform/transform.ts).
 *
 * The scanner fixture needs root (mknod, chown to arbitrary ids, trusted.* xattrs, setcap):
 * those tests are skipped with a message otherwise. The transform unit tests run anywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { IN_CI } from '../../helpers.js';
import { B, NEED_ROOT, SKIP_FIXTURE, buildFixture, cat, rmTree, run, type Expect } from '../../fixture.js';
import { scanDirectory, type ScanOptions } from '../../../src/source/dir/scan.js';
import { splitNs } from '../../../src/source/dir/entries.js';
import { readXattrs } from '../../../src/native/addon.js';
import {
  canonicalizeRun,
  copyRootMetadataFromUsr,
  parseXattrFilterMode,
  transformForOci,
  TransformError,
  XATTR_FILTER_MODES,
} from '../../../src/transform/transform.js';
import { fsverityDigest, fsverityDigestFile } from '../../../src/fsverity/fsverity.js';
import {
  Directory,
  FileSystem,
  Leaf,
  emptyStat,
  keyBytes,
  leafLinkCounts,
  lookup,
  nameKey,
  traverse,
  type Inode,
  type Stat,
} from '../../../src/tree/tree.js';


const ALG = 'sha256' as const;
const hashFile: ScanOptions['hashFile'] = (p, size) => fsverityDigestFile(p, ALG, size);

function node(fsys: FileSystem, rel: string): Inode {
  const n = lookup(fsys, cat('/', keyBytes(rel)));
  assert.ok(n, `missing in tree: ${JSON.stringify(rel)}`);
  return n;
}

function checkStat(rel: string, got: Stat, e: Expect): void {
  const where = JSON.stringify(rel);
  assert.equal(got.mode, e.mode, `${where} mode ${got.mode.toString(8)} != ${e.mode.toString(8)}`);
  assert.equal(got.uid, e.uid, `${where} uid`);
  assert.equal(got.gid, e.gid, `${where} gid`);
  if (e.mtime) {
    assert.equal(got.mtimeSec, e.mtime[0], `${where} mtime sec`);
    assert.equal(got.mtimeNsec, e.mtime[1], `${where} mtime nsec`);
  }
  assert.ok(got.mtimeNsec >= 0 && got.mtimeNsec < 1e9, `${where} nsec range`);
  const gotX = [...got.xattrs.entries()].sort();
  const wantX = [...e.xattrs.entries()].sort();
  assert.deepEqual(gotX, wantX, `${where} xattrs`);
}

// ------------------------------------------------------------------------------------------------

test('splitNs: floor semantics', () => {
  assert.deepEqual(splitNs(0n), { sec: 0n, nsec: 0 });
  assert.deepEqual(splitNs(1_500_000_000n), { sec: 1n, nsec: 500_000_000 });
  assert.deepEqual(splitNs(-1n), { sec: -1n, nsec: 999_999_999 });
  assert.deepEqual(splitNs(-1_500_000_000n), { sec: -2n, nsec: 500_000_000 });
  assert.deepEqual(splitNs(-2_000_000_000n), { sec: -2n, nsec: 0 });
});

test('native xattr addon: one path, the directory reader, errors', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-xattr-'));
  try {
    const f = path.join(dir, 'f');
    fs.writeFileSync(f, '');
    fs.symlinkSync('f', path.join(dir, 'l'));
    const canUser = spawnSync('setfattr', ['-n', 'user.a', '-v', '0x00ff', f]).status === 0;
    const got = readXattrs(B(f));
    if (canUser) assert.deepEqual(got, [[B('user.a'), B([0, 0xff])]]);
    // the directory reader returns the same list, for the symlink its own (none followed)
    const tree = await scanDirectory(dir, { hashFile: async () => Buffer.alloc(32) });
    const fLeaf = tree.root.entries.get('f')!;
    assert.deepEqual([...fLeaf.stat.xattrs].map(([k, v]) => [B(k), v]), got.map(([k, v]) => [Buffer.from(k.toString('latin1'), 'latin1'), v]));
    assert.deepEqual([...tree.root.entries.get('l')!.stat.xattrs], readXattrs(B(dir + '/l')).map(([k, v]) => [k.toString('latin1'), v]));
    assert.throws(() => readXattrs(B(dir + '/missing')), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.syscall, 'llistxattr');
      assert.equal(e.path, dir + '/missing');
      return true;
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scan: fixture tree field by field', { skip: IN_CI ? false : SKIP_FIXTURE, timeout: 120_000 }, async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scan-'));
  const { fx, cleanup } = await buildFixture(base);
  try {
    const tree = await scanDirectory(base, { hashFile });

    // 1. every created path is there, with the expected kind, stat and content
    const leafOf = new Map<string, Leaf>();
    for (const [rel, e] of fx.expect) {
      const n = rel === '' ? tree.root : node(tree, rel);
      const where = JSON.stringify(rel);
      if (e.kind === 'dir') {
        assert.equal(n.kind, 'dir', `${where} is a directory`);
        checkStat(rel, n.stat, e);
        continue;
      }
      assert.equal(n.kind, 'leaf', `${where} is a leaf`);
      const leaf = n as Leaf;
      checkStat(rel, leaf.stat, e);
      const c = leaf.content;
      assert.equal(c.type, e.kind, `${where} content type`);
      switch (c.type) {
        case 'inline':
          assert.deepEqual(c.data, e.content, `${where} inline content`);
          break;
        case 'external':
          assert.equal(c.size, BigInt(e.content!.length), `${where} size`);
          assert.deepEqual(c.id, fsverityDigest(e.content!, ALG), `${where} fs-verity id`);
          break;
        case 'symlink':
          assert.deepEqual(c.target, e.target, `${where} target`);
          break;
        case 'chardev':
        case 'blockdev':
          assert.equal(c.rdev, e.rdev, `${where} rdev`);
          break;
      }
      leafOf.set(rel, leaf);
    }

    // 2. nothing else is there (compare the full path set)
    const seenPaths = new Set<string>();
    for (const { path: p } of traverse(tree)) seenPaths.add(nameKey(p.subarray(1)));
    assert.deepEqual([...seenPaths].sort(), [...fx.expect.keys()].sort());

    // 3. hardlinks share one leaf, everything else is distinct
    const counts = leafLinkCounts(tree);
    for (const [rel, e] of fx.expect) {
      if (e.sameAs !== undefined) assert.equal(leafOf.get(rel), leafOf.get(e.sameAs), `${JSON.stringify(rel)} shares ${e.sameAs}`);
    }
    assert.equal(counts.get(leafOf.get('hl/a')!), 4);
    assert.equal(counts.get(leafOf.get('hl/small')!), 2);
    assert.equal(counts.get(leafOf.get('hl/sym')!), 2);
    assert.equal(counts.get(leafOf.get('hl/fifo')!), 2);
    assert.equal(counts.get(leafOf.get('hl/dev')!), 2);
    assert.equal(counts.get(leafOf.get('hl/notlinked')!), 1);
    const longLeaf = [...fx.expect.keys()].find((k) => k.endsWith('/leafbig'))!;
    assert.equal(leafOf.get(longLeaf), leafOf.get('long/hardlink-to-deep'));
    const distinctLeaves = new Set(leafOf.values()).size;
    const expectedDistinct = [...fx.expect.values()].filter((e) => e.kind !== 'dir' && e.sameAs === undefined).length;
    assert.equal(distinctLeaves, expectedDistinct);
    assert.equal(counts.size, distinctLeaves);

    // 4. 'break' hardlink mode: every name its own leaf
    const broken = await scanDirectory(B(base), { hashFile, hardlinks: 'break' });
    const bc = leafLinkCounts(broken);
    for (const n of bc.values()) assert.equal(n, 1);
    assert.equal(bc.size, [...fx.expect.values()].filter((e) => e.kind !== 'dir').length);

    // 5. the default transform on the scanned tree
    const usr = fx.get('usr');
    transformForOci(tree, { propagateUsrToRoot: true, xattrs: 'allowlist-only' });
    assert.equal(tree.root.stat.mode, 0o750);
    assert.equal(tree.root.stat.uid, 70000);
    assert.equal(tree.root.stat.gid, 80000);
    assert.equal(tree.root.stat.mtimeSec, 1700000000n);
    assert.equal(tree.root.stat.mtimeNsec, 123456789);
    assert.deepEqual([...tree.root.stat.xattrs.keys()], ['security.capability']);
    assert.deepEqual(tree.root.stat.xattrs.get('security.capability'), usr.xattrs.get('security.capability'));
    const run = node(tree, 'run') as Directory;
    assert.equal(run.entries.size, 0);
    assert.equal(run.stat.mode, 0o700);
    assert.equal(run.stat.uid, 11);
    assert.equal(run.stat.gid, 12);
    assert.equal(run.stat.mtimeSec, 1700000000n);
    assert.equal(run.stat.mtimeNsec, 123456789);
    assert.equal(run.stat.xattrs.size, 0);
    const ping = node(tree, 'usr/bin/ping') as Leaf;
    assert.deepEqual([...ping.stat.xattrs.keys()], ['security.capability']);
    assert.deepEqual(ping.stat.xattrs.get('security.capability'), fx.get('usr/bin/ping').xattrs.get('security.capability'));
    for (const { path: p, inode } of traverse(tree)) {
      for (const k of inode.stat.xattrs.keys()) assert.equal(k, 'security.capability', `${p.toString()} keeps only security.capability`);
    }
    // /usr itself keeps its own metadata
    assert.equal((node(tree, 'usr') as Directory).stat.uid, 70000);
  } finally {
    await cleanup();
  }
});

test('scan + transform: keep-user-xattrs and --no-propagate-usr-to-root', { skip: IN_CI ? false : SKIP_FIXTURE, timeout: 120_000 }, async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scan-'));
  const { fx, cleanup } = await buildFixture(base);
  try {
    const keep = await scanDirectory(base, { hashFile });
    transformForOci(keep, { propagateUsrToRoot: true, xattrs: 'keep-user-xattrs' });
    assert.deepEqual([...keep.root.stat.xattrs.keys()].sort(), ['security.capability', 'user.usr']);
    assert.deepEqual(keep.root.stat.xattrs.get('user.usr'), B([0, 1, 2, 255]));
    assert.deepEqual([...(node(keep, 'usr/bin/ping') as Leaf).stat.xattrs.keys()].sort(), ['security.capability', 'user.keep']);
    assert.deepEqual([...(node(keep, 'files/f65') as Leaf).stat.xattrs.keys()].sort(), ['user.bin', 'user.empty']);
    assert.deepEqual([...(node(keep, 'run') as Directory).stat.xattrs.keys()], ['user.run']);
    assert.equal((node(keep, 'links/short') as Leaf).stat.xattrs.size, 0);

    const raw = await scanDirectory(base, { hashFile });
    transformForOci(raw, { propagateUsrToRoot: false, xattrs: 'allowlist-only' });
    checkStat('', raw.root.stat, fx.get(''));
    assert.equal((node(raw, 'run') as Directory).entries.size, 2);
    checkStat('run', (node(raw, 'run') as Directory).stat, fx.get('run'));
    checkStat('files/f65', (node(raw, 'files/f65') as Leaf).stat, fx.get('files/f65'));
  } finally {
    await cleanup();
  }
});

test('scan: crosses mount points; a bind mount twice makes hardlinks (composefs-rs behaviour)', { skip: IN_CI ? false : NEED_ROOT }, async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scanmnt-'));
  const mounted: string[] = [];
  try {
    const m = path.join(base, 'm');
    const m2 = path.join(base, 'm2');
    fs.mkdirSync(m, { mode: 0o755 });
    fs.mkdirSync(m2, { mode: 0o755 });
    fs.writeFileSync(path.join(base, 'outer'), crypto.randomBytes(100));
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'mode=0710,uid=123,gid=456', 'cfs-test', m]).status !== 0) {
      t.skip('cannot mount tmpfs here');
      return;
    }
    mounted.push(m);
    const content = crypto.randomBytes(100);
    fs.writeFileSync(path.join(m, 'f'), content);
    fs.writeFileSync(path.join(m, 'small'), 'tiny');
    fs.mkdirSync(path.join(m, 'sub'));
    assert.equal(spawnSync('mount', ['--bind', m, m2]).status, 0, 'bind mount');
    mounted.unshift(m2);

    const tree = await scanDirectory(base, { hashFile });
    const md = node(tree, 'm') as Directory;
    const m2d = node(tree, 'm2') as Directory;
    // the mount point contributes the mounted filesystem's root inode
    assert.equal(md.kind, 'dir');
    assert.equal(md.stat.mode, 0o710);
    assert.equal(md.stat.uid, 123);
    assert.equal(md.stat.gid, 456);
    assert.deepEqual([...md.entries.keys()].sort(), ['f', 'small', 'sub']);
    const f = node(tree, 'm/f') as Leaf;
    assert.deepEqual(f.content, { type: 'external', id: fsverityDigest(content, ALG), size: 100n });
    // same (st_dev, st_ino) under both mounts: shared leaves; directories are never shared
    assert.equal(node(tree, 'm2/f'), f);
    assert.equal(node(tree, 'm2/small'), node(tree, 'm/small'));
    assert.notEqual(m2d, md);
    assert.notEqual(node(tree, 'm2/sub'), node(tree, 'm/sub'));
    assert.equal(leafLinkCounts(tree).get(f), 2);
    // a file outside the mount never merges with one inside
    assert.notEqual(node(tree, 'outer'), f);
  } finally {
    for (const p of mounted) spawnSync('umount', [p]);
    rmTree(base);
  }
});

test('scan: source errors', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scanerr-'));
  try {
    fs.mkdirSync(path.join(base, 'd'));
    fs.writeFileSync(path.join(base, 'file'), 'x');
    fs.symlinkSync('d', path.join(base, 'link'));
    await assert.rejects(scanDirectory(path.join(base, 'file'), { hashFile }), /file is not a directory/);
    await assert.rejects(scanDirectory(path.join(base, 'missing'), { hashFile }), /missing.*ENOENT|ENOENT.*missing/s);
    await assert.rejects(scanDirectory(path.join(base, 'link'), { hashFile }), /link is a symbolic link/);
    // a trailing slash makes the kernel follow it (as openat(O_NOFOLLOW) does)
    const viaSlash = await scanDirectory(path.join(base, 'link') + '/', { hashFile });
    assert.equal(viaSlash.root.entries.size, 0);
    await assert.rejects(scanDirectory('', { hashFile }), /empty/);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('scan: a file changing size while hashed is an error naming it', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scangrow-'));
  try {
    fs.mkdirSync(path.join(base, 'sub'));
    const f = path.join(base, 'sub', 'growing');
    fs.writeFileSync(f, Buffer.alloc(1000, 1));
    const growing: ScanOptions['hashFile'] = async (p, size) => {
      fs.appendFileSync(p, 'more');
      return fsverityDigestFile(p, ALG, size);
    };
    await assert.rejects(scanDirectory(base, { hashFile: growing }), (e: Error) => {
      assert.match(e.message, /sub\/growing/);
      assert.match(e.message, /changed/);
      return true;
    });
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('scan: unreadable file and directory are errors naming them (as nobody)', { skip: IN_CI ? false : NEED_ROOT }, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-scanperm-'));
  try {
    fs.chmodSync(base, 0o755);
    const scanJs = fileURLToPath(new URL('../../../src/source/dir/scan.js', import.meta.url));
    const child = (dir: string) =>
      spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `process.setgid(65534); process.setuid(65534);
           const { scanDirectory } = await import(${JSON.stringify(scanJs)});
           try { await scanDirectory(${JSON.stringify(dir)}, { hashFile: async () => Buffer.alloc(32) }); console.log('OK'); }
           catch (e) { console.log('ERR ' + e.message); }`,
        ],
        { encoding: 'utf8' },
      );
    fs.mkdirSync(path.join(base, 'a'), { mode: 0o755 });
    fs.chmodSync(path.join(base, 'a'), 0o755);
    fs.writeFileSync(path.join(base, 'a', 'secret'), 'x');
    fs.chmodSync(path.join(base, 'a', 'secret'), 0o000);
    let r = child(path.join(base, 'a'));
    assert.match(r.stdout, /^ERR cannot read .*a\/secret.*EACCES/, r.stderr);

    fs.rmSync(path.join(base, 'a', 'secret'));
    fs.mkdirSync(path.join(base, 'a', 'closed'));
    fs.chmodSync(path.join(base, 'a', 'closed'), 0o000);
    r = child(path.join(base, 'a'));
    assert.match(r.stdout, /^ERR cannot read directory .*a\/closed.*EACCES/, r.stderr);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------------------------
// transform unit tests (no root needed)

function st(over: Partial<Stat> = {}): Stat {
  return { ...emptyStat(), ...over, xattrs: over.xattrs ?? new Map() };
}
function xa(...pairs: [string, string][]): Map<string, Buffer> {
  return new Map(pairs.map(([k, v]) => [k, B(v)]));
}

function sampleTree(): { fsys: FileSystem; usr: Directory; run: Directory; shared: Leaf } {
  const root = new Directory(st({ mode: 0o700, uid: 1, gid: 2, mtimeSec: 5n, mtimeNsec: 6, xattrs: xa(['user.root', 'r'], ['security.selinux', 'x']) }));
  const usr = new Directory(
    st({
      mode: 0o755,
      uid: 100,
      gid: 200,
      mtimeSec: 1700000000n,
      mtimeNsec: 42,
      xattrs: xa(['security.capability', 'cap'], ['user.u', 'uu'], ['security.selinux', 'sel'], ['trusted.t', 't']),
    }),
  );
  const run = new Directory(st({ mode: 0o1777, uid: 3, gid: 4, mtimeSec: 9n, mtimeNsec: 9, xattrs: xa(['user.run', '1'], ['security.ima', 'i']) }));
  const shared = new Leaf(st({ mode: 0o644, xattrs: xa(['user.x', 'x'], ['security.capability', 'c'], ['user', 'no-dot'], ['userx.y', 'no']) }), {
    type: 'inline',
    data: B('hi'),
  });
  run.entries.set('pid', new Leaf(st(), { type: 'inline', data: B('1') }));
  run.entries.set('shared', shared);
  usr.entries.set('shared', shared);
  root.entries.set('usr', usr);
  root.entries.set('run', run);
  return { fsys: new FileSystem(root), usr, run, shared };
}

test('transform: mode names and parsing', () => {
  assert.deepEqual([...XATTR_FILTER_MODES], ['allowlist-only', 'keep-user-xattrs']);
  assert.equal(parseXattrFilterMode('keep-user-xattrs'), 'keep-user-xattrs');
  assert.throws(() => parseXattrFilterMode('all'), {
    message: 'invalid xattr filtering mode "all" (expected "allowlist-only" or "keep-user-xattrs")',
  });
});

test('transform: allowlist-only', () => {
  const { fsys, usr, run, shared } = sampleTree();
  transformForOci(fsys, { propagateUsrToRoot: true, xattrs: 'allowlist-only' });
  const r = fsys.root.stat;
  assert.deepEqual([r.mode, r.uid, r.gid, r.mtimeSec, r.mtimeNsec], [0o755, 100, 200, 1700000000n, 42]);
  assert.deepEqual([...r.xattrs], [['security.capability', B('cap')]]);
  assert.deepEqual([...usr.stat.xattrs], [['security.capability', B('cap')]]);
  assert.notEqual(r.xattrs, usr.stat.xattrs, 'root gets its own copy of the map');
  assert.equal(run.entries.size, 0);
  assert.deepEqual([run.stat.mode, run.stat.uid, run.stat.gid, run.stat.mtimeSec, run.stat.mtimeNsec], [0o1777, 3, 4, 1700000000n, 42]);
  assert.equal(run.stat.xattrs.size, 0);
  assert.deepEqual([...shared.stat.xattrs], [['security.capability', B('c')]]);
});

test('transform: keep-user-xattrs', () => {
  const { fsys, run, shared } = sampleTree();
  transformForOci(fsys, { propagateUsrToRoot: true, xattrs: 'keep-user-xattrs' });
  assert.deepEqual([...fsys.root.stat.xattrs.keys()].sort(), ['security.capability', 'user.u']);
  assert.deepEqual([...run.stat.xattrs.keys()], ['user.run']);
  assert.deepEqual([...shared.stat.xattrs.keys()].sort(), ['security.capability', 'user.x']);
});

test('transform: --no-propagate-usr-to-root leaves everything', () => {
  const { fsys, run, shared } = sampleTree();
  transformForOci(fsys, { propagateUsrToRoot: false, xattrs: 'allowlist-only' });
  assert.equal(fsys.root.stat.uid, 1);
  assert.equal(fsys.root.stat.xattrs.size, 2);
  assert.equal(run.entries.size, 2);
  assert.equal(run.stat.mtimeSec, 9n);
  assert.equal(shared.stat.xattrs.size, 4);
  // and with no /usr at all it is not an error either
  const bare = new FileSystem(new Directory(st()));
  transformForOci(bare, { propagateUsrToRoot: false, xattrs: 'allowlist-only' });
});

test('transform: /usr missing, /usr a symlink, /run not a directory', () => {
  const missing = new FileSystem(new Directory(st()));
  assert.throws(() => transformForOci(missing, { propagateUsrToRoot: true, xattrs: 'allowlist-only' }), (e: TransformError) => {
    assert.ok(e instanceof TransformError);
    assert.equal(e.code, 'NotFound');
    assert.equal(e.message, 'Directory entry "usr" does not exist');
    return true;
  });

  const link = new FileSystem(new Directory(st()));
  link.root.entries.set('usr', new Leaf(st({ mode: 0o777 }), { type: 'symlink', target: B('/opt/usr') }));
  assert.throws(() => transformForOci(link, { propagateUsrToRoot: true, xattrs: 'allowlist-only' }), {
    message: 'Directory entry "usr" is not a subdirectory',
  });

  const { fsys } = sampleTree();
  fsys.root.entries.set('run', new Leaf(st(), { type: 'symlink', target: B('/var/run') }));
  assert.throws(() => transformForOci(fsys, { propagateUsrToRoot: true, xattrs: 'allowlist-only' }), {
    message: 'Directory entry "run" is not a subdirectory',
  });

  // no /run: fine; /run checks happen after the root copy (composefs-rs order)
  const { fsys: noRun } = sampleTree();
  noRun.root.entries.delete('run');
  transformForOci(noRun, { propagateUsrToRoot: true, xattrs: 'allowlist-only' });
  assert.equal(noRun.root.stat.uid, 100);

  // the individual steps are exported for the boot transform
  const { fsys: f2, run } = sampleTree();
  copyRootMetadataFromUsr(f2);
  assert.equal(f2.root.stat.xattrs.size, 4);
  canonicalizeRun(f2);
  assert.equal(run.entries.size, 0);
});
