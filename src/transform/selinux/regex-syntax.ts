/**
 * The regex crate's dialect (regex-syntax 0.8, Unicode and UTF-8 modes off): composefs-rs puts
 * every pattern this grammar accepts into its DFA; {@link NotDfa} marks the patterns it hands
 * to PCRE2 instead (pcre2.ts).
 */
import { type ByteSet, DIGIT, SPACE, WORD, posixClass, setAnd, setFold, setMinus, setNot, setOf, setOr, setRange, setXor } from './byteset.js';
import { EMPTY, type Flags, type Node, Unsupported, litNode } from './regex-ast.js';

/** regex-syntax rejected the pattern: composefs-rs hands it to PCRE2. */
export class NotDfa extends Error {}

function utf8Bytes(cp: number): number[] {
  return [...Buffer.from(String.fromCodePoint(cp), 'utf8')];
}

/**
 * regex-syntax 0.8 grammar with Unicode and UTF-8 modes off. The pattern is Unicode text
 * (code points); literal non-ASCII characters match their UTF-8 bytes. Throws {@link NotDfa}
 * wherever regex-syntax reports a parse/translate error.
 */
export class RustParser {
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
