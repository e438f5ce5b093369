/** The two regex dialects of file_contexts patterns (regex-syntax DFA, PCRE2 fallback) as composefs-rs v0.9.0 classifies them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SelabelError } from '../../../src/transform/selinux/errors.js';
import { compilePattern } from '../../../src/transform/selinux/matcher.js';
import { ctx, lbl, policyOf } from './fixtures.js';

test('PCRE2 fallback: look-ahead / look-behind patterns interleave by priority with DFA patterns', () => {
  // composefs-rs hybrid_lookaround_priority.
  const p = policyOf(
    [
      '/(.*)?  ' + ctx('default_t'),
      '/usr(.*)?  ' + ctx('usr_t'),
      '/usr/bin/(?!bad).*  ' + ctx('bin_ok_t'),
      '/usr/bin/good  ' + ctx('bin_good_t'),
      '/etc/(?!shadow).*  ' + ctx('etc_public_t'),
      '/etc/hostname  ' + ctx('hostname_t'),
      '/var/.*(?<!\\.log)  ' + ctx('var_nolog_t'),
    ].join('\n'),
  );
  assert.equal(lbl(p, '/etc/hostname', '-'), ctx('hostname_t'));
  assert.equal(lbl(p, '/etc/passwd', '-'), ctx('etc_public_t'));
  assert.equal(lbl(p, '/etc/shadow', '-'), ctx('default_t'));
  assert.equal(lbl(p, '/usr/bin/good', '-'), ctx('bin_good_t'));
  assert.equal(lbl(p, '/usr/bin/hello', '-'), ctx('bin_ok_t'));
  assert.equal(lbl(p, '/usr/bin/bad', '-'), ctx('usr_t'));
  assert.equal(lbl(p, '/var/x', '-'), ctx('var_nolog_t'));
  assert.equal(lbl(p, '/var/x.log', '-'), ctx('default_t'));
  assert.equal(compilePattern('^(/usr/bin/(?!bad).*).$').engine, 'pcre2');
  assert.equal(compilePattern('^(/usr/bin/good).$').engine, 'dfa');
  // Variable-length look-behind: PCRE2 refuses it, so does the transform.
  assert.throws(() => policyOf('/a(?<=x+)  ' + ctx('a_t')), SelabelError);
  // Branches of different fixed lengths are fine.
  assert.equal(lbl(policyOf('/a.*(?<=x|yy)  ' + ctx('a_t')), '/ayy', '-'), ctx('a_t'));
});

test('regex dialect: DFA "." matches \\n (not NUL), PCRE2 "." does not; ASCII classes; byte escapes', () => {
  const p = policyOf(['/n/.*  ' + ctx('dfa_t'), '/n/(?=a).*  ' + ctx('pcre_t')].join('\n'));
  assert.equal(lbl(p, '/n/ab', '-'), ctx('pcre_t'));
  assert.equal(lbl(p, '/n/a\nb', '-'), ctx('dfa_t'), 'PCRE2 "." excludes \\n; the DFA one does not');
  const d = policyOf(
    [
      '/d/[[:digit:]]+  ' + ctx('digits_t'),
      '/w/\\w+  ' + ctx('word_t'),
      '/s/a\\sb  ' + ctx('space_t'),
      '/i/(?i)abc  ' + ctx('ci_t'),
      '/u/\\x{e9}  ' + ctx('utf8_t'),
      '/b/\\xe9  ' + ctx('byte_t'),
      '/c/[a-z--b]  ' + ctx('classop_t'),
      '/q/a{2}  ' + ctx('count_t'),
      '/l/x{y}  ' + ctx('brace_t'),
      '/e/\\/  ' + ctx('esc_t'),
    ].join('\n'),
  );
  assert.equal(lbl(d, '/d/0123', '-'), ctx('digits_t'));
  assert.equal(lbl(d, '/d/\u0663', '-'), undefined, 'no Unicode digits (and only bytes)');
  assert.equal(lbl(d, '/w/a_Z9', '-'), ctx('word_t'));
  assert.equal(lbl(d, '/w/\xe9', '-'), undefined, '\\w is ASCII');
  assert.equal(lbl(d, '/s/a\x0bb', '-'), ctx('space_t'), '\\s includes VT');
  assert.equal(lbl(d, '/s/a\xa0b', '-'), undefined, '\\s excludes NBSP (JS \\s would not)');
  assert.equal(lbl(d, '/i/AbC', '-'), ctx('ci_t'));
  assert.equal(lbl(d, '/u/\xc3\xa9', '-'), ctx('utf8_t'), '\\x{e9} is the character, UTF-8 encoded');
  assert.equal(lbl(d, '/b/\xe9', '-'), ctx('byte_t'), '\\xe9 is one byte');
  assert.equal(lbl(d, '/c/a', '-'), ctx('classop_t'));
  assert.equal(lbl(d, '/c/b', '-'), undefined, 'regex-syntax class difference');
  assert.equal(lbl(d, '/q/aa', '-'), ctx('count_t'));
  assert.equal(lbl(d, '/l/x{y}', '-'), ctx('brace_t'), 'a literal { is a regex-syntax error: PCRE2 takes it');
  assert.equal(compilePattern('^(/l/x{y}).$').engine, 'pcre2');
  assert.equal(lbl(d, '/e//', '-'), ctx('esc_t'));
  // (?i) folds ASCII only.
  const ci = policyOf('/(?i)\xe9a  ' + ctx('x_t'));
  assert.equal(lbl(ci, '/\xc3\xa9A', '-'), ctx('x_t'));
  assert.equal(lbl(ci, '/\xc3\x89A', '-'), undefined);
});
