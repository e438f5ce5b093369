/** Errors the library throws that callers report as one line, never as a stack trace. */

/** Bad command-line usage or an unusable argument (the CLI exits 2). */
export class UsageError extends Error {}
