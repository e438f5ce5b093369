/**
 * The kernel as oracle: images we write from a dumpfile, mounted with erofs + overlayfs (object
 * store as data-only lower layer), must show exactly the tree the dumpfile describes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDumpfile } from '../src/dumpfile/parse.js';
import { objectPath } from '../src/dumpfile/write.js';
import type { ErofsVersion } from '../src/erofs/format.js';
import { writeErofs } from '../src/erofs/writer.js';
import { fsverityDigest } from '../src/fsverity/fsverity.js';
import { FileSystem, HashAlg, leafLinkCounts, sortedXattrs, traverse } from '../src/tree/tree.js';
import { tempDir } from './helpers.js';
import { mountComposefs, readMountedTree, requireMount, writeObjects } from './mount-helpers.js';

/** Builds a dumpfile exercising every file type, with external files whose objects exist. */
function fixture(alg: HashAlg): { text: string; objects: Map<string, Buffer> } {
  const objects = new Map<string, Buffer>();
  const ext = (size: number) => {
    const data = randomBytes(size);
    const id = fsverityDigest(data, alg);
    objects.set(id.toString('hex'), data);
    return `${size} 100644 1 1000 1000 0 1700000000.5 ${objectPath(id)} - ${id.toString('hex')}`;
  };
  const lines = [
    '/ 0 40755 4 0 0 0 1700000000.0 - - -',
    `/big 0 40711 2 4294967294 70000 0 4102444800.999999999 - - - user.dir=\\x01\\x02`,
    `/big/e65 ${ext(65)}`,
    `/big/e4096 ${ext(4096)} user.x=1`,
    `/big/e4097 ${ext(4097)}`,
    `/big/e1M ${ext(1048577)}`,
    '/dev 0 40755 2 0 0 0 0.0 - - -',
    '/dev/blk 0 60640 1 0 6 2049 100.25 - - -',
    '/dev/chr 0 20620 1 0 5 1025 100.0 - - -',
    '/dev/fifo 0 10600 1 0 0 0 100.0 - - -',
    '/dev/sock 0 140755 1 0 0 0 100.0 - - -',
    '/empty 0 100000 1 0 0 0 1.0 - - -',
    '/hard1 5 104755 2 12 34 0 99.0 - hello - trusted.foo=bar',
    '/inline64 64 102644 1 0 0 0 5.0 - ' + 'x'.repeat(64) + ' - security.capability=\\x01\\x00\\x00\\x02\\x00\\x20\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00',
    '/link 10 120777 1 0 0 0 7.0 /big/e65\\x20x - -',
    '/longlink 1024 120777 1 0 0 0 7.0 ' + 'l'.repeat(1024) + ' - -',
    '/name\\xff\\n 3 100600 1 0 0 0 8.123 - abc -',
    '/zz_hard2 0 @100644 - - - - 0.0 /hard1 - -',
  ];
  return { text: lines.join('\n') + '\n', objects };
}

interface Expect {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: string;
  size?: bigint;
  nlink: bigint;
  content?: string;
  target?: string;
  rdev?: bigint;
  xattrs: Map<string, string>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** What the mount must show for each path of `fs`. */
function expected(fs: FileSystem, version: ErofsVersion, objects: Map<string, Buffer>): Map<string, Expect> {
  const out = new Map<string, Expect>();
  const nlinks = leafLinkCounts(fs);
  for (const { path: p, inode } of traverse(fs)) {
    const st = inode.stat;
    const e: Expect = {
      type: 'dir',
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      // V2 stores no nanoseconds.
      mtime: `${st.mtimeSec}.${version === 2 ? 0 : st.mtimeNsec}`,
      nlink: 1n,
      xattrs: new Map(sortedXattrs(st.xattrs).map(([k, v]) => [k.toString('latin1'), v.toString('hex')])),
    };
    if (inode.kind === 'dir') e.nlink = BigInt(2 + inode.subdirCount());
    else {
      e.nlink = BigInt(nlinks.get(inode)!);
      const c = inode.content;
      switch (c.type) {
        case 'inline':
          Object.assign(e, { type: 'reg', size: BigInt(c.data.length), content: sha256(c.data) });
          break;
        case 'external': {
          const data = objects.get(c.id.toString('hex'))!;
          Object.assign(e, { type: 'reg', size: c.size, content: sha256(data) });
          break;
        }
        case 'symlink':
          Object.assign(e, { type: 'lnk', size: BigInt(c.target.length), target: c.target.toString('latin1') });
          break;
        case 'chardev':
        case 'blockdev':
          Object.assign(e, { type: c.type === 'chardev' ? 'chr' : 'blk', rdev: c.rdev });
          break;
        case 'fifo':
          e.type = 'fifo';
          break;
        case 'socket':
          e.type = 'sock';
          break;
        default:
          throw new Error(`fixture has unexpected ${c.type}`);
      }
    }
    out.set(p.toString('latin1'), e);
  }
  return out;
}

for (const alg of ['sha256', 'sha512'] as const) {
  for (const version of [0, 1, 2] as const) {
    test(`kernel mount shows the dumpfile tree exactly (V${version}, ${alg} objects)`, (t) => {
      if (!requireMount(t)) return;
      const { text, objects } = fixture(alg);
      const { fs } = parseDumpfile(Buffer.from(text));
      const { dir, cleanup } = tempDir('cfs-mount-');
      let unmount: (() => void) | undefined;
      try {
        const image = path.join(dir, 'image.cfs');
        writeFileSync(image, writeErofs(fs, version));
        const objDir = path.join(dir, 'objects');
        writeObjects(objDir, objects);
        const m = mountComposefs(image, objDir, dir);
        unmount = m.unmount;
        const seen = readMountedTree(m.root);
        const want = expected(fs, version, objects);
        assert.deepEqual([...seen.keys()].sort(), [...want.keys()].sort(), 'same set of paths');
        for (const [p, w] of want) {
          const s = seen.get(p)!;
          const got: Expect = { type: s.type, mode: s.mode, uid: s.uid, gid: s.gid, mtime: s.mtime, nlink: s.nlink, xattrs: s.xattrs };
          if (w.size !== undefined) got.size = s.size;
          if (s.content !== undefined) got.content = s.content;
          if (s.target !== undefined) got.target = s.target;
          if (s.rdev !== undefined) got.rdev = s.rdev;
          assert.deepEqual(got, w, `path ${JSON.stringify(p)}`);
        }
        // hardlinks are one inode
        assert.equal(seen.get('/hard1')!.ino, seen.get('/zz_hard2')!.ino);
      } finally {
        unmount?.();
        cleanup();
      }
    });
  }
}
