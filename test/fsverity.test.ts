import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FsVerityHasher, fsverityDigest, fsverityDigestFile } from '../src/fsverity/fsverity.js';
import { GOLDEN, IN_CI, ROOT, have, tempDir } from './helpers.js';
import { nativeAddonOrNull } from '../src/native/addon.js';

/** Around the two-block path: odd and even block counts, partial tails, tree levels (128 hashes a block). */
const X2_SIZES = [4096, 8192, 8193, 12288, 3 * 4096 + 100, 256 * 4096, 257 * 4096 + 1, 129 * 4096 * 2, 5 << 20];

const SIZES = [0, 1, 4095, 4096, 4097, 8192, 1048577, 128 * 4096, 128 * 4096 + 1, 64 * 4096 + 1, 777777, 3 * 1048576 + 12345];

test('fsverity.json vectors', () => {
  const j = JSON.parse(readFileSync(path.join(GOLDEN, 'fsverity.json'), 'utf8')) as {
    vectors: { name: string; length: number; sha256: string; sha512: string }[];
  };
  for (const v of j.vectors) {
    let data: Buffer;
    if (v.name === 'empty') data = Buffer.alloc(0);
    else if (v.name.startsWith('hello')) data = Buffer.from('hello world');
    else if (/zero/.test(v.name)) data = Buffer.alloc(v.length);
    else if (v.length === 1) data = Buffer.alloc(1);
    else data = Buffer.from(Array.from({ length: v.length }, (_, i) => i % 251));
    assert.equal(data.length, v.length, v.name);
    assert.equal(fsverityDigest(data, 'sha256').toString('hex'), v.sha256, `${v.name} sha256`);
    assert.equal(fsverityDigest(data, 'sha512').toString('hex'), v.sha512, `${v.name} sha512`);
  }
});

test('digest does not depend on how the input is chunked', () => {
  const data = randomBytes(300000);
  for (const alg of ['sha256', 'sha512'] as const) {
    const whole = fsverityDigest(data, alg);
    for (const step of [1, 7, 100, 4095, 4096, 4097, 65536]) {
      const h = new FsVerityHasher(alg);
      for (let o = 0; o < data.length; o += step) h.update(data.subarray(o, o + step));
      assert.deepEqual(h.digest(), whole, `${alg} step ${step}`);
    }
    // irregular chunks
    const h = new FsVerityHasher(alg);
    let o = 0;
    let k = 1;
    while (o < data.length) {
      h.update(data.subarray(o, o + k));
      o += k;
      k = (k * 7 + 3) % 9001;
    }
    assert.deepEqual(h.digest(), whole, `${alg} irregular`);
  }
});

test('equals `fsverity digest` for many sizes, from memory and from files', async (t) => {
  if (!have('fsverity')) {
    if (IN_CI) assert.fail('fsverity (Debian package fsverity) is required under CI');
    t.skip('fsverity not installed');
    return;
  }
  const { dir, cleanup } = tempDir();
  try {
    for (const size of SIZES) {
      const data = randomBytes(size);
      const file = path.join(dir, `f${size}`);
      writeFileSync(file, data);
      for (const alg of ['sha256', 'sha512'] as const) {
        const out = execFileSync('fsverity', ['digest', `--hash-alg=${alg}`, file]).toString();
        const expected = out.split(' ')[0].split(':')[1];
        assert.equal(fsverityDigest(data, alg).toString('hex'), expected, `${size} ${alg} memory`);
        assert.equal((await fsverityDigestFile(file, alg)).toString('hex'), expected, `${size} ${alg} file`);
        // With the size the scan saw: read and hashed natively (stopping at the short read).
        assert.equal((await fsverityDigestFile(file, alg, BigInt(size))).toString('hex'), expected, `${size} ${alg} file, size given`);
      }
    }
  } finally {
    cleanup();
  }
});

test('a file of another size than listed is reported, whichever side of a read it ends on', async () => {
  const { dir, cleanup } = tempDir();
  try {
    // Around the native reader's 1 MiB reads: the last read is short, full, or one byte in.
    for (const size of [100, 4096, 1 << 20, (1 << 20) - 1, (1 << 20) + 1, 2 << 20]) {
      const file = path.join(dir, `g${size}`);
      writeFileSync(file, randomBytes(size));
      await assert.rejects(fsverityDigestFile(file, 'sha256', BigInt(size - 1)), /file changed while being hashed \(it grew/, `${size} listed 1 byte short`);
      await assert.rejects(fsverityDigestFile(file, 'sha256', BigInt(size + 1)), /file changed while being hashed \(it shrank/, `${size} listed 1 byte long`);
      const whole = await fsverityDigestFile(file, 'sha256', BigInt(size));
      assert.equal(whole.toString('hex'), fsverityDigest(readFileSync(file), 'sha256').toString('hex'), `${size}`);
    }
  } finally {
    cleanup();
  }
});

test('SHA-256 data blocks two at a time (SHA extensions) and one at a time (OpenSSL) give the same digests', async (t) => {
  const addon = nativeAddonOrNull();
  if (!addon?.hashAvailable()) {
    if (IN_CI) assert.fail('the native addon and its SHA functions are required under CI');
    t.skip('no native hashing');
    return;
  }
  // Where the CPU has the SHA extensions the two-block code must be in use (it is checked
  // against OpenSSL when it loads, and turned off by CFS_NO_SHA_X2).
  const shaNi = /^flags\s*:.*\bsha_ni\b/m.test(readFileSync('/proc/cpuinfo', 'latin1'));
  assert.equal(addon.sha256Blocks(), shaNi ? 'x2' : 'single');
  // Deterministic data, so that a child process without the two-block code hashes the same bytes.
  const script = `
    import { fsverityDigest } from ${JSON.stringify(path.join(ROOT, 'build/src/fsverity/fsverity.js'))};
    const out = [];
    for (const size of ${JSON.stringify(X2_SIZES)}) {
      const b = Buffer.alloc(size);
      for (let i = 0; i < size; i++) b[i] = (i * 2654435761) >>> 24 ^ (i >>> 12);
      out.push(fsverityDigest(b, 'sha256').toString('hex'));
    }
    console.log(JSON.stringify(out));`;
  const run = (env: NodeJS.ProcessEnv) => JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env } }).toString()) as string[];
  const both = run({});
  const single = run({ CFS_NO_SHA_X2: '1' });
  assert.deepEqual(both, single);
  // And both equal the JS implementation over node:crypto.
  const js = run({ CFS_NO_NATIVE_HASH: '1' });
  assert.deepEqual(both, js);
});
