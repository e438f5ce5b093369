/**
 * Hostile and unusual OCI inputs: decompression bombs (memory asserted in a child process),
 * every frame/member of zstd and gzip layers (zstd:chunked, skippable frames, concatenated
 * members), planted symlinks in layouts, oversized and mis-shaped JSON, errors that must name
 * the file, layer, entry or field, and progress for layer sources.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { type LayerProgress, loadOciSource } from '../../src/source/oci/image.js';
import { listSome } from '../../src/source/oci/manifest.js';
import { loadRawTree, type LoadProgress } from '../../src/source/load.js';
import { buildFromLayers } from '../../src/source/tar/members.js';
import { IN_CI, ROOT, assertCleanError, have, runCfs, tempDir } from '../helpers.js';
import { TarBuilder, sha256hex, writeOciLayout, zstdRleFrame, zstdSkippable } from '../tar-builder.js';

async function* chunked(b: Buffer, chunk: number): AsyncGenerator<Buffer> {
  if (chunk <= 0) {
    yield b;
    return;
  }
  for (let i = 0; i < b.length; i += chunk) yield b.subarray(i, i + chunk);
}

async function dumpOf(layers: Buffer[], chunk = 0): Promise<string> {
  const fs = await buildFromLayers(
    layers.map((l) => () => chunked(l, chunk)),
    { hash: 'sha256' },
  );
  return writeDumpfile(fs).toString('latin1');
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Error);
    assert.doesNotMatch(e.message, /\n\s+at /, 'no stack trace in the message');
    return e;
  }
  assert.fail('expected an error');
}

function requireTool(t: { skip: (m: string) => void }, tool: string): boolean {
  if (have(tool)) return true;
  if (IN_CI) throw new Error(`${tool} is needed under CI (apt-get install ${tool})`);
  t.skip(`${tool} is not installed`);
  return false;
}

/** A tar of a few members, enough content to span several zstd blocks and gzip members. */
function sampleTar(): Buffer {
  const rnd = Buffer.alloc(300_000);
  for (let i = 0, x = 12345; i < rnd.length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    rnd[i] = x >> 16;
  }
  return new TarBuilder()
    .dir('usr/')
    .dir('usr/bin/')
    .file('usr/bin/rnd', rnd)
    .file('usr/bin/text', 'hello\n'.repeat(20_000))
    .file('usr/small', 'x')
    .symlink('usr/link', 'bin/rnd')
    .build();
}

function zstdCli(input: Buffer, ...args: string[]): Buffer {
  return execFileSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 1 << 30 });
}

// ---------------------------------------------------------------------------------------------
// Decompression bombs: peak memory measured in a child process

/** Loads `file` as a `layers:` source in a fresh node; returns its peak RSS (bytes) and outcome. */
function loadInChild(file: string): { rss: number; ok: boolean; message: string } {
  const mod = pathToFileURL(path.join(ROOT, 'build/src/source/oci/image.js')).href;
  const script = `
    const { loadOciSource } = await import(${JSON.stringify(mod)});
    let ok = true, message = '';
    try { await loadOciSource(${JSON.stringify(`layers:${file}`)}, { hash: 'sha256', jobs: 1 }); }
    catch (e) { ok = false; message = e.message; }
    process.stdout.write(JSON.stringify({ rss: process.resourceUsage().maxRSS * 1024, ok, message }));
  `;
  // A module file, not `-e`: hashing worker threads inherit the parent's execArgv.
  const scriptFile = path.join(path.dirname(file), 'load-in-child.mjs');
  writeFileSync(scriptFile, script);
  const r = spawnSync(process.execPath, [scriptFile], { encoding: 'utf8', maxBuffer: 1 << 24 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const RSS_LIMIT = 320 << 20;

test('zstd bomb: 1 GiB of RLE blocks in 32 KiB decodes in bounded memory', () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    // 8192 RLE blocks of 128 KiB zeros: a tar that is all end-of-archive blocks, drained to the end.
    const f = path.join(dir, 'bomb.zst');
    writeFileSync(f, zstdRleFrame(8192));
    const r = loadInChild(f);
    assert.ok(r.ok, r.message);
    assert.ok(r.rss < RSS_LIMIT, `peak RSS ${r.rss >> 20} MiB for a 1 GiB zstd bomb (limit ${RSS_LIMIT >> 20} MiB)`);
  } finally {
    cleanup();
  }
});

test('zstd bomb from the zstd CLI: a 512 MiB member of zeros, bounded memory, same digest as the plain tar', (t) => {
  if (!requireTool(t, 'zstd')) return;
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const size = 512 << 20;
    const tarFile = path.join(dir, 'big.tar');
    // header, then the zeros as a hole: nothing of this size is held in memory here
    const head = new TarBuilder().dir('usr/').build(0);
    const t1 = new TarBuilder().entry('usr/zeros', Buffer.alloc(0), { type: '0', mode: 0o644, size }).build(0);
    writeFileSync(tarFile, Buffer.concat([head, t1]));
    execFileSync('truncate', ['-s', String(head.length + t1.length + size + 1024), tarFile]);
    execFileSync('zstd', ['-q', '-1', '-f', tarFile, '-o', path.join(dir, 'big.tar.zst')]);
    const r = loadInChild(path.join(dir, 'big.tar.zst'));
    assert.ok(r.ok, r.message);
    assert.ok(r.rss < RSS_LIMIT, `peak RSS ${r.rss >> 20} MiB for 512 MiB of zstd-compressed zeros (limit ${RSS_LIMIT >> 20} MiB)`);
    const viaZstd = runCfs(['create-dumpfile', '--hash', 'sha256', `layers:${path.join(dir, 'big.tar.zst')}`]);
    const viaPlain = runCfs(['create-dumpfile', '--hash', 'sha256', `layers:${tarFile}`]);
    assert.equal(viaZstd.status, 0, viaZstd.stderr);
    assert.equal(viaZstd.stdout.toString(), viaPlain.stdout.toString());
    assert.match(viaZstd.stdout.toString(), /\n\/usr\/zeros 536870912 100644 /);
  } finally {
    cleanup();
  }
});

/** Decodes `file` with `decompress` alone in a fresh node; returns its peak RSS (bytes) and the size. */
function decodeInChild(file: string): { rss: number; size: number } {
  const mod = pathToFileURL(path.join(ROOT, 'build/src/source/decompress.js')).href;
  const scriptFile = path.join(path.dirname(file), 'decode-in-child.mjs');
  writeFileSync(
    scriptFile,
    `import { createReadStream } from 'node:fs';
     const { decompress } = await import(${JSON.stringify(mod)});
     let size = 0;
     for await (const c of decompress(createReadStream(${JSON.stringify(file)}, { highWaterMark: 1 << 20 }), 'x')) size += c.length;
     process.stdout.write(JSON.stringify({ rss: process.resourceUsage().maxRSS * 1024, size }));`,
  );
  const r = spawnSync(process.execPath, [scriptFile], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('zstd of incompressible data: the input is not retained while decoding (fzstd 0.1.1 carry-over list)', (t) => {
  if (!requireTool(t, 'zstd')) return;
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const f = path.join(dir, 'rnd.zst');
    const n = 160 << 20;
    execFileSync('sh', ['-c', `head -c ${n} /dev/urandom | zstd -q -1 -o "$1"`, 'sh', f]);
    const r = decodeInChild(f);
    assert.equal(r.size, n);
    // without clearing fzstd's list of (empty) views of every piece, all 160 MiB stay referenced
    assert.ok(r.rss < 200 << 20, `peak RSS ${r.rss >> 20} MiB decoding 160 MiB of incompressible zstd`);
  } finally {
    cleanup();
  }
});

test('zstd frames asking for a window beyond libzstd\'s default limit are refused, naming the layer', async () => {
  // windowLog 31: fzstd would allocate (and on every block move) a 2 GiB window
  const err = await rejection(dumpOf([zstdRleFrame(4, 31)]));
  assert.match(err.message, /^layer 1: zstd decompression failed: frame at compressed offset 0 needs a 2147483648-byte window \(limit 134217728/);
  // 2^27 itself is fine
  await dumpOf([zstdRleFrame(1, 27)]);
});

test('zstd: truncated and corrupt streams fail naming the layer and the offset', async () => {
  const z = zstdRleFrame(3);
  assert.match((await rejection(dumpOf([z.subarray(0, z.length - 2)]))).message, /^layer 1: zstd decompression failed: unexpected end of input/);
  const bad = Buffer.from(z);
  bad[6] |= 6; // block type 3 (reserved)
  assert.match((await rejection(dumpOf([bad]))).message, /^layer 1: zstd decompression failed: reserved block type at compressed offset 6/);
  const trailing = Buffer.concat([z, Buffer.from('garbage!')]);
  assert.match((await rejection(dumpOf([trailing]))).message, /layer 1: zstd decompression failed: no zstd frame at compressed offset 18/);
});

// ---------------------------------------------------------------------------------------------
// Every frame and member (composefs-rs PR #381, v0.9.2)

test('zstd: several frames, skippable frames first/between/last, any input chunking; gzip: concatenated members', async (t) => {
  if (!requireTool(t, 'zstd')) return;
  const plain = sampleTar();
  const expected = await dumpOf([plain]);
  const cut = [0, 100_000, 200_000, 250_000, plain.length];
  const frames = cut.slice(1).map((end, i) => zstdCli(plain.subarray(cut[i], end), '--check'));
  const multi = Buffer.concat(frames);
  const toc = zstdSkippable(Buffer.from('a table of contents'), 1);
  const cases: [string, Buffer][] = [
    ['one frame', zstdCli(plain)],
    ['four frames', multi],
    ['skippable frame first', Buffer.concat([zstdSkippable(Buffer.alloc(40, 7)), multi])],
    ['skippable frames between and last (zstd:chunked shape)', Buffer.concat([frames[0], toc, frames[1], frames[2], frames[3], toc, zstdSkippable(Buffer.alloc(0), 15)])],
    ['an empty skippable frame first', Buffer.concat([zstdSkippable(Buffer.alloc(0), 3), zstdCli(plain)])],
    ['gzip, four members', Buffer.concat(cut.slice(1).map((end, i) => gzipSync(plain.subarray(cut[i], end))))],
  ];
  for (const [what, blob] of cases) {
    for (const chunk of [0, 1, 7, 4096]) {
      if (chunk === 1 && blob.length > 400_000) continue;
      assert.equal(await dumpOf([blob], chunk), expected, `${what}, chunks of ${chunk || 'all'}`);
    }
  }
});

test('a layer blob starting with a skippable frame, in an OCI layout with digests and diff_ids', async (t) => {
  if (!requireTool(t, 'zstd')) return;
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = sampleTar();
    const blob = Buffer.concat([zstdSkippable(Buffer.from('metadata')), zstdCli(plain)]);
    writeOciLayout(path.join(dir, 'img'), [{ blob, plain, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }]);
    const fs = await loadOciSource(`oci:${path.join(dir, 'img')}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs).toString('latin1'), await dumpOf([plain]));
    // the same bytes as a bare layer (magic sniffing only)
    writeFileSync(path.join(dir, 'l.zst'), blob);
    const fs2 = await loadOciSource(`layers:${path.join(dir, 'l.zst')}`, { hash: 'sha256' });
    assert.equal(writeDumpfile(fs2).toString('latin1'), await dumpOf([plain]));
  } finally {
    cleanup();
  }
});

/**
 * A real image built with buildah (two layers, from scratch: no RUN, no chroot) and pushed as
 * gzip, zstd and zstd:chunked OCI layouts and an (uncompressed) docker-archive: one id for all.
 */
test('real zstd:chunked layers (buildah push, skopeo copy) give the id of the gzip and uncompressed pushes', (t) => {
  const why =
    process.getuid?.() !== 0 ? 'needs root (buildah storage)' : !have('buildah') ? 'buildah is not installed' : !have('skopeo') ? 'skopeo is not installed' : '';
  if (why) {
    if (IN_CI) throw new Error(`cannot run under CI: ${why}`);
    t.skip(why);
    return;
  }
  const { dir, cleanup } = tempDir('cfs-oci-chunked-');
  const root = ['--root', path.join(dir, 'storage'), '--runroot', path.join(dir, 'run'), '--storage-driver', 'vfs'];
  const env = { ...process.env, TMPDIR: dir };
  const run = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { env, encoding: 'utf8' });
    assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const buildah = (...args: string[]): string => run('buildah', [...root, ...args]);
  try {
    const ctx = path.join(dir, 'ctx');
    mkdirSync(path.join(ctx, 'usr/bin'), { recursive: true });
    mkdirSync(path.join(ctx, 'etc'));
    writeFileSync(path.join(ctx, 'etc/motd'), 'hi\n');
    writeFileSync(path.join(ctx, 'usr/bin/rnd'), sampleTar()); // incompressible-ish content over several chunks
    writeFileSync(path.join(ctx, 'usr/bin/seq'), Array.from({ length: 100_000 }, (_, i) => `${i}\n`).join(''));
    const c1 = buildah('from', 'scratch');
    buildah('copy', c1, ctx, '/');
    buildah('commit', '-q', c1, 'one');
    const c2 = buildah('from', 'one');
    writeFileSync(path.join(dir, 'two'), 'two\n');
    buildah('copy', c2, path.join(dir, 'two'), '/etc/two');
    buildah('commit', '-q', c2, 'two');
    const out = (n: string): string => path.join(dir, n);
    buildah('push', '-q', '--compression-format', 'gzip', 'two', `oci:${out('gzip')}:img`);
    buildah('push', '-q', '--compression-format', 'zstd', 'two', `oci:${out('zstd')}:img`);
    buildah('push', '-q', '--compression-format', 'zstd:chunked', 'two', `oci:${out('chunked')}:img`);
    buildah('push', '-q', 'two', `docker-archive:${out('docker.tar')}:localhost/two:latest`);
    run('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd:chunked', `oci:${out('gzip')}:img`, `oci:${out('chunked2')}:img`]);
    // the chunked pushes really are zstd:chunked: zstd layers with the TOC annotations and skippable frames
    for (const n of ['chunked', 'chunked2']) {
      const idx = JSON.parse(readFileSync(path.join(out(n), 'index.json'), 'utf8'));
      const man = JSON.parse(readFileSync(path.join(out(n), 'blobs/sha256', idx.manifests[0].digest.slice(7)), 'utf8'));
      assert.equal(man.layers.length, 2);
      for (const l of man.layers) {
        assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd', n);
        assert.ok(l.annotations?.['io.containers.zstd-chunked.manifest-position'], `${n}: zstd:chunked annotations`);
        const b = readFileSync(path.join(out(n), 'blobs/sha256', l.digest.slice(7)));
        let frames = 0;
        let skippable = 0;
        for (let i = 0; i + 4 <= b.length; i++) {
          const m = b.readUInt32LE(i);
          if (m === 0xfd2fb528) frames++;
          if ((m & 0xfffffff0) >>> 0 === 0x184d2a50) skippable++;
        }
        assert.ok(frames >= 2 && skippable >= 1, `${n}: ${frames} frame magics, ${skippable} skippable`);
      }
    }
    const ids = ['gzip', 'zstd', 'chunked', 'chunked2'].map((n) => `oci:${out(n)}:img`).concat(`docker-archive:${out('docker.tar')}`);
    const got = ids.map((s) => {
      const r = runCfs(['compute-id', s]);
      assert.equal(r.status, 0, `${s}: ${r.stderr}`);
      return r.stdout.toString().trim();
    });
    assert.match(got[0], /^[0-9a-f]{128}$/);
    for (let i = 1; i < got.length; i++) assert.equal(got[i], got[0], ids[i]);
  } finally {
    spawnSync('buildah', [...root, 'rm', '--all'], { env, stdio: 'ignore' });
    spawnSync('buildah', [...root, 'rmi', '--all', '--force'], { env, stdio: 'ignore' });
    cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Layout files: regular files inside the layout

test('a layout blob that is a symlink (or FIFO, or under a symlinked directory) is refused without reading it', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = new TarBuilder().dir('usr/').file('usr/a', 'a').build();
    const img = path.join(dir, 'img');
    const { blobs, config } = writeOciLayout(img, [{ blob: plain, plain, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
    const secret = path.join(dir, 'secret');
    writeFileSync(secret, Buffer.alloc(plain.length, 0x53)); // same size as the blob: only a digest would tell
    const layerPath = path.join(img, 'blobs/sha256', blobs[0].slice(7));
    rmSync(layerPath);
    symlinkSync(secret, layerPath);
    let err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /blobs\/sha256\/[0-9a-f]{64} is a symlink; layout files must be regular files/);
    assert.ok(!err.message.includes(sha256hex(readFileSync(secret))), 'the secret file\'s digest must not be printed');
    // config (a JSON blob) and index.json as symlinks
    rmSync(layerPath);
    writeFileSync(layerPath, plain);
    const configPath = path.join(img, 'blobs/sha256', config.slice(7));
    const cfg = readFileSync(configPath);
    rmSync(configPath);
    symlinkSync(secret, configPath);
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /is a symlink/);
    assert.ok(!err.message.includes(sha256hex(readFileSync(secret))));
    rmSync(configPath);
    writeFileSync(configPath, cfg);
    // a FIFO as a blob: refused at once, no blocking open
    rmSync(layerPath);
    mkfifo(layerPath);
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /is not a regular file/);
    rmSync(layerPath);
    writeFileSync(layerPath, plain);
    // blobs/sha256 as a symlink to a directory elsewhere
    const elsewhere = path.join(dir, 'elsewhere');
    execFileSync('cp', ['-a', path.join(img, 'blobs/sha256'), elsewhere]);
    rmSync(path.join(img, 'blobs/sha256'), { recursive: true });
    symlinkSync(elsewhere, path.join(img, 'blobs/sha256'));
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /blobs\/sha256 is not a directory \(symlinks are not followed\)/);
  } finally {
    cleanup();
  }
});

function mkfifo(p: string): void {
  execFileSync('mkfifo', [p]);
}

// ---------------------------------------------------------------------------------------------
// JSON: size caps and shapes

test('JSON documents over the size caps are refused before they are read, naming the file and the limit', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = new TarBuilder().dir('usr/').build();
    // docker-archive config.json of 5 MiB (valid JSON: without a cap it would be read whole)
    const cfg = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [`sha256:${sha256hex(plain)}`] }, pad: 'x'.repeat(5 << 20) }));
    const docker = new TarBuilder()
      .file('config.json', cfg)
      .file('l.tar', plain)
      .file('manifest.json', JSON.stringify([{ Config: 'config.json', RepoTags: null, Layers: ['l.tar'] }]))
      .build();
    writeFileSync(path.join(dir, 'd.tar'), docker);
    let err = await rejection(loadOciSource(`docker-archive:${path.join(dir, 'd.tar')}`, { hash: 'sha256' }));
    assert.match(err.message, /config config\.json is too large \(\d+ bytes; the limit is 4194304 bytes\)/);
    // the same, small: accepted (RepoTags null is what docker writes for untagged images)
    const small = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [`sha256:${sha256hex(plain)}`] } }));
    writeFileSync(
      path.join(dir, 'd2.tar'),
      new TarBuilder().file('config.json', small).file('l.tar', plain).file('manifest.json', JSON.stringify([{ Config: 'config.json', RepoTags: null, Layers: ['l.tar'] }])).build(),
    );
    await loadOciSource(`docker-archive:${path.join(dir, 'd2.tar')}`, { hash: 'sha256' });

    // OCI: a manifest descriptor claiming 5 MiB, and index.json over 16 MiB
    const img = path.join(dir, 'img');
    writeOciLayout(img, [{ blob: plain, plain, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
    const index = JSON.parse(readFileSync(path.join(img, 'index.json'), 'utf8'));
    index.manifests[0].size = 5 << 20;
    writeFileSync(path.join(img, 'index.json'), JSON.stringify(index));
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /manifest blob sha256:[0-9a-f]{64} is too large \(5242880 bytes; the limit is 4194304 bytes\)/);
    writeFileSync(path.join(img, 'index.json'), JSON.stringify({ ...index, pad: 'x'.repeat(17 << 20) }));
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /index\.json is too large \(\d+ bytes; the limit is 16777216 bytes\)/);
  } finally {
    cleanup();
  }
});

test('mis-shaped JSON: the error names the document and the field', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = new TarBuilder().dir('usr/').build();
    const img = path.join(dir, 'img');
    const { manifest, config } = writeOciLayout(img, [{ blob: plain, plain, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
    const goodIndex = readFileSync(path.join(img, 'index.json'), 'utf8');
    const idx = JSON.parse(goodIndex);
    const d0 = idx.manifests[0];
    const cases: [unknown, RegExp][] = [
      [null, /index\.json: the document is not a JSON object/],
      [[], /index\.json: the document is not a JSON object/],
      [{ manifests: null }, /index\.json: manifests is not a list/],
      [{ manifests: [5] }, /index\.json: manifests\[0\] is not an object/],
      [{ manifests: [{ ...d0, digest: 'sha256:../../etc' }] }, /index\.json: manifests\[0\]\.digest is not a supported digest/],
      [{ manifests: [{ ...d0, size: -1 }] }, /index\.json: manifests\[0\]\.size is not a non-negative integer/],
      [{ manifests: [{ ...d0, size: '12' }] }, /index\.json: manifests\[0\]\.size is not a non-negative integer/],
      [{ manifests: [{ ...d0, mediaType: 7 }] }, /index\.json: manifests\[0\]\.mediaType is not a string/],
      [{ manifests: [{ ...d0, annotations: [] }] }, /index\.json: manifests\[0\]\.annotations is not an object/],
      [{ manifests: [{ ...d0, annotations: { 'org.opencontainers.image.ref.name': 1 } }] }, /manifests\[0\]\.annotations\["org\.opencontainers\.image\.ref\.name"\] is not a string/],
      [{ manifests: [{ ...d0, platform: 'linux' }] }, /index\.json: manifests\[0\]\.platform is not an object/],
      [{ manifests: [{ ...d0, platform: { os: 'linux', architecture: null } }] }, /manifests\[0\]\.platform\.architecture is not a string/],
    ];
    for (const [doc, re] of cases) {
      writeFileSync(path.join(img, 'index.json'), JSON.stringify(doc));
      const err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
      assert.match(err.message, re, JSON.stringify(doc));
      assert.ok(err.message.startsWith(`OCI layout ${img}: index.json`), err.message);
    }
    writeFileSync(path.join(img, 'index.json'), goodIndex);

    // a manifest and a config with wrong shapes (digests kept consistent)
    const rewrite = (doc: unknown): void => {
      const b = Buffer.from(JSON.stringify(doc));
      writeFileSync(path.join(img, 'blobs/sha256', sha256hex(b)), b);
      writeFileSync(path.join(img, 'index.json'), JSON.stringify({ manifests: [{ ...d0, digest: `sha256:${sha256hex(b)}`, size: b.length }] }));
    };
    const man = JSON.parse(readFileSync(path.join(img, 'blobs/sha256', manifest.slice(7)), 'utf8'));
    for (const [doc, re] of [
      [null, /manifest sha256:[0-9a-f]{64}: the document is not a JSON object/],
      [{ ...man, config: null }, /manifest sha256:[0-9a-f]{64}: config is not an object/],
      [{ ...man, layers: {} }, /manifest sha256:[0-9a-f]{64}: layers is not a list/],
      [{ ...man, layers: [{ ...man.layers[0], digest: 'md5:00' }] }, /manifest sha256:[0-9a-f]{64}: layers\[0\]\.digest is not a supported digest/],
      [{ ...man, mediaType: ['x'] }, /manifest sha256:[0-9a-f]{64}: \.mediaType is not a string|mediaType is not a string/],
    ] as [unknown, RegExp][]) {
      rewrite(doc);
      assert.match((await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }))).message, re, JSON.stringify(doc).slice(0, 100));
    }
    const putConfig = (doc: unknown): void => {
      const b = Buffer.from(JSON.stringify(doc));
      writeFileSync(path.join(img, 'blobs/sha256', sha256hex(b)), b);
      rewrite({ ...man, config: { ...man.config, digest: `sha256:${sha256hex(b)}`, size: b.length } });
    };
    for (const [doc, re] of [
      [null, /config sha256:[0-9a-f]{64}: the document is not a JSON object/],
      [{ rootfs: null }, /config sha256:[0-9a-f]{64}: rootfs is not an object/],
      [{ rootfs: { diff_ids: 'x' } }, /config sha256:[0-9a-f]{64}: rootfs\.diff_ids is not a list/],
      [{ rootfs: { diff_ids: [3] } }, /config sha256:[0-9a-f]{64}: rootfs\.diff_ids\[0\] is not a supported digest \(3\)/],
    ] as [unknown, RegExp][]) {
      putConfig(doc);
      assert.match((await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }))).message, re);
    }
    void config;

    // docker-archive manifest.json
    for (const [doc, re] of [
      [null, /manifest\.json: the document is not a list/],
      [[], /manifest\.json lists no images/],
      [[null], /manifest\.json: \[0\] is not an object/],
      [[{ Config: 5, Layers: [] }], /manifest\.json: \[0\]\.Config is not a string/],
      [[{ Config: 'c.json', Layers: [1] }], /manifest\.json: \[0\]\.Layers\[0\] is not a string/],
      [[{ Config: 'c.json' }], /manifest\.json: \[0\]\.Layers is missing/],
      [[{ Config: 'c.json', Layers: [], RepoTags: 'x' }], /manifest\.json: \[0\]\.RepoTags is not a list/],
    ] as [unknown, RegExp][]) {
      writeFileSync(path.join(dir, 'd.tar'), new TarBuilder().file('manifest.json', JSON.stringify(doc)).build());
      const err = await rejection(loadOciSource(`docker-archive:${path.join(dir, 'd.tar')}`, { hash: 'sha256' }));
      assert.match(err.message, re);
      assert.ok(err.message.startsWith(`docker-archive ${path.join(dir, 'd.tar')}: manifest.json`), err.message);
    }
  } finally {
    cleanup();
  }
});

test('an index of 60,000 images: errors list a few names and the count, on one short line', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = new TarBuilder().dir('usr/').build();
    const img = path.join(dir, 'img');
    writeOciLayout(img, [{ blob: plain, plain, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
    const d0 = JSON.parse(readFileSync(path.join(img, 'index.json'), 'utf8')).manifests[0];
    const n = 60_000;
    const manifests = Array.from({ length: n }, (_, i) => ({ ...d0, annotations: { 'org.opencontainers.image.ref.name': `image-${i}` } }));
    writeFileSync(path.join(img, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
    let err = await rejection(loadOciSource(`oci:${img}:nope`, { hash: 'sha256' }));
    assert.match(err.message, /no image named "nope" \(available: image-0, image-1, .*, … \(60000 in all\)\)$/);
    assert.ok(err.message.length < 400, `${err.message.length} characters`);
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256' }));
    assert.match(err.message, /index\.json lists 60000 images; choose one with :REF \(image-0, .*\(60000 in all\)\)$/);
    assert.ok(err.message.length < 400, `${err.message.length} characters`);
    // platforms: distinct ones, a few
    const plats = Array.from({ length: n }, (_, i) => ({ ...d0, annotations: undefined, platform: { os: 'linux', architecture: `arch${i}` } }));
    writeFileSync(path.join(img, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: plats }));
    err = await rejection(loadOciSource(`oci:${img}`, { hash: 'sha256', platform: 'linux/none' }));
    assert.match(err.message, /no image for platform linux\/none \(available: linux\/arch0, .*\(60000 in all\)\)$/);
    assert.ok(err.message.length < 400, `${err.message.length} characters`);
    assert.equal(listSome([]), 'none');
    assert.equal(listSome(['a', 'b']), 'a, b');
    assert.equal(listSome(['1', '2', '3', '4'], 2), '1, 2, … (4 in all)');
  } finally {
    cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Errors naming the entry or the path

test('a PAX mtime cut inside a UTF-8 character names the layer and the entry', async () => {
  // 8 digits then 'é' (2 bytes): composefs-rs slices the fraction at 9 bytes, inside the character
  const tar = new TarBuilder().dir('usr/').file('usr/f', 'x', { pax: [['mtime', '1.12345678\u00e9']] }).build();
  const err = await rejection(dumpOf([tar]));
  assert.match(err.message, /^layer 1, tar entry "usr\/f": invalid PAX mtime value/);
});

test('dumpfile:DIR names the path and says it is a directory', () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    assertCleanError(runCfs(['compute-id', `dumpfile:${dir}`]), new RegExp(`^cfs: dumpfile ${dir} is a directory, not a dumpfile\\n`));
  } finally {
    cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Progress

test('--progress reports layer sources: layer, bytes read of the blob, entries', async () => {
  const { dir, cleanup } = tempDir('cfs-oci-hostile-');
  try {
    const plain = sampleTar();
    const gz = gzipSync(plain);
    writeFileSync(path.join(dir, 'a.tar.gz'), gz);
    writeFileSync(path.join(dir, 'b.tar'), new TarBuilder().file('usr/b', 'b').build());
    const spec = `layers:${path.join(dir, 'a.tar.gz')},${path.join(dir, 'b.tar')}`;
    // in-process: the counters the CLI renders
    const p: LayerProgress = { layer: 0, layers: 0, label: '', size: 0, read: () => 0, entries: 0 };
    await loadOciSource(spec, { hash: 'sha256', progress: p });
    assert.equal(p.layers, 2);
    assert.equal(p.layer, 2);
    assert.equal(p.entries, 7);
    assert.equal(p.read(), p.size);
    // the library contract: snapshots from the loader's timer, the first before any layer, the
    // last (`done`) once loading has ended
    const snaps: LoadProgress[] = [];
    await loadRawTree({ kind: 'layers', spec }, { hash: 'sha256', jobs: 1, onProgress: (s) => snaps.push(s) });
    assert.deepEqual(snaps[0], { stage: 'layers', spec, layer: 0, layers: 0, label: '', size: 0, read: 0, entries: 0 });
    const last = snaps[snaps.length - 1];
    assert.deepEqual(last, { stage: 'layers', spec, layer: 2, layers: 2, label: `layer 2 (${path.join(dir, 'b.tar')})`, size: p.size, read: p.size, entries: 7, done: true });
    assert.equal(snaps.filter((x) => x.done).length, 1);
    // the CLI: stderr gets the state (at least the final one: stderr is not a TTY here)
    const r = runCfs(['compute-id', '--progress', spec]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^layer 2 \(.*b\.tar\) of 2: 2\.\d kB of 2\.\d kB read \(100%\), 7 entries\n$/);
    const quiet = runCfs(['compute-id', spec]);
    assert.equal(quiet.stderr, '');
    assert.equal(quiet.stdout.toString(), r.stdout.toString());
  } finally {
    cleanup();
  }
});
