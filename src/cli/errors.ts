/** Errors the CLI reports as one line with a non-zero exit, never as a stack trace. */

export { UsageError } from '../errors.js';

/** Exit codes scripts can rely on. */
export const EXIT_OK = 0;
/** A comparison said "different" (e.g. `--expect` mismatch). */
export const EXIT_DIFFERENT = 1;
/** Bad input, bad usage, I/O failure. */
export const EXIT_ERROR = 2;
