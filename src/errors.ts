/**
 * The errors the library throws on purpose, each with a kind that says whose fault it is:
 *  - `input`: a source, image, file or option value that cannot be used (hostile or broken
 *    input); the message names the path, entry, line or offset and the reason;
 *  - `usage`: the call itself is wrong (a SOURCE string of no known kind, options that do not go
 *    together);
 *  - `internal`: the library reached a state it should never reach (a bug).
 * The CLI prints `input` and `usage` as one line (exit 2) and shows a stack for `internal` and
 * for anything that is not a CfsError and looks like a bug (TypeError, ReferenceError, ...).
 */

export type CfsErrorKind = 'input' | 'usage' | 'internal';

/** Base of every error the library throws on purpose. */
export class CfsError extends Error {
  /** Whose fault it is (see the file comment); subclasses fix it. */
  readonly kind: CfsErrorKind;
  constructor(message: string, kind: CfsErrorKind, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

/** Bad input: the message is the whole story (one line, no stack). */
export class InputError extends CfsError {
  constructor(message?: string, options?: ErrorOptions) {
    super(message ?? '', 'input', options);
  }
}

/** Bad command-line usage or an unusable argument (the CLI exits 2 and points at --help). */
export class UsageError extends CfsError {
  constructor(message?: string, options?: ErrorOptions) {
    super(message ?? '', 'usage', options);
  }
}

/** A state the library should never reach: a bug, reported with its stack. */
export class InternalError extends CfsError {
  constructor(message?: string, options?: ErrorOptions) {
    super(message ?? '', 'internal', options);
  }
}
