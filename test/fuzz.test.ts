/**
 * The fuzz targets in `npm test`: every seed and every stored finding (fuzz/regressions/) is
 * replayed and must hold the target's invariants; then a short coverage-guided run with a fixed
 * seed and a fixed number of inputs (the same inputs on every machine) must find nothing.
 * Longer runs: `npm run fuzz` (README, "Fuzzing").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { CORPUS_DIR, fuzz, readInputs, REGRESSIONS_DIR, replay, targetNames } from '../fuzz/engine.js';
import { Rng, mutate } from '../fuzz/mutate.js';
import { fixOciDigests, fixTarChecksums } from '../fuzz/tarfix.js';
import { loadOciSource } from '../src/source/oci/image.js';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { tempDir } from './helpers.js';

/** Inputs per target in the short run: a few seconds each on a quiet machine. */
const RUNS = Number(process.env.CFS_FUZZ_RUNS ?? 200);
/** Generous: CI machines are slow and shared; a real hang takes forever, not 20 s. */
const LIMITS = { timeoutMs: 20_000, rssMb: 1024 };

test('the fuzz targets are all there, each with seeds', () => {
  const names = targetNames();
  for (const t of ['decompress', 'dumpfile', 'erofs', 'oci', 'tar']) assert.ok(names.includes(t), `target ${t}`);
  for (const t of names) assert.ok(readInputs(path.join(CORPUS_DIR, t)).length > 0, `fuzz/corpus/${t} has seeds`);
});

test('the mutator is deterministic for a seed', () => {
  const run = (seed: number): string[] => {
    const rng = new Rng(seed);
    const ctx = { rng, maxLen: 4096, dictionary: [Buffer.from('ustar')], blockSize: 512, other: () => Buffer.from('other') };
    let b: Buffer = Buffer.from('0000644\0 hello world 12345');
    const out: string[] = [];
    for (let i = 0; i < 200; i++) out.push((b = mutate(b.length > 0 ? b : Buffer.from('x'), ctx)).toString('hex'));
    return out;
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});

test('the OCI fixup re-digests a mutated config and the manifest naming it', async () => {
  const seed = readFileSync(path.join(CORPUS_DIR, 'oci/oci-archive.tar'));
  const mutated = Buffer.from(seed);
  const at = mutated.indexOf('"os":"linux"');
  assert.ok(at > 0);
  mutated.write('"os":"linuX"', at);
  const { dir, cleanup } = tempDir('cfs-fuzz-test-');
  try {
    const load = (b: Buffer): Promise<unknown> => {
      writeFileSync(path.join(dir, 'a.tar'), b);
      return loadOciSource(`oci-archive:${path.join(dir, 'a.tar')}`, { hash: 'sha256', jobs: 1 });
    };
    await assert.rejects(load(mutated), /does not match its digest/);
    await load(fixTarChecksums(fixOciDigests(mutated, (x) => createHash('sha256').update(x).digest('hex'))));
  } finally {
    cleanup();
  }
});

for (const name of targetNames()) {
  test(`fuzz ${name}: seeds and regressions hold the invariants`, async () => {
    const dirs = [path.join(CORPUS_DIR, name), path.join(REGRESSIONS_DIR, name)];
    const fails = await replay(name, dirs, LIMITS);
    assert.deepEqual(
      fails.map((f) => `${path.basename(f.file)}: ${f.outcome.kind}: ${f.outcome.message}`),
      [],
    );
  });

  test(`fuzz ${name}: ${RUNS} coverage-guided inputs (seed 1) find nothing`, async (t) => {
    const s = await fuzz({ target: name, seed: 1, runs: RUNS, limits: LIMITS });
    t.diagnostic(
      `${s.execs} execs, ${Math.round(s.execsPerSecond)}/s, corpus ${s.seeds} -> ${s.corpus}, features ${s.features.afterSeeds} -> ${s.features.final}`,
    );
    assert.deepEqual(
      s.findings.map((f) => `${f.kind}: ${f.message}`),
      [],
      'reproduce with: npm run fuzz -- --target ' + name + ` --runs ${RUNS} --seed 1`,
    );
    assert.equal(s.execs, RUNS);
    assert.ok(s.features.final > s.features.afterSeeds, 'mutants reach code the seeds do not');
  });
}
