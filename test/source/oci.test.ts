/**
 * OCI sources -> tree: image layouts, oci-archive, docker-archive and bare layers, with digest
 * verification, platforms and refs. Layers are built byte by byte by test/tar-builder.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { loadSource } from '../../src/pipeline.js';
import { loadOciSource, resolveLayoutRef, splitLayoutRef } from '../../src/source/oci/image.js';
import { TarBuilder } from '../tar-builder.js';
import { base, dump, rejectsWith } from './layers.js';
import { runCfs, tempDir } from '../helpers.js';


// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Images

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

interface Layout {
  dir: string;
  layers: Buffer[];
  manifestDigest: string;
}

/** Writes an OCI image layout with the given (possibly compressed) layer blobs. */
function writeLayout(dir: string, blobs: { blob: Buffer; plain: Buffer; mediaType: string }[], refName = 'latest', extra: object = {}): Layout {
  mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
  const put = (b: Buffer): string => {
    const h = sha256(b);
    writeFileSync(path.join(dir, 'blobs/sha256', h), b);
    return `sha256:${h}`;
  };
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: blobs.map((b) => `sha256:${sha256(b.plain)}`) } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: put(config), size: config.length },
      layers: blobs.map((b) => ({ mediaType: b.mediaType, digest: put(b.blob), size: b.blob.length })),
    }),
  );
  const md = put(manifest);
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: md,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': refName },
          ...extra,
        },
      ],
    }),
  );
  return { dir, layers: blobs.map((b) => b.blob), manifestDigest: md };
}

/** Packs a directory's files (relative names given) into a tar. */
function tarOf(root: string, names: string[], read: (n: string) => Buffer): Buffer {
  const t = new TarBuilder();
  for (const n of names) t.file(n, read(n));
  return t.build();
}

const L1 = (): Buffer => base().dir('run/').file('run/x', 'x').file('etc/hostname', 'h\n').file('usr/bin/tool', Buffer.alloc(200, 9), { pax: [['SCHILY.xattr.user.x', 'y'], ['SCHILY.xattr.security.capability', 'c']] }).build();
const L2 = (): Buffer => new TarBuilder().file('etc/.wh.hostname', '').file('etc/motd', 'hi').dir('usr/', { mode: 0o750, mtime: 99 }).build();


test('OCI layout, oci-archive, docker-archive, layers: with digest verification', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-');
  try {
    const l1 = L1();
    const l2 = L2();
    const layout = writeLayout(path.join(dir, 'img'), [
      { blob: gzipSync(l1), plain: l1, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' },
      { blob: l2, plain: l2, mediaType: 'application/vnd.oci.image.layer.v1.tar' },
    ]);
    const expected = await dump([l1, l2]);
    const fs1 = await loadOciSource(`oci:${layout.dir}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs1).toString('latin1'), expected);
    const fs2 = await loadOciSource(`oci:${layout.dir}:latest`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs2).toString('latin1'), expected);
    await rejectsWith(loadOciSource(`oci:${layout.dir}:nope`, { hash: 'sha256' }), 'no image named "nope"', 'latest');

    // with transform_for_oci (the pipeline's rules; sources apply none): root from /usr, /run
    // emptied, xattrs filtered
    const { fs: fsT } = await loadSource(`oci:${layout.dir}`, { hash: 'sha256', jobs: 1, propagateUsrToRoot: true, xattrs: 'allowlist-only', bootable: false });
    const dT = writeDumpfile(fsT).toString('latin1');
    assert.ok(dT.startsWith('/ 0 40750 5 0 0 0 99.0 - - -\n'), dT);
    assert.ok(dT.includes('/run 0 40755 2 0 0 0 99.0 - - -\n'));
    assert.ok(!dT.includes('/run/x'));
    assert.match(dT, /\/usr\/bin\/tool 200 100644 1 0 0 0 0\.0 \S+ - [0-9a-f]{64} security\.capability=c\n/);

    // oci-archive: the layout as a tar, read in place
    const names = ['oci-layout', 'index.json', ...(await import('node:fs')).readdirSync(path.join(layout.dir, 'blobs/sha256')).map((h) => `blobs/sha256/${h}`)];
    const { readFileSync } = await import('node:fs');
    const archive = tarOf(layout.dir, names, (n) => readFileSync(path.join(layout.dir, n)));
    writeFileSync(path.join(dir, 'img.tar'), archive);
    const fs3 = await loadOciSource(`oci-archive:${path.join(dir, 'img.tar')}:latest`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs3).toString('latin1'), expected);

    // docker-archive (legacy docker save layout)
    const cfg = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(l1)}`, `sha256:${sha256(l2)}`] } }));
    const dockerTar = new TarBuilder()
      .file(`${sha256(cfg)}.json`, cfg)
      .file('aaa/layer.tar', l1)
      .dir('bbb/')
      .symlink('bbb/layer.tar', '../ccc/layer.tar')
      .file('ccc/layer.tar', gzipSync(l2))
      .file('manifest.json', JSON.stringify([{ Config: `${sha256(cfg)}.json`, RepoTags: ['example.com/img:1'], Layers: ['aaa/layer.tar', 'bbb/layer.tar'] }]))
      .build();
    writeFileSync(path.join(dir, 'docker.tar'), dockerTar);
    const fs4 = await loadOciSource(`docker-archive:${path.join(dir, 'docker.tar')}:example.com/img:1`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs4).toString('latin1'), expected);
    const fs4b = await loadOciSource(`docker-archive:${path.join(dir, 'docker.tar')}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs4b).toString('latin1'), expected);

    // layers:
    writeFileSync(path.join(dir, 'a.tar.gz'), gzipSync(l1));
    writeFileSync(path.join(dir, 'b.tar'), l2);
    const fs5 = await loadOciSource(`layers:${path.join(dir, 'a.tar.gz')},${path.join(dir, 'b.tar')}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs5).toString('latin1'), expected);

    // a layer blob whose bytes do not match its digest: the error names the blob
    const l2digest = `sha256:${sha256(l2)}`;
    const corrupt = Buffer.from(l2);
    corrupt[700] ^= 1; // inside the content of etc/.wh.hostname's neighbour headers -> still parses or not
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(l2)), corrupt);
    await rejectsWith(loadOciSource(`oci:${layout.dir}`, { hash: 'sha256' }), 'layer 2', sha256(l2), 'does not match its digest');
    // same size, content that parses fine: caught by the digest at the end
    const other = new TarBuilder().file('etc/.wh.hostname', '').file('etc/motd', 'ho').dir('usr/', { mode: 0o750, mtime: 99 }).build();
    assert.equal(other.length, l2.length);
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(l2)), other);
    await rejectsWith(loadOciSource(`oci:${layout.dir}`, { hash: 'sha256' }), l2digest, 'does not match its digest');
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(l2)), l2);
    // a missing blob
    const { rmSync } = await import('node:fs');
    rmSync(path.join(layout.dir, 'blobs/sha256', sha256(l2)));
    await rejectsWith(loadOciSource(`oci:${layout.dir}`, { hash: 'sha256' }), 'layer 2', 'is missing');
  } finally {
    cleanup();
  }
});

test('image index with platforms; parse_oci_layout_ref', async () => {
  assert.deepEqual(splitLayoutRef('/a/b:tag'), ['/a/b', 'tag']);
  assert.deepEqual(splitLayoutRef('/a/b'), ['/a/b', undefined]);
  assert.deepEqual(splitLayoutRef('./x:y/z'), ['./x:y/z', undefined]);
  const { dir, cleanup } = tempDir('cfs-oci-');
  try {
    const l1 = L1();
    const layout = writeLayout(path.join(dir, 'img'), [{ blob: l1, plain: l1, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
    const { readFileSync } = await import('node:fs');
    const idx = JSON.parse(readFileSync(path.join(layout.dir, 'index.json'), 'utf8'));
    const man = idx.manifests[0];
    const list = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { ...man, annotations: undefined, platform: { os: 'linux', architecture: 's390x' }, digest: 'sha256:' + '0'.repeat(64) },
          { ...man, annotations: undefined, platform: { os: 'linux', architecture: 'amd64' } },
          { ...man, annotations: undefined, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
      }),
    );
    writeFileSync(path.join(layout.dir, 'blobs/sha256', sha256(list)), list);
    writeFileSync(
      path.join(layout.dir, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${sha256(list)}`, size: list.length }] }),
    );
    const expected = await dump([l1]);
    for (const p of ['linux/amd64', 'linux/arm64', 'linux/arm64/v8']) {
      const fs = await loadOciSource(`oci:${layout.dir}`, { hash: 'sha256', platform: p });
      assert.equal(writeDumpfile(fs).toString('latin1'), expected);
    }
    await rejectsWith(loadOciSource(`oci:${layout.dir}`, { hash: 'sha256', platform: 'linux/s390x' }), 'blob', 'missing');
    await rejectsWith(loadOciSource(`oci:${layout.dir}`, { hash: 'sha256', platform: 'linux/riscv64' }), 'no image for platform linux/riscv64', 'linux/amd64');
  } finally {
    cleanup();
  }
});

test('oci:DIR:REF with refs holding \':\' and \'/\' (BuildKit names its image docker.io/library/base:latest)', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-');
  try {
    const l1 = L1();
    const ref = 'docker.io/library/base:latest';
    const layout = writeLayout(path.join(dir, 'img'), [{ blob: l1, plain: l1, mediaType: 'application/vnd.oci.image.layer.v1.tar' }], ref);
    const expected = await dump([l1]);
    // composefs-rs's split at the last ':' cannot name it
    assert.deepEqual(splitLayoutRef(`${layout.dir}:${ref}`), [`${layout.dir}:docker.io/library/base`, 'latest']);
    assert.deepEqual(await resolveLayoutRef(`${layout.dir}:${ref}`), [layout.dir, ref]);
    const fs = await loadOciSource(`oci:${layout.dir}:${ref}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs).toString('latin1'), expected);
    // a layout whose own path holds ':' (the whole remainder is a layout: no REF), and with a REF
    const colon = writeLayout(path.join(dir, 'a:b'), [{ blob: l1, plain: l1, mediaType: 'application/vnd.oci.image.layer.v1.tar' }], 'x:y');
    assert.deepEqual(await resolveLayoutRef(colon.dir), [colon.dir, undefined]);
    assert.deepEqual(await resolveLayoutRef(`${colon.dir}:x:y`), [colon.dir, 'x:y']);
    assert.equal(writeDumpfile(await loadOciSource(`oci:${colon.dir}:x:y`, { hash: 'sha256' })).toString('latin1'), expected);
    // a plain tag, and no layout anywhere: composefs-rs's split, so the error names its DIR
    assert.deepEqual(await resolveLayoutRef(`${layout.dir}:latest`), [layout.dir, 'latest']);
    assert.deepEqual(await resolveLayoutRef(`${dir}/none:tag`), [`${dir}/none`, 'tag']);
    await rejectsWith(loadOciSource(`oci:${layout.dir}:docker.io/library/other:latest`, { hash: 'sha256' }), 'no image named "docker.io/library/other:latest"', ref);
    // the CLI, as the BuildKit recipe names it
    const r = runCfs(['compute-id', `oci:${layout.dir}:${ref}`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), runCfs(['compute-id', `layers:${path.join(layout.dir, 'blobs/sha256', sha256(l1))}`]).stdout.toString());
  } finally {
    cleanup();
  }
});
