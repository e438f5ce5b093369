/**
 * Digests of a directory source, whichever way a file is hashed, against `fsverity digest`:
 *  - with its directory, on the thread pool (single-link files of 65 bytes .. 256 KiB);
 *  - as a job of its own on the thread pool (larger files, and files with several links);
 *  - by the worker pool (with --repo, which copies while hashing, or without native hashing).
 * Every path must give the same dumpfile and every external digest must equal the oracle's.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, linkSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseDumpfile } from '../../../src/dumpfile/parse.js';
import { fsverityDigest, nativeHash } from '../../../src/fsverity/fsverity.js';
import { traverse, type HashAlg } from '../../../src/tree/tree.js';
import { CLI, IN_CI, have, tempDir } from '../../helpers.js';

/** Deterministic, non-repeating content. */
function content(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const SIZES = [65, 4095, 4096, 4097, 65536, 256 * 1024, 256 * 1024 + 1, 1 << 20, 3 * (1 << 20) + 17];

function makeTree(root: string): void {
  mkdirSync(path.join(root, 'usr/a/b'), { recursive: true });
  SIZES.forEach((s, i) => writeFileSync(path.join(root, 'usr/a', `f${s}`), content(s, i + 1)));
  // many small files in one directory (the in-directory path, batched)
  for (let i = 0; i < 300; i++) writeFileSync(path.join(root, 'usr/a/b', `s${i}`), content(65 + i * 13, 1000 + i));
  // a hard link pair of a small file (hashed by its own job, once)
  writeFileSync(path.join(root, 'usr/h1'), content(5000, 77));
  linkSync(path.join(root, 'usr/h1'), path.join(root, 'usr/h2'));
  // a sparse file: holes read as zeros
  const fd = openSync(path.join(root, 'usr/sparse'), 'w');
  writeSync(fd, content(100, 5), 0, 100, 2 << 20);
  ftruncateSync(fd, 5 << 20);
  closeSync(fd);
}

function dumpfileOf(args: string[], env: NodeJS.ProcessEnv = process.env): Buffer {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

test('directory source: every hashing path equals fsverity digest', { timeout: 180_000 }, (t) => {
  if (!have('fsverity')) {
    if (IN_CI) assert.fail('fsverity (Debian package fsverity) is required under CI');
    t.skip('fsverity not installed');
    return;
  }
  const { dir, cleanup } = tempDir('cfs-dirhash-');
  try {
    const root = path.join(dir, 'root');
    makeTree(root);
    for (const alg of ['sha256', 'sha512'] as HashAlg[]) {
      const native = dumpfileOf(['--hash', alg, 'create-dumpfile', root]);
      const pool = dumpfileOf(['--hash', alg, 'create-dumpfile', root], { ...process.env, CFS_NO_NATIVE_HASH: '1' });
      assert.ok(native.equals(pool), `${alg}: native and worker-pool hashing give the same dumpfile`);
      const repo = path.join(dir, `repo-${alg}`);
      const r = spawnSync(process.execPath, [CLI, '--hash', alg, 'create-image', '--repo', repo, root, '-o', path.join(dir, `img-${alg}`)]);
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal(
        dumpfileOf(['--hash', alg, 'compute-id', root]).toString(),
        r.stdout.toString().replace(/^sha\d+:/, ''), // create-image --repo prints ALG:HEX, as cfsctl
        `${alg}: compute-id (native) and create-image --repo (worker pool) give the same id`,
      );

      const fs = parseDumpfile(native).fs;
      let checked = 0;
      for (const e of traverse(fs)) {
        if (e.inode.kind !== 'leaf' || e.inode.content.type !== 'external') continue;
        const p = path.join(root, e.path.toString('latin1'));
        const out = execFileSync('fsverity', ['digest', `--hash-alg=${alg}`, '--compact', p], { encoding: 'utf8' }).trim();
        assert.equal(e.inode.content.id.toString('hex'), out, `${alg} ${p}`);
        checked++;
      }
      // SIZES + 300 small + h1/h2 (one inode, two names) + sparse
      assert.equal(checked, SIZES.length + 300 + 2 + 1, `${alg}: external files checked`);
    }
  } finally {
    cleanup();
  }
});

test('directory source: a file whose size differs from what it holds is an error naming it', (t) => {
  // sysfs files report 4096 bytes and hold fewer: the in-directory hash notices the shrink.
  const sys = '/sys/kernel/mm/transparent_hugepage';
  const probe = spawnSync('sh', ['-c', `test -r ${sys}/enabled && stat -c %s ${sys}/enabled`], { encoding: 'utf8' });
  if (probe.status !== 0 || probe.stdout.trim() !== '4096') {
    t.skip(`${sys} not available here`);
    return;
  }
  const r = spawnSync(process.execPath, [CLI, 'compute-id', '--no-propagate-usr-to-root', sys], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /cannot hash \/sys\/kernel\/mm\/transparent_hugepage\/\S+: file changed while being hashed \(it shrank: 4096 bytes when listed\)/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

test('native range hashing (tar members read in place) equals fsverity digest of the member', async (t) => {
  const nat = nativeHash();
  if (!have('fsverity') || !nat) {
    if (IN_CI) assert.fail('fsverity and native hashing are required under CI');
    t.skip('fsverity or native hashing not available');
    return;
  }
  const { dir, cleanup } = tempDir('cfs-range-');
  try {
    const whole = path.join(dir, 'whole');
    const member = path.join(dir, 'member');
    for (const [size, at] of [[65, 512], [4096, 1536], [70000, 4608], [300001, 513]] as const) {
      const data = content(size, size);
      writeFileSync(whole, Buffer.concat([content(at, 9), data, content(1000, 3)]));
      writeFileSync(member, data);
      for (const alg of ['sha256', 'sha512'] as HashAlg[]) {
        const want = execFileSync('fsverity', ['digest', `--hash-alg=${alg}`, '--compact', member], { encoding: 'utf8' }).trim();
        const got = await nat.verityFileAsync(Buffer.from(whole), alg === 'sha256' ? 1 : 2, size, at);
        assert.ok(Buffer.isBuffer(got), `${alg} ${size}@${at}`);
        assert.equal((got as Buffer).toString('hex'), want, `${alg} ${size}@${at}`);
        // the same bytes in memory, one call
        assert.equal(fsverityDigest(data, alg).toString('hex'), want);
      }
    }
    // a range past the end of the file: the bytes read, not a digest
    assert.equal(await nat.verityFileAsync(Buffer.from(whole), 1, 5000, 300000), 1514);
  } finally {
    cleanup();
  }
});
