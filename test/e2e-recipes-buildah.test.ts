/**
 * buildah 1.28 / podman 4.3 recipes, built for real (--isolation chroot, --network none, private
 * containers/storage per scenario so that no row sees another's cache). For every row of issue
 * 11's table: with the recipe (containerfiles/Containerfile.buildah: the base stage ends with a
 * LABEL, the digest is computed with `--layer-mtimes seconds`) the id the build computes equals
 * `cfs compute-id` of the exported image; without it, the ids differ and compute-id's warning or
 * a `cfs compare` cause names why.
 *
 * The shipped base is taken from the exported image of the build itself: the recipe's uki stage
 * and the appended ids stage each add one layer on top of the base stage's layers, so the base is
 * every layer but the last two (a `layers:` source over the OCI layout's blobs; scenario 1 checks
 * that against `--target base` tagged and pushed on its own). Without --layers nothing is cached,
 * so rebuilding `--target base` would not be the same image.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Containers, COMBOS, type Ids, type InBuild, assertIds, cfs, compare, idLines, layoutLayers, makeContext, missing, outsideIds, proceed, readOut, recipe, workDir } from './engines.js';
import { ROOT } from './helpers.js';

const why = missing(['buildah']);
let work = '';
let cleanupWork: (() => void) | undefined;
let context = '';
const stores: Containers[] = [];

before(
  () => {
    if (why) return;
    ({ dir: work, cleanup: cleanupWork } = workDir('buildah'));
    context = path.join(work, 'context');
    makeContext(context);
    mkdirSync(path.join(work, 'cmp'));
  },
  { timeout: 60_000 },
);

after(() => {
  try {
    for (const s of stores) s.cleanup();
  } finally {
    cleanupWork?.();
  }
});

function store(name: string): Containers {
  const s = new Containers(path.join(work, name));
  stores.push(s);
  return s;
}

interface Built {
  s: Containers;
  inb: InBuild;
  /** The base as shipped: the exported ids image's layers but the last two. */
  source: string;
  outside: Ids;
}

/**
 * Builds the recipe (plus the ids stage) as `ids`, copies out what the build recorded, pushes the
 * image as an OCI layout (buildah push, or podman save --format oci-dir) and measures its base.
 */
function build(s: Containers, tool: 'buildah' | 'podman', text: string, args: string[], opts: { targetBaseFirst?: boolean } = {}): Built {
  if (opts.targetBaseFirst) s.build(tool, context, text, [...args, '--target', 'base', '-t', 'base']);
  s.build(tool, context, text, [...args, '--target', 'ids', '-t', 'ids']);
  const out = path.join(s.dir, 'out');
  s.copyOut('ids', 'out', out);
  const layout = path.join(s.dir, 'ids-oci');
  if (tool === 'buildah') s.buildah(['push', '-q', 'ids', `oci:${layout}:ids`]);
  else s.podman(['save', '-q', '--format', 'oci-dir', '-o', layout, 'ids']);
  const layers = layoutLayers(layout);
  assert.ok(layers.length >= 3, `the ids image has the base's layers and two more (${layers.length})`);
  const source = `layers:${layers.slice(0, -2).join(',')}`;
  return { s, inb: readOut(out), source, outside: outsideIds(source) };
}

function report(t: { diagnostic: (m: string) => void }, b: Built): void {
  for (const l of [...idLines('outside', b.outside), ...idLines('in-build keep', b.inb.keep), ...idLines('in-build seconds', b.inb.seconds)]) t.diagnostic(l);
}

function explainDiff(t: { diagnostic: (m: string) => void }, b: Built): { text: string; causes: Map<string, number> } {
  const c = compare(b.inb.dump, b.source, path.join(work, 'cmp'));
  assert.equal(c.status, 1, 'compare finds the differences');
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  return c;
}

test('buildah --layers, base ends with LABEL: the in-build id is the pushed image\'s (and equals a separately pushed --target base)', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why)) return;
  const s = store('layers-label');
  const b = build(s, 'buildah', recipe('Containerfile.buildah'), ['--layers']);
  report(t, b);
  assertIds(b.inb.seconds, b.outside, 'recipe');
  assertIds(b.inb.keep, b.outside, 'with --layers and the LABEL the mount is the committed tree even without --layer-mtimes');
  assert.equal(b.inb.karg, cfs(['compute-karg', b.source]), "the recipe's uki stage wrote the shipped kernel argument");
  assert.equal(b.inb.warningsKeep, '');
  // the base stage tagged from the cache and pushed on its own is the same tree
  s.build('buildah', context, recipe('Containerfile.buildah'), ['--layers', '--target', 'base', '-t', 'base']);
  const archive = path.join(s.dir, 'base-oci.tar');
  s.buildah(['push', '-q', 'base', `oci-archive:${archive}:base`]);
  assert.equal(cfs(['compute-id', `oci-archive:${archive}:base`]), b.outside.get('V1-sha512'), 'the layers-prefix view equals the pushed base image');
});

test('buildah --layers, base ends with RUN: the mount is the live last step; without the LABEL the ids differ and compare names why', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why)) return;
  const b = build(store('layers-run'), 'buildah', recipe('Containerfile.buildah', { stripLabel: true }), ['--layers']);
  report(t, b);
  assert.notEqual(b.inb.keep.get('V1-sha512'), b.outside.get('V1-sha512'), 'V1 differs');
  assert.equal(b.inb.keep.get('V2-sha256'), b.outside.get('V2-sha256'), 'V2 stores whole seconds');
  assert.match(b.inb.warningsKeep, /warning: \d+ of \d+ paths have sub-second mtimes.*--layer-mtimes seconds/, 'compute-id warns');
  // on overlay the live last step differs only in sub-second mtimes: --layer-mtimes seconds alone
  // gives the shipped id (the LABEL is still needed for a base served from the cache, below)
  assertIds(b.inb.seconds, b.outside, '--layer-mtimes seconds, base ending with RUN');
  const { causes } = explainDiff(t, b);
  assert.ok(causes.has('subsecond-mtime'), 'live sub-second mtimes of the last step');
});

test('buildah --layers, base served from the cache: with the LABEL the mount is still the committed tree; without it, the image before the last step (buildah #4375)', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why)) return;
  const b = build(store('cache-label'), 'buildah', recipe('Containerfile.buildah'), ['--layers'], { targetBaseFirst: true });
  report(t, b);
  assertIds(b.inb.seconds, b.outside, 'recipe, base from the cache');
  assert.equal(b.inb.karg, cfs(['compute-karg', b.source]));

  const stale = build(store('cache-run'), 'buildah', recipe('Containerfile.buildah', { stripLabel: true }), ['--layers'], { targetBaseFirst: true });
  for (const l of idLines('stale in-build seconds', stale.inb.seconds)) t.diagnostic(l);
  for (const [v, h] of COMBOS) assert.notEqual(stale.inb.seconds.get(`V${v}-${h}`), stale.outside.get(`V${v}-${h}`), `V${v} ${h}: even --layer-mtimes seconds cannot fix a stale mount`);
  const { text, causes } = explainDiff(t, stale);
  assert.match(text, /^ *\/etc\/shadow: /m, 'the last step\'s file is missing from the mount');
  assert.ok(causes.has('stale-mount'), 'compare names a stale mount');
});

test('buildah without --layers: ADDed sub-second mtimes survive in the mount; --layer-mtimes seconds gives the shipped id, V2 is equal anyway', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why)) return;
  const b = build(store('nolayers'), 'buildah', recipe('Containerfile.buildah'), []);
  report(t, b);
  assertIds(b.inb.seconds, b.outside, 'recipe without --layers');
  assert.equal(b.inb.karg, cfs(['compute-karg', b.source]));
  assert.notEqual(b.inb.keep.get('V1-sha512'), b.outside.get('V1-sha512'), 'V1 differs without --layer-mtimes seconds');
  assert.equal(b.inb.keep.get('V2-sha256'), b.outside.get('V2-sha256'), 'V2 stores whole seconds');
  assert.match(b.inb.warningsKeep, /warning: \d+ of \d+ paths have sub-second mtimes.*--layer-mtimes seconds/, 'compute-id warns');
  assert.equal(b.inb.warningsSeconds, '');
  const { text, causes } = explainDiff(t, b);
  // (buildah's ADD keeps microseconds: .004456789 in the tarball, .004457000 in the mount)
  assert.match(text, /^ *\/usr\/share\/demo\/big: mtime: 1700000000\.00445\d+ \(A\) vs 1700000000\.000000000 \(B\)/m, 'the ADDed sub-second mtimes are in the mount');
  assert.ok(causes.has('subsecond-mtime'));
});

test('podman build --layers=false: the same recipe gives the id of podman save', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why || missing(['podman', 'runc']))) return;
  const b = build(store('podman-nolayers'), 'podman', recipe('Containerfile.buildah'), ['--layers=false']);
  report(t, b);
  assertIds(b.inb.seconds, b.outside, 'recipe, podman --layers=false');
  assert.equal(b.inb.karg, cfs(['compute-karg', b.source]));
  assert.notEqual(b.inb.keep.get('V1-sha512'), b.outside.get('V1-sha512'));
  assert.match(b.inb.warningsKeep, /warning: \d+ of \d+ paths have sub-second mtimes.*--layer-mtimes seconds/);
});

test('podman build --layers: the recipe gives the id of podman save; podman run --mount type=image of the base computes the same', { timeout: 300_000 }, (t) => {
  if (!proceed(t, why || missing(['podman', 'runc']))) return;
  const s = store('podman-layers');
  const b = build(s, 'podman', recipe('Containerfile.buildah'), ['--layers']);
  report(t, b);
  assertIds(b.inb.seconds, b.outside, 'recipe, podman --layers');
  assert.equal(b.inb.karg, cfs(['compute-karg', b.source]));
  // the base stage from the cache, saved the way podman users export images
  s.build('podman', context, recipe('Containerfile.buildah'), ['--layers', '--target', 'base', '-t', 'base']);
  const saved = path.join(s.dir, 'base-docker.tar');
  s.podman(['save', '-q', '--format', 'docker-archive', '-o', saved, 'localhost/base']);
  const source = `docker-archive:${saved}`;
  const outside = outsideIds(source);
  const inside = new Map<string, string>();
  const cache = path.join(s.dir, 'cfs-cache');
  mkdirSync(cache);
  const script = COMBOS.map(([v, h]) => `printf 'V${v}-${h} '; cfs --erofs-version ${v} --hash ${h} compute-id /mnt/base || exit 1`).join('; ');
  const out = s.podman([
    'run', '--rm', '--network', 'none',
    // podman's default nofile/nproc limits are above what this machine lets runc set
    '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024',
    '--mount', 'type=image,source=localhost/base,target=/mnt/base',
    '-v', `${path.join(ROOT, 'dist/cfs')}:/usr/local/bin/cfs:ro`,
    '-v', `${cache}:/var/cache/cfs`, '-e', 'CFS_CACHE_DIR=/var/cache/cfs',
    'localhost/base', 'sh', '-c', script,
  ]);
  for (const line of out.trim().split('\n')) {
    const [k, v] = line.split(' ');
    inside.set(k, v);
  }
  for (const l of [...idLines('outside', outside), ...[...inside].map(([k, v]) => `podman run ${k} ${v}`)]) t.diagnostic(l);
  for (const [v, h] of COMBOS) assert.equal(inside.get(`V${v}-${h}`), outside.get(`V${v}-${h}`), `V${v} ${h}`);
  assertIds(outside, b.outside, 'the cached base podman saved is the base of the build');
});

