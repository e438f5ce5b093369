/**
 * Writes the seed corpus fuzz/corpus/<target>/ (committed; rerun after changing it:
 * `npm run build && node build/fuzz/seeds.js`). Seeds are small real inputs: tars made with
 * test/tar-builder.ts, gzip/zstd frames (zstd by the Debian `zstd` tool, as the seeds are
 * committed, the tool is not needed afterwards), OCI archives with correct digests, and golden
 * dumpfiles and images from test/vectors/golden.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { paxRecord, TarBuilder } from '../test/tar-builder.js';
import { CORPUS_DIR, ROOT } from './engine.js';
import { LAYER_SEP } from './targets/tar.js';

const GOLDEN = path.join(ROOT, 'test/vectors/golden');
const out = new Map<string, Map<string, Buffer>>();
const put = (target: string, name: string, data: Buffer): void => {
  if (!out.has(target)) out.set(target, new Map());
  out.get(target)!.set(name, data);
};
const zstd = (b: Buffer, ...flags: string[]): Buffer => execFileSync('zstd', ['-q', '-c', ...flags], { input: b });
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// --- tar layers
const basic = new TarBuilder()
  .dir('usr/', { mtime: 1700000000 })
  .dir('usr/bin/')
  .file('usr/bin/sh', 'small', { mode: 0o755, uid: 0, gid: 0 })
  .dir('usr/lib/')
  .file('usr/lib/big', 'x'.repeat(100), { mtime: 1234567890 })
  .symlink('usr/bin/ln', 'sh')
  .hardlink('usr/bin/hard', 'usr/bin/sh')
  .dir('dev/')
  .dir('run/')
  .entry('dev/null', '', { type: '3', mode: 0o666, devmajor: 1, devminor: 3 })
  .entry('dev/sda', '', { type: '4', mode: 0o660, devmajor: 8, devminor: 0 })
  .entry('run/fifo', '', { type: '6', mode: 0o600 })
  .dir('etc/', { mode: 0o1777 })
  .build();
put('tar', 'basic.tar', basic);
put(
  'tar',
  'pax.tar',
  new TarBuilder()
    .dir('usr/')
    .file('usr/long-' + 'n'.repeat(120), 'pax named', {
      pax: [
        ['path', 'usr/long-' + 'n'.repeat(120)],
        ['mtime', '1700000000.123456789'],
        ['SCHILY.xattr.user.note', 'v'],
        ['SCHILY.xattr.security.capability', Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
        ['uid', '100000'],
        ['size', '9'],
      ],
    })
    .symlink('usr/sym', 'x', { pax: [['linkpath', 't'.repeat(150)]] })
    .build(),
);
put(
  'tar',
  'gnu.tar',
  new TarBuilder()
    .dir('usr/', { format: 'gnu' })
    .file('usr/' + 'g'.repeat(110), 'gnu long name', { gnuLongName: 'usr/' + 'g'.repeat(110) })
    .symlink('usr/l', 'x', { gnuLongLink: 'L'.repeat(130), format: 'gnu' })
    .file('usr/big-uid', 'b256', { format: 'gnu', raw: [[108, Buffer.from([0x80, 0, 0, 0, 0, 0, 0x10, 0])]] })
    .file('usr/v7', 'old', { format: 'v7' })
    .build(),
);
const lower = new TarBuilder().dir('usr/').file('usr/a', 'a').dir('usr/d/').file('usr/d/x', 'x').file('usr/gone', 'g').build();
const upper = new TarBuilder().dir('usr/').file('usr/.wh.gone', '').dir('usr/d/').file('usr/d/.wh..wh..opq', '').file('usr/d/y', 'y').hardlink('usr/h', 'usr/a').build();
put('tar', 'whiteouts.layers', Buffer.concat([lower, LAYER_SEP, upper]));
put('tar', 'gzip.tar.gz', gzipSync(basic));
put('tar', 'zstd.tar.zst', zstd(basic));
put('tar', 'pax-global.tar', new TarBuilder().raw(
  Buffer.concat([
    new TarBuilder().entry('g', Buffer.concat([paxRecord('comment', 'global')]), { type: 'g' }).build(0),
  ]),
).dir('usr/').build());

// --- decompression framing
const text = Buffer.from('composefs '.repeat(50));
put('decompress', 'plain', text.subarray(0, 64));
put('decompress', 'gzip', gzipSync(text));
put('decompress', 'gzip-multi', Buffer.concat([gzipSync(text.subarray(0, 10)), gzipSync(text.subarray(10, 40))]));
put('decompress', 'zstd', zstd(text));
put('decompress', 'zstd-check', zstd(text, '--check'));
put('decompress', 'zstd-multi', Buffer.concat([zstd(text.subarray(0, 20)), zstd(text.subarray(20))]));
put('decompress', 'zstd-skippable', Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]), zstd(text)]));
put('decompress', 'xz', execFileSync('xz', ['-c'], { input: text }));
/** A zstd frame of RLE blocks (128 KiB each from 4 bytes): the expansion mutations can grow. */
function zstdRle(blocks: number): Buffer {
  const parts = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38])]; // no content size, 128 KiB window
  for (let i = 0; i < blocks; i++) {
    const h = (131072 << 3) | (1 << 1) | (i === blocks - 1 ? 1 : 0);
    parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0x41]));
  }
  return Buffer.concat(parts);
}
put('decompress', 'zstd-rle', zstdRle(4));

// --- OCI archives
function blobs(...xs: Buffer[]): [string, Buffer][] {
  return xs.map((b) => [`blobs/sha256/${sha(b)}`, b]);
}
function archive(members: [string, Buffer][]): Buffer {
  const t = new TarBuilder();
  for (const [n, b] of members) t.file(n, b);
  return t.build();
}
const layer = new TarBuilder().dir('usr/').file('usr/hello', 'hello').symlink('usr/link', 'hello').build();
const layerGz = gzipSync(layer);
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }));
const desc = (mediaType: string, b: Buffer, extra: object = {}): object => ({ mediaType, digest: `sha256:${sha(b)}`, size: b.length, ...extra });
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: desc('application/vnd.oci.image.config.v1+json', config),
    layers: [desc('application/vnd.oci.image.layer.v1.tar+gzip', layerGz)],
  }),
);
const layoutFile = Buffer.from('{"imageLayoutVersion":"1.0.0"}');
const index = (m: object[]): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: m }));
put(
  'oci',
  'oci-archive.tar',
  archive([
    ['oci-layout', layoutFile],
    ['index.json', index([desc('application/vnd.oci.image.manifest.v1+json', manifest, { annotations: { 'org.opencontainers.image.ref.name': 'latest' } })])],
    ...blobs(manifest, config, layerGz),
  ]),
);
const inner = index([
  desc('application/vnd.oci.image.manifest.v1+json', manifest, { platform: { os: 'linux', architecture: 'amd64' } }),
  desc('application/vnd.oci.image.manifest.v1+json', manifest, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }),
]);
put(
  'oci',
  'oci-archive-index.tar',
  archive([
    ['oci-layout', layoutFile],
    ['index.json', index([desc('application/vnd.oci.image.index.v1+json', inner)])],
    ...blobs(inner, manifest, config, layerGz),
  ]),
);
put(
  'oci',
  'docker-archive.tar',
  archive([
    ['manifest.json', Buffer.from(JSON.stringify([{ Config: 'config.json', RepoTags: ['example.com/img:1'], Layers: ['abc/layer.tar'] }]))],
    ['config.json', config],
    ['abc/layer.tar', layer],
  ]),
);
put(
  'oci',
  'docker-archive-digests.tar',
  archive([
    ['manifest.json', Buffer.from(JSON.stringify([{ Config: `${sha(config)}.json`, RepoTags: null, Layers: [`blobs/sha256/${sha(layer)}`] }]))],
    [`${sha(config)}.json`, config],
    ...blobs(layer),
  ]),
);

// --- dumpfiles and images from the golden vectors (small ones, every feature the format has)
for (const n of ['empty', 'simple', 'filetypes', 'hardlinks', 'special', 'acl', 'xattr_prefixes', 'whiteouts', 'mtimes_edge', 'stub_names', 'bigids', 'threshold_64_65', 'chunks_1024_xattr', 'nested_hardlink_xattr', 'div_whiteout_user_opaque', 'simple-sha512'])
  put('dumpfile', `${n}.dump`, readFileSync(path.join(GOLDEN, `${n}.dump`)));
for (const n of ['filetypes', 'hardlinks', 'special', 'acl', 'xattr_prefixes', 'whiteouts', 'mtimes_edge', 'stub_names', 'chunks_1024_xattr', 'nested_hardlink_xattr'])
  put('erofs', `${n}.v2.img`, readFileSync(path.join(GOLDEN, `${n}.v2.img`)));
for (const n of ['special.v0', 'whiteouts.v1', 'xattr_prefixes.v1', 'hardlinks.v0'])
  put('erofs', `${n}.img`, readFileSync(path.join(GOLDEN, `${n}.img`)));

for (const [t, files] of out) {
  const dir = path.join(CORPUS_DIR, t);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [n, b] of files) writeFileSync(path.join(dir, n), b);
  process.stdout.write(`${t}: ${files.size} seeds, ${[...files.values()].reduce((s, b) => s + b.length, 0)} bytes\n`);
}
