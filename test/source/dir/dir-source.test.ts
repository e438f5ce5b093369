/** Directory sources through the CLI: errors and what is (not) left behind. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, readdirSync, symlinkSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { CLI, runCfs, tempDir, assertCleanError } from '../../helpers.js';

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
