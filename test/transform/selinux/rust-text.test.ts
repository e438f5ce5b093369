/**
 * The Rust std text semantics composefs-rs reads policy files with (BufRead::lines,
 * char::is_whitespace, str::trim, str::split_whitespace), where JS's own differ.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SelabelError } from '../../../src/transform/selinux/errors.js';
import { rustLines, rustSplitWhitespace, rustTrim } from '../../../src/transform/selinux/rust-text.js';

const lines = (b: Buffer | string) => [...rustLines(Buffer.isBuffer(b) ? b : Buffer.from(b, 'latin1'), 'f')];

test('BufRead::lines: split at \\n, one \\r before it dropped, no empty last line, a lone \\r kept', () => {
  assert.deepEqual(lines('a\nb\r\nc'), ['a', 'b', 'c']);
  assert.deepEqual(lines('a\n'), ['a'], 'no empty line after the final \\n');
  assert.deepEqual(lines('\n\n'), ['', '']);
  assert.deepEqual(lines(''), []);
  assert.deepEqual(lines('a\r\r\n'), ['a\r'], 'only one \\r is dropped');
  assert.deepEqual(lines('a\r'), ['a\r'], 'a \\r without \\n stays (lines() strips only a line terminator)');
  assert.deepEqual(lines('x\ry\n'), ['x\ry']);
});

test('BufRead::lines: each line is UTF-8 checked when it is read, not before', () => {
  const bad = Buffer.concat([Buffer.from('ok\n'), Buffer.from([0xc3, 0x0a]), Buffer.from('never\n')]);
  const it = rustLines(bad, 'spec');
  assert.equal(it.next().value, 'ok', 'lines before the bad one are returned');
  assert.throws(() => it.next(), (e: unknown) => e instanceof SelabelError && /^spec: line 1: stream did not contain valid UTF-8$/.test(e.message));
  assert.deepEqual(lines(Buffer.from('\xc3\xa9\n', 'latin1')), ['\u00e9'], 'valid multi-byte UTF-8 is decoded');
  assert.deepEqual(lines(Buffer.from([0xef, 0xbb, 0xbf, 0x41])), ['\ufeffA'], 'a BOM is kept, not eaten');
});

test('char::is_whitespace (Unicode White_Space), not JS \\s: U+0085 is space, U+FEFF and U+200B are not', () => {
  assert.equal(rustTrim('\u0085\u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000 \t\n\v\f\rx\u3000'), 'x');
  assert.equal(rustTrim('\ufeffx\ufeff'), '\ufeffx\ufeff', 'JS trim() would strip U+FEFF');
  assert.equal(rustTrim('\u200bx'), '\u200bx', 'U+200B ZERO WIDTH SPACE is not White_Space');
  assert.equal(rustTrim('\u0085x'), 'x', 'JS trim() would keep U+0085');
  assert.deepEqual(rustSplitWhitespace('  /a\u0085-d\u3000ctx  '), ['/a', '-d', 'ctx']);
  assert.deepEqual(rustSplitWhitespace('/a\ufeffb c'), ['/a\ufeffb', 'c']);
  assert.deepEqual(rustSplitWhitespace(' \t '), []);
});
