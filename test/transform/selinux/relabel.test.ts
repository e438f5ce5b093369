/** SELinux relabelling of a tree (composefs-rs v0.9.0 selabel.rs): one test per rule. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Directory, FileSystem, Leaf, emptyStat, lookup } from '../../../src/tree/tree.js';
import { loadPolicy } from '../../../src/transform/selinux/policy.js';
import { relabel, selabel } from '../../../src/transform/selinux/relabel.js';
import { SEL, ctx, label, lbl, link, mkdir, mkleaf, noRead, policyOf, setLabel, text, withPolicy } from './fixtures.js';

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

test('relabel() with a prebuilt policy equals selabel()', async () => {
  const fs = withPolicy({ file_contexts: '/.*  ' + ctx('d_t') });
  const pol = await loadPolicy(fs, noRead);
  relabel(fs, pol!);
  assert.equal(label(fs, '/etc/selinux/config'), ctx('d_t'));
});
