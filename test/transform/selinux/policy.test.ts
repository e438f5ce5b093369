/** Reading the SELinux policy (composefs-rs v0.9.0 selabel.rs): config, spec and subs files, errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Directory, FileSystem, emptyStat } from '../../../src/tree/tree.js';
import { SelabelError } from '../../../src/transform/selinux/errors.js';
import { buildPolicy, loadPolicy, parseConfig } from '../../../src/transform/selinux/policy.js';
import { ctx, lbl, mkleaf, noRead, policyOf, text, withPolicy } from './fixtures.js';

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
