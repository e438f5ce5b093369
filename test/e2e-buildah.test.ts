/**
 * End to end with buildah, offline (`npm run test:e2e`, as root): the multi-layer base image of
 * containerfiles/Containerfile.example (whiteouts, an opaque directory, hardlinks, a file
 * capability, a user xattr, content under /run) is built once; a later stage runs the
 * single-executable `dist/cfs` on a bind mount of it (the in-build directory path) for EROFS V1
 * and V2 with both hashes. The base image, pushed as `oci:`, `oci-archive:` and
 * `docker-archive:` (buildah push, podman save), must give the same ids through the tarball
 * path, and the kernel mount of its image must equal a real extraction of its layers (umoci
 * unpack) as composefs's finishing rules transform it.
 *
 * Two buildah 1.28 behaviours the example's base stage is written around (see the comments in
 * Containerfile.example): `--mount=type=bind,from=STAGE` mounts the working container of the
 * stage's last step, whose files keep nanosecond mtimes the layer tarball does not have (ustar
 * headers, whole seconds; composefs-rs's own import would read the same seconds), or, for a
 * cached stage, the image before the last step (buildah #4375). Both views are then genuinely
 * different trees, composefs-rs would compute different ids too; the stage therefore ends with
 * an empty LABEL so that the bind mount is exactly the committed layers.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { IN_CI, ROOT, have, runCfs, tempDir } from './helpers.js';
import { expectedView, hardlinkGroups, mountComposefs, readMountedTree, requireMount, withoutIno } from './mount-helpers.js';

/** The EROFS format and hash combinations the build stage computes. */
const COMBOS = [
  ['1', 'sha256'],
  ['1', 'sha512'],
  ['2', 'sha256'],
  ['2', 'sha512'],
] as const;

/** The stage appended to the example for the test: every combination, and the dumpfile (for diagnosis). */
const IDS_STAGE = `
FROM uki AS ids
RUN --mount=type=bind,from=cfs-image,source=/cfs,target=/usr/local/bin/cfs \\
    --mount=type=bind,from=base,target=/mnt/base \\
    --mount=type=cache,target=/var/cache/cfs \\
    export CFS_CACHE_DIR=/var/cache/cfs \\
 && for v in 1 2; do for h in sha256 sha512; do \\
      printf 'V%s-%s ' "$v" "$h"; /usr/local/bin/cfs --erofs-version "$v" --hash "$h" compute-id /mnt/base || exit 1; \\
    done; done > /usr/share/cfs-ids \\
 && /usr/local/bin/cfs create-dumpfile /mnt/base > /usr/share/cfs-inbuild.dump
`;

const DRIVER = process.env.CFS_E2E_STORAGE_DRIVER ?? 'overlay';

let why = '';
let work = '';
let cleanupDir: (() => void) | undefined;
let buildahArgs: string[] = [];
let env: NodeJS.ProcessEnv = process.env;

/** What the build stages wrote. */
const inBuild = { ids: new Map<string, string>(), dump: '', karg: '', id: '' };
/** The pushed/saved base image, by SOURCE spelling. */
const sources: string[] = [];
let ociSource = '';

function buildah(args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync('buildah', [...buildahArgs, ...args], { env, cwd: opts.cwd, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`buildah ${args.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).split('\n').slice(-25).join('\n')}`);
  return r.stdout;
}

function diffIds(image: string): string[] {
  return buildah(['inspect', '--type', 'image', '--format', '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}', image]).trim().split(/\s+/);
}

/** Reads files out of an image through a working container. */
function readFromImage(image: string, files: string[]): string[] {
  const ctr = buildah(['from', image]).trim();
  try {
    const mnt = buildah(['mount', ctr]).trim();
    try {
      return files.map((f) => readFileSync(path.join(mnt, f), 'utf8'));
    } finally {
      buildah(['umount', ctr]);
    }
  } finally {
    buildah(['rm', ctr]);
  }
}

/** Mount points under `dir` (deepest first): what a failed buildah RUN can leave behind. */
function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && m.startsWith(prefix))
    .sort()
    .reverse();
}

before(
  () => {
    if (process.getuid?.() !== 0) why = 'needs root (buildah --isolation chroot with overlay mounts)';
    else if (!have('buildah')) why = 'buildah is not installed (apt-get install buildah)';
    else if (!have('setcap') || !have('setfattr')) why = 'setcap/setfattr are needed for the base root filesystem (apt-get install libcap2-bin attr)';
    if (why) return;
    const sea = path.join(ROOT, 'dist/cfs');
    // a missing single executable is a broken build, not a missing tool: fail
    assert.ok(existsSync(sea), `${sea} is missing: run npm run build`);

    ({ dir: work, cleanup: cleanupDir } = tempDir('cfs-e2e-buildah-'));
    buildahArgs = ['--root', path.join(work, 'storage'), '--runroot', path.join(work, 'run'), '--storage-driver', DRIVER];
    // buildah keeps RUN --mount=type=cache directories under TMPDIR: keep them in here too
    mkdirSync(path.join(work, 'tmp'));
    // ... and the network configuration buildah would otherwise create in /etc/containers/networks
    writeFileSync(path.join(work, 'containers.conf'), `[network]\nnetwork_config_dir = "${path.join(work, 'net')}"\n`);
    env = { ...process.env, TMPDIR: path.join(work, 'tmp'), CONTAINERS_CONF: path.join(work, 'containers.conf') };
    const context = path.join(work, 'context');
    mkdirSync(context);
    execFileSync(path.join(ROOT, 'containerfiles/make-rootfs.sh'), [path.join(context, 'rootfs.tar'), sea], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const containerfile = path.join(context, 'Containerfile');
    writeFileSync(containerfile, readFileSync(path.join(ROOT, 'containerfiles/Containerfile.example'), 'utf8') + IDS_STAGE);

    buildah(['bud', '--isolation', 'chroot', '-q', '-f', path.join(ROOT, 'containerfiles/Containerfile.cfs'), '-t', 'cfs-image', ROOT]);
    // The whole file first (the base stage is built fresh, not taken from the cache: see the
    // header), then `base` tagged from the cache.
    buildah(['bud', '--isolation', 'chroot', '--layers', '-q', '-f', containerfile, '-t', 'e2e-ids', context]);
    buildah(['bud', '--isolation', 'chroot', '--layers', '-q', '--target', 'base', '-f', containerfile, '-t', 'base', context]);
    const base = diffIds('base');
    const ids = diffIds('e2e-ids');
    assert.deepEqual(ids.slice(0, base.length), base, 'the stages were built on the tagged base image');
    assert.ok(base.length >= 6, `the base image has several layers (${base.length})`);

    const [idsText, dump, karg, id] = readFromImage('e2e-ids', ['usr/share/cfs-ids', 'usr/share/cfs-inbuild.dump', 'etc/kernel/cmdline', 'etc/kernel/composefs-id']);
    for (const line of idsText.trim().split('\n')) {
      const [k, v] = line.split(' ');
      inBuild.ids.set(k, v);
    }
    Object.assign(inBuild, { dump, karg: karg.trim(), id: id.trim() });

    const oci = path.join(work, 'oci');
    buildah(['push', '-q', 'base', `oci:${oci}:base`]);
    ociSource = `oci:${oci}:base`;
    sources.push(ociSource);
    buildah(['push', '-q', 'base', `oci-archive:${path.join(work, 'base-oci.tar')}:base`]);
    sources.push(`oci-archive:${path.join(work, 'base-oci.tar')}:base`);
    buildah(['push', '-q', 'base', `docker-archive:${path.join(work, 'base-docker.tar')}:localhost/base:latest`]);
    sources.push(`docker-archive:${path.join(work, 'base-docker.tar')}`);
    if (have('podman')) {
      const saved = path.join(work, 'base-podman.tar');
      const r = spawnSync(
        'podman',
        [...buildahArgs, '--tmpdir', path.join(work, 'podman'), '--events-backend', 'none', '--cgroup-manager', 'cgroupfs', 'save', '-q', '--format', 'docker-archive', '-o', saved, 'localhost/base'],
        { env, encoding: 'utf8' },
      );
      assert.equal(r.status, 0, `podman save failed: ${r.stderr}`);
      sources.push(`docker-archive:${saved}:localhost/base:latest`);
    }
  },
  { timeout: 240_000 },
);

after(() => {
  if (!work) return;
  try {
    spawnSync('buildah', [...buildahArgs, 'rm', '--all'], { env, stdio: 'ignore' });
    spawnSync('buildah', [...buildahArgs, 'rmi', '--all', '--force'], { env, stdio: 'ignore' });
  } finally {
    for (const m of mountsUnder(work)) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
    cleanupDir?.();
  }
});

function proceed(t: { skip: (m: string) => void }): boolean {
  if (!why) return true;
  if (IN_CI) throw new Error(`buildah end-to-end test cannot run under CI: ${why}`);
  t.skip(`buildah end-to-end test skipped: ${why}`);
  return false;
}

/** Lines only in `a` / only in `b` (both dumpfiles are sorted by path), for failure messages. */
function dumpDiff(a: string, b: string): string {
  const A = new Set(a.split('\n'));
  const B = new Set(b.split('\n'));
  const out = [...[...A].filter((l) => !B.has(l)).map((l) => `- ${l}`), ...[...B].filter((l) => !A.has(l)).map((l) => `+ ${l}`)];
  return out.slice(0, 40).join('\n');
}

function cfs(args: string[]): string {
  const r = runCfs(args);
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString().trim();
}

test('the build stage computed all four ids and the example wrote the kernel argument', (t) => {
  if (!proceed(t)) return;
  assert.deepEqual([...inBuild.ids.keys()].sort(), COMBOS.map(([v, h]) => `V${v}-${h}`).sort());
  for (const [k, v] of inBuild.ids) assert.match(v, k.endsWith('sha256') ? /^[0-9a-f]{64}$/ : /^[0-9a-f]{128}$/, k);
  assert.match(inBuild.karg, /^composefs\.digest=v1-sha512-12:[0-9a-f]{128}$/);
  assert.equal(inBuild.id, inBuild.ids.get('V1-sha512'), 'the uki stage and the ids stage saw the same base');
  for (const [k, v] of inBuild.ids) t.diagnostic(`in the build: ${k} ${v}`);
  t.diagnostic(`in the build: ${inBuild.karg}`);
});

test('the base image has what the test claims to exercise (whiteouts, opaque dir, hardlinks, xattrs, /run)', async (t) => {
  if (!proceed(t)) return;
  const layout = ociSource.slice(4, -':base'.length);
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const blob = (d: string) => path.join(layout, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), 'utf8')) as { layers: { digest: string; mediaType: string }[] };
  const seen = { whiteout: 0, opaque: 0, hardlink: 0, capability: 0, userXattr: 0, run: 0 };
  for (const layer of manifest.layers) {
    let input: NodeJS.ReadableStream = Readable.from(readFileSync(blob(layer.digest)));
    if (layer.mediaType.endsWith('gzip')) input = input.pipe(createGunzip());
    const extract = tarStream.extract();
    input.pipe(extract);
    for await (const entry of extract) {
      const h = entry.header as { name: string; type?: string | null; pax?: Record<string, string> | null };
      const base = path.posix.basename(h.name);
      if (base === '.wh..wh..opq') seen.opaque++;
      else if (base.startsWith('.wh.')) seen.whiteout++;
      if (h.type === 'link') seen.hardlink++;
      if (h.pax?.['SCHILY.xattr.security.capability'] !== undefined) seen.capability++;
      if (Object.keys(h.pax ?? {}).some((k) => k.startsWith('SCHILY.xattr.user.'))) seen.userXattr++;
      if (/^(\.\/)?run\/./.test(h.name)) seen.run++;
      entry.resume();
    }
  }
  t.diagnostic(`layer entries: ${JSON.stringify(seen)}`);
  for (const [k, n] of Object.entries(seen)) {
    // vfs has no opaque directories: its diff whites out each removed file instead
    if (k === 'opaque' && DRIVER !== 'overlay') continue;
    assert.ok(n > 0, `the layers contain ${k} entries`);
  }
});

for (const kind of ['oci', 'oci-archive', 'docker-archive (buildah push)', 'docker-archive (podman save)'] as const) {
  test(`ids computed in the build equal cfs compute-id of the ${kind} base image, V1/V2 x sha256/sha512`, (t) => {
    if (!proceed(t)) return;
    const source = {
      oci: sources[0],
      'oci-archive': sources[1],
      'docker-archive (buildah push)': sources[2],
      'docker-archive (podman save)': sources[3],
    }[kind];
    if (source === undefined) {
      if (IN_CI) throw new Error('podman is not installed');
      t.skip('podman is not installed');
      return;
    }
    const outside = cfs(['create-dumpfile', source]);
    for (const [v, h] of COMBOS) {
      const got = cfs(['--erofs-version', v, '--hash', h, 'compute-id', source]);
      assert.equal(
        got,
        inBuild.ids.get(`V${v}-${h}`),
        `V${v} ${h}: the tarball view of ${source} differs from the bind mount in the build; dumpfiles (- in the build, + tarball):\n${dumpDiff(inBuild.dump.trim(), outside)}`,
      );
    }
    assert.equal(cfs(['compute-karg', source]), inBuild.karg);
    assert.equal(cfs(['compute-id', source]), inBuild.id);
  });
}

/**
 * `create-image --repo REPO SOURCE -o IMAGE`; returns the object directory. Where cfs cannot
 * store the objects of an OCI source yet, the objects are taken from the extraction instead
 * (each regular file over 64 bytes, named by its `cfs measure` digest): a digest the image
 * names that no extracted file has then shows up as unreadable content in the mount.
 */
function createImage(opts: string[], src: string, image: string, repo: string, tree: Map<string, { type: string; size: bigint }>, extracted: string, alg: string): string {
  const want = `${alg}:${inBuild.ids.get(`V${opts[1]}-${alg}`)}`;
  const r = runCfs([...opts, 'create-image', '--repo', repo, src, '-o', image]);
  if (r.status === 0) {
    assert.equal(r.stdout.toString().trim(), want, 'create-image prints the id computed in the build');
    return path.join(repo, 'objects');
  }
  assert.match(r.stderr, /not supported yet/, `create-image --repo: ${r.stderr}`);
  assert.equal(cfs([...opts, 'create-image', src, '-o', image]), want, 'create-image prints the id computed in the build');
  const objects = path.join(repo, 'objects');
  const files = [...tree].filter(([, o]) => o.type === 'reg' && o.size > 64n).map(([p]) => path.join(extracted, p));
  for (const line of cfs(['measure', '--hash', alg, ...files]).split('\n')) {
    const [digest, file] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
    const hex = digest.split(':')[1];
    mkdirSync(path.join(objects, hex.slice(0, 2)), { recursive: true });
    copyFileSync(file, path.join(objects, hex.slice(0, 2), hex.slice(2)));
  }
  return objects;
}

for (const [version, alg] of [
  ['1', 'sha512'],
  ['2', 'sha256'],
] as const) {
  test(`kernel mount of the oci: image equals the extracted layers under the finishing rules (V${version}, ${alg})`, { timeout: 120_000 }, (t) => {
    if (!proceed(t) || !requireMount(t)) return;
    const m0 = tempDir('cfs-e2e-mount-');
    let unmount: (() => void) | undefined;
    let release: (() => void) | undefined;
    try {
      // a real extraction of the layers: umoci, independent of containers/storage and of cfs
      let extracted: string;
      if (have('umoci')) {
        execFileSync('umoci', ['unpack', '--image', ociSource.slice(4), path.join(m0.dir, 'bundle')], { stdio: 'ignore' });
        extracted = path.join(m0.dir, 'bundle/rootfs');
      } else {
        if (IN_CI) throw new Error('umoci is not installed');
        const ctr = buildah(['from', 'base']).trim();
        extracted = buildah(['mount', ctr]).trim();
        release = () => {
          buildah(['umount', ctr]);
          buildah(['rm', ctr]);
        };
      }
      const source = readMountedTree(extracted);
      release?.();
      release = undefined;
      const repo = path.join(m0.dir, 'repo');
      const image = path.join(m0.dir, 'image.cfs');
      const objects = createImage(['--erofs-version', version, '--hash', alg], ociSource, image, repo, source, extracted, alg);
      const m = mountComposefs(image, objects, m0.dir);
      unmount = m.unmount;
      const seen = readMountedTree(m.root);
      const want = expectedView(source, Number(version));
      assert.deepEqual([...seen.keys()].sort(), [...want.keys()].sort(), 'same paths');
      for (const [p, w] of want) assert.deepEqual(withoutIno(seen.get(p)!), withoutIno(w), `path ${JSON.stringify(p)}`);
      assert.deepEqual(hardlinkGroups(seen), hardlinkGroups(want), 'hardlink groups');
      assert.ok(hardlinkGroups(seen).length >= 2, 'the image has hardlinks');
      assert.ok([...seen.values()].some((o) => o.xattrs.has('security.capability')), 'a file capability survives');
    } finally {
      unmount?.();
      release?.();
      m0.cleanup();
    }
  });
}

test('cfs compare: the mounted base equals its tarball view; a directory touched through the mount is named with its cause', (t) => {
  if (!proceed(t)) return;
  const ctr = buildah(['from', 'base']).trim();
  try {
    const mnt = buildah(['mount', ctr]).trim();
    try {
      const eq = runCfs(['compare', mnt, ociSource]);
      assert.equal(eq.status, 0, eq.stdout.toString() + eq.stderr);
      assert.match(eq.stdout.toString(), /^equal: both give sha512 [0-9a-f]{128} \(erofs V1\)\n$/);
      // what a RUN step does through a mount: a new file in an existing directory, a mount target
      writeFileSync(path.join(mnt, 'usr/share/demo/touched'), 'x\n');
      mkdirSync(path.join(mnt, 'mnt-stub'));
      const r = runCfs(['compare', mnt, ociSource]);
      assert.equal(r.status, 1, r.stderr);
      const out = r.stdout.toString();
      assert.match(out, /^\/mnt-stub: presence: directory \(A\) vs \(absent\) \(B\)\n {4}likely cause: mount-target stub/m);
      assert.match(out, /^\/usr\/share\/demo: mtime: \d+\.\d{9} \(A\) vs \d+\.000000000 \(B\)\n {4}likely cause: live mtime/m);
      assert.match(out, /^\/usr\/share\/demo\/touched: presence: inline \(A\) vs \(absent\) \(B\)\n {4}likely cause: in the mounted view only/m);
      // and compute-id on such a tree warns
      assert.match(runCfs(['compute-id', mnt]).stderr, /warning: \d+ of \d+ directories have sub-second mtimes \([^)]*\/usr\/share\/demo/);
    } finally {
      buildah(['umount', ctr]);
    }
  } finally {
    buildah(['rm', ctr]);
  }
});
