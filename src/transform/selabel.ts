/**
 * SELinux relabelling for the bootable transform: composefs-rs v0.9.0 `selabel`
 * (crates/composefs-boot/src/selabel.rs). Spec: tree-rules.md §6.2–6.3.
 *
 * Policy: /etc/selinux/config names the policy (first line containing `=` whose trimmed key is
 * `SELINUXTYPE`, ASCII case-insensitively); `/etc/selinux/<name>/contexts/files/` supplies
 * `file_contexts` (mandatory), `.local`, `.homedirs` (concatenated in that order) and the
 * substitution files `.subs`, `.subs_dist` (a later alias definition replaces an earlier one).
 * `.bin` files are never read. Every line `REGEX [-T] CONTEXT` becomes the pattern
 * `^(REGEX)T$` (or `^(REGEX).$`) matched against `path bytes + type byte`; the LAST matching
 * line wins; `<<none>>` or no match removes `security.selinux`.
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
 * Constructs we cannot reproduce faithfully make {@link loadPolicy} throw
 * {@link SelabelError} instead of producing a possibly wrong digest (see UNSUPPORTED below).
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
import { type Directory, type FileSystem, Leaf, type Stat, XATTR_SECURITY_SELINUX, cloneStat, keyBytes, nameKey } from '../tree/tree.js';
import { InputError } from '../errors.js';

/** Errors of policy loading (composefs-rs fails the transform in the same situations). */
export class SelabelError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'SelabelError';
  }
}

// ---------------------------------------------------------------------------------------------
// Rust text helpers: BufRead::lines (UTF-8 checked per line), char::is_whitespace, str::trim.

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Rust `char::is_whitespace` (Unicode White_Space). Unlike JS `\s` it has U+0085, not U+FEFF. */
function isRustWhitespace(c: number): boolean {
  return (
    (c >= 0x09 && c <= 0x0d) ||
    c === 0x20 ||
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

function rustTrim(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isRustWhitespace(s.charCodeAt(a))) a++;
  while (b > a && isRustWhitespace(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** Rust `str::split_whitespace`. */
function rustSplitWhitespace(s: string): string[] {
  const out: string[] = [];
  let start = -1;
  for (let i = 0; i <= s.length; i++) {
    const ws = i === s.length || isRustWhitespace(s.charCodeAt(i));
    if (ws) {
      if (start >= 0) out.push(s.slice(start, i));
      start = -1;
    } else if (start < 0) start = i;
  }
  return out;
}

/** Rust `BufRead::lines()`: split at `\n`, drop one `\r` before it, no final empty line; each line must be UTF-8. */
function* rustLines(buf: Buffer, what: string): Generator<string> {
  let pos = 0;
  let nr = 0;
  while (pos < buf.length) {
    let end = buf.indexOf(0x0a, pos);
    const next = end === -1 ? buf.length : end + 1;
    if (end === -1) end = buf.length;
    let stop = end;
    if (end < buf.length && stop > pos && buf[stop - 1] === 0x0d) stop--;
    let line: string;
    try {
      line = utf8.decode(buf.subarray(pos, stop));
    } catch {
      throw new SelabelError(`${what}: line ${nr}: stream did not contain valid UTF-8`);
    }
    yield line;
    pos = next;
    nr++;
  }
}

// ---------------------------------------------------------------------------------------------
// Byte sets.

type ByteSet = Uint8Array<ArrayBuffer>; // 256 entries, 0/1

function setOf(...bytes: number[]): ByteSet {
  const s = new Uint8Array(256);
  for (const b of bytes) s[b] = 1;
  return s;
}
function setRange(s: ByteSet, lo: number, hi: number): ByteSet {
  for (let i = lo; i <= hi; i++) s[i] = 1;
  return s;
}
function setNot(s: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = s[i] ? 0 : 1;
  return r;
}
function setOr(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] | b[i];
  return r;
}
function setAnd(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] & b[i];
  return r;
}
function setXor(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] ^ b[i];
  return r;
}
function setMinus(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] & (b[i] ^ 1);
  return r;
}
/** ASCII simple case folding (both engines fold ASCII letters only in byte mode). */
function setFold(s: ByteSet): ByteSet {
  const r = Uint8Array.from(s);
  for (let c = 0x41; c <= 0x5a; c++) if (s[c] || s[c + 32]) r[c] = r[c + 32] = 1;
  return r;
}
function setSingle(s: ByteSet): number {
  let found = -1;
  for (let i = 0; i < 256; i++)
    if (s[i]) {
      if (found >= 0) return -1;
      found = i;
    }
  return found;
}

const DIGIT = setRange(new Uint8Array(256), 0x30, 0x39);
const WORD = setOf(0x5f);
setRange(WORD, 0x30, 0x39);
setRange(WORD, 0x41, 0x5a);
setRange(WORD, 0x61, 0x7a);
/** `\s`: regex-syntax ASCII space and PCRE2 (since 8.34) agree: \t \n \v \f \r space. */
const SPACE = setOf(0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20);

function posixClass(name: string): ByteSet | undefined {
  const s = new Uint8Array(256);
  switch (name) {
    case 'alnum':
      return setRange(setRange(setRange(s, 0x30, 0x39), 0x41, 0x5a), 0x61, 0x7a);
    case 'alpha':
      return setRange(setRange(s, 0x41, 0x5a), 0x61, 0x7a);
    case 'ascii':
      return setRange(s, 0, 0x7f);
    case 'blank':
      return setOf(0x09, 0x20);
    case 'cntrl':
      s[0x7f] = 1;
      return setRange(s, 0, 0x1f);
    case 'digit':
      return setRange(s, 0x30, 0x39);
    case 'graph':
      return setRange(s, 0x21, 0x7e);
    case 'lower':
      return setRange(s, 0x61, 0x7a);
    case 'print':
      return setRange(s, 0x20, 0x7e);
    case 'punct':
      return setRange(setRange(setRange(setRange(s, 0x21, 0x2f), 0x3a, 0x40), 0x5b, 0x60), 0x7b, 0x7e);
    case 'space':
      return Uint8Array.from(SPACE);
    case 'upper':
      return setRange(s, 0x41, 0x5a);
    case 'word':
      return Uint8Array.from(WORD);
    case 'xdigit':
      return setRange(setRange(setRange(s, 0x30, 0x39), 0x41, 0x46), 0x61, 0x66);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Regex AST shared by both dialects.

type Node =
  | { t: 'set'; s: ByteSet }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; min: number; max: number; node: Node; possessive: boolean }
  | { t: 'group'; node: Node; cap?: number }
  | { t: 'zw'; js: string; start?: boolean } // zero-width assertion emitted verbatim
  | { t: 'look'; ahead: boolean; neg: boolean; node: Node }
  | { t: 'atomic'; node: Node }
  | { t: 'backref'; n: number };

const EMPTY: Node = { t: 'cat', items: [] };

/** regex-syntax rejected the pattern: composefs-rs hands it to PCRE2. */
class NotDfa extends Error {}
/** Valid (or possibly valid) syntax that we cannot reproduce: fail loudly. */
class Unsupported extends Error {}

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  x: boolean;
}

function utf8Bytes(cp: number): number[] {
  return [...Buffer.from(String.fromCodePoint(cp), 'utf8')];
}

function litNode(bytes: number[], fold: boolean): Node {
  const items: Node[] = bytes.map((b) => ({ t: 'set', s: fold ? setFold(setOf(b)) : setOf(b) }));
  return items.length === 1 ? items[0] : { t: 'cat', items };
}

/**
 * regex-syntax 0.8 grammar with Unicode and UTF-8 modes off. The pattern is Unicode text
 * (code points); literal non-ASCII characters match their UTF-8 bytes. Throws {@link NotDfa}
 * wherever regex-syntax reports a parse/translate error.
 */
class RustParser {
  private p = 0;
  private caps = 0;
  private names = new Set<string>();
  private readonly cps: number[];
  constructor(pattern: string) {
    this.cps = [...pattern].map((c) => c.codePointAt(0)!);
  }
  private eof(): boolean {
    return this.p >= this.cps.length;
  }
  private ch(): string {
    return String.fromCodePoint(this.cps[this.p]);
  }
  private peekIs(s: string): boolean {
    const cs = [...s];
    for (let k = 0; k < cs.length; k++) if (this.cps[this.p + k] !== cs[k].codePointAt(0)) return false;
    return true;
  }
  private skipX(f: Flags): void {
    // Patterns never contain whitespace (lines are split on it); only `#` comments remain.
    if (f.x && !this.eof() && this.ch() === '#') this.p = this.cps.length;
  }

  parse(): Node {
    const n = this.alternation({ i: false, m: false, s: false, x: false }, 0);
    if (!this.eof()) throw new NotDfa('unopened group');
    return n;
  }

  private alternation(flags: Flags, depth: number): Node {
    if (depth > 250) throw new NotDfa('nest limit');
    const branches: Node[] = [];
    let items: Node[] = [];
    const f = { ...flags };
    for (;;) {
      this.skipX(f);
      if (this.eof()) break;
      const c = this.ch();
      if (c === ')') {
        if (depth === 0) throw new NotDfa('unopened group');
        break;
      }
      if (c === '|') {
        this.p++;
        branches.push({ t: 'cat', items });
        items = [];
        continue;
      }
      if (c === '?' || c === '*' || c === '+' || c === '{') {
        const last = items.pop();
        if (!last || last === EMPTY) throw new NotDfa('repetition operator missing expression');
        let min: number;
        let max: number;
        if (c === '{') {
          [min, max] = this.counted();
        } else {
          this.p++;
          [min, max] = c === '?' ? [0, 1] : c === '*' ? [0, Infinity] : [1, Infinity];
        }
        if (!this.eof() && this.ch() === '?') this.p++; // lazy: irrelevant for existence
        items.push({ t: 'rep', min, max, node: last, possessive: false });
        continue;
      }
      if (c === '(') {
        this.p++;
        if (this.peekIs('?=') || this.peekIs('?!') || this.peekIs('?<=') || this.peekIs('?<!')) throw new NotDfa('look-around');
        let cap = false;
        let inner = { ...f };
        if (this.peekIs('?P<') || this.peekIs('?<')) {
          this.p += this.peekIs('?P<') ? 3 : 2;
          this.captureName();
          cap = true;
        } else if (this.peekIs('?')) {
          this.p++;
          if (this.eof()) throw new NotDfa('unclosed group');
          const [nf, end] = this.flags(f);
          if (end === ')') {
            Object.assign(f, nf);
            items.push(EMPTY); // a flags item: repetition after it is an error
            continue;
          }
          inner = nf;
        } else {
          cap = true;
        }
        if (cap) this.caps++;
        const node = this.alternation(inner, depth + 1);
        if (this.eof()) throw new NotDfa('unclosed group');
        this.p++; // ')'
        items.push({ t: 'group', node });
        continue;
      }
      if (c === '[') {
        items.push({ t: 'set', s: this.bracket(f) });
        continue;
      }
      items.push(this.primitive(f));
    }
    branches.push({ t: 'cat', items });
    const cleaned = branches.map((b) => (b.t === 'cat' ? { t: 'cat' as const, items: b.items.filter((x) => x !== EMPTY) } : b));
    return cleaned.length === 1 ? cleaned[0] : { t: 'alt', items: cleaned };
  }

  private decimal(): number | undefined {
    const start = this.p;
    while (!this.eof() && /[0-9]/.test(this.ch())) this.p++;
    if (this.p === start) return undefined;
    const v = Number(String.fromCodePoint(...this.cps.slice(start, this.p)));
    if (v > 0xffffffff) throw new NotDfa('decimal too big');
    return v;
  }

  private counted(): [number, number] {
    this.p++; // '{'
    if (this.eof()) throw new NotDfa('unclosed counted repetition');
    const lo = this.decimal();
    if (this.eof()) throw new NotDfa('unclosed counted repetition');
    let min: number;
    let max: number;
    if (this.ch() === ',') {
      this.p++;
      if (this.eof()) throw new NotDfa('unclosed counted repetition');
      if (lo === undefined) throw new NotDfa('empty decimal'); // empty_min_range is off
      if (this.ch() !== '}') {
        const hi = this.decimal();
        if (hi === undefined) throw new NotDfa('empty decimal');
        [min, max] = [lo, hi];
      } else [min, max] = [lo, Infinity];
    } else {
      if (lo === undefined) throw new NotDfa('empty decimal');
      [min, max] = [lo, lo];
    }
    if (this.eof() || this.ch() !== '}') throw new NotDfa('unclosed counted repetition');
    this.p++;
    if (min > max) throw new NotDfa('invalid repetition range');
    return [min, max];
  }

  private captureName(): void {
    const start = this.p;
    while (!this.eof() && this.ch() !== '>') {
      const c = this.ch();
      const first = this.p === start;
      const ok = c === '_' || /[A-Za-z]/.test(c) || (!first && (/[0-9.[\]]/.test(c)));
      if (!ok) throw new NotDfa('invalid group name');
      this.p++;
    }
    if (this.eof()) throw new NotDfa('unexpected eof in group name');
    const name = String.fromCodePoint(...this.cps.slice(start, this.p));
    if (!name) throw new NotDfa('empty group name');
    if (this.names.has(name)) throw new NotDfa('duplicate group name');
    this.names.add(name);
    this.p++;
  }

  private flags(f: Flags): [Flags, string] {
    const nf = { ...f };
    let neg = false;
    let any = false;
    let lastNeg = false;
    const seen = new Set<string>();
    while (!this.eof() && this.ch() !== ':' && this.ch() !== ')') {
      const c = this.ch();
      if (c === '-') {
        if (neg) throw new NotDfa('repeated negation');
        neg = true;
        lastNeg = true;
      } else {
        lastNeg = false;
        if (seen.has(c)) throw new NotDfa('duplicate flag');
        seen.add(c);
        any = true;
        switch (c) {
          case 'i':
          case 'm':
          case 's':
          case 'x':
            nf[c] = !neg;
            break;
          case 'U':
            break; // swap greed: irrelevant for existence
          case 'u':
            if (!neg) throw new Unsupported('the (?u) flag (Unicode mode) is not supported');
            break;
          case 'R':
            if (!neg) throw new Unsupported('the (?R) flag (CRLF mode) is not supported');
            break;
          default:
            throw new NotDfa('unrecognized flag');
        }
      }
      this.p++;
    }
    if (this.eof()) throw new NotDfa('unexpected eof in flags');
    if (lastNeg) throw new NotDfa('dangling negation');
    const end = this.ch();
    this.p++;
    if (end === ')' && !any && !neg) throw new NotDfa('empty flags');
    return [nf, end];
  }

  /** One escape; returns a set (class escape), literal bytes, or an assertion. */
  private escape(f: Flags, inClass: boolean): { set?: ByteSet; lit?: number[]; byte?: boolean; zw?: Node } {
    this.p++; // '\'
    if (this.eof()) throw new NotDfa('escape at end');
    const c = this.ch();
    if (/[0-9]/.test(c)) throw new NotDfa('backreferences are not supported');
    if (c === 'x' || c === 'u' || c === 'U') {
      this.p++;
      const width = c === 'x' ? 2 : c === 'u' ? 4 : 8;
      let hex: string;
      const brace = !this.eof() && this.ch() === '{';
      if (brace) {
        this.p++;
        const start = this.p;
        while (!this.eof() && this.ch() !== '}') this.p++;
        if (this.eof()) throw new NotDfa('unclosed hex brace');
        hex = String.fromCodePoint(...this.cps.slice(start, this.p));
        this.p++;
        if (!/^[0-9A-Fa-f]{1,8}$/.test(hex)) throw new NotDfa('invalid hex');
      } else {
        hex = String.fromCodePoint(...this.cps.slice(this.p, this.p + width));
        if (hex.length !== width || !/^[0-9A-Fa-f]+$/.test(hex)) throw new NotDfa('invalid hex');
        this.p += width;
      }
      const v = parseInt(hex, 16);
      if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) throw new NotDfa('invalid code point');
      // Only the fixed two-digit `\xHH` is a byte (ast::Literal::byte); anything else is a
      // character, UTF-8 encoded (and not allowed in a class when non-ASCII).
      if (c === 'x' && !brace) return { lit: [v], byte: true };
      if (v <= 0x7f) return { lit: [v], byte: true };
      if (inClass) throw new NotDfa('Unicode not allowed in a byte class');
      return { lit: utf8Bytes(v) };
    }
    if (c === 'p' || c === 'P') throw new NotDfa('Unicode classes not allowed');
    const perl: Record<string, () => ByteSet> = {
      d: () => DIGIT,
      D: () => setNot(DIGIT),
      s: () => SPACE,
      S: () => setNot(SPACE),
      w: () => WORD,
      W: () => setNot(WORD),
    };
    this.p++;
    if (perl[c]) return { set: perl[c]() };
    const cp = c.codePointAt(0)!;
    if (cp < 0x80 && !/[0-9A-Za-z<>]/.test(c)) return { lit: [cp], byte: true }; // meta or superfluous escape
    const special: Record<string, number> = { a: 7, f: 12, t: 9, n: 10, r: 13, v: 11 };
    if (c in special) return { lit: [special[c]], byte: true };
    if (inClass) throw new NotDfa('invalid escape in class');
    switch (c) {
      case 'A':
        return { zw: { t: 'zw', js: '^', start: true } };
      case 'z':
        return { zw: { t: 'zw', js: '$' } };
      case 'B':
        return { zw: { t: 'zw', js: '\\B' } };
      case '<':
        return { zw: { t: 'zw', js: '\\b(?=\\w)' } };
      case '>':
        return { zw: { t: 'zw', js: '\\b(?!\\w)' } };
      case 'b': {
        const kinds: Record<string, string> = {
          start: '\\b(?=\\w)',
          end: '\\b(?!\\w)',
          'start-half': '(?:\\b(?=\\w)|\\B(?!\\w))',
          'end-half': '(?:\\b(?!\\w)|\\B(?=\\w))',
        };
        if (!this.eof() && this.ch() === '{') {
          const save = this.p;
          this.p++;
          const start = this.p;
          while (!this.eof() && /[a-z-]/.test(this.ch())) this.p++;
          const name = String.fromCodePoint(...this.cps.slice(start, this.p));
          if (name && !this.eof() && this.ch() === '}' && kinds[name]) {
            this.p++;
            return { zw: { t: 'zw', js: kinds[name] } };
          }
          if (/^[a-z-]+$/.test(name)) throw new NotDfa('unrecognized special word boundary');
          this.p = save; // a counted repetition of \b
        }
        return { zw: { t: 'zw', js: '\\b' } };
      }
    }
    throw new NotDfa('unrecognized escape');
  }

  private primitive(f: Flags): Node {
    const c = this.ch();
    if (c === '.') {
      this.p++;
      return { t: 'set', s: f.s ? setNot(new Uint8Array(256)) : setNot(setOf(0)) };
    }
    if (c === '^') {
      this.p++;
      return f.m ? { t: 'zw', js: '(?:^|(?<=\\n))' } : { t: 'zw', js: '^', start: true };
    }
    if (c === '$') {
      this.p++;
      return f.m ? { t: 'zw', js: '(?:$|(?=\\n))' } : { t: 'zw', js: '$' };
    }
    if (c === '\\') {
      const e = this.escape(f, false);
      if (e.zw) return e.zw;
      if (e.set) return { t: 'set', s: e.set };
      return litNode(e.lit!, f.i && e.lit!.length === 1);
    }
    this.p++;
    const cp = c.codePointAt(0)!;
    return litNode(cp < 0x80 ? [cp] : utf8Bytes(cp), f.i && cp < 0x80);
  }

  /** A bracketed class (regex-syntax: nesting, `&&`, `--`, `~~`, `[:name:]`). */
  private bracket(f: Flags): ByteSet {
    this.p++; // '['
    if (this.eof()) throw new NotDfa('unclosed class');
    let negated = false;
    if (this.ch() === '^') {
      negated = true;
      this.p++;
      if (this.eof()) throw new NotDfa('unclosed class');
    }
    let union: ByteSet = new Uint8Array(256);
    let any = false;
    while (!this.eof() && this.ch() === '-') {
      union[0x2d] = 1;
      any = true;
      this.p++;
    }
    if (this.eof()) throw new NotDfa('unclosed class');
    if (!any && this.ch() === ']') {
      union[0x5d] = 1;
      this.p++;
    }
    let acc: ByteSet | undefined;
    let op: string | undefined;
    const fold = (s: ByteSet) => (f.i ? setFold(s) : s);
    const combine = () => {
      const u = fold(union);
      if (acc === undefined) acc = u;
      else if (op === '&&') acc = setAnd(acc, u);
      else if (op === '--') acc = setMinus(acc, u);
      else acc = setXor(acc, u);
    };
    for (;;) {
      if (this.eof()) throw new NotDfa('unclosed class');
      const c = this.ch();
      if (c === '[') {
        const ascii = this.asciiClass();
        if (ascii) {
          union = setOr(union, fold(ascii));
          continue;
        }
        union = setOr(union, fold(this.bracket(f)));
        continue;
      }
      if (c === ']') {
        this.p++;
        combine();
        let r = fold(acc!);
        if (negated) r = setNot(r);
        return r;
      }
      if ((c === '&' && this.peekIs('&&')) || (c === '-' && this.peekIs('--')) || (c === '~' && this.peekIs('~~'))) {
        this.p += 2;
        combine();
        op = c + c;
        union = new Uint8Array(256);
        continue;
      }
      const a = this.classItem(f);
      if (this.eof()) throw new NotDfa('unclosed class');
      const nextIs = (k: number, s: string) => this.cps[this.p + k] === s.codePointAt(0);
      if (this.ch() !== '-' || nextIs(1, ']') || nextIs(1, '-')) {
        union = setOr(union, fold(a.set ?? setOf(a.byte!)));
        continue;
      }
      this.p++; // '-'
      if (this.eof()) throw new NotDfa('unclosed class');
      const b = this.classItem(f);
      if (a.byte === undefined || b.byte === undefined) throw new NotDfa('invalid range');
      if (a.byte > b.byte) throw new NotDfa('invalid range');
      union = setOr(union, fold(setRange(new Uint8Array(256), a.byte, b.byte)));
    }
  }

  private classItem(f: Flags): { set?: ByteSet; byte?: number } {
    if (this.ch() === '\\') {
      const e = this.escape(f, true);
      if (e.set) return { set: e.set };
      if (e.lit!.length !== 1) throw new NotDfa('Unicode not allowed in a byte class');
      return { byte: e.lit![0] };
    }
    const cp = this.cps[this.p++];
    if (cp >= 0x80) throw new NotDfa('Unicode not allowed in a byte class');
    return { byte: cp };
  }

  private asciiClass(): ByteSet | undefined {
    const save = this.p;
    if (!this.peekIs('[:')) return undefined;
    this.p += 2;
    let neg = false;
    if (!this.eof() && this.ch() === '^') {
      neg = true;
      this.p++;
    }
    const start = this.p;
    while (!this.eof() && this.ch() !== ':') this.p++;
    const name = String.fromCodePoint(...this.cps.slice(start, this.p));
    if (this.peekIs(':]')) {
      const s = posixClass(name);
      if (s) {
        this.p += 2;
        return neg ? setNot(s) : s;
      }
    }
    this.p = save;
    return undefined;
  }
}

/**
 * PCRE2 (10.4x, no UTF, default options) grammar over the pattern's bytes. Covers what
 * file_contexts plausibly use (look-around, atomic groups, possessive quantifiers,
 * back-references, `\Q…\E`, POSIX classes, inline flags); anything else throws.
 */
class PcreParser {
  private p = 0;
  private caps = 0;
  private readonly names = new Map<string, number>();
  private readonly s: string; // latin1: one char per byte
  constructor(patternBytes: Buffer) {
    this.s = patternBytes.toString('latin1');
  }
  private eof(): boolean {
    return this.p >= this.s.length;
  }
  parse(): Node {
    const n = this.alternation({ i: false, m: false, s: false, x: false }, false);
    if (!this.eof()) throw new Unsupported('PCRE2: unmatched closing parenthesis');
    return n;
  }
  private skipX(f: Flags): void {
    if (!f.x) return;
    while (!this.eof()) {
      const c = this.s[this.p];
      if (/[ \t\n\v\f\r]/.test(c)) this.p++;
      else if (c === '#') {
        while (!this.eof() && this.s[this.p] !== '\n') this.p++;
      } else break;
    }
  }
  private alternation(flags: Flags, nested: boolean): Node {
    const branches: Node[] = [];
    let items: Node[] = [];
    const f = { ...flags };
    const quantifiable = (n: Node | undefined) => n !== undefined && n !== EMPTY && !(n.t === 'zw');
    for (;;) {
      this.skipX(f);
      if (this.eof()) break;
      const c = this.s[this.p];
      if (c === ')') {
        if (!nested) throw new Unsupported('PCRE2: unmatched closing parenthesis');
        break;
      }
      if (c === '|') {
        this.p++;
        branches.push({ t: 'cat', items });
        items = [];
        continue;
      }
      let q: [number, number] | undefined;
      if (c === '?' || c === '*' || c === '+') {
        this.p++;
        q = c === '?' ? [0, 1] : c === '*' ? [0, Infinity] : [1, Infinity];
      } else if (c === '{') {
        const m = /^\{(\d+)(?:(,)(\d*))?\}/.exec(this.s.slice(this.p));
        if (m) {
          this.p += m[0].length;
          const lo = Number(m[1]);
          const hi = m[2] ? (m[3] ? Number(m[3]) : Infinity) : lo;
          if (lo > 65535 || hi !== Infinity && hi > 65535) throw new Unsupported('PCRE2: number too big in {} quantifier');
          if (lo > hi) throw new Unsupported('PCRE2: numbers out of order in {} quantifier');
          q = [lo, hi];
        } else if (/^\{\s*,/.test(this.s.slice(this.p))) {
          throw new Unsupported('PCRE2: `{,n}` quantifiers differ between PCRE2 versions');
        }
      }
      if (q) {
        const last = items.pop();
        if (!quantifiable(last)) {
          if (last?.t === 'zw') throw new Unsupported('PCRE2: quantified assertion');
          throw new Unsupported('PCRE2: quantifier does not follow a repeatable item');
        }
        let possessive = false;
        if (!this.eof() && this.s[this.p] === '?') this.p++;
        else if (!this.eof() && this.s[this.p] === '+') {
          this.p++;
          possessive = true;
        }
        items.push({ t: 'rep', min: q[0], max: q[1], node: last!, possessive });
        continue;
      }
      if (c === '(') {
        const n = this.group(f);
        if (n === 'flags') items.push(EMPTY);
        else if (n) items.push(n);
        continue;
      }
      if (c === '[') {
        items.push({ t: 'set', s: this.bracket(f) });
        continue;
      }
      if (c === '\\' && this.s[this.p + 1] === 'Q') {
        this.p += 2;
        const end = this.s.indexOf('\\E', this.p);
        const lit = this.s.slice(this.p, end === -1 ? undefined : end);
        this.p = end === -1 ? this.s.length : end + 2;
        for (const ch of lit) items.push(litNode([ch.charCodeAt(0)], f.i));
        continue;
      }
      if (c === '\\' && this.s[this.p + 1] === 'E') {
        this.p += 2;
        continue;
      }
      items.push(this.primitive(f));
    }
    branches.push({ t: 'cat', items: items.filter((x) => x !== EMPTY) });
    return branches.length === 1 ? branches[0] : { t: 'alt', items: branches.map((b) => (b.t === 'cat' ? { t: 'cat', items: b.items.filter((x) => x !== EMPTY) } : b)) };
  }

  private group(f: Flags): Node | 'flags' | undefined {
    const rest = this.s.slice(this.p);
    const close = (node: Node): Node => {
      if (this.eof() || this.s[this.p] !== ')') throw new Unsupported('PCRE2: missing closing parenthesis');
      this.p++;
      return node;
    };
    if (rest.startsWith('(*')) throw new Unsupported('PCRE2: (*VERB) is not supported');
    if (rest.startsWith('(?#')) {
      const end = this.s.indexOf(')', this.p);
      if (end === -1) throw new Unsupported('PCRE2: missing ) after comment');
      this.p = end + 1;
      return undefined;
    }
    const looks: [string, boolean, boolean][] = [
      ['(?=', true, false],
      ['(?!', true, true],
      ['(?<=', false, false],
      ['(?<!', false, true],
    ];
    for (const [pre, ahead, neg] of looks) {
      if (rest.startsWith(pre)) {
        this.p += pre.length;
        const node = close(this.alternation(f, true));
        const n: Node = { t: 'look', ahead, neg, node: (node as Node) };
        if (!ahead) checkFixedLength(n.node);
        return n;
      }
    }
    if (rest.startsWith('(?>')) {
      this.p += 3;
      return { t: 'atomic', node: close(this.alternation(f, true)) };
    }
    const named = /^\(\?(?:P<|<(?![=!])|')/.exec(rest);
    if (named) {
      this.p += named[0].length;
      const term = named[0].endsWith("'") ? "'" : '>';
      const m = /^[A-Za-z_][A-Za-z0-9_]{0,31}/.exec(this.s.slice(this.p));
      if (!m || this.s[this.p + m[0].length] !== term) throw new Unsupported('PCRE2: bad group name');
      this.p += m[0].length + 1;
      const cap = ++this.caps;
      if (this.names.has(m[0])) throw new Unsupported('PCRE2: duplicate group name');
      this.names.set(m[0], cap);
      return { t: 'group', cap, node: close(this.alternation(f, true)) };
    }
    const fl = /^\(\?(\^?)([imnsxU]*)(?:-([imnsxU]*))?([:)])/.exec(rest);
    if (fl) {
      this.p += fl[0].length;
      const nf = { ...f };
      if (fl[1]) Object.assign(nf, { i: false, m: false, s: false, x: false });
      for (const ch of fl[2]) if (ch in nf) (nf as Record<string, boolean>)[ch] = true;
      for (const ch of fl[3] ?? '') if (ch in nf) (nf as Record<string, boolean>)[ch] = false;
      if (fl[2].includes('n') || fl[3]?.includes('n')) throw new Unsupported('PCRE2: (?n) is not supported');
      if (fl[4] === ')') {
        Object.assign(f, nf);
        return 'flags';
      }
      return { t: 'group', node: close(this.alternation(nf, true)) };
    }
    if (rest.startsWith('(?')) throw new Unsupported(`PCRE2 construct ${JSON.stringify(rest.slice(0, 4))} is not supported`);
    this.p++;
    const cap = ++this.caps;
    return { t: 'group', cap, node: close(this.alternation(f, true)) };
  }

  private escapeCommon(f: Flags, inClass: boolean): { set?: ByteSet; byte?: number } | undefined {
    const c = this.s[this.p + 1];
    if (c === undefined) throw new Unsupported('PCRE2: \\ at end of pattern');
    const simple: Record<string, number> = { a: 7, e: 27, f: 12, n: 10, r: 13, t: 9 };
    if (inClass && c === 'b') {
      this.p += 2;
      return { byte: 8 };
    }
    if (c in simple) {
      this.p += 2;
      return { byte: simple[c] };
    }
    const perl: Record<string, () => ByteSet> = {
      d: () => DIGIT,
      D: () => setNot(DIGIT),
      s: () => SPACE,
      S: () => setNot(SPACE),
      w: () => WORD,
      W: () => setNot(WORD),
      h: () => setOf(0x09, 0x20, 0xa0),
      H: () => setNot(setOf(0x09, 0x20, 0xa0)),
      v: () => setOf(0x0a, 0x0b, 0x0c, 0x0d, 0x85),
      V: () => setNot(setOf(0x0a, 0x0b, 0x0c, 0x0d, 0x85)),
    };
    if (perl[c]) {
      this.p += 2;
      return { set: perl[c]() };
    }
    if (c === 'x') {
      const m = /^\\x(?:\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{0,2}))/.exec(this.s.slice(this.p))!;
      const v = parseInt(m[1] ?? (m[2] || '0'), 16);
      if (v > 0xff) throw new Unsupported('PCRE2: character code point value in \\x{} is too large');
      this.p += m[0].length;
      return { byte: v };
    }
    if (c === 'o') {
      const m = /^\\o\{([0-7]+)\}/.exec(this.s.slice(this.p));
      if (!m) throw new Unsupported('PCRE2: bad \\o{}');
      const v = parseInt(m[1], 8);
      if (v > 0xff) throw new Unsupported('PCRE2: octal value too large');
      this.p += m[0].length;
      return { byte: v };
    }
    if (c === 'c') {
      const x = this.s[this.p + 2];
      if (x === undefined || x.charCodeAt(0) > 0x7e || x.charCodeAt(0) < 0x20) throw new Unsupported('PCRE2: bad \\c');
      this.p += 3;
      return { byte: x.toUpperCase().charCodeAt(0) ^ 0x40 };
    }
    if (c === '0') {
      const m = /^\\0([0-7]{0,2})/.exec(this.s.slice(this.p))!;
      this.p += m[0].length;
      return { byte: parseInt(m[1] || '0', 8) };
    }
    if (!/[0-9A-Za-z]/.test(c)) {
      this.p += 2;
      return { byte: c.charCodeAt(0) };
    }
    if (inClass && /[1-7]/.test(c)) {
      const m = /^\\([0-7]{1,3})/.exec(this.s.slice(this.p))!;
      const v = parseInt(m[1], 8);
      if (v > 0xff) throw new Unsupported('PCRE2: octal value too large');
      this.p += m[0].length;
      return { byte: v };
    }
    return undefined;
  }

  private primitive(f: Flags): Node {
    const c = this.s[this.p];
    if (c === '.') {
      this.p++;
      return { t: 'set', s: f.s ? setNot(new Uint8Array(256)) : setNot(setOf(0x0a)) };
    }
    if (c === '^') {
      this.p++;
      return f.m ? { t: 'zw', js: '(?:^|(?<=\\n)(?!$))' } : { t: 'zw', js: '^', start: true };
    }
    if (c === '$') {
      this.p++;
      return f.m ? { t: 'zw', js: '(?:$|(?=\\n))' } : { t: 'zw', js: '(?:$|(?=\\n$))' };
    }
    if (c === '\\') {
      const e = this.escapeCommon(f, false);
      if (e) return e.set ? { t: 'set', s: e.set } : litNode([e.byte!], f.i);
      const d = this.s[this.p + 1];
      const rest = this.s.slice(this.p);
      const zw: Record<string, Node> = {
        A: { t: 'zw', js: '^', start: true },
        G: { t: 'zw', js: '^', start: true },
        z: { t: 'zw', js: '$' },
        Z: { t: 'zw', js: '(?:$|(?=\\n$))' },
        b: { t: 'zw', js: '\\b' },
        B: { t: 'zw', js: '\\B' },
      };
      if (zw[d]) {
        this.p += 2;
        return zw[d];
      }
      if (d === 'N' && !rest.startsWith('\\N{')) {
        this.p += 2;
        return { t: 'set', s: setNot(setOf(0x0a)) };
      }
      if (d === 'C') {
        this.p += 2;
        return { t: 'set', s: setNot(new Uint8Array(256)) };
      }
      if (d === 'R') {
        this.p += 2;
        return {
          t: 'atomic',
          node: { t: 'alt', items: [litNode([13, 10], false), { t: 'set', s: setOf(10, 11, 12, 13, 0x85) }] },
        };
      }
      let m = /^\\([1-9][0-9]*)/.exec(rest) ?? /^\\g\{?([0-9]+)\}?/.exec(rest);
      if (m && (rest[1] === 'g' ? /^\\g(\{\d+\}|\d+)/.test(rest) : true)) {
        let n = Number(m[1]);
        let len = m[0].length;
        if (rest[1] !== 'g' && n >= 10 && n > this.caps) {
          // PCRE2: octal if that many groups do not exist (and the digits are octal).
          const o = /^\\([0-7]{1,3})/.exec(rest);
          if (!o) throw new Unsupported('PCRE2: reference to non-existent subpattern');
          n = parseInt(o[1], 8);
          if (n > 0xff) throw new Unsupported('PCRE2: octal value too large');
          this.p += o[0].length;
          return litNode([n], f.i);
        }
        if (f.i) throw new Unsupported('PCRE2: caseless back-references are not supported');
        this.p += len;
        return { t: 'backref', n };
      }
      m = /^\\k(?:<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\})/.exec(rest);
      if (m) {
        const n = this.names.get(m[1] ?? m[2] ?? m[3]);
        if (n === undefined) throw new Unsupported('PCRE2: forward named back-references are not supported');
        if (f.i) throw new Unsupported('PCRE2: caseless back-references are not supported');
        this.p += m[0].length;
        return { t: 'backref', n };
      }
      throw new Unsupported(`PCRE2 escape ${JSON.stringify(rest.slice(0, 2))} is not supported`);
    }
    this.p++;
    return litNode([c.charCodeAt(0)], f.i);
  }

  private bracket(f: Flags): ByteSet {
    this.p++;
    let neg = false;
    if (this.s[this.p] === '^') {
      neg = true;
      this.p++;
    }
    let set: ByteSet = new Uint8Array(256);
    let first = true;
    for (;;) {
      if (this.eof()) throw new Unsupported('PCRE2: missing terminating ] for character class');
      const c = this.s[this.p];
      if (c === ']' && !first) {
        this.p++;
        break;
      }
      first = false;
      const posix = /^\[([:.=])(\^?)([A-Za-z]*)\1\]/.exec(this.s.slice(this.p));
      if (posix) {
        if (posix[1] !== ':') throw new Unsupported('PCRE2: POSIX collating elements are not supported');
        const cls = posixClass(posix[3]);
        if (!cls) throw new Unsupported('PCRE2: unknown POSIX class name');
        set = setOr(set, posix[2] ? setNot(cls) : cls);
        this.p += posix[0].length;
        continue;
      }
      const a = this.classAtom(f);
      if (a.set) {
        set = setOr(set, a.set);
        continue;
      }
      if (this.s[this.p] === '-' && this.s[this.p + 1] !== ']' && this.p + 1 < this.s.length) {
        const save = this.p;
        this.p++;
        if (/^\[([:.=])/.test(this.s.slice(this.p))) {
          this.p = save;
          set[a.byte!] = 1;
          continue;
        }
        const b = this.classAtom(f);
        if (b.set) throw new Unsupported('PCRE2: invalid range in character class');
        if (b.byte! < a.byte!) throw new Unsupported('PCRE2: range out of order in character class');
        setRange(set, a.byte!, b.byte!);
        continue;
      }
      set[a.byte!] = 1;
    }
    if (f.i) set = setFold(set);
    return neg ? setNot(set) : set;
  }

  private classAtom(f: Flags): { set?: ByteSet; byte?: number } {
    if (this.s[this.p] === '\\') {
      if (this.s[this.p + 1] === 'E') {
        this.p += 2;
        return { set: new Uint8Array(256) };
      }
      if (this.s[this.p + 1] === 'Q') throw new Unsupported('PCRE2: \\Q inside a class is not supported');
      const e = this.escapeCommon(f, true);
      if (!e) throw new Unsupported(`PCRE2 escape ${JSON.stringify(this.s.slice(this.p, this.p + 2))} in a class is not supported`);
      return e;
    }
    return { byte: this.s.charCodeAt(this.p++) };
  }
}

/** PCRE2 10.42 requires every top-level branch of a look-behind to have a fixed length. */
function checkFixedLength(n: Node): void {
  const len = (x: Node): number => {
    switch (x.t) {
      case 'set':
        return 1;
      case 'cat':
        return x.items.reduce((a, i) => a + len(i), 0);
      case 'alt': {
        const ls = x.items.map(len);
        if (ls.some((l) => l !== ls[0])) return NaN;
        return ls[0] ?? 0;
      }
      case 'rep':
        return x.min === x.max ? x.min * len(x.node) : NaN;
      case 'group':
      case 'atomic':
        return len(x.node);
      case 'zw':
      case 'look':
        return 0;
      case 'backref':
        return NaN;
    }
  };
  const branches = n.t === 'alt' ? n.items : [n];
  for (const b of branches) if (Number.isNaN(len(b))) throw new Unsupported('PCRE2: lookbehind assertion is not fixed length');
}

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
class Matcher {
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

// ---------------------------------------------------------------------------------------------
// Policy.

export interface Policy {
  /** Substitutions: alias path -> original path (latin1 keys of UTF-8 bytes). */
  aliases: Map<string, string>;
  /** Context per pattern, index 0 = last line; undefined = `<<none>>`. */
  contexts: (Buffer | undefined)[];
  matcher: Matcher;
}

/** Parses file_contexts-style text into composed patterns and contexts (file order). */
export function parseSpecFile(buf: Buffer, what: string, regexps: string[], contexts: string[], origins: string[] = []): void {
  let nr = 0;
  for (const line of rustLines(buf, what)) {
    const lineNr = ++nr;
    const parts = rustSplitWhitespace(line);
    if (parts.length === 0 || parts[0].startsWith('#')) continue;
    const regex = parts[0];
    if (parts.length < 2) throw new SelabelError(`${what} line ${lineNr}: missing separator after regex`);
    const next = parts[1];
    let used = 2;
    if (next.startsWith('-')) {
      const ifmt = next.slice(1);
      if (!['b', 'c', 'd', 'p', 'l', 's', '-'].includes(ifmt)) throw new SelabelError(`${what} line ${lineNr}: invalid type code -${ifmt}`);
      if (parts.length < 3) throw new SelabelError(`${what} line ${lineNr}: missing context field`);
      regexps.push(`^(${regex})${ifmt}$`);
      origins.push(`${what} line ${lineNr}`);
      contexts.push(parts[2]);
      used = 3;
    } else {
      regexps.push(`^(${regex}).$`);
      origins.push(`${what} line ${lineNr}`);
      contexts.push(next);
    }
    if (parts.length > used) throw new SelabelError(`${what} line ${lineNr}: trailing data`);
  }
}

/** Parses a .subs file into `aliases` (later definitions replace earlier ones). */
export function parseSubsFile(buf: Buffer, what: string, aliases: Map<string, string>): void {
  let nr = 0;
  for (const line of rustLines(buf, what)) {
    const lineNr = nr++;
    const parts = rustSplitWhitespace(line);
    if (parts.length === 0 || parts[0].startsWith('#')) continue;
    if (parts.length < 2) throw new SelabelError(`${what}: ${lineNr}: missing original path`);
    if (parts.length > 2) throw new SelabelError(`${what}: ${lineNr}: trailing data`);
    aliases.set(Buffer.from(parts[0], 'utf8').toString('latin1'), Buffer.from(parts[1], 'utf8').toString('latin1'));
  }
}

/** composefs-rs `parse_config`: the SELINUXTYPE value, or undefined. */
export function parseConfig(buf: Buffer): string | undefined {
  for (const line of rustLines(buf, '/etc/selinux/config')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    if (asciiLower(rustTrim(line.slice(0, eq))) === 'selinuxtype') return rustTrim(line.slice(eq + 1));
  }
  return undefined;
}

function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Builds a policy from already-read file contents (name -> bytes; absent = undefined). */
export function buildPolicy(files: { [name: string]: Buffer | undefined }): Policy {
  const regexps: string[] = [];
  const ctx: string[] = [];
  const origins: string[] = [];
  for (const suffix of ['', '.local', '.homedirs']) {
    const name = `file_contexts${suffix}`;
    const b = files[name];
    if (b) parseSpecFile(b, `SELinux spec file ${name}`, regexps, ctx, origins);
    else if (suffix === '') throw new SelabelError('SELinux policy is missing mandatory file_contexts file');
  }
  const aliases = new Map<string, string>();
  for (const suffix of ['.subs', '.subs_dist']) {
    const name = `file_contexts${suffix}`;
    const b = files[name];
    if (b) parseSubsFile(b, `SELinux subs file ${name}`, aliases);
  }
  regexps.reverse();
  ctx.reverse();
  origins.reverse();
  const patterns = regexps.map((r, i) => {
    try {
      return compilePattern(r);
    } catch (e) {
      if (e instanceof SelabelError) throw new SelabelError(`${origins[i]}: ${e.message}`);
      throw e;
    }
  });
  return {
    aliases,
    contexts: ctx.map((c) => (c === '<<none>>' ? undefined : Buffer.from(c, 'utf8'))),
    matcher: new Matcher(patterns),
  };
}

/** The label for a path (latin1 path bytes) and type byte; undefined = remove the label. */
export function lookupLabel(policy: Policy, path: string, ifmt: string): Buffer | undefined {
  const i = policy.matcher.lookup(path + ifmt);
  return i < 0 ? undefined : policy.contexts[i];
}

/** Reads a regular file's content (the boot transform's reader). */
export type PolicyReader = (path: Buffer, leaf: Leaf) => Promise<Buffer | undefined>;

/** composefs-rs `Directory::get_directory_opt`: Rust Path components, relative to `dir`. */
function getDirectoryOpt(dir: Directory, pathname: string): Directory | undefined {
  const comps = pathComponents(pathname);
  let cur = dir;
  for (const c of comps) {
    if (c === '.' || c === '..') throw new SelabelError(`Invalid filename ${JSON.stringify(pathname)}`);
    const e = cur.entries.get(c);
    if (!e) return undefined;
    if (e.kind !== 'dir') throw new SelabelError(`Directory entry ${JSON.stringify(c)} is not a subdirectory`);
    cur = e;
  }
  return cur;
}

/** Rust `Path::components()` minus RootDir: repeated `/` and interior `.` vanish; a leading `.` stays. */
function pathComponents(p: string): string[] {
  const parts = p.split('/');
  const out: string[] = [];
  parts.forEach((c, i) => {
    if (c === '') return;
    if (c === '.' && !(i === 0)) return;
    out.push(c);
  });
  return out;
}

async function openFile(dir: Directory, name: string, dirPath: string, read: PolicyReader): Promise<Buffer | undefined> {
  const e = dir.entries.get(name);
  if (!e) return undefined;
  if (e.kind === 'dir') throw new SelabelError(`${JSON.stringify(name)} is a directory`);
  const c = e.content;
  switch (c.type) {
    case 'inline':
      return c.data;
    case 'sparse':
      return undefined;
    case 'external':
    case 'external-no-verity': {
      const b = await read(Buffer.from(`${dirPath}/${name}`, 'latin1'), e);
      if (!b) throw new SelabelError(`cannot read ${dirPath}/${name}`);
      return b;
    }
    default:
      throw new SelabelError(`${JSON.stringify(name)} is not a regular file`);
  }
}

/**
 * Reads the policy from the tree like composefs-rs `selabel` (tree variant). Returns undefined
 * when the tree has no policy (no /etc/selinux, no config, or no SELINUXTYPE line): then
 * `security.selinux` must be stripped everywhere ({@link stripSelinux}).
 */
export async function loadPolicy(fs: FileSystem, read: PolicyReader): Promise<Policy | undefined> {
  const etcSelinux = getDirectoryOpt(fs.root, 'etc/selinux');
  if (!etcSelinux) return undefined;
  const config = await openFile(etcSelinux, 'config', '/etc/selinux', read);
  if (!config) return undefined;
  const name = parseConfig(config);
  if (name === undefined) return undefined;
  const nameKeyStr = Buffer.from(name, 'utf8').toString('latin1');
  const files: { [n: string]: Buffer | undefined } = {};
  for (const f of ['file_contexts', 'file_contexts.local', 'file_contexts.homedirs', 'file_contexts.subs', 'file_contexts.subs_dist']) {
    const pdir = getDirectoryOpt(etcSelinux, nameKeyStr);
    if (!pdir) throw new SelabelError(`Directory entry ${JSON.stringify(name)} does not exist (/etc/selinux/${name})`);
    const files_ = getDirectoryOpt(pdir, 'contexts/files');
    if (!files_) throw new SelabelError(`/etc/selinux/${name}/contexts/files does not exist`);
    files[f] = await openFile(files_, f, `/etc/selinux/${nameKeyStr}/contexts/files`, read);
    if (f === 'file_contexts' && !files[f]) throw new SelabelError('SELinux policy is missing mandatory file_contexts file');
  }
  return buildPolicy(files);
}

function setLabel(stat: Stat, label: Buffer | undefined): void {
  if (label) {
    stat.xattrs = new Map(stat.xattrs);
    stat.xattrs.set(XATTR_SECURITY_SELINUX, label);
  } else if (stat.xattrs.has(XATTR_SECURITY_SELINUX)) {
    stat.xattrs = new Map(stat.xattrs);
    stat.xattrs.delete(XATTR_SECURITY_SELINUX);
  }
}

function leafType(leaf: Leaf): string {
  switch (leaf.content.type) {
    case 'symlink':
      return 'l';
    case 'fifo':
      return 'p';
    case 'socket':
      return 's';
    case 'blockdev':
      return 'b';
    case 'chardev':
      return 'c';
    default:
      return '-';
  }
}

/** Rust `PathBuf::push` of a plain name. */
function pushPath(base: string, name: string): string {
  return base === '' || base.endsWith('/') ? base + name : `${base}/${name}`;
}

function sameLabel(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

/**
 * Relabels every directory and leaf from `policy` exactly like composefs-rs `relabel_dir`
 * (depth-first, byte-sorted; substitutions applied per path and inherited by children;
 * hardlinks split when a later path gets a label different from the first path's).
 */
export function relabel(fs: FileSystem, policy: Policy): void {
  const labelled = new Map<Leaf, Buffer | undefined>();
  type Frame = { dir: Directory; path: string; items: [string, Directory | Leaf][]; i: number };
  const enter = (dir: Directory, path: string): Frame => {
    setLabel(dir.stat, lookupLabel(policy, path, 'd'));
    return { dir, path, items: dir.sorted(), i: 0 };
  };
  const stack: Frame[] = [enter(fs.root, '/')];
  while (stack.length) {
    const top = stack[stack.length - 1];
    if (top.i >= top.items.length) {
      stack.pop();
      continue;
    }
    const [name, child] = top.items[top.i++];
    const p = pushPath(top.path, name);
    const eff = policy.aliases.get(p) ?? p;
    if (child.kind === 'dir') {
      stack.push(enter(child, eff));
      continue;
    }
    const label = lookupLabel(policy, eff, leafType(child));
    let target = child;
    if (labelled.has(child)) {
      if (!sameLabel(labelled.get(child), label)) {
        target = new Leaf(cloneStat(child.stat), child.content);
        top.dir.entries.set(name, target);
      }
    }
    setLabel(target.stat, label);
    if (!labelled.has(target)) labelled.set(target, label);
  }
}

/** Removes `security.selinux` from every directory and leaf (the no-policy case). */
export function stripSelinux(fs: FileSystem): void {
  const seen = new Set<Leaf>();
  const stack: Directory[] = [fs.root];
  while (stack.length) {
    const d = stack.pop()!;
    setLabel(d.stat, undefined);
    for (const e of d.entries.values()) {
      if (e.kind === 'dir') stack.push(e);
      else if (!seen.has(e)) {
        seen.add(e);
        setLabel(e.stat, undefined);
      }
    }
  }
}

/** composefs-rs `selabel`: relabel from the tree's policy, or strip. Returns true if a policy was applied. */
export async function selabel(fs: FileSystem, read: PolicyReader): Promise<boolean> {
  const policy = await loadPolicy(fs, read);
  if (!policy) {
    stripSelinux(fs);
    return false;
  }
  relabel(fs, policy);
  return true;
}

export { keyBytes, nameKey };
