/** Directory sources through the CLI: errors and what is (not) left behind. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, readdirSync, symlinkSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { CLI, runCfs, tempDir, assertCleanError } from '../../helpers.js';
import { loadRawTree, type LoadProgress } from '../../../src/source/load.js';

test('a source that is not a directory, or missing', () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(path.join(dir, 'file'), 'x');
    assertCleanError(runCfs(['compute-id', path.join(dir, 'file')]), /is not a directory/);
    assertCleanError(runCfs(['compute-id', path.join(dir, 'nope')]), /nope.*no such file or directory/);
  } finally {
    cleanup();
  }
});

test('missing /usr, or /usr a symlink: composefs-rs errors, no image written', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'root');
    mkdirSync(src);
    const out = path.join(dir, 'out.img');
    assertCleanError(runCfs(['create-image', src, '-o', out]), /"usr" does not exist/);
    symlinkSync('/usr', path.join(src, 'usr'));
    assertCleanError(runCfs(['create-image', src, '-o', out]), /"usr" is not a subdirectory/);
    assert.ok(!existsSync(out));
    // --no-propagate-usr-to-root does not need /usr
    assert.equal(runCfs(['compute-id', '--no-propagate-usr-to-root', src]).status, 0);
  } finally {
    cleanup();
  }
});

test('an unreadable file is an error naming it (as nobody), nothing left in the repository', (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to run a child as nobody');
    return;
  }
  const { dir, cleanup } = tempDir();
  try {
    chmodSync(dir, 0o755);
    const src = path.join(dir, 'root');
    mkdirSync(path.join(src, 'usr'), { recursive: true });
    writeFileSync(path.join(src, 'usr/secret'), Buffer.alloc(1000, 1), { mode: 0o600 });
    const r = runCfs(['compute-id', src], undefined, { uid: 65534, gid: 65534 });
    assertCleanError(r, /usr\/secret.*permission denied/i);
  } finally {
    cleanup();
  }
});

test('a file that grows while being hashed: error naming it, no image and no objects left', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'root');
    mkdirSync(path.join(src, 'usr'), { recursive: true });
    const big = path.join(src, 'usr/growing');
    writeFileSync(big, Buffer.alloc(64 << 20, 7));
    const repo = path.join(dir, 'repo');
    const out = path.join(dir, 'out.img');
    const child = spawn(process.execPath, [CLI, 'create-image', '--repo', repo, src, '-o', out, '--jobs', '1']);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // keep appending for as long as cfs runs (so whenever it reads, the file is growing),
    // in small steps; bounded at 512 MiB more
    const fd = openSync(big, 'a');
    const step = Buffer.alloc(256 << 10, 9);
    let appended = 0;
    const timer = setInterval(() => {
      if (appended++ < 2048) writeSync(fd, step);
    }, 2);
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    clearInterval(timer);
    closeSync(fd);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /usr\/growing: file changed while being hashed/);
    assert.ok(!existsSync(out), 'no image');
    const objects = path.join(repo, 'objects');
    const left = existsSync(objects) ? readdirSync(objects, { recursive: true }) : [];
    assert.deepEqual(left, [], 'no objects or temporary files');
  } finally {
    cleanup();
  }
});

/** A small tree: entries listed and the files hashed (larger than 64 bytes), with their bytes. */
function progressTree(dir: string): { entries: number; files: number; bytes: number } {
  mkdirSync(path.join(dir, 'sub'));
  writeFileSync(path.join(dir, 'small'), 'x'.repeat(64)); // inline: not hashed
  writeFileSync(path.join(dir, 'sub', 'mid'), Buffer.alloc(100 << 10, 1)); // hashed with its directory
  writeFileSync(path.join(dir, 'sub', 'big'), Buffer.alloc(1 << 20, 2)); // hashed on its own
  writeFileSync(path.join(dir, 'sub', 'big2'), Buffer.alloc((1 << 20) + 1, 3));
  symlinkSync('sub/big', path.join(dir, 'link'));
  return { entries: 6, files: 3, bytes: (100 << 10) + (1 << 20) + (1 << 20) + 1 };
}

test('progress of a directory source: snapshots through onProgress, the last one done and complete', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const want = progressTree(dir);
    for (const jobs of [1, 2]) {
      const seen: LoadProgress[] = [];
      const loaded = await loadRawTree({ kind: 'dir', path: dir }, { hash: 'sha256', jobs, onProgress: (p) => seen.push(p) });
      assert.equal(loaded.kind, 'dir');
      assert.ok(seen.length >= 1);
      const last = seen[seen.length - 1];
      assert.deepEqual(last, { stage: 'scan', path: dir, entries: want.entries, filesHashed: want.files, bytesHashed: BigInt(want.bytes), done: true });
      assert.ok(seen.slice(0, -1).every((p) => p.done === false));
    }
  } finally {
    cleanup();
  }
});

test('--progress when stderr is not a terminal: the final state of the scan, once', () => {
  const { dir, cleanup } = tempDir();
  try {
    const want = progressTree(dir);
    const r = runCfs(['compute-id', '--progress', '--layer-mtimes', 'keep', '--no-propagate-usr-to-root', dir]);
    assert.equal(r.status, 0);
    assert.equal(r.stderr.toString(), `scanning ${dir}: ${want.entries} entries listed, ${want.files} files hashed (2.2 MB)\n`);
  } finally {
    cleanup();
  }
});
