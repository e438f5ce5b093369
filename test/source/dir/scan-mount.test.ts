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
import { SKIP_FIXTURE, buildFixture } from '../../fixture.js';
import { IN_CI, runCfs } from '../../helpers.js';
import { expectedView, hardlinkGroups as groups, mountComposefs, readMountedTree, requireMount, withoutIno as strip, type Observed } from '../../mount-helpers.js';

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
        const want = expectedView(source, version);
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
