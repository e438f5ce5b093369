/**
 * V8 doubles its young generation while a program allocates fast (up to 3 x 16 MiB in Node 20),
 * and cfs allocates fast: short-lived buffers by the hundred thousand. Keeping the young
 * generation at its initial size costs nothing measurable there and lowers peak RSS by 25-50 MB
 * (2 GB tree: 146 -> 119 MiB as a directory, 195 -> 147 MiB as a tar). The flag is read while
 * the program runs (given as `node --semi-space-growth-factor=1` it changes nothing measurable
 * in Node 20); only set on the Node versions checked (an unknown flag prints an error).
 *
 * What it makes slow is JSON.parse of millions of values, superlinearly (10 MB of `{}`: 7.9 s of
 * CPU instead of 1.7 s; 60 MB: minutes), apparently because every scavenge of the small young
 * generation revisits all the values parsed so far: large JSON documents are parsed with V8's
 * default growth (withYoungGenerationGrowth), and OCI JSON documents are size-capped.
 */
import v8 from 'node:v8';

let small = false;

/** Keeps the young generation at its initial size from now on (the CLI calls this at start). */
export function keepYoungGenerationSmall(): void {
  if (process.versions.node.split('.')[0] !== '20') return;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  small = true;
}

/**
 * Runs `fn` with V8's default young-generation growth when `large` (the young generation may
 * stay grown afterwards: only for this run, and only when it parsed a large document).
 */
export function withYoungGenerationGrowth<T>(large: boolean, fn: () => T): T {
  if (!small || !large) return fn();
  v8.setFlagsFromString('--semi-space-growth-factor=2');
  try {
    return fn();
  } finally {
    v8.setFlagsFromString('--semi-space-growth-factor=1');
  }
}
