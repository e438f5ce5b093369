/**
 * Rust text helpers: BufRead::lines (UTF-8 checked per line), char::is_whitespace, str::trim.
 * composefs-rs reads the policy files with these; JS's `trim`/`split(/\s+/)` use another
 * whitespace set, so the policy parsers must not.
 */
import { SelabelError } from './errors.js';

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

export function rustTrim(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isRustWhitespace(s.charCodeAt(a))) a++;
  while (b > a && isRustWhitespace(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** Rust `str::split_whitespace`. */
export function rustSplitWhitespace(s: string): string[] {
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
export function* rustLines(buf: Buffer, what: string): Generator<string> {
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
