/**
 * When V8's optimising compiler (TurboFan) may start, for the `cfs` process.
 *
 * On a small tree most of a run is over before optimised code would pay back what compiling it
 * costs: the compile jobs take a core from the hashing threads while the source is read (both
 * cores are busy then), and the image is written before the optimised code is ready. So for the
 * first 500 ms V8's interrupt budget (the bytecode a function runs before V8 considers tiering
 * it up) is about 30 times its default; then the default is restored and the next budget check
 * of every function uses it. Interpreted and baseline (Sparkplug) code run meanwhile.
 *
 * Measured (2-core AMD EPYC, Node 20, whole process, interleaved pairs), against no deferral:
 * the 6.8k-entry debootstrap root 0.86x wall (0.78x CPU); 8 copies of it (54k entries, 1.7 s)
 * 1.035x; a 500k-entry tar and deb.tar.gz unchanged. Turning TurboFan off instead
 * (`--no-turbofan`, then `--turbofan`) did as well on the small tree but never optimised a
 * function whose loop ran through the switch again: the 500k-entry tar took 16 s instead of 9.
 *
 * The flag is process-wide (worker isolates follow it too) and read by V8 as the program runs,
 * like the young-generation flag of source/oci/young-gen.ts; set only on the Node version whose
 * V8 default it restores (11.3 in Node 20). Never used by the library: a library caller owns its
 * process.
 */
import v8 from 'node:v8';

/** How long the raised budget lasts, in ms of wall time. */
export const DEFER_OPTIMISATION_MS = 500;
/** V8 11.3's (Node 20's) default `--interrupt-budget`. */
const DEFAULT_BUDGET = 67584;
const DEFERRED_BUDGET = 2_000_000;

/** Raises V8's tier-up budget until `ms` after this call (a timer that keeps nothing alive). */
export function deferOptimisingCompiler(ms = DEFER_OPTIMISATION_MS): void {
  if (process.versions.node.split('.')[0] !== '20') return;
  v8.setFlagsFromString(`--interrupt-budget=${DEFERRED_BUDGET}`);
  setTimeout(() => v8.setFlagsFromString(`--interrupt-budget=${DEFAULT_BUDGET}`), ms).unref();
}
