/**
 * Docker BuildKit recipes, built for real (Debian bookworm's docker.io 20.10: dockerd with its
 * built-in BuildKit, client /usr/bin/docker, DOCKER_BUILDKIT=1, --network=none), each daemon
 * private to this file and stopped by its pidfile at the end. For every row of issue 11's table:
 * with the recipe (containerfiles/Dockerfile.buildkit, Dockerfile.outside) the id the build ships
 * equals `cfs compute-id` of `docker save`; without it, the ids differ and compute-id's warning or
 * a `cfs compare` cause names why.
 *
 * Rows: overlay2 (layer writer rounds mtimes down to seconds: `--layer-mtimes seconds`); vfs
 * (hardlinks to lower-layer files split: computed outside); the containerd image store does not
 * exist in dockerd 20.10 (e2e-recipes-docker26.test.ts tests it with trixie's dockerd 26.1);
 * a base changed only in mtimes (a digest stage not FROM base is served from the cache with the
 * old id; FROM base reruns); SOURCE_DATE_EPOCH + rewrite-timestamp (not available in 20.10: its
 * exporter has no `image` type for `docker build --output`; the build arg alone changes nothing;
 * with BuildKit 0.13: e2e-recipes-docker26.test.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  assertIds,
  COMBOS,
  Dockerd,
  type InBuild,
  cfs,
  compare,
  idLines,
  makeContext,
  makePayload,
  missing,
  outsideIds,
  proceed,
  readOut,
  recipe,
  workDir,
} from './engines.js';

const why = missing([]) || Dockerd.available();
let work = '';
let cleanupWork: (() => void) | undefined;
const daemons: Dockerd[] = [];
let context = '';

async function daemon(driver: 'overlay2' | 'vfs'): Promise<Dockerd> {
  const d = new Dockerd(path.join(work, `dockerd-${driver}`), driver);
  daemons.push(d);
  await d.start();
  return d;
}

let n = 0;
/** Builds the recipe with the ids stage, returns what the build recorded. */
function buildOut(d: Dockerd, text: string, args: string[] = []): InBuild {
  return d.buildOut(context, text, path.join(work, `out-${++n}`), args);
}

/** Tags the base stage (from the cache: the very snapshot the build mounted) and saves it. */
function saveBase(d: Dockerd, text: string, tag: string): string {
  d.build(context, text, ['--target', 'base', '-t', tag]);
  const file = path.join(work, `${tag}.tar`);
  d.docker(['save', '-o', file, tag]);
  return `docker-archive:${file}`;
}

before(
  () => {
    if (why) return;
    ({ dir: work, cleanup: cleanupWork } = workDir('docker'));
    context = path.join(work, 'context');
    makeContext(context);
    mkdirSync(path.join(work, 'cmp'));
  },
  { timeout: 60_000 },
);

after(async () => {
  try {
    for (const d of daemons) await d.stop();
  } finally {
    cleanupWork?.();
  }
});

let overlay: Dockerd | undefined;
/** The overlay2 daemon, shared by the rows that use it (started by the first). */
async function overlayDaemon(): Promise<Dockerd> {
  overlay ??= await daemon('overlay2');
  return overlay;
}

test('BuildKit overlay2: --layer-mtimes seconds in the build gives the id of docker save; without it V1 differs by sub-second mtimes', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await overlayDaemon();
  const text = recipe('Dockerfile.buildkit');
  const inb = buildOut(d, text);
  const source = saveBase(d, text, 'base-overlay2');
  const outside = outsideIds(source);
  for (const l of [...idLines('outside', outside), ...idLines('in-build keep', inb.keep), ...idLines('in-build seconds', inb.seconds)]) t.diagnostic(l);

  // the recipe
  assertIds(inb.seconds, outside, 'in the build with --layer-mtimes seconds = docker save');
  assert.equal(inb.karg, cfs(['compute-karg', source]), "the recipe's uki stage wrote the shipped kernel argument");
  assert.equal(inb.warningsSeconds, '', 'no warning on the engine-faithful view');
  // without it: V1 stores nanoseconds, V2 does not
  assert.notEqual(inb.keep.get('V1-sha512'), outside.get('V1-sha512'), 'V1 differs without the recipe');
  assert.equal(inb.keep.get('V2-sha256'), outside.get('V2-sha256'), 'V2 stores whole seconds: equal anyway');
  assert.match(inb.warningsKeep, /warning: \d+ of \d+ paths have sub-second mtimes.*--layer-mtimes seconds/, 'compute-id names the count and the fix');
  const c = compare(inb.dump, source, path.join(work, 'cmp'));
  assert.equal(c.status, 1);
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  assert.ok(c.causes.has('subsecond-mtime'), 'compare names the dropped sub-second mtimes');
  assert.ok(!c.causes.has('hardlinks-split'), 'no hardlink is lost on overlay2');
});

test('BuildKit overlay2: a base changed only in mtimes reruns the digest step FROM base; a digest stage FROM another image prints the old id', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await overlayDaemon();
  // a digest stage the way the reporter wrote it: FROM a tools image, base only bind-mounted
  const stale = `
FROM scratch AS tools
ADD rootfs.tar /
FROM tools AS stale
RUN --mount=type=bind,source=cfs,target=/usr/local/bin/cfs \\
    --mount=type=bind,from=base,target=/mnt/base \\
    --mount=type=cache,target=/var/cache/cfs \\
    export CFS_CACHE_DIR=/var/cache/cfs && mkdir -p /out \\
 && cfs compute-id --layer-mtimes seconds /mnt/base > /out/stale-id
FROM scratch AS out2
COPY --from=ids /out /
COPY --from=stale /out/stale-id /
`;
  const text = recipe('Dockerfile.buildkit') + stale;
  const buildTwice = (epoch: number, tag: string) => {
    makePayload(context, epoch);
    const out = path.join(work, `out-${tag}`);
    d.build(context, text, ['--target', 'out2', '-o', `type=local,dest=${out}`]);
    const source = saveBase(d, text, tag);
    return { inb: readOut(out), stale: readFileSync(path.join(out, 'stale-id'), 'utf8').trim(), source };
  };
  let first, second;
  try {
    first = buildTwice(1700000000, 'base-mtimes-1');
    second = buildTwice(1700000777, 'base-mtimes-2');
  } finally {
    makePayload(context); // back to the default for the other rows
  }
  const id1 = cfs(['compute-id', first.source]);
  const id2 = cfs(['compute-id', second.source]);
  t.diagnostic(`shipped before: ${id1}\nshipped after:  ${id2}\nstale stage printed: ${second.stale}`);
  assert.notEqual(id1, id2, 'moving the mtimes changed the shipped id');
  // the recipe: the digest step in a stage FROM base reran
  assert.equal(second.inb.seconds.get('V1-sha512'), id2, 'FROM base: the digest step reran and printed the shipped id');
  assert.equal(second.inb.karg, cfs(['compute-karg', second.source]));
  // without it: BuildKit keys a read-only bind mount by content checksums that leave mtimes out
  assert.equal(first.stale, id1);
  assert.equal(second.stale, id1, 'the stage FROM tools came from the cache with the old id');
  const c = compare(first.inb.dump, second.source, path.join(work, 'cmp'));
  assert.equal(c.status, 1);
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  assert.doesNotMatch(c.text, /^ *\/.*: (size|digest|content|mode|presence):/m, 'old and new base differ only in mtimes');
});

test('BuildKit 20.10 and SOURCE_DATE_EPOCH: no rewrite-timestamp (no image exporter for docker build --output); the build arg alone leaves the layers as without it', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await overlayDaemon();
  const text = recipe('Dockerfile.buildkit');
  const file = path.join(d.dir, 'Dockerfile.sde');
  writeFileSync(file, text);
  const r2 = d.tryDocker(['build', '--network=none', '-f', file, '--target', 'base', '--output', 'type=image,name=sde,rewrite-timestamp=true', context]);
  t.diagnostic(`docker build --output type=image,rewrite-timestamp=true: ${r2.output.trim().split('\n').pop()}`);
  assert.notEqual(r2.status, 0, 'dockerd 20.10 has no image exporter for --output (rewrite-timestamp needs buildx and BuildKit >= 0.13)');
  assert.match(r2.output, /exporter "image" could not be found/);
  // SOURCE_DATE_EPOCH as a build arg: BuildKit 0.8 does not clamp anything; the recipe still
  // holds. (A payload with other mtimes makes the base new, so that `--target base` can only be
  // this build's snapshot; --no-cache would leave two snapshots under the same cache keys.)
  const epoch = '1600000000';
  let inb, source;
  makePayload(context, 1700000333);
  try {
    inb = buildOut(d, text, ['--build-arg', `SOURCE_DATE_EPOCH=${epoch}`]);
    source = saveBase(d, text, 'base-sde');
  } finally {
    makePayload(context);
  }
  const outside = outsideIds(source);
  for (const l of idLines('SOURCE_DATE_EPOCH outside', outside)) t.diagnostic(l);
  assertIds(inb.seconds, outside, 'with SOURCE_DATE_EPOCH, --layer-mtimes seconds = docker save');
  // so --clamp-mtime, the rewrite-timestamp recipe, would be wrong with this engine
  const clamped = cfs(['compute-id', '--clamp-mtime', epoch, source]);
  assert.notEqual(clamped, outside.get('V1-sha512'), 'clamping to SOURCE_DATE_EPOCH is not what dockerd 20.10 ships');
});

test('BuildKit vfs: no in-build view is the shipped tree (hardlinks to lower-layer files split); the digest computed from docker save and handed in as a build arg ships', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await daemon('vfs');
  const text = recipe('Dockerfile.outside');
  // the recipe: base, save, compute-karg outside, the uki stage takes it as a build argument
  const source = saveBase(d, text, 'base-vfs');
  const karg = cfs(['compute-karg', source]);
  const outside = outsideIds(source);
  const inb = buildOut(d, text, ['--build-arg', `COMPOSEFS_KARG=${karg}`]);
  d.build(context, text, ['--build-arg', `COMPOSEFS_KARG=${karg}`, '--target', 'uki', '-t', 'uki-vfs']);
  for (const l of [...idLines('outside', outside), ...idLines('in-build keep', inb.keep), ...idLines('in-build seconds', inb.seconds)]) t.diagnostic(l);
  assert.equal(inb.karg, karg, 'the uki stage wrote the kernel argument of the saved base');
  const base = d.layers('base-vfs');
  assert.deepEqual(d.layers('uki-vfs').slice(0, base.length), base, 'the uki image is built on the very layers that were measured');
  // without it: even the engine-faithful view differs
  for (const [v, h] of COMBOS) assert.notEqual(inb.seconds.get(`V${v}-${h}`), outside.get(`V${v}-${h}`), `V${v} ${h}: the in-build view is not the shipped tree`);
  const c = compare(inb.dump, source, path.join(work, 'cmp'));
  assert.equal(c.status, 1);
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  assert.match(c.text, /nlink/, 'compare shows the split hardlinks');
  assert.ok(c.causes.has('hardlinks-split'), 'and names the cause');
});
