/**
 * OCI JSON documents (index.json, manifests, configs) are small; cfs refuses large ones before
 * reading them, naming the file and the limit (4 MiB, 16 MiB for the image lists index.json and
 * manifest.json). Besides memory: cfs keeps V8's young generation at its initial size
 * (src/tree/young-gen.ts), and JSON.parse of tens of MB of small values then spent minutes in the
 * garbage collector (60 MB: 219 s and 2 GB); large documents are now parsed with V8's default
 * growth. Bounds are on CPU time and peak RSS (measured by /usr/bin/time), not wall time: the
 * machine may be busy.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import { IN_CI, ROOT, tempDir } from '../helpers.js';

const SEA = path.join(ROOT, 'dist/cfs');
const TIME = '/usr/bin/time';
const MiB = 1 << 20;

const skip = existsSync(TIME) ? false : IN_CI ? assert.fail(`${TIME} is needed (required under CI)`) : `needs ${TIME}`;

/** Runs dist/cfs under /usr/bin/time: exit status, stderr of cfs, CPU seconds, peak RSS in MiB. */
function measured(args: string[]): { status: number; stderr: string; cpu: number; rssMiB: number } {
  const r = spawnSync(TIME, ['-f', 'CFS-TIME %U %S %M', SEA, ...args], { encoding: 'utf8' });
  const m = /CFS-TIME ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr);
  assert.ok(m, r.stderr);
  return {
    status: r.status ?? -1,
    stderr: r.stderr.slice(0, m.index).replace(/Command exited with non-zero status \d+\n$/, ''),
    cpu: Number(m[1]) + Number(m[2]),
    rssMiB: Number(m[3]) / 1024,
  };
}

/** An OCI layout whose index.json is `size` bytes of `{}` objects (many values: the GC's worst case). */
function layoutWithIndex(dir: string, size: number): string {
  const layout = path.join(dir, `layout-${size}`);
  mkdirSync(layout);
  writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const head = '{"schemaVersion":2,"manifests":[';
  const n = Math.floor((size - head.length - 2 + 1) / 3);
  const body = head + '{},'.repeat(n - 1) + '{}' + ']}';
  writeFileSync(path.join(layout, 'index.json'), body.padEnd(size, ' '));
  return layout;
}

test('an index.json over the JSON limit is refused at once, naming the file, its size and the limit', { skip }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const size = 20 * MiB;
    const layout = layoutWithIndex(dir, size);
    const r = measured(['compute-id', `oci:${layout}`]);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, `cfs: OCI layout ${layout}: index.json is too large (${size} bytes; the limit is ${16 * MiB} bytes)\n`);
    // Before the limit: about 40 s of CPU in the garbage collector for this file.
    assert.ok(r.cpu < 2, `${r.cpu} s of CPU`);
    assert.ok(r.rssMiB < 150, `${r.rssMiB} MiB peak RSS`);
  } finally {
    cleanup();
  }
});

test('an index.json just under the limit, all small values, parses in bounded time and memory', { skip }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const layout = layoutWithIndex(dir, 16 * MiB - 64);
    const r = measured(['compute-id', `oci:${layout}`]);
    // It is parsed, then refused for what it holds.
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /index\.json/);
    assert.doesNotMatch(r.stderr, /too large/);
    // With the small young generation throughout: 27 s of CPU; parsed with V8's default growth: 6 s.
    assert.ok(r.cpu < 15, `${r.cpu} s of CPU`);
    assert.ok(r.rssMiB < 800, `${r.rssMiB} MiB peak RSS`);
  } finally {
    cleanup();
  }
});

test('a manifest blob over the JSON limit is refused before it is read', { skip }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const layout = path.join(dir, 'layout');
    mkdirSync(path.join(layout, 'blobs/sha256'), { recursive: true });
    writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const manifest = Buffer.alloc(5 * MiB, 0x20);
    const hex = createHash('sha256').update(manifest).digest('hex');
    writeFileSync(path.join(layout, 'blobs/sha256', hex), manifest);
    const desc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${hex}`, size: manifest.length };
    writeFileSync(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [desc] }));
    const r = measured(['compute-id', `oci:${layout}`]);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      `cfs: OCI layout ${layout}: manifest blob sha256:${hex} is too large (${manifest.length} bytes; the limit is ${4 * MiB} bytes)\n`,
    );
  } finally {
    cleanup();
  }
});
