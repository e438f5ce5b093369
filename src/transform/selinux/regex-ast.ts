/**
 * Regex AST shared by both dialects: regex-syntax.ts and pcre2.ts parse into it, matcher.ts
 * emits it as a JavaScript RegExp.
 */
import { type ByteSet, setFold, setOf } from './byteset.js';

export type Node =
  | { t: 'set'; s: ByteSet }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; min: number; max: number; node: Node; possessive: boolean }
  | { t: 'group'; node: Node; cap?: number }
  | { t: 'zw'; js: string; start?: boolean } // zero-width assertion emitted verbatim
  | { t: 'look'; ahead: boolean; neg: boolean; node: Node }
  | { t: 'atomic'; node: Node }
  | { t: 'backref'; n: number };

export const EMPTY: Node = { t: 'cat', items: [] };

/** Valid (or possibly valid) syntax that we cannot reproduce: fail loudly. */
export class Unsupported extends Error {}

export interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  x: boolean;
}

export function litNode(bytes: number[], fold: boolean): Node {
  const items: Node[] = bytes.map((b) => ({ t: 'set', s: fold ? setFold(setOf(b)) : setOf(b) }));
  return items.length === 1 ? items[0] : { t: 'cat', items };
}
