/** SELinux relabelling (composefs-rs v0.9.0 selabel.rs): one test per rule. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Directory, FileSystem, Leaf, type LeafContent, emptyStat, lookup, splitPath } from '../src/tree/tree.js';
import { SelabelError } from '../src/transform/selinux/errors.js';
import { compilePattern } from '../src/transform/selinux/matcher.js';
import { buildPolicy, loadPolicy, lookupLabel, parseConfig } from '../src/transform/selinux/policy.js';
import { relabel, selabel } from '../src/transform/selinux/relabel.js';

const SEL = 'security.selinux';
const ctx = (t: string) => `system_u:object_r:${t}:s0`;

/** Creates the parent directories of `path` and returns the last one. */
function parentOf(fs: FileSystem, path: string): [Directory, string] {
  const parts = splitPath(Buffer.from(path, 'latin1'));
  let d = fs.root;
  for (const p of parts.slice(0, -1)) {
    let n = d.entries.get(p);
    if (!n) d.entries.set(p, (n = new Directory(emptyStat())));
    if (n.kind !== 'dir') throw new Error(`not a dir: ${p}`);
    d = n;
  }
  return [d, parts[parts.length - 1]];
}
function mkdir(fs: FileSystem, path: string): Directory {
  const [d, name] = parentOf(fs, path);
  const n = new Directory(emptyStat());
  d.entries.set(name, n);
  return n;
}
function mkleaf(fs: FileSystem, path: string, content: LeafContent = { type: 'inline', data: Buffer.alloc(0) }): Leaf {
  const [d, name] = parentOf(fs, path);
  const l = new Leaf(emptyStat(), content);
  d.entries.set(name, l);
  return l;
}
function link(fs: FileSystem, path: string, leaf: Leaf): void {
  const [d, name] = parentOf(fs, path);
  d.entries.set(name, leaf);
}
const text = (s: string): LeafContent => ({ type: 'inline', data: Buffer.from(s) });

/** A tree with a policy named `name` made of the given files. */
function withPolicy(files: Record<string, string>, config = 'SELINUX=enforcing\nSELINUXTYPE=targeted\n', name = 'targeted'): FileSystem {
  const fs = new FileSystem(new Directory(emptyStat()));
  mkleaf(fs, '/etc/selinux/config', text(config));
  mkdir(fs, `/etc/selinux/${name}/contexts/files`);
  for (const [f, body] of Object.entries(files)) mkleaf(fs, `/etc/selinux/${name}/contexts/files/${f}`, text(body));
  return fs;
}
const noRead = async () => {
  throw new Error('no external files here');
};
function label(fs: FileSystem, path: string): string | undefined {
  const n = lookup(fs, Buffer.from(path, 'latin1'));
  assert.ok(n, `no ${path}`);
  return n.stat.xattrs.get(SEL)?.toString('latin1');
}
function setLabel(fs: FileSystem, path: string, v: string): void {
  lookup(fs, Buffer.from(path, 'latin1'))!.stat.xattrs.set(SEL, Buffer.from(v));
}
/** Labels of key (latin1 path) + type from a bare file_contexts. */
function policyOf(fc: string, extra: Record<string, string> = {}) {
  return buildPolicy({ file_contexts: Buffer.from(fc), ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)])) });
}
const lbl = (p: ReturnType<typeof policyOf>, path: string, t: string) => lookupLabel(p, path, t)?.toString('latin1');

test('type qualifiers: -d -- -l -c -b -p -s match only their type; no qualifier matches every type', () => {
  const p = policyOf(
    [
      '/x(/.*)?  ' + ctx('any_t'),
      '/x/d  -d  ' + ctx('dir_t'),
      '/x/f  --  ' + ctx('file_t'),
      '/x/l  -l  ' + ctx('link_t'),
      '/x/c  -c  ' + ctx('chr_t'),
      '/x/b  -b  ' + ctx('blk_t'),
      '/x/p  -p  ' + ctx('fifo_t'),
      '/x/s  -s  ' + ctx('sock_t'),
    ].join('\n'),
  );
  const types: [string, string][] = [
    ['d', 'dir_t'],
    ['f', 'file_t'],
    ['l', 'link_t'],
    ['c', 'chr_t'],
    ['b', 'blk_t'],
    ['p', 'fifo_t'],
    ['s', 'sock_t'],
  ];
  const byte: Record<string, string> = { d: 'd', f: '-', l: 'l', c: 'c', b: 'b', p: 'p', s: 's' };
  for (const [name, want] of types) {
    for (const [other] of types) {
      assert.equal(lbl(p, `/x/${name}`, byte[other]), ctx(other === name ? want : 'any_t'), `/x/${name} as ${other}`);
    }
  }
  // Tree: every leaf kind gets its type byte.
  const fs = withPolicy({ file_contexts: ['/.*  ' + ctx('default_t'), '/t/.*  -c  ' + ctx('c_t'), '/t/.*  -l  ' + ctx('l_t'), '/t/.*  -p  ' + ctx('p_t'), '/t/.*  -s  ' + ctx('s_t'), '/t/.*  -b  ' + ctx('b_t'), '/t/.*  --  ' + ctx('f_t'), '/t/.*  -d  ' + ctx('d_t')].join('\n') });
  mkleaf(fs, '/t/c', { type: 'chardev', rdev: 0n });
  mkleaf(fs, '/t/b', { type: 'blockdev', rdev: 1n });
  mkleaf(fs, '/t/l', { type: 'symlink', target: Buffer.from('x') });
  mkleaf(fs, '/t/p', { type: 'fifo' });
  mkleaf(fs, '/t/s', { type: 'socket' });
  mkleaf(fs, '/t/f', text('x'));
  mkleaf(fs, '/t/e', { type: 'external', id: Buffer.alloc(32), size: 100n });
  mkleaf(fs, '/t/z', { type: 'sparse', size: 100n });
  mkdir(fs, '/t/d');
  return (async () => {
    assert.equal(await selabel(fs, noRead), true);
    for (const [n, t] of [['c', 'c_t'], ['b', 'b_t'], ['l', 'l_t'], ['p', 'p_t'], ['s', 's_t'], ['f', 'f_t'], ['e', 'f_t'], ['z', 'f_t'], ['d', 'd_t']]) assert.equal(label(fs, `/t/${n}`), ctx(t), n);
  })();
});

test('last matching line wins; <<none>> and no match remove the label; the root is labelled as "/"', async () => {
  const fs = withPolicy({
    file_contexts: ['/  -d  ' + ctx('root_t'), '/a(/.*)?  ' + ctx('a_t'), '/a/none(/.*)?  <<none>>', '/a/.*\\.txt  ' + ctx('txt_t'), '/a/x\\.txt  ' + ctx('first_t'), '/a/x\\.txt  ' + ctx('later_t')].join('\n'),
  });
  mkleaf(fs, '/a/x.txt');
  mkleaf(fs, '/a/y.txt');
  mkleaf(fs, '/a/none/z');
  mkleaf(fs, '/unmatched');
  for (const p of ['/a/none/z', '/unmatched', '/a/x.txt']) setLabel(fs, p, 'stale');
  fs.root.stat.xattrs.set(SEL, Buffer.from('stale'));
  await selabel(fs, noRead);
  assert.equal(label(fs, '/'), ctx('root_t'));
  assert.equal(label(fs, '/a'), ctx('a_t'));
  assert.equal(label(fs, '/a/x.txt'), ctx('later_t'));
  assert.equal(label(fs, '/a/y.txt'), ctx('txt_t'));
  assert.equal(label(fs, '/a/none'), undefined);
  assert.equal(label(fs, '/a/none/z'), undefined);
  assert.equal(label(fs, '/unmatched'), undefined);
  assert.equal(label(fs, '/etc'), undefined);
  // The label value is the context's bytes, without a trailing NUL.
  const v = lookup(fs, Buffer.from('/a'))!.stat.xattrs.get(SEL)!;
  assert.deepEqual(v, Buffer.from(ctx('a_t')));
});

test('file_contexts, then .local, then .homedirs: later lines win', () => {
  const p = policyOf('/h(/.*)?  ' + ctx('base_t') + '\n/h/only-base  ' + ctx('onlybase_t') + '\n', {
    'file_contexts.local': '/h/x  ' + ctx('local_t') + '\n/h/y  ' + ctx('local_t') + '\n',
    'file_contexts.homedirs': '/h/y  ' + ctx('homedirs_t') + '\n',
  });
  assert.equal(lbl(p, '/h/x', '-'), ctx('local_t'));
  assert.equal(lbl(p, '/h/y', '-'), ctx('homedirs_t'));
  assert.equal(lbl(p, '/h/only-base', '-'), ctx('onlybase_t'));
  assert.equal(lbl(p, '/h/z', '-'), ctx('base_t'));
});

test('substitutions: .subs then .subs_dist (later definition wins), exact path keys, children inherit, root never substituted', async () => {
  const fs = withPolicy({
    file_contexts: ['/.*  ' + ctx('default_t'), '/  ' + ctx('root_t'), '/usr/lib(/.*)?  ' + ctx('lib_t'), '/opt/b(/.*)?  ' + ctx('optb_t'), '/srv/c(/.*)?  ' + ctx('srvc_t')].join('\n'),
    'file_contexts.subs': '# comment\n/lib64 /usr/lib\n/a /opt/a\n  \n/x /srv/c\n',
    'file_contexts.subs_dist': '/a /opt/b\n/ /srv/c\n',
  });
  mkleaf(fs, '/lib64/libc.so');
  mkleaf(fs, '/lib64x/libc.so');
  mkleaf(fs, '/a/file');
  mkleaf(fs, '/x/y/z');
  await selabel(fs, noRead);
  assert.equal(label(fs, '/'), ctx('root_t'), '"/" is never looked up in the aliases');
  assert.equal(label(fs, '/lib64'), ctx('lib_t'));
  assert.equal(label(fs, '/lib64/libc.so'), ctx('lib_t'), 'children are built on the substituted path');
  assert.equal(label(fs, '/lib64x/libc.so'), ctx('default_t'), 'aliases are exact keys, not prefixes');
  assert.equal(label(fs, '/a'), ctx('optb_t'), '.subs_dist is read after .subs: its /a wins');
  assert.equal(label(fs, '/a/file'), ctx('optb_t'));
  assert.equal(label(fs, '/x/y/z'), ctx('srvc_t'));
  // A subs line with one field or three is an error.
  assert.throws(() => policyOf('/ x', { 'file_contexts.subs': '/a\n' }), /missing original path/);
  assert.throws(() => policyOf('/ x', { 'file_contexts.subs_dist': '/a /b /c\n' }), /trailing data/);
});

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

test('a catastrophic pattern does not hang the lookup', () => {
  const p = policyOf('/(a*)*b  ' + ctx('x_t') + '\n/((a|a)*)*c  ' + ctx('y_t'));
  const t = Date.now();
  assert.equal(lbl(p, '/' + 'a'.repeat(60), '-'), undefined);
  assert.ok(Date.now() - t < 5000, `took ${Date.now() - t} ms`);
});

test('hardlinks: paths with the first path\'s label share the leaf, every other path gets its own copy', async () => {
  const fs = withPolicy({
    file_contexts: ['/.*  ' + ctx('default_t'), '/usr/share/licenses(/.*)?  ' + ctx('lic_t'), '/z(/.*)?  <<none>>'].join('\n'),
  });
  const leaf = mkleaf(fs, '/a/LICENSE', text('MIT'));
  leaf.stat.xattrs.set('user.keep', Buffer.from('1'));
  link(fs, '/b/LICENSE', leaf);
  link(fs, '/usr/share/licenses/one', leaf);
  link(fs, '/usr/share/licenses/two', leaf);
  link(fs, '/z/none', leaf);
  const same = mkleaf(fs, '/c/one', text('x'));
  link(fs, '/c/two', same);
  await selabel(fs, noRead);
  const get = (p: string) => lookup(fs, Buffer.from(p)) as Leaf;
  assert.equal(get('/a/LICENSE'), leaf, 'the first path keeps the original leaf');
  assert.equal(get('/b/LICENSE'), leaf, 'same label as the first path: still shared');
  const one = get('/usr/share/licenses/one');
  const two = get('/usr/share/licenses/two');
  assert.notEqual(one, leaf);
  assert.notEqual(two, leaf);
  assert.notEqual(one, two, 'each differing path gets a private leaf, even with equal labels');
  assert.equal(label(fs, '/a/LICENSE'), ctx('default_t'));
  assert.equal(label(fs, '/usr/share/licenses/one'), ctx('lic_t'));
  assert.equal(label(fs, '/usr/share/licenses/two'), ctx('lic_t'));
  assert.equal(label(fs, '/z/none'), undefined);
  assert.notEqual(get('/z/none'), leaf);
  assert.deepEqual(one.content, leaf.content);
  assert.equal(one.stat.xattrs.get('user.keep')?.toString(), '1', 'the copy keeps the other xattrs');
  assert.equal(get('/c/one'), get('/c/two'));
});

test('no policy: security.selinux is stripped everywhere and nothing else changes', async () => {
  const cases: [string, (fs: FileSystem) => void][] = [
    ['no /etc/selinux', () => {}],
    ['no config', (fs) => mkdir(fs, '/etc/selinux/targeted')],
    ['config without SELINUXTYPE', (fs) => mkleaf(fs, '/etc/selinux/config', text('SELINUX=enforcing\n#SELINUXTYPE=targeted\n'))],
    ['sparse config', (fs) => mkleaf(fs, '/etc/selinux/config', { type: 'sparse', size: 10n })],
  ];
  for (const [what, setup] of cases) {
    const fs = new FileSystem(new Directory(emptyStat()));
    setup(fs);
    const l = mkleaf(fs, '/usr/bin/x', text('x'));
    l.stat.xattrs.set(SEL, Buffer.from('old'));
    l.stat.xattrs.set('security.capability', Buffer.from('cap'));
    link(fs, '/usr/bin/y', l);
    fs.root.stat.xattrs.set(SEL, Buffer.from('old'));
    setLabel(fs, '/usr', 'old');
    assert.equal(await selabel(fs, noRead), false, what);
    assert.equal(label(fs, '/'), undefined, what);
    assert.equal(label(fs, '/usr'), undefined, what);
    assert.equal(label(fs, '/usr/bin/x'), undefined, what);
    assert.equal(lookup(fs, Buffer.from('/usr/bin/y')), l, 'hardlinks untouched');
    assert.equal(l.stat.xattrs.get('security.capability')?.toString(), 'cap');
  }
});

test('config parsing: first SELINUXTYPE line, ASCII case-insensitive key, Rust trim, UTF-8 per line', async () => {
  assert.equal(parseConfig(Buffer.from('SELINUX=enforcing\n  selinuxType = mls \nSELINUXTYPE=targeted\n')), 'mls');
  assert.equal(parseConfig(Buffer.from('# SELINUXTYPE=x\nSELINUXTYPE=a=b\n')), 'a=b', 'the value is everything after the first =');
  assert.equal(parseConfig(Buffer.from('SELINUXTYPE\n')), undefined);
  assert.equal(parseConfig(Buffer.from('SELINUXTYPE=\n')), '');
  assert.equal(parseConfig(Buffer.from('SELINUXTYPE=targeted\r\n')), 'targeted');
  assert.equal(parseConfig(Buffer.from('\u017FELINUXTYPE=x\n')), undefined, 'U+017F is not ASCII "s" (JS toUpperCase would say it is)');
  assert.equal(parseConfig(Buffer.from('\u0085SELINUXTYPE=x\u0085\n')), 'x', 'Rust trims U+0085');
  assert.equal(parseConfig(Buffer.from('\uFEFFSELINUXTYPE=x\n')), undefined, 'Rust does not trim U+FEFF');
  assert.equal(parseConfig(Buffer.concat([Buffer.from('SELINUXTYPE=t\n'), Buffer.from([0xff, 0x0a])])), 't', 'invalid UTF-8 after the match is never read');
  assert.throws(() => parseConfig(Buffer.concat([Buffer.from([0xff, 0x0a]), Buffer.from('SELINUXTYPE=t\n')])), /UTF-8/);
  // The policy name is a path below /etc/selinux; a missing policy directory is an error.
  const fs = withPolicy({ file_contexts: '/.* ' + ctx('x_t') }, 'SELINUXTYPE=other\n');
  await assert.rejects(loadPolicy(fs, noRead), SelabelError);
});

test('policy errors fail the transform', async () => {
  assert.throws(() => policyOf('/a'), /missing separator/);
  assert.throws(() => policyOf('/a -x ' + ctx('a_t')), /invalid type code -x/);
  assert.throws(() => policyOf('/a -d'), /missing context/);
  assert.throws(() => policyOf('/a ' + ctx('a_t') + ' # comment'), /trailing data/);
  assert.throws(() => buildPolicy({ file_contexts: Buffer.concat([Buffer.from('/a ' + ctx('a_t') + '\n'), Buffer.from([0xff])]) }), /UTF-8/);
  assert.throws(() => buildPolicy({ 'file_contexts.local': Buffer.from('') }), /mandatory file_contexts/);
  // Comments and blank lines are fine; a `#` only starts a comment as the first field.
  assert.equal(lbl(policyOf('# c\n\n   \n  #x y z\n/a  ' + ctx('a_t')), '/a', '-'), ctx('a_t'));
  // Missing file_contexts, a symlinked config, /etc/selinux not a directory.
  await assert.rejects(loadPolicy(withPolicy({ 'file_contexts.local': '' }), noRead), /mandatory file_contexts/);
  const sym = new FileSystem(new Directory(emptyStat()));
  mkleaf(sym, '/etc/selinux/config', { type: 'symlink', target: Buffer.from('x') });
  await assert.rejects(loadPolicy(sym, noRead), /not a regular file/);
  const notdir = new FileSystem(new Directory(emptyStat()));
  mkleaf(notdir, '/etc/selinux', text('x'));
  await assert.rejects(loadPolicy(notdir, noRead), /not a subdirectory/);
  // External files come through the reader.
  const ext = withPolicy({});
  mkleaf(ext, '/etc/selinux/targeted/contexts/files/file_contexts', { type: 'external', id: Buffer.alloc(32), size: 20n });
  const pol = await loadPolicy(ext, async (p) => (p.toString() === '/etc/selinux/targeted/contexts/files/file_contexts' ? Buffer.from('/.* ' + ctx('e_t')) : undefined));
  assert.equal(lbl(pol!, '/x', '-'), ctx('e_t'));
});

test('relabel() with a prebuilt policy equals selabel()', async () => {
  const fs = withPolicy({ file_contexts: '/.*  ' + ctx('d_t') });
  const pol = await loadPolicy(fs, noRead);
  relabel(fs, pol!);
  assert.equal(label(fs, '/etc/selinux/config'), ctx('d_t'));
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
