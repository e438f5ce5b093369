/**
 * The single executable `dist/cfs`: runs without node_modules, prints the package's version, and
 * does not pay Node's start-up cost for NODE_EXTRA_CA_CERTS (cfs makes no TLS connections; see
 * scripts/bundle.mjs).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers.js';

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
