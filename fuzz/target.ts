/**
 * What a fuzz target is, and the invariant helpers targets share.
 *
 * A target is one file in fuzz/targets/ exporting `target: FuzzTarget`; the engine finds it by
 * file name (fuzz/targets/NAME.ts -> target NAME), its seeds in fuzz/corpus/NAME/ and its replayed
 * findings in fuzz/regressions/NAME/. Adding a parser to fuzz means adding those, nothing else.
 *
 * `run` returns normally when the input was accepted (and every invariant held) or cleanly
 * rejected; it throws {@link Finding} for anything else. Other throws are findings too.
 */

export interface FuzzTarget {
  /** One line: what is parsed and which invariants are checked. */
  description: string;
  /** Inputs are cut to this many bytes. */
  maxLen: number;
  /** Per-input wall-clock bound (ms) for the long runs; a slower input is a "timeout" finding. */
  timeoutMs?: number;
  /** Tokens the mutator inserts or writes over the input (magics, keys, field separators). */
  dictionary?: (string | Uint8Array)[];
  /** Block size of the format, if any: some mutations copy/insert whole aligned blocks. */
  blockSize?: number;
  /**
   * Repairs what random mutation always breaks and the parser checks first (tar header
   * checksums), so mutants reach the code behind the check. Applied after mutation; the stored
   * input is the repaired one, so replays see the same bytes.
   */
  fixup?(input: Buffer): Buffer;
  run(input: Buffer): void | Promise<void>;
}

/** An invariant did not hold (or an error escaped that should not have). */
export class Finding extends Error {
  constructor(
    readonly kind: 'untyped-error' | 'bad-message' | 'invariant' | 'timeout' | 'memory' | 'crash',
    message: string,
  ) {
    super(message);
    this.name = 'Finding';
  }
}

/** Longest error message accepted as "one line naming the problem" for a few-KB input. */
export const MAX_MESSAGE = 2000;

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Classifies an error thrown by the code under test: returns when it is one of the typed,
 * one-line errors the parser promises (a clean rejection), throws a {@link Finding} otherwise.
 */
export function expectRejection(e: unknown, allowed: readonly ErrorClass[], stage: string): void {
  if (process.env.CFS_FUZZ_VERBOSE) process.stderr.write(`rejected (${stage}): ${String(e)}\n`);
  if (e instanceof Finding) throw e;
  if (!(e instanceof Error)) throw new Finding('untyped-error', `${stage}: non-Error thrown: ${String(e)}`);
  if (!allowed.some((c) => e instanceof c)) {
    const where = firstFrame(e);
    throw new Finding('untyped-error', `${stage}: ${e.constructor.name}: ${e.message.slice(0, 300)}${where ? ` at ${where}` : ''}`);
  }
  if (e.message.includes('\n') || e.message.length > MAX_MESSAGE || e.message.trim() === '')
    throw new Finding('bad-message', `${stage}: ${e.constructor.name} message is not one short line: ${JSON.stringify(e.message.slice(0, 300))}`);
}

/** The first stack frame inside the project's code (for deduplicating findings). */
export function firstFrame(e: Error): string | undefined {
  for (const line of (e.stack ?? '').split('\n').slice(1)) {
    const m = /\/build\/((?:src|fuzz)\/[^):]+:\d+)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

/** Throws an invariant finding unless a and b are equal (bytes or strings). */
export function expectSame(a: Buffer | string, b: Buffer | string, what: string): void {
  const x = typeof a === 'string' ? Buffer.from(a, 'latin1') : a;
  const y = typeof b === 'string' ? Buffer.from(b, 'latin1') : b;
  if (x.equals(y)) return;
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  const show = (z: Buffer): string => JSON.stringify(z.subarray(Math.max(0, i - 40), i + 60).toString('latin1'));
  throw new Finding('invariant', `${what}: differ at byte ${i}: ${show(x)} vs ${show(y)}`);
}
