/** Matching file_contexts patterns: priority, the literal-prefix index, runaway backtracking. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ctx, lbl, policyOf } from './fixtures.js';

test('a catastrophic pattern does not hang the lookup', () => {
  const p = policyOf('/(a*)*b  ' + ctx('x_t') + '\n/((a|a)*)*c  ' + ctx('y_t'));
  const t = Date.now();
  assert.equal(lbl(p, '/' + 'a'.repeat(60), '-'), undefined);
  assert.ok(Date.now() - t < 5000, `took ${Date.now() - t} ms`);
});

test('the literal-prefix index finds exactly what testing every pattern in order finds', () => {
  const lines = [
    '/(.*)?  ' + ctx('d_t'),
    '/usr(/.*)?  ' + ctx('u_t'),
    '/usr/lib(64)?/.*\\.so(\\.[^/]*)*  --  ' + ctx('lib_t'),
    '/usr/(s)?bin/[^/]+  ' + ctx('bin_t'),
    '/(usr|opt)/local/.*  ' + ctx('local_t'),
    '/a?quota\\.(user|group)  --  ' + ctx('q_t'),
    '/usr/lib/x  -d  ' + ctx('x_t'),
    '/usr/lib/x/(?!y).*  ' + ctx('noy_t'),
    '(/opt)?/srv/.*  ' + ctx('srv_t'),
    '/usr/lib/z|/opt/z  ' + ctx('z_t'),
    '/usr/lib/q)|(/nothing  ' + ctx('unbalanced_t'),
  ];
  const p = policyOf(lines.join('\n'));
  const keys = ['/', '/usr', '/usr/lib', '/usr/lib/libc.so.6', '/usr/lib64/a.so', '/usr/sbin/x', '/usr/bin/x/y', '/opt/local/a', '/quota.user', '/aquota.group', '/usr/lib/x', '/usr/lib/x/y', '/usr/lib/x/z', '/srv/a', '/opt/srv/a', '/usr/lib/z', '/opt/z', '/usr/lib/zz', '/usr/lib/qq', '/nothing', '/x/nothing'];
  for (const k of keys) {
    for (const ty of ['-', 'd', 'l']) {
      let want = -1;
      for (let i = 0; i < p.matcher.patterns.length; i++) {
        const re = p.matcher.patterns[i].regexp;
        re.lastIndex = 0;
        if (re.test(k + ty)) {
          want = i;
          break;
        }
      }
      assert.equal(p.matcher.lookup(k + ty), want, `${k} ${ty}`);
    }
  }
  assert.equal(lbl(p, '/usr/lib/zz', '-'), ctx('u_t'));
  // An unbalanced pattern: `^(/usr/lib/q)|(/nothing).$` has a top-level alternative without `$`
  // (a prefix match, anchored at 0, like regex-automata's anchored search).
  assert.equal(lbl(p, '/usr/lib/qq/r', '-'), ctx('unbalanced_t'));
  assert.equal(lbl(p, '/nothing', '-'), ctx('unbalanced_t'));
  assert.equal(lbl(p, '/x/nothing', '-'), ctx('d_t'), 'the DFA search is anchored at the start');
});
