/**
 * Escaping of dumpfile fields, shared by the writer and the parser.
 *
 * Writer rules (composefs-rs `write_escaped` / `write_escaped_raw`, C `ESCAPE_LONE_DASH`):
 * `\\`, `\n`, `\r`, `\t` by name; bytes outside 0x21..0x7E as `\xHH` (lowercase); in xattr
 * names and values also `=`. Path, payload and content fields map empty to `-` and a lone `-`
 * to `\x2d`; xattr values never use that sentinel.
 */
import { InputError } from '../errors.js';

const HEX = '0123456789abcdef';

function needsEscape(c: number, escapeEquals: boolean): boolean {
  return c < 0x21 || c > 0x7e || c === 0x5c || (escapeEquals && c === 0x3d);
}

/** Escapes raw bytes (no `-` sentinel). Returns a string of ASCII characters only. */
export function escapeRaw(bytes: Uint8Array, escapeEquals: boolean): string {
  let out = '';
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (!needsEscape(c, escapeEquals)) continue;
    if (i > start) out += Buffer.from(bytes.buffer, bytes.byteOffset + start, i - start).toString('latin1');
    switch (c) {
      case 0x5c:
        out += '\\\\';
        break;
      case 0x0a:
        out += '\\n';
        break;
      case 0x0d:
        out += '\\r';
        break;
      case 0x09:
        out += '\\t';
        break;
      default:
        out += '\\x' + HEX[c >> 4] + HEX[c & 15];
    }
    start = i + 1;
  }
  if (start === 0) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
  if (start < bytes.length) out += Buffer.from(bytes.buffer, bytes.byteOffset + start, bytes.length - start).toString('latin1');
  return out;
}

/** Escapes a path/payload/content field: empty -> `-`, lone `-` -> `\x2d`. */
export function escapeField(bytes: Uint8Array): string {
  if (bytes.length === 0) return '-';
  if (bytes.length === 1 && bytes[0] === 0x2d) return '\\x2d';
  return escapeRaw(bytes, false);
}

/** Escapes an xattr name or value (`=` escaped too, no sentinel). */
export function escapeXattr(bytes: Uint8Array): string {
  return escapeRaw(bytes, true);
}

/** Thrown by {@link unescape}; the parser adds the line number. */
export class EscapeError extends InputError {}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Unescapes a field given as its raw UTF-8 bytes. Accepts `\\ \n \r \t \xHH`; any other escape
 * is an error. Other bytes (including multi-byte UTF-8) pass through unchanged. With `max`,
 * the result may not exceed that many bytes.
 */
export function unescape(field: Buffer, max = Infinity): Buffer {
  if (field.indexOf(0x5c) === -1) {
    if (field.length > max) throw new EscapeError(`content of ${field.length} bytes exceeds the maximum of ${max}`);
    return field;
  }
  const out = Buffer.allocUnsafe(field.length);
  let n = 0;
  for (let i = 0; i < field.length; ) {
    const c = field[i];
    if (c !== 0x5c) {
      out[n++] = c;
      i++;
    } else {
      if (i + 1 >= field.length) throw new EscapeError('unterminated escape');
      const e = field[i + 1];
      if (e === 0x5c) out[n++] = 0x5c;
      else if (e === 0x6e) out[n++] = 0x0a;
      else if (e === 0x72) out[n++] = 0x0d;
      else if (e === 0x74) out[n++] = 0x09;
      else if (e === 0x78) {
        if (i + 3 >= field.length) throw new EscapeError('unterminated hex escape');
        const hi = hexDigit(field[i + 2]);
        const lo = hexDigit(field[i + 3]);
        if (hi < 0 || lo < 0) {
          throw new EscapeError(`invalid hex escape \\x${field.subarray(i + 2, i + 4).toString('latin1')}`);
        }
        out[n++] = (hi << 4) | lo;
        i += 4;
        if (n > max) throw new EscapeError(`content exceeds the maximum of ${max} bytes`);
        continue;
      } else throw new EscapeError(`invalid escape \\${String.fromCharCode(e)}`);
      i += 2;
    }
    if (n > max) throw new EscapeError(`content exceeds the maximum of ${max} bytes`);
  }
  return Buffer.from(out.subarray(0, n));
}
