/**
 * Layer tarballs with large members (hashed by the worker pool straight from the tar file, or
 * streamed to it): same tree and id as the directory they were made from; a truncated large
 * member is an error naming the entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { runCfs, tempDir } from '../helpers.js';

test('large members: tar, tar.gz and directory give the same id; truncation names the entry', () => {
  const { dir, cleanup } = tempDir();
  try {
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'usr/lib'), { recursive: true });
    const sizes = [65, 4096, 65535, 65536, 65537, 200000, 1 << 20, (3 << 20) + 17, 9 << 20];
    sizes.forEach((n, i) => writeFileSync(path.join(root, 'usr/lib', `f${i}`), randomBytes(n)));
    for (let i = 0; i < 300; i++) writeFileSync(path.join(root, 'usr', `s${i}`), randomBytes(100 + i * 37));
    execFileSync('find', [root, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
    const tar = path.join(dir, 'l.tar');
    execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', tar, '.']);
    const tgz = path.join(dir, 'l.tar.gz');
    writeFileSync(tgz, gzipSync(readFileSync(tar)));
    for (const alg of ['sha256', 'sha512']) {
      const want = runCfs(['--hash', alg, 'compute-id', root]);
      assert.equal(want.status, 0, want.stderr);
      for (const src of [`layers:${tar}`, `layers:${tgz}`]) {
        for (const jobs of ['1', '2']) {
          const got = runCfs(['--hash', alg, 'compute-id', '--jobs', jobs, src]);
          assert.equal(got.status, 0, got.stderr);
          assert.equal(got.stdout.toString(), want.stdout.toString(), `${alg} ${src} jobs ${jobs}`);
        }
      }
    }
    assert.equal(runCfs(['compare', root, `layers:${tar}`]).status, 0);
    // a layer whose only (9 MiB) member is cut in the middle of its content
    const one = path.join(dir, 'one');
    mkdirSync(one);
    writeFileSync(path.join(one, 'big'), randomBytes(9 << 20));
    const cut = path.join(dir, 'cut.tar');
    execFileSync('tar', ['--numeric-owner', '-C', one, '-cf', cut, 'big']);
    truncateSync(cut, 5 << 20);
    const r = runCfs(['compute-id', `layers:${cut}`]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /layer 1 \(.*\), tar entry "[^"]+": unexpected end of tar stream/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    cleanup();
  }
});
