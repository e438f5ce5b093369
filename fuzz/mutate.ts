/**
 * A seeded PRNG and the byte mutations of the fuzzer (the libFuzzer/AFL repertoire, small):
 * bit flips, interesting bytes and integers, ASCII-number rewrites (tar octal fields, PAX and
 * dumpfile decimals), inserts, deletes, copies, aligned block copies, dictionary tokens, splices
 * with other corpus entries and truncation. Several are stacked per input.
 */

/** sfc32: small, fast, and the same sequence on every machine for a given seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;
  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** 0 <= n < max */
  below(max: number): number {
    return max <= 1 ? 0 : this.u32() % max;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)];
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
}

const INTERESTING_BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x30, 0x37, 0x0a, 0x2f, 0x3d, 0x5c, 0x2e];
const INTERESTING_INTS: bigint[] = [
  0n, 1n, 2n, 0x7fn, 0x80n, 0xffn, 0x100n, 0x1000n, 0x7fffn, 0x8000n, 0xffffn, 0x10000n, 0x7fffffffn, 0x80000000n,
  0xffffffffn, 0x100000000n, (1n << 53n) + 1n, 0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn,
];
const INTERESTING_NUMBERS = [
  '0', '1', '-1', '7', '8', '9', '00000000000', '77777777777', '777777777777', '4294967295', '4294967296', '9007199254740993',
  '18446744073709551615', '18446744073709551616', '99999999999999999999999', '1e9', '0x10', '+1', ' ', '', '1.5', '-0',
];

export interface MutateContext {
  rng: Rng;
  maxLen: number;
  dictionary: Buffer[];
  blockSize?: number;
  /** Another corpus entry, for splices. */
  other(): Buffer;
}

function insert(b: Buffer, at: number, x: Buffer): Buffer {
  return Buffer.concat([b.subarray(0, at), x, b.subarray(at)]);
}

function overwrite(b: Buffer, at: number, x: Buffer): Buffer {
  const out = Buffer.from(b);
  x.copy(out, at, 0, Math.min(x.length, out.length - at));
  return out;
}

function intBytes(v: bigint, width: number, le: boolean): Buffer {
  const out = Buffer.alloc(width);
  for (let i = 0; i < width; i++) {
    const byte = Number((v >> BigInt(8 * i)) & 0xffn);
    out[le ? i : width - 1 - i] = byte;
  }
  return out;
}

type Mutation = (b: Buffer, m: MutateContext) => Buffer;

const MUTATIONS: Mutation[] = [
  // flip a bit
  (b, { rng }) => {
    if (b.length === 0) return b;
    const out = Buffer.from(b);
    out[rng.below(b.length)] ^= 1 << rng.below(8);
    return out;
  },
  // random byte
  (b, { rng }) => {
    if (b.length === 0) return Buffer.from([rng.below(256)]);
    const out = Buffer.from(b);
    out[rng.below(b.length)] = rng.below(256);
    return out;
  },
  // interesting byte
  (b, { rng }) => {
    if (b.length === 0) return b;
    const out = Buffer.from(b);
    out[rng.below(b.length)] = rng.pick(INTERESTING_BYTES);
    return out;
  },
  // interesting integer, 2/4/8 bytes, either endianness
  (b, { rng }) => {
    const w = rng.pick([2, 4, 8]);
    if (b.length < w) return b;
    let v = rng.pick(INTERESTING_INTS);
    if (rng.chance(0.2)) v = (v + BigInt(rng.below(5)) - 2n) & 0xffffffffffffffffn;
    return overwrite(b, rng.below(b.length - w + 1), intBytes(v, w, rng.chance(0.7)));
  },
  // rewrite an ASCII number (decimal or octal field) near a random position
  (b, { rng }) => {
    if (b.length === 0) return b;
    let i = rng.below(b.length);
    const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
    let tries = 0;
    while (!isDigit(b[i]) && tries++ < 256) i = (i + 1) % b.length;
    if (!isDigit(b[i])) return b;
    let s = i;
    let e = i;
    while (s > 0 && isDigit(b[s - 1])) s--;
    while (e < b.length && isDigit(b[e])) e++;
    const old = b.subarray(s, e).toString('latin1');
    let rep: string;
    const k = rng.below(4);
    if (k === 0) rep = rng.pick(INTERESTING_NUMBERS);
    else if (k === 1) rep = (BigInt(old) + BigInt(rng.below(3)) - 1n).toString();
    else if (k === 2) rep = rng.pick(INTERESTING_NUMBERS).padStart(old.length, '0').slice(-old.length); // keep field width
    else rep = (BigInt(old) * BigInt(rng.pick([2, 8, 10, 256, 4096]))).toString();
    return Buffer.concat([b.subarray(0, s), Buffer.from(rep, 'latin1'), b.subarray(e)]);
  },
  // insert random bytes or a run of one byte
  (b, { rng }) => {
    const at = rng.below(b.length + 1);
    const n = 1 + rng.below(rng.chance(0.8) ? 8 : 600);
    const x = Buffer.alloc(n);
    if (rng.chance(0.5)) x.fill(rng.pick(INTERESTING_BYTES));
    else for (let i = 0; i < n; i++) x[i] = rng.below(256);
    return insert(b, at, x);
  },
  // delete a range
  (b, { rng }) => {
    if (b.length < 2) return b;
    const at = rng.below(b.length);
    const n = 1 + rng.below(Math.min(b.length - at, rng.chance(0.7) ? 16 : 1024));
    return Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
  },
  // copy a range elsewhere (insert or overwrite)
  (b, { rng }) => {
    if (b.length < 2) return b;
    const from = rng.below(b.length);
    const n = 1 + rng.below(Math.min(b.length - from, 256));
    const chunk = Buffer.from(b.subarray(from, from + n));
    const to = rng.below(b.length);
    return rng.chance(0.5) ? insert(b, to, chunk) : overwrite(b, to, chunk);
  },
  // dictionary token
  (b, m) => {
    if (m.dictionary.length === 0) return b;
    const tok = m.rng.pick(m.dictionary);
    const at = m.rng.below(b.length + 1);
    return m.rng.chance(0.5) || at === b.length ? insert(b, at, tok) : overwrite(b, at, tok);
  },
  // aligned block copy / zero block / block delete (formats made of blocks: tar, EROFS)
  (b, m) => {
    const bs = m.blockSize;
    if (!bs || b.length < bs) return b;
    const blocks = Math.floor(b.length / bs);
    const from = m.rng.below(blocks) * bs;
    const to = m.rng.below(blocks + 1) * bs;
    const k = m.rng.below(3);
    if (k === 0) return insert(b, to, Buffer.from(b.subarray(from, from + bs)));
    if (k === 1) return insert(b, to, Buffer.alloc(bs));
    return Buffer.concat([b.subarray(0, from), b.subarray(from + bs)]);
  },
  // splice with another corpus entry
  (b, m) => {
    const o = m.other();
    if (o.length === 0) return b;
    const cut = m.rng.below(b.length + 1);
    const from = m.rng.below(o.length);
    return Buffer.concat([b.subarray(0, cut), o.subarray(from)]);
  },
  // truncate
  (b, { rng }) => (b.length === 0 ? b : b.subarray(0, rng.below(b.length))),
];

/** 1 to 8 stacked mutations, fewer more often. */
export function mutate(input: Buffer, m: MutateContext): Buffer {
  let b = input;
  const n = 1 + (m.rng.chance(0.5) ? 0 : m.rng.below(m.rng.chance(0.5) ? 3 : 8));
  for (let i = 0; i < n; i++) b = m.rng.pick(MUTATIONS)(b, m);
  if (b.length > m.maxLen) b = b.subarray(0, m.maxLen);
  return b === input ? Buffer.from(input) : b;
}
