/** The PCRE2 dialect: composefs-rs's fallback for the patterns regex-syntax rejects. */
import { type ByteSet, DIGIT, SPACE, WORD, posixClass, setFold, setNot, setOf, setOr, setRange } from './byteset.js';
import { EMPTY, type Flags, type Node, Unsupported, litNode } from './regex-ast.js';

/**
 * PCRE2 (10.4x, no UTF, default options) grammar over the pattern's bytes. Covers what
 * file_contexts plausibly use (look-around, atomic groups, possessive quantifiers,
 * back-references, `\Q…\E`, POSIX classes, inline flags); anything else throws.
 */
export class PcreParser {
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
