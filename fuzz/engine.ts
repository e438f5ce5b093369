/**
 * A small coverage-guided fuzzer (why not jazzer.js: see fuzz/README.md).
 *
 * Loop: pick a corpus entry, stack a few mutations, repair (target.fixup), run it in the
 * executor thread; an input that reaches a new (block, hit-count bucket) joins the corpus; an
 * input whose run throws a Finding, exceeds the time bound or the memory bound is a finding.
 * Everything random comes from one seeded PRNG, so a run with a fixed seed and a fixed number of
 * executions is the same run on every machine.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { mutate, Rng } from './mutate.js';
import type { FuzzTarget } from './target.js';
import type { WorkerReply } from './worker.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Project root (this file runs from build/fuzz/). */
export const ROOT = path.resolve(HERE, '../..');
export const CORPUS_DIR = path.join(ROOT, 'fuzz/corpus');
export const REGRESSIONS_DIR = path.join(ROOT, 'fuzz/regressions');

/** Target names: one compiled file per target in build/fuzz/targets/. */
export function targetNames(): string[] {
  return readdirSync(path.join(HERE, 'targets'))
    .filter((f) => f.endsWith('.js'))
    .map((f) => f.slice(0, -3))
    .sort();
}

export function targetFile(name: string): string {
  const f = path.join(HERE, 'targets', `${name}.js`);
  if (!existsSync(f)) throw new Error(`unknown fuzz target '${name}' (known: ${targetNames().join(', ')})`);
  return f;
}

export async function loadTarget(name: string): Promise<FuzzTarget> {
  return ((await import(targetFile(name))) as { target: FuzzTarget }).target;
}

/** Files of a corpus directory, sorted by name (absent directory: none). */
export function readInputs(dir: string): { name: string; data: Buffer }[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => !f.startsWith('.') && f !== 'README.md' && statSync(path.join(dir, f)).isFile())
    .sort()
    .map((f) => ({ name: f, data: readFileSync(path.join(dir, f)) }));
}

export interface Outcome {
  ok: boolean;
  kind?: string;
  message?: string;
  frame?: string;
  fresh: string[];
  ms: number;
}

export interface Limits {
  timeoutMs: number;
  /** Bound on the process's RSS growth while one input runs (MiB). */
  rssMb: number;
}

/** Runs inputs in a worker thread, restarting it after a hang, crash or memory blow-up. */
export class Executor {
  private worker?: Worker;
  private nextId = 1;
  private baseRss = 0;
  readonly known = new Set<string>();
  restarts = 0;

  constructor(
    readonly name: string,
    readonly limits: Limits,
  ) {}

  private async start(): Promise<Worker> {
    const w = new Worker(path.join(HERE, 'worker.js'), {
      workerData: { targetFile: targetFile(this.name), known: [...this.known] },
      // The JS heap is bounded here; Buffers (outside the heap) by the RSS sampling below.
      resourceLimits: { maxOldGenerationSizeMb: Math.max(64, this.limits.rssMb) },
      stdout: true,
      stderr: true,
    });
    // Targets must not print; drop anything the code under test writes.
    w.stdout.resume();
    w.stderr.resume();
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: { ready?: boolean }): void => {
        if (m.ready) {
          w.off('message', onMsg);
          w.off('error', reject);
          resolve();
        }
      };
      w.on('message', onMsg);
      w.once('error', reject);
    });
    return w;
  }

  async run(input: Buffer, coverage: boolean, timeoutMs = this.limits.timeoutMs): Promise<Outcome> {
    this.worker ??= await this.start();
    const w = this.worker;
    const id = this.nextId++;
    const t0 = performance.now();
    // Growth during this input: freed memory is not always returned to the system, so the level
    // is taken afresh for every input.
    this.baseRss = process.memoryUsage.rss();
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const finish = (o: Outcome, kill: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearInterval(sampler);
        w.off('message', onMsg);
        w.off('error', onError);
        w.off('exit', onExit);
        if (kill) {
          this.worker = undefined;
          this.restarts++;
          void w.terminate();
        }
        for (const f of o.fresh) this.known.add(f);
        resolve(o);
      };
      const onMsg = (r: WorkerReply): void => {
        if (r.id !== id) return;
        if (r.ok) finish({ ok: true, fresh: r.fresh, ms: r.ms }, false);
        else finish({ ok: false, kind: r.kind, message: r.message, frame: r.frame, fresh: r.fresh, ms: r.ms }, false);
      };
      const onError = (e: Error): void => {
        const oom = (e as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY';
        finish({ ok: false, kind: oom ? 'memory' : 'crash', message: `${oom ? 'JS heap limit reached' : 'executor died'}: ${e.message}`, fresh: [], ms: performance.now() - t0 }, true);
      };
      const onExit = (code: number): void => {
        finish({ ok: false, kind: 'crash', message: `executor exited with code ${code}`, fresh: [], ms: performance.now() - t0 }, true);
      };
      const timer = setTimeout(() => {
        finish({ ok: false, kind: 'timeout', message: `no result after ${timeoutMs} ms`, fresh: [], ms: timeoutMs }, true);
      }, timeoutMs);
      const sampler = setInterval(() => {
        const grown = (process.memoryUsage.rss() - this.baseRss) / (1 << 20);
        if (grown > this.limits.rssMb)
          finish({ ok: false, kind: 'memory', message: `RSS grew by ${Math.round(grown)} MiB (bound ${this.limits.rssMb} MiB)`, fresh: [], ms: performance.now() - t0 }, true);
      }, 20);
      w.on('message', onMsg);
      w.once('error', onError);
      w.once('exit', onExit);
      w.postMessage({ id, input, coverage });
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}

export interface FuzzOptions {
  target: string;
  seed: number;
  /** Stop after this many mutated inputs ... */
  runs?: number;
  /** ... or after this many seconds, whichever comes first. */
  seconds?: number;
  limits?: Partial<Limits>;
  /** Where new corpus entries and findings are written (nothing is written if undefined). */
  outDir?: string;
  /** Progress lines (the library part prints nothing itself). */
  log?: (line: string) => void;
}

export interface FoundInput {
  signature: string;
  kind: string;
  message: string;
  input: Buffer;
  file?: string;
}

export interface FuzzStats {
  target: string;
  execs: number;
  seconds: number;
  execsPerSecond: number;
  seeds: number;
  corpus: number;
  features: { afterSeeds: number; final: number };
  /** [seconds, features] every few seconds. */
  growth: [number, number][];
  findings: FoundInput[];
  restarts: number;
}

interface Entry {
  data: Buffer;
  picked: number;
}

function signatureOf(kind: string, message: string, frame?: string): string {
  // Numbers (offsets, sizes) vary between inputs hitting the same defect.
  const m = message.replace(/\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 160);
  return `${kind} ${frame ?? ''} ${m}`;
}

export async function fuzz(opts: FuzzOptions): Promise<FuzzStats> {
  const target = await loadTarget(opts.target);
  const limits: Limits = { timeoutMs: target.timeoutMs ?? 5000, rssMb: 1024, ...opts.limits };
  const exec = new Executor(opts.target, limits);
  const rng = new Rng(opts.seed);
  const log = opts.log ?? (() => {});
  const dictionary = (target.dictionary ?? []).map((t) => (typeof t === 'string' ? Buffer.from(t, 'latin1') : Buffer.from(t)));
  const findings = new Map<string, FoundInput>();
  const corpus: Entry[] = [];
  const outCorpus = opts.outDir && path.join(opts.outDir, 'corpus');
  const outFindings = opts.outDir && path.join(opts.outDir, 'findings');
  if (outCorpus) mkdirSync(outCorpus, { recursive: true });

  const record = (o: Outcome, input: Buffer): void => {
    const sig = signatureOf(o.kind!, o.message!, o.frame);
    if (findings.has(sig)) return;
    const f: FoundInput = { signature: sig, kind: o.kind!, message: o.message!, input };
    if (outFindings) {
      mkdirSync(outFindings, { recursive: true });
      f.file = path.join(outFindings, `${o.kind}-${createHash('sha256').update(input).digest('hex').slice(0, 16)}`);
      writeFileSync(f.file, input);
    }
    findings.set(sig, f);
    log(`finding ${o.kind}: ${o.message}${f.file ? ` (${f.file})` : ''}`);
  };

  const t0 = performance.now();
  const elapsed = (): number => (performance.now() - t0) / 1000;
  // Seeds and earlier findings: all stay in the corpus (they are what the formats look like).
  const seeds = [
    ...readInputs(path.join(CORPUS_DIR, opts.target)),
    ...readInputs(path.join(REGRESSIONS_DIR, opts.target)),
    ...(outCorpus ? readInputs(outCorpus) : []),
  ];
  for (const s of seeds) {
    const data = target.fixup ? target.fixup(s.data.subarray(0, target.maxLen)) : s.data.subarray(0, target.maxLen);
    const o = await exec.run(data, true);
    if (!o.ok) record(o, data);
    corpus.push({ data, picked: 0 });
  }
  if (corpus.length === 0) corpus.push({ data: Buffer.alloc(0), picked: 0 });
  const afterSeeds = exec.known.size;
  const growth: [number, number][] = [[elapsed(), afterSeeds]];
  log(`${opts.target}: ${seeds.length} seeds, ${afterSeeds} features`);

  const runs = opts.runs ?? Infinity;
  const seconds = opts.seconds ?? Infinity;
  let execs = 0;
  let lastLog = elapsed();
  const fuzzStart = elapsed();
  while (execs < runs && elapsed() < seconds) {
    // Favour entries picked less often (new ones), but reach all.
    const a = corpus[rng.below(corpus.length)];
    const b = corpus[rng.below(corpus.length)];
    const parent = a.picked <= b.picked ? a : b;
    parent.picked++;
    let input = mutate(parent.data, {
      rng,
      maxLen: target.maxLen,
      dictionary,
      blockSize: target.blockSize,
      other: () => corpus[rng.below(corpus.length)].data,
    });
    if (target.fixup) input = target.fixup(input);
    const o = await exec.run(input, true);
    execs++;
    if (!o.ok) record(o, input);
    else if (o.fresh.length > 0) {
      corpus.push({ data: input, picked: 0 });
      if (outCorpus) writeFileSync(path.join(outCorpus, createHash('sha256').update(input).digest('hex').slice(0, 16)), input);
    }
    const now = elapsed();
    if (now - lastLog >= 10) {
      lastLog = now;
      growth.push([now, exec.known.size]);
      log(`${opts.target}: ${Math.round(now)} s, ${execs} execs (${Math.round(execs / (now - fuzzStart))}/s), corpus ${corpus.length}, features ${exec.known.size}, findings ${findings.size}`);
    }
  }
  await exec.close();
  const total = elapsed();
  growth.push([total, exec.known.size]);
  return {
    target: opts.target,
    execs,
    seconds: total,
    execsPerSecond: execs / Math.max(1e-9, total - fuzzStart),
    seeds: seeds.length,
    corpus: corpus.length,
    features: { afterSeeds, final: exec.known.size },
    growth,
    findings: [...findings.values()],
    restarts: exec.restarts,
  };
}

/** Runs every input of the given directories once (no coverage); returns the failures. */
export async function replay(
  name: string,
  dirs: string[],
  limits: Partial<Limits> = {},
): Promise<{ file: string; outcome: Outcome }[]> {
  const target = await loadTarget(name);
  const exec = new Executor(name, { timeoutMs: target.timeoutMs ?? 5000, rssMb: 1024, ...limits });
  const failures: { file: string; outcome: Outcome }[] = [];
  try {
    for (const dir of dirs) {
      for (const { name: f, data } of readInputs(dir)) {
        const input = target.fixup ? target.fixup(data.subarray(0, target.maxLen)) : data.subarray(0, target.maxLen);
        const o = await exec.run(input, false);
        if (!o.ok) failures.push({ file: path.join(dir, f), outcome: o });
      }
    }
  } finally {
    await exec.close();
  }
  return failures;
}
