/**
 * Docker BuildKit recipes on a newer BuildKit, built for real: Debian trixie's docker.io 26.1
 * dockerd (BuildKit 0.13), client and buildx 0.13 plugin, and containerd 1.7, unpacked by
 * .ci/docker-trixie.sh (not installed), each daemon private to this file (own data root, exec
 * root, pidfile, socket; `docker buildx build --network=none` on the daemon's own builder) and
 * stopped by its pidfile at the end. Rows of issue 11's table tested here:
 *
 * - SOURCE_DATE_EPOCH + rewrite-timestamp=true (containerd image store, the only store of dockerd
 *   26.1 that applies it): containerfiles/Dockerfile.buildkit-epoch computes with
 *   `--clamp-mtime $SOURCE_DATE_EPOCH --layer-mtimes seconds` and equals the exported image;
 *   without the clamp the ids differ and compare names `clamped-mtime`.
 * - the containerd image store: a hardlink to a lower layer's file is split and a re-created
 *   directory gets no layer entry, so no in-build view is the shipped tree (compare:
 *   `hardlinks-split`, `dir-without-layer-entry`); Dockerfile.outside (digest of the exported
 *   base handed in as a build argument) ships the right id, with rewrite-timestamp too.
 * - the classic store of 26.1 (the docker driver): rewrite-timestamp=true is ignored for
 *   `type=image` (and `type=oci` is refused): Dockerfile.buildkit (`--layer-mtimes seconds`)
 *   holds, the clamp would be wrong.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  assertIds,
  COMBOS,
  Dockerd,
  IDS_STAGE_EPOCH,
  type InBuild,
  cfs,
  compare,
  idLines,
  layoutLayers,
  makeContext,
  makePayload,
  missing,
  outsideIds,
  proceed,
  recipe,
  workDir,
} from './engines.js';

const why = missing([]) || Dockerd.trixieAvailable();
const EPOCH = '1600000000';
let work = '';
let cleanupWork: (() => void) | undefined;
const daemons: Dockerd[] = [];
let context = '';

async function daemon(driver: 'overlay2' | 'containerd-store'): Promise<Dockerd> {
  const d = new Dockerd(path.join(work, `dockerd26-${driver}`), driver, Dockerd.trixieRoot());
  daemons.push(d);
  await d.start();
  return d;
}

let store: Dockerd | undefined;
/** The containerd-image-store daemon, shared by the rows that use it (started by the first). */
async function storeDaemon(): Promise<Dockerd> {
  store ??= await daemon('containerd-store');
  return store;
}

let n = 0;
/** Builds the recipe with an ids stage, returns what the build recorded. */
function buildOut(d: Dockerd, text: string, args: string[] = []): InBuild {
  return d.buildOut(context, text, path.join(work, `out-${++n}`), args);
}

/** Exports TARGET with BuildKit's OCI exporter; returns the archive and its layers' digests. */
function exportOci(d: Dockerd, text: string, target: string, args: string[], opts = ''): { source: string; layers: string[] } {
  const file = path.join(work, `${target}-${++n}.tar`);
  d.build(context, text, [...args, '--target', target, '--output', `type=oci,dest=${file}${opts}`]);
  const dir = `${file}.d`;
  mkdirSync(dir);
  execFileSync('tar', ['-xf', file, '-C', dir]);
  return { source: `oci-archive:${file}`, layers: layoutLayers(dir).map((b) => path.basename(b)) };
}

before(
  () => {
    if (why) return;
    ({ dir: work, cleanup: cleanupWork } = workDir('docker26'));
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

test('BuildKit 0.13, containerd store, SOURCE_DATE_EPOCH + rewrite-timestamp=true: --clamp-mtime $SOURCE_DATE_EPOCH --layer-mtimes seconds in the build gives the exported id; without the clamp compare names clamped-mtime', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await storeDaemon();
  const text = recipe('Dockerfile.buildkit-epoch', { append: IDS_STAGE_EPOCH });
  const args = ['--build-arg', `SOURCE_DATE_EPOCH=${EPOCH}`];
  const inb = buildOut(d, text, args);
  const base = exportOci(d, text, 'base', args, ',rewrite-timestamp=true');
  const outside = outsideIds(base.source);
  for (const l of [...idLines('outside', outside), ...idLines('in-build keep', inb.keep), ...idLines('in-build seconds', inb.seconds), ...idLines('in-build clamp', inb.clamp)]) t.diagnostic(l);

  // the recipe
  assertIds(inb.clamp, outside, 'in the build with --clamp-mtime $SOURCE_DATE_EPOCH --layer-mtimes seconds = the rewrite-timestamp export');
  assert.equal(inb.karg, cfs(['compute-karg', base.source]), "the recipe's uki stage wrote the shipped kernel argument");
  assert.equal(inb.warningsClamp, '', 'no warning on the engine-faithful view');
  // what ships: the uki image exported the same way carries the very base layers measured
  const uki = exportOci(d, text, 'uki', args, ',rewrite-timestamp=true');
  assert.deepEqual(uki.layers.slice(0, base.layers.length), base.layers, 'the uki image is built on the measured (rewritten) base layers');
  // the docker exporter writes the same layers; the image exporter refuses the option (dockerd
  // 26.1 always unpacks into its store)
  const saved = path.join(work, 'base-epoch-docker.tar');
  d.build(context, text, [...args, '--target', 'base', '--output', `type=docker,dest=${saved},rewrite-timestamp=true`]);
  assertIds(outsideIds(`docker-archive:${saved}`), outside, 'type=docker = the type=oci export');
  const file = path.join(d.dir, 'Dockerfile.epoch');
  writeFileSync(file, text);
  const image = d.tryDocker(['buildx', 'build', '--network=none', '-f', file, ...args, '--target', 'base', '--output', 'type=image,name=base-epoch,rewrite-timestamp=true', context]);
  t.diagnostic(`type=image,rewrite-timestamp=true: ${image.output.trim().split('\n').pop()}`);
  assert.notEqual(image.status, 0);
  assert.match(image.output, /exporter option "rewrite-timestamp" conflicts with "unpack"/);
  // without the clamp: every whole second later than the epoch differs, V2 included
  for (const [v, h] of COMBOS) assert.notEqual(inb.seconds.get(`V${v}-${h}`), outside.get(`V${v}-${h}`), `V${v} ${h}: --layer-mtimes seconds alone differs`);
  assert.match(inb.warningsKeep, /warning: \d+ of \d+ paths have sub-second mtimes.*--clamp-mtime EPOCH with BuildKit rewrite-timestamp/, 'compute-id names the count and the fix');
  const c = compare(inb.dump, base.source, path.join(work, 'cmp'));
  assert.equal(c.status, 1);
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  assert.ok(c.causes.has('clamped-mtime'), 'compare names the epoch clamp');
  assert.match(c.text, new RegExp(`--clamp-mtime ${EPOCH}`), 'and gives the epoch in the fix');
  assert.ok(!c.causes.has('hardlinks-split'), 'this base links only within a step');
});

test('BuildKit 0.13, containerd store: no in-build view is the shipped tree (hardlink to a lower layer split, re-created directory without a layer entry); the digest of the exported base handed in as a build arg ships, with rewrite-timestamp too', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await storeDaemon();
  // Dockerfile.outside's base (it hardlinks a file of an earlier layer) plus a step that
  // re-creates an empty directory: its only change is the mtime
  const text = recipe('Dockerfile.outside', { append: IDS_STAGE_EPOCH }).replace(/^FROM base AS uki$/m, 'RUN rmdir /mnt && mkdir /mnt\n\nFROM base AS uki');
  assert.match(text, /^RUN rmdir \/mnt/m);
  for (const [label, args, opts] of [
    ['plain', [], ''],
    ['rewrite-timestamp', ['--build-arg', `SOURCE_DATE_EPOCH=${EPOCH}`], ',rewrite-timestamp=true'],
  ] as const) {
    // the recipe: export the base, compute outside, hand the karg to the uki stage
    const base = exportOci(d, text, 'base', [...args], opts);
    const karg = cfs(['compute-karg', base.source]);
    const outside = outsideIds(base.source);
    const withKarg = [...args, '--build-arg', `COMPOSEFS_KARG=${karg}`];
    const inb = buildOut(d, text, withKarg);
    const uki = exportOci(d, text, 'uki', withKarg, opts);
    for (const l of [...idLines(`${label} outside`, outside), ...idLines(`${label} in-build seconds`, inb.seconds), ...idLines(`${label} in-build clamp`, inb.clamp)]) t.diagnostic(l);
    assert.equal(inb.karg, karg, `${label}: the uki stage wrote the kernel argument of the exported base`);
    assert.deepEqual(uki.layers.slice(0, base.layers.length), base.layers, `${label}: the uki image is built on the very layers that were measured`);
    // without it: even the engine-faithful views differ
    const view = opts ? inb.clamp : inb.seconds;
    for (const [v, h] of COMBOS) assert.notEqual(view.get(`V${v}-${h}`), outside.get(`V${v}-${h}`), `${label} V${v} ${h}: the in-build view is not the shipped tree`);
    const c = compare(inb.dump, base.source, path.join(work, 'cmp'));
    assert.equal(c.status, 1);
    t.diagnostic(`${label} compare causes: ${JSON.stringify([...c.causes])}`);
    assert.ok(c.causes.has('hardlinks-split'), `${label}: compare names the split hardlink`);
    assert.match(c.text, /\/usr\/bin\/big-alias: nlink/);
    if (!opts) {
      // (clamped, the re-created directory's new time and its old one both become the epoch)
      assert.ok(c.causes.has('dir-without-layer-entry'), `${label}: compare names the directory the layer has no entry for`);
      assert.match(c.text, /^ {2}\/mnt: mtime/m);
      assert.ok(!c.causes.has('clamped-mtime'), `${label}: nothing is clamped`);
    } else {
      assert.ok(c.causes.has('clamped-mtime'), `${label}: compare names the epoch clamp`);
    }
  }
});

test('BuildKit 0.13, classic store (docker driver): rewrite-timestamp=true is ignored for type=image and type=oci is refused; --layer-mtimes seconds (Dockerfile.buildkit) gives the id of docker save, the clamp would not', { timeout: 300_000 }, async (t) => {
  if (!proceed(t, why)) return;
  const d = await daemon('overlay2');
  const text = recipe('Dockerfile.buildkit');
  const args = ['--build-arg', `SOURCE_DATE_EPOCH=${EPOCH}`];
  const file = path.join(d.dir, 'Dockerfile.sde');
  writeFileSync(file, text);
  const refused = d.tryDocker(['buildx', 'build', '--network=none', '-f', file, ...args, '--target', 'base', '--output', `type=oci,dest=${path.join(work, 'refused.tar')},rewrite-timestamp=true`, context]);
  t.diagnostic(`type=oci on the classic store: ${refused.output.trim().split('\n')[0]}`);
  assert.notEqual(refused.status, 0);
  assert.match(refused.output, /OCI exporter is not supported for the docker driver/);
  // a payload of its own, so that the base is new to this daemon's cache whatever ran before
  makePayload(context, 1700000444);
  let inb, source;
  try {
    inb = buildOut(d, text, args);
    d.build(context, text, [...args, '--target', 'base', '--output', 'type=image,name=base-sde,rewrite-timestamp=true']);
    source = `docker-archive:${path.join(work, 'base-sde.tar')}`;
    d.docker(['save', '-o', path.join(work, 'base-sde.tar'), 'base-sde']);
  } finally {
    makePayload(context);
  }
  const outside = outsideIds(source);
  for (const l of [...idLines('classic outside', outside), ...idLines('classic in-build seconds', inb.seconds)]) t.diagnostic(l);
  assertIds(inb.seconds, outside, 'classic store: --layer-mtimes seconds = docker save');
  assert.equal(inb.karg, cfs(['compute-karg', source]));
  const clamped = cfs(['compute-id', '--clamp-mtime', EPOCH, '--layer-mtimes', 'seconds', source]);
  assert.notEqual(clamped, outside.get('V1-sha512'), 'the layers are not clamped: --clamp-mtime would be wrong here');
  const c = compare(inb.dump, source, path.join(work, 'cmp'));
  t.diagnostic(`compare causes: ${JSON.stringify([...c.causes])}`);
  assert.ok(c.causes.has('subsecond-mtime'));
  assert.ok(!c.causes.has('clamped-mtime'), 'nothing is clamped');
});
