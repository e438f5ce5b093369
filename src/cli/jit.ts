/**
 * When V8's optimising compiler (TurboFan) may run, for the `cfs` process.
 *
 * On a small tree most of a run is spent before V8 would have optimised anything, and what it
 * does optimise there costs more than it saves: its compile jobs take a core from the hashing
 * threads while the source is read (both cores are busy then), and the image is written before
 * the optimised code pays back. Measured on the 6.8k-entry debootstrap root (2 cores, Node 20,
 * whole process, interleaved pairs): with TurboFan held back for the first 500 ms the run takes
 * 0.90x the wall time and 0.81x the CPU time (about 150 ms of compiler CPU saved, and 8 MB of
 * peak RSS); on 8 copies of that root (54k entries, 1.8 s) the cost is 1.02x wall, because the
 * scan's own code is optimised half a second later. Trees of 500k entries are not affected
 * measurably (see README "Speed and memory").
 *
 * Interpreted and baseline (Sparkplug) code keep running meanwhile; only the top tier waits.
 * The flag is process-wide (worker isolates follow it too) and read by V8's tiering decisions
 * as the program runs, like the young-generation flag of source/oci/young-gen.ts; set only on the
 * Node versions checked. Never used by the library: a library caller owns its process.
 */
import v8 from 'node:v8';

/** How long the optimising compiler waits after start-up, in ms of wall time. */
export const OPTIMISE_AFTER_MS = 500;

/** Holds TurboFan back until `ms` after this call (a timer that keeps nothing alive). */
export function deferOptimisingCompiler(ms = OPTIMISE_AFTER_MS): void {
  if (process.versions.node.split('.')[0] !== '20') return;
  v8.setFlagsFromString('--no-turbofan');
  setTimeout(() => v8.setFlagsFromString('--turbofan'), ms).unref();
}
