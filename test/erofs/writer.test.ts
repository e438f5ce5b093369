/**
 * Golden vectors: every dumpfile, written as V0, V1 and V2, must give exactly the image
 * composefs-rs v0.9.0 wrote (or, where the image is not stored, the same fs-verity id).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { parseDumpfile } from '../../src/dumpfile/parse.js';
import type { ErofsVersion } from '../../src/erofs/format.js';
import { writeErofs } from '../../src/erofs/writer.js';
import { fsverityDigest } from '../../src/fsverity/fsverity.js';
import { xxh32 } from '../../src/erofs/xxhash.js';
import { Directory, FileSystem, Leaf, emptyStat } from '../../src/tree/tree.js';
import { GOLDEN } from '../helpers.js';
import { decodeDirents, decodeInodeHeader, decodeSuperblock, inodeHeaderSize, xattrBodySize } from '../../src/erofs/format.js';

const VERSIONS: ErofsVersion[] = [0, 1, 2];

function firstDifference(a: Buffer, b: Buffer): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return `first difference at offset ${i} (0x${i.toString(16)}): got ${a[i]}, want ${b[i]}`;
  }
  return `lengths differ: got ${a.length}, want ${b.length}`;
}

test('xxh32 known values', () => {
  assert.equal(xxh32(Buffer.alloc(0), 0), 0x02cc5d05);
  assert.equal(xxh32(Buffer.from('a'), 0), 0x550d7456);
  assert.equal(xxh32(Buffer.from('overlay.metacopy'), (0x25bbe08f + 4) >>> 0), 0xdbe5e05f);
  assert.equal(xxh32(Buffer.from('capability'), (0x25bbe08f + 6) >>> 0), 0x8c47ac5d);
});

const dumps = existsSync(GOLDEN) ? readdirSync(GOLDEN).filter((f) => f.endsWith('.dump')).sort() : [];

test('golden vectors are present', () => {
  assert.ok(dumps.length >= 60, `expected the golden dumpfiles in ${GOLDEN}`);
});

for (const dump of dumps) {
  const name = dump.slice(0, -'.dump'.length);
  test(`golden ${name}`, () => {
    const { fs } = parseDumpfile(readFileSync(path.join(GOLDEN, dump)));
    for (const v of VERSIONS) {
      const image = writeErofs(fs, v);
      const imgPath = path.join(GOLDEN, `${name}.v${v}.img`);
      if (existsSync(imgPath)) {
        const want = readFileSync(imgPath);
        assert.ok(image.equals(want), `${name} V${v}: ${firstDifference(image, want)}`);
      } else {
        for (const alg of ['sha256', 'sha512'] as const) {
          const want = readFileSync(path.join(GOLDEN, `${name}.v${v}.${alg}`), 'latin1').trim();
          assert.equal(fsverityDigest(image, alg).toString('hex'), want, `${name} V${v} ${alg} id`);
        }
      }
    }
  });
}

test('writing does not modify the tree', () => {
  const { fs } = parseDumpfile(readFileSync(path.join(GOLDEN, 'whiteouts.dump')));
  const before = fs.root.entries.size;
  const v2 = writeErofs(fs, 2);
  writeErofs(fs, 1);
  assert.equal(fs.root.entries.size, before);
  assert.ok(writeErofs(fs, 2).equals(v2));
});

test('invalid trees are rejected', () => {
  const mk = () => new FileSystem(new Directory({ ...emptyStat(), mode: 0o755 }));

  const wh = mk();
  const whiteout = new Leaf(emptyStat(), { type: 'chardev', rdev: 0n });
  wh.root.entries.set('a', whiteout);
  wh.root.entries.set('b', whiteout);
  assert.throws(() => writeErofs(wh, 1), /whiteout/);

  const dev = mk();
  dev.root.entries.set('d', new Leaf(emptyStat(), { type: 'blockdev', rdev: 1n << 32n }));
  assert.throws(() => writeErofs(dev, 2), /device number/);

  const id = mk();
  id.root.entries.set('f', new Leaf(emptyStat(), { type: 'external', id: Buffer.alloc(20), size: 100n }));
  assert.throws(() => writeErofs(id, 1), /32 or 64/);

  const shared = mk();
  const sub = new Directory(emptyStat());
  shared.root.entries.set('x', sub);
  shared.root.entries.set('y', sub);
  assert.throws(() => writeErofs(shared, 0), /more than once/);

  const bad = mk();
  bad.root.entries.set('a/b', new Leaf(emptyStat(), { type: 'fifo' }));
  assert.throws(() => writeErofs(bad, 2), /invalid directory entry name/);

  const longName = mk();
  const x = new Leaf(emptyStat(), { type: 'fifo' });
  x.stat.xattrs.set('user.' + 'n'.repeat(256), Buffer.alloc(1));
  longName.root.entries.set('f', x);
  assert.throws(() => writeErofs(longName, 1), /too long/);
});

test('i_mode keeps only the permission bits of the stat (composefs-rs v0.9.0 masks S_IFMT)', () => {
  const fs = new FileSystem(new Directory({ ...emptyStat(), mode: 0o755 }));
  // A tar-style raw mode carrying (wrong) type bits: the content decides the type.
  fs.root.entries.set('p', new Leaf({ ...emptyStat(), mode: 0o104755 }, { type: 'fifo' }));
  for (const v of VERSIONS) {
    const img = writeErofs(fs, v);
    const sb = decodeSuperblock(img);
    const root = decodeInodeHeader(img, sb.rootNid * 32, sb);
    assert.equal(root.mode, 0o040755);
    // V0/V1 roots (with the 256 stubs) keep their entries in one block; the V2 root inline.
    const entries =
      root.size === 4096n
        ? decodeDirents(img, root.u * 4096, 4096)
        : decodeDirents(img, sb.rootNid * 32 + inodeHeaderSize(root.extended) + xattrBodySize(root.xattrIcount), Number(root.size));
    const p = entries.find((e) => e.name.toString() === 'p')!;
    assert.equal(decodeInodeHeader(img, Number(p.nid) * 32, sb).mode, 0o014755, `V${v}`);
  }
});
