/**
 * `npm run fuzz -- [--target NAME[,NAME]] [--seconds N] [--runs N] [--seed N] [--out DIR]
 *                  [--timeout-ms N] [--rss-mb N] [--replay]`
 *
 * Fuzzes each target in turn (one at a time: one core each), printing progress and a summary.
 * New corpus entries and findings go to DIR/<target>/{corpus,findings} (default fuzz/out/, not
 * committed); later runs start from that corpus too. --replay runs the seeds, regressions and
 * pending inputs once and reports which fail.
 */
import path from 'node:path';
import { fuzz, replay, ROOT, targetNames } from './engine.js';

function usage(msg: string): never {
  process.stderr.write(`fuzz: ${msg}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opt: Record<string, string> = {};
let doReplay = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--replay') doReplay = true;
  else if (/^--(target|seconds|runs|seed|out|timeout-ms|rss-mb)$/.test(a) && i + 1 < args.length) opt[a.slice(2)] = args[++i];
  else usage(`unknown or incomplete argument '${a}'`);
}
const num = (k: string): number | undefined => {
  if (opt[k] === undefined) return undefined;
  const n = Number(opt[k]);
  if (!Number.isFinite(n) || n < 0) usage(`--${k} must be a non-negative number`);
  return n;
};
const known = targetNames();
const targets = opt.target ? opt.target.split(',') : known;
for (const t of targets) if (!known.includes(t)) usage(`unknown target '${t}' (known: ${known.join(', ')})`);
const limits = { ...(num('timeout-ms') ? { timeoutMs: num('timeout-ms') } : {}), ...(num('rss-mb') ? { rssMb: num('rss-mb') } : {}) };

let failed = false;
for (const t of targets) {
  if (doReplay) {
    const dirs = ['corpus', 'regressions', 'pending'].map((d) => path.join(ROOT, 'fuzz', d, t));
    const fails = await replay(t, dirs, limits);
    for (const f of fails) process.stdout.write(`${t}: ${path.relative(ROOT, f.file)}: ${f.outcome.kind}: ${f.outcome.message}\n`);
    process.stdout.write(`${t}: ${fails.length} failing input(s)\n`);
    failed ||= fails.length > 0;
    continue;
  }
  const seed = num('seed') ?? 1;
  const s = await fuzz({
    target: t,
    seed,
    seconds: num('seconds') ?? (opt.runs ? undefined : 60),
    runs: num('runs'),
    limits,
    outDir: path.join(opt.out ? path.resolve(opt.out) : path.join(ROOT, 'fuzz/out'), t),
    log: (l) => process.stdout.write(`${l}\n`),
  });
  process.stdout.write(
    `${t}: seed ${seed}, ${s.execs} execs in ${s.seconds.toFixed(1)} s (${Math.round(s.execsPerSecond)}/s), ` +
      `corpus ${s.seeds} seeds -> ${s.corpus}, features ${s.features.afterSeeds} -> ${s.features.final}, ` +
      `${s.findings.length} finding(s), ${s.restarts} executor restart(s)\n`,
  );
  for (const f of s.findings) process.stdout.write(`  ${f.kind}: ${f.message}${f.file ? `\n    input: ${path.relative(ROOT, f.file)}` : ''}\n`);
  failed ||= s.findings.length > 0;
}
process.exit(failed ? 1 : 0);
