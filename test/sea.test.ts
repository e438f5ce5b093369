/**
 * The single executable `dist/cfs`: runs without node_modules, prints the package's version, and
 * does not pay Node's start-up cost for NODE_EXTRA_CA_CERTS (cfs makes no TLS connections; see
 * scripts/bundle.mjs). Start-up: the bundles load node:zlib and node:child_process only when a
 * command uses them. Exit: the process ends as soon as its output is written (src/cli/main.ts),
 * never before a slow reader has it all.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { CLI, GOLDEN, ROOT, tempDir } from './helpers.js';

const SEA = path.join(ROOT, 'dist/cfs');

test('dist/cfs prints the package version and ignores NODE_EXTRA_CA_CERTS', () => {
  assert.ok(existsSync(SEA), 'dist/cfs is built by npm run build');
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  // Plain node warns "Ignoring extra certs from `/nonexistent`" before any script runs.
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: '/nonexistent/cfs-test-ca.pem' };
  const r = spawnSync(SEA, ['--version'], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), pkg.version);
  assert.equal(r.stderr, '');
  const plain = spawnSync(process.execPath, ['-e', '0'], { env, encoding: 'utf8' });
  assert.match(plain.stderr, /extra certs/, 'plain node still reads the variable (the check above means something)');
});

test('dist/cfs computes the README example id', () => {
  const r = spawnSync(SEA, ['compute-id', `dumpfile:${path.join(ROOT, 'examples/rootfs.dump')}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.stdout.trim(),
    '6bbae30d87a2de89cba4f268b377564d1b3b384193247efe61d05a34cb797b1c3b8e41dc0e8ba4f47836fc7719492ce7002f4bb8a0dcb982a7cc9b8344de2bd9',
  );
});

/** The built-in modules a bundle run has loaded when it exits (read through a preloaded script). */
function builtinsLoaded(args: string[]): { status: number | null; stdout: string; loaded: string[] } {
  const { dir, cleanup } = tempDir('cfs-sea-');
  try {
    const preload = path.join(dir, 'preload.cjs');
    const out = path.join(dir, 'loaded.json');
    writeFileSync(
      preload,
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.moduleLoadList)));`,
    );
    const r = spawnSync(process.execPath, ['--require', preload, CLI, ...args], { encoding: 'utf8' });
    const list = JSON.parse(readFileSync(out, 'utf8')) as string[];
    const loaded = list.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice('NativeModule '.length));
    return { status: r.status, stdout: r.stdout, loaded };
  } finally {
    cleanup();
  }
}

test('the bundle loads node:zlib, node:child_process and node:crypto only for the commands that use them', () => {
  const v = builtinsLoaded(['--version']);
  assert.equal(v.status, 0);
  assert.ok(v.loaded.includes('fs'), 'the preload sees the modules loaded (the checks below mean something)');
  for (const m of ['zlib', 'child_process', 'crypto']) assert.ok(!v.loaded.includes(m), `--version loaded node:${m}`);
  const d = builtinsLoaded(['compute-id', `dumpfile:${path.join(ROOT, 'examples/rootfs.dump')}`]);
  assert.equal(d.status, 0);
  assert.ok(!d.loaded.includes('zlib'), 'compute-id of a dumpfile loaded node:zlib');
});

test('dist/cfs reads a gzip layer (node:zlib, loaded on first use) as the same layer uncompressed', () => {
  const { dir, cleanup } = tempDir('cfs-sea-');
  try {
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'etc'), { recursive: true });
    mkdirSync(path.join(root, 'usr'));
    writeFileSync(path.join(root, 'etc/hostname'), 'sea\n');
    writeFileSync(path.join(root, 'etc/large'), Buffer.alloc(100_000, 7));
    const tar = path.join(dir, 'l.tar');
    execFileSync('tar', ['-C', root, '--owner=0', '--group=0', '-cf', tar, '.']);
    writeFileSync(`${tar}.gz`, gzipSync(readFileSync(tar)));
    const id = (layer: string) => {
      const r = spawnSync(SEA, ['compute-id', `layers:${layer}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    };
    const plain = id(tar);
    assert.match(plain, /^[0-9a-f]{128}$/);
    assert.equal(id(`${tar}.gz`), plain);
  } finally {
    cleanup();
  }
});

test('dist/cfs ends only after a slow reader has taken all of its output', async () => {
  const golden = readFileSync(path.join(GOLDEN, 'big5000.dump'));
  const p = spawn(SEA, ['create-dumpfile', `dumpfile:${path.join(GOLDEN, 'big5000.dump')}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  // 2.4 MB through a 64 KiB pipe nobody reads for a while. (Node's writes to a pipe block on
  // Linux, so the output waits in the kernel, not in cfs; this holds any exit path to that.)
  p.stdout.pause();
  const chunks: Buffer[] = [];
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number | null>((resolve) => p.on('close', resolve));
  await new Promise((r) => setTimeout(r, 500));
  p.stdout.on('data', (d: Buffer) => chunks.push(d));
  p.stdout.resume();
  assert.equal(await closed, 0, stderr);
  assert.ok(Buffer.concat(chunks).equals(golden), 'create-dumpfile of the golden dumpfile gives it back whole');
});
