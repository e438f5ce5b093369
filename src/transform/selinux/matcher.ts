/**
 * Compiling and matching file_contexts patterns.
 *
 * Regex dialects. composefs-rs puts every pattern that regex-syntax (Unicode off, UTF-8 off)
 * accepts into one lazy DFA (anchored at the start of the key; `.` matches every byte but
 * NUL; `\d \w \s \b` ASCII) and compiles the rest with PCRE2 (no UTF: `.` excludes `\n`, `$`
 * also matches before a final `\n`, unanchored `is_match`). We parse each pattern ourselves
 * with the same two grammars and translate it to a JavaScript RegExp that runs over the key
 * as a latin1 string (one UTF-16 unit per byte), so byte semantics hold exactly:
 *  - every literal byte, class and `.` is emitted as explicit `\xHH` sets (no `i`/`u`/`m`/`s`
 *    flags: case-insensitivity is expanded to ASCII-only sets, as both engines fold ASCII only);
 *  - regex-syntax patterns run sticky at offset 0 (Anchored::Yes), PCRE2 patterns unanchored;
 *  - only "is there a match" matters, so greediness and alternation order are irrelevant
 *    (JS backtracking is exhaustive like both engines); atomic groups / possessive quantifiers
 *    are emulated with `(?=(X))\k<n>`, back-references with named groups.
 * Constructs we cannot reproduce faithfully make {@link compilePattern} (and so loading the
 * policy) throw {@link SelabelError} instead of producing a possibly wrong digest (the
 * `Unsupported` throws in regex-syntax.ts and pcre2.ts).
 *
 * Speed: each pattern's literal prefix (e.g. `/usr/lib/systemd/`) goes into a trie; a key only
 * tests the patterns whose prefix it starts with, in priority order, stopping at the first
 * match. Catastrophic backtracking: V8's linear-time fallback engine is switched on
 * (`--enable-experimental-regexp-engine-on-excessive-backtracks`), which covers every
 * regex-syntax pattern we emit (no look-behind or back-references there); PCRE2-only
 * patterns with look-behind/back-references keep plain backtracking (PCRE2 itself would stop
 * at its match limit and report "no match"; we cannot bound that).
 */
import v8 from 'node:v8';
import { type ByteSet, setSingle } from './byteset.js';
import { SelabelError } from './errors.js';
import { PcreParser } from './pcre2.js';
import { type Node, Unsupported } from './regex-ast.js';
import { NotDfa, RustParser } from './regex-syntax.js';

// ---------------------------------------------------------------------------------------------
// Emission to JavaScript and literal prefixes.

function hex2(b: number): string {
  return '\\x' + b.toString(16).padStart(2, '0');
}
function escByte(b: number): string {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2f || b === 0x5f ? String.fromCharCode(b) : hex2(b);
}
function emitSet(s: ByteSet): string {
  const single = setSingle(s);
  if (single >= 0) return escByte(single);
  let out = '[';
  for (let i = 0; i < 256; ) {
    if (!s[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < 256 && s[j + 1]) j++;
    out += j === i ? hex2(i) : j === i + 1 ? hex2(i) + hex2(j) : `${hex2(i)}-${hex2(j)}`;
    i = j + 1;
  }
  return out + ']';
}

function emit(n: Node, ctx: { atom: number }): string {
  switch (n.t) {
    case 'set':
      return emitSet(n.s);
    case 'cat':
      return n.items.map((i) => emit(i, ctx)).join('');
    case 'alt':
      return '(?:' + n.items.map((i) => emit(i, ctx)).join('|') + ')';
    case 'group':
      return n.cap !== undefined ? `(?<g${n.cap}>${emit(n.node, ctx)})` : `(?:${emit(n.node, ctx)})`;
    case 'zw':
      return n.js;
    case 'look':
      return `(?${n.ahead ? '' : '<'}${n.neg ? '!' : '='}${emit(n.node, ctx)})`;
    case 'atomic': {
      const k = ++ctx.atom;
      return `(?=(?<a${k}>${emit(n.node, ctx)}))\\k<a${k}>`;
    }
    case 'backref':
      return `\\k<g${n.n}>`;
    case 'rep': {
      const q = n.min === 0 && n.max === Infinity ? '*' : n.min === 1 && n.max === Infinity ? '+' : n.min === 0 && n.max === 1 ? '?' : n.max === Infinity ? `{${n.min},}` : n.min === n.max ? `{${n.min}}` : `{${n.min},${n.max}}`;
      const body = `(?:${emit(n.node, ctx)})${q}`;
      if (!n.possessive) return body;
      const k = ++ctx.atom;
      return `(?=(?<a${k}>${body}))\\k<a${k}>`;
    }
  }
}

/** Literal prefix every match (starting at offset 0) begins with; `exact` = matches only it. */
function prefixOf(n: Node): { pre: string; exact: boolean } {
  switch (n.t) {
    case 'set': {
      const b = setSingle(n.s);
      return b >= 0 ? { pre: String.fromCharCode(b), exact: true } : { pre: '', exact: false };
    }
    case 'cat': {
      let pre = '';
      for (const i of n.items) {
        const r = prefixOf(i);
        pre += r.pre;
        if (!r.exact) return { pre, exact: false };
      }
      return { pre, exact: true };
    }
    case 'alt': {
      const rs = n.items.map(prefixOf);
      if (rs.length === 0) return { pre: '', exact: true };
      let lcp = rs[0].pre;
      for (const r of rs) {
        let k = 0;
        while (k < lcp.length && k < r.pre.length && lcp[k] === r.pre[k]) k++;
        lcp = lcp.slice(0, k);
      }
      const exact = rs.every((r) => r.exact && r.pre === rs[0].pre);
      return { pre: lcp, exact };
    }
    case 'group':
    case 'atomic':
      return prefixOf(n.node);
    case 'zw':
    case 'look':
      return { pre: '', exact: true };
    case 'rep': {
      if (n.min === 0) return { pre: '', exact: n.max === 0 };
      const r = prefixOf(n.node);
      if (n.min === 1 && n.max === 1) return r;
      return { pre: r.pre, exact: false };
    }
    case 'backref':
      return { pre: '', exact: false };
  }
}

/** True when every match of an unanchored search must start at offset 0. */
function anchoredAtStart(n: Node): boolean {
  switch (n.t) {
    case 'zw':
      return n.start === true;
    case 'cat':
      for (const i of n.items) {
        if (anchoredAtStart(i)) return true;
        if (!(i.t === 'zw' || i.t === 'look')) return false;
      }
      return false;
    case 'alt':
      return n.items.length > 0 && n.items.every(anchoredAtStart);
    case 'group':
    case 'atomic':
      return anchoredAtStart(n.node);
    default:
      return false;
  }
}

let fallbackEnabled = false;
/** Lets V8 switch a regexp that backtracks excessively to its linear-time engine. */
function enableBacktrackFallback(): void {
  if (fallbackEnabled) return;
  fallbackEnabled = true;
  try {
    v8.setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');
  } catch {
    /* best effort */
  }
}

/** One compiled file_contexts pattern. */
export interface CompiledPattern {
  /** The composed source (`^(REGEX)T$`). */
  source: string;
  /** Which engine composefs-rs would use. */
  engine: 'dfa' | 'pcre2';
  /** The JavaScript translation (runs on latin1 keys). */
  regexp: RegExp;
  /** Literal prefix of every match (latin1). */
  prefix: string;
}

/** Compiles one composed pattern as composefs-rs would classify it. */
export function compilePattern(source: string): CompiledPattern {
  let node: Node;
  let engine: 'dfa' | 'pcre2' = 'dfa';
  try {
    node = new RustParser(source).parse();
  } catch (e) {
    if (e instanceof Unsupported) throw new SelabelError(`regex ${JSON.stringify(source)}: ${e.message}`);
    if (!(e instanceof NotDfa)) throw e;
    engine = 'pcre2';
    try {
      node = new PcreParser(Buffer.from(source, 'utf8')).parse();
    } catch (e2) {
      if (e2 instanceof Unsupported) throw new SelabelError(`regex ${JSON.stringify(source)}: ${e2.message}`);
      throw e2;
    }
  }
  const js = emit(node, { atom: 0 });
  let regexp: RegExp;
  try {
    regexp = new RegExp(js, engine === 'dfa' ? 'y' : '');
  } catch (e) {
    throw new SelabelError(`regex ${JSON.stringify(source)}: cannot translate (${(e as Error).message})`);
  }
  const prefix = engine === 'dfa' || anchoredAtStart(node) ? prefixOf(node).pre : '';
  return { source, engine, regexp, prefix };
}

interface TrieNode {
  next: Map<number, TrieNode>;
  ids: number[];
}

/** All patterns, index 0 = highest priority (the last line). */
export class Matcher {
  private readonly root: TrieNode = { next: new Map(), ids: [] };
  constructor(readonly patterns: CompiledPattern[]) {
    enableBacktrackFallback();
    patterns.forEach((p, i) => {
      let t = this.root;
      for (let k = 0; k < p.prefix.length; k++) {
        const c = p.prefix.charCodeAt(k);
        let n = t.next.get(c);
        if (!n) t.next.set(c, (n = { next: new Map(), ids: [] }));
        t = n;
      }
      t.ids.push(i); // ascending
    });
  }

  /** Lowest index of a matching pattern, or -1. `key` is latin1 (path bytes + type byte). */
  lookup(key: string): number {
    const lists: number[][] = [];
    let t: TrieNode | undefined = this.root;
    for (let k = 0; t; k++) {
      if (t.ids.length) lists.push(t.ids);
      if (k >= key.length) break;
      t = t.next.get(key.charCodeAt(k));
    }
    // k-way merge in ascending index; the first match wins.
    const pos = new Array<number>(lists.length).fill(0);
    for (;;) {
      let best = -1;
      let bi = -1;
      for (let j = 0; j < lists.length; j++) {
        if (pos[j] < lists[j].length && (best < 0 || lists[j][pos[j]] < best)) {
          best = lists[j][pos[j]];
          bi = j;
        }
      }
      if (bi < 0) return -1;
      pos[bi]++;
      const re = this.patterns[best].regexp;
      re.lastIndex = 0;
      if (re.test(key)) return best;
    }
  }
}
