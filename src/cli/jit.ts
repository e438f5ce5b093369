/**
 * When V8's optimising compiler (TurboFan) may start, for the `cfs` process.
 *
 * On a small directory tree most of a run is over before optimised code would pay back what
 * compiling it costs: the compile jobs take a core from the hashing threads while the tree is
 * read (both cores are busy then), and the image is written before the optimised code is ready.
 * So from start-up V8's interrupt budget (the bytecode a function runs before V8 considers
 * tiering it up) is about 30 times its default, until 500 ms have passed, the directory scan
 * has listed 10,000 entries, or the command turns out to read anything else than one directory
 * ({@link optimiseFromNow}); then the default is restored and the next budget check of every
 * function uses it. Interpreted and baseline (Sparkplug) code run meanwhile.
 *
 * Measured (2-core AMD EPYC, Node 20, whole process, interleaved pairs), against no deferral:
 * the 6.8k-entry debootstrap root 0.86x wall (0.78x CPU). Tar sources lose (2 GB tar: 1.07x
 * with a 500 ms deferral), so they never get one; nor do the longer commands (compare,
 * identify). Turning TurboFan off instead (`--no-turbofan`, then `--turbofan`) did as well on the
 * small tree but never optimised a function whose loop ran through the switch again: a
 * 500k-entry tar took 16 s instead of 9.
 *
 * The flag is process-wide (worker isolates follow it too) and read by V8 as the program runs,
 * like the young-generation flag of source/oci/young-gen.ts; set only on the Node version whose
 * V8 default it restores (11.3 in Node 20). Never used by the library: a library caller owns its
 * process.
 */
import v8 from 'node:v8';

/** How long the raised budget lasts at most, in ms of wall time. */
export const DEFER_OPTIMISATION_MS = 500;
/** A directory scan that has listed this many entries is no longer a small tree. */
export const DEFER_OPTIMISATION_ENTRIES = 10_000;
/** V8 11.3's (Node 20's) default `--interrupt-budget`. */
const DEFAULT_BUDGET = 67584;
const DEFERRED_BUDGET = 2_000_000;

let timer: NodeJS.Timeout | undefined;

/** Raises V8's tier-up budget until {@link optimiseFromNow}, at most `ms` (a timer that keeps nothing alive). */
export function deferOptimisingCompiler(ms = DEFER_OPTIMISATION_MS): void {
  if (process.versions.node.split('.')[0] !== '20' || timer !== undefined) return;
  v8.setFlagsFromString(`--interrupt-budget=${DEFERRED_BUDGET}`);
  timer = setTimeout(optimiseFromNow, ms).unref();
}

/** Ends a deferral (nothing when none is running). */
export function optimiseFromNow(): void {
  if (timer === undefined) return;
  clearTimeout(timer);
  timer = undefined;
  v8.setFlagsFromString(`--interrupt-budget=${DEFAULT_BUDGET}`);
}
