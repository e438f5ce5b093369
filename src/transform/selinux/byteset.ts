/**
 * Byte sets: the character classes of both regex dialects, over bytes (both engines run with
 * Unicode off), and the ASCII Perl (`\d \w \s`) and POSIX (`[:name:]`) classes they share.
 */

export type ByteSet = Uint8Array<ArrayBuffer>; // 256 entries, 0/1

export function setOf(...bytes: number[]): ByteSet {
  const s = new Uint8Array(256);
  for (const b of bytes) s[b] = 1;
  return s;
}
export function setRange(s: ByteSet, lo: number, hi: number): ByteSet {
  for (let i = lo; i <= hi; i++) s[i] = 1;
  return s;
}
export function setNot(s: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = s[i] ? 0 : 1;
  return r;
}
export function setOr(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] | b[i];
  return r;
}
export function setAnd(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] & b[i];
  return r;
}
export function setXor(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] ^ b[i];
  return r;
}
export function setMinus(a: ByteSet, b: ByteSet): ByteSet {
  const r = new Uint8Array(256);
  for (let i = 0; i < 256; i++) r[i] = a[i] & (b[i] ^ 1);
  return r;
}
/** ASCII simple case folding (both engines fold ASCII letters only in byte mode). */
export function setFold(s: ByteSet): ByteSet {
  const r = Uint8Array.from(s);
  for (let c = 0x41; c <= 0x5a; c++) if (s[c] || s[c + 32]) r[c] = r[c + 32] = 1;
  return r;
}
export function setSingle(s: ByteSet): number {
  let found = -1;
  for (let i = 0; i < 256; i++)
    if (s[i]) {
      if (found >= 0) return -1;
      found = i;
    }
  return found;
}

export const DIGIT = setRange(new Uint8Array(256), 0x30, 0x39);
export const WORD = setOf(0x5f);
setRange(WORD, 0x30, 0x39);
setRange(WORD, 0x41, 0x5a);
setRange(WORD, 0x61, 0x7a);
/** `\s`: regex-syntax ASCII space and PCRE2 (since 8.34) agree: \t \n \v \f \r space. */
export const SPACE = setOf(0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20);

export function posixClass(name: string): ByteSet | undefined {
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
