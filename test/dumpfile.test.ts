import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DumpfileError, parseDumpfile } from '../src/dumpfile/parse.js';
import { writeDumpfile } from '../src/dumpfile/write.js';
import { escapeField, escapeXattr, unescape } from '../src/dumpfile/escape.js';
import { lookup, nameKey } from '../src/tree/tree.js';
import { goldenCases, readGolden } from './helpers.js';

const parse = (s: string) => parseDumpfile(Buffer.from(s)).fs;
const D = '0123456789abcdef'.repeat(4);

test('escaping follows composefs-rs', () => {
  assert.equal(escapeField(Buffer.alloc(0)), '-');
  assert.equal(escapeField(Buffer.from('-')), '\\x2d');
  assert.equal(escapeField(Buffer.from('a-b=c')), 'a-b=c');
  assert.equal(escapeField(Buffer.from([0x5c, 0x0a, 0x0d, 0x09, 0x20, 0x7f, 0xff, 0x00])), '\\\\\\n\\r\\t\\x20\\x7f\\xff\\x00');
  assert.equal(escapeXattr(Buffer.from('a=b')), 'a\\x3db');
  assert.equal(escapeXattr(Buffer.from('-')), '-');
  assert.equal(escapeXattr(Buffer.alloc(0)), '');
  for (let i = 0; i < 256; i++) {
    const b = Buffer.from([i, 0x41, i]);
    assert.deepEqual(unescape(Buffer.from(escapeXattr(b))), b);
  }
  assert.throws(() => unescape(Buffer.from('\\q')), /invalid escape/);
  assert.throws(() => unescape(Buffer.from('\\x4')), /unterminated/);
});

test('every golden dumpfile parses, and write(parse(x)) is a fixed point', () => {
  for (const name of goldenCases()) {
    const text = readGolden(`${name}.dump`);
    const once = writeDumpfile(parseDumpfile(text).fs);
    if (name === 'div_mtime_u64_wrap') assert.match(once.toString(), / -1\.0 /, 'u64 seconds wrap to i64');
    const twice = writeDumpfile(parseDumpfile(once).fs);
    assert.ok(once.equals(twice), `${name}: write(parse(write(parse(x)))) != write(parse(x))`);
  }
});

test('the composefs-rs worked example round-trips byte for byte', () => {
  const text = [
    '/ 0 40755 3 0 0 0 1234567890.0 - - -',
    '/hello-link.txt 22 100644 2 0 0 0 1234567890.0 - hello\\x20from\\x20test\\x20layer\\n -',
    '/hello.txt 0 @120000 - - - - 0.0 /hello-link.txt - -',
    '/usr 0 40755 2 0 0 0 1234567890.0 - - -',
    '',
  ].join('\n');
  const fs = parse(text);
  assert.equal(writeDumpfile(fs).toString(), text);
  assert.equal(lookup(fs, Buffer.from('/hello.txt')), lookup(fs, Buffer.from('/hello-link.txt')));
});

test('regular file kinds: inline, sparse, external, external without digest', () => {
  const fs = parse(
    [
      '/ 0 40755 2 0 0 0 0.0 - - -',
      '/inline 3 100644 1 0 0 0 0.0 - abc -',
      '/empty 0 100644 1 0 0 0 0.0 - - -',
      '/sparse 1000 100644 1 0 0 0 0.0 - - -',
      `/ext 5000 100644 1 0 0 0 0.0 ${D.slice(0, 2)}/${D.slice(2)} - ${D}`,
      `/nov 6000 100644 1 0 0 0 0.0 objects/${D.slice(0, 2)}/${D.slice(2)} - -`,
    ].join('\n'),
  );
  const get = (p: string) => lookup(fs, Buffer.from(p));
  const c = (p: string) => {
    const i = get(p);
    assert.ok(i && i.kind === 'leaf');
    return i.content;
  };
  assert.deepEqual(c('/inline'), { type: 'inline', data: Buffer.from('abc') });
  assert.deepEqual(c('/empty'), { type: 'inline', data: Buffer.alloc(0) });
  assert.deepEqual(c('/sparse'), { type: 'sparse', size: 1000n });
  assert.deepEqual(c('/ext'), { type: 'external', id: Buffer.from(D, 'hex'), size: 5000n });
  assert.deepEqual(c('/nov'), { type: 'external-no-verity', id: Buffer.from(D, 'hex'), size: 6000n });
});

test('nanoseconds, big ids, raw bytes in names and xattrs', () => {
  const text = '/ 0 40755 2 4294967295 65536 0 4294967296.999999999 - - - user.a\\x3db=\\xff\\x00 security.selinux=x\n/\\xff\\x0a 0 100600 1 0 0 0 5.5 - - -\n';
  const fs = parse(text);
  assert.equal(fs.root.stat.mtimeSec, 4294967296n);
  assert.equal(fs.root.stat.mtimeNsec, 999999999);
  assert.equal(fs.root.stat.uid, 4294967295);
  assert.deepEqual(fs.root.stat.xattrs.get(nameKey(Buffer.from('user.a=b'))), Buffer.from([0xff, 0]));
  assert.ok(fs.root.entries.has(nameKey(Buffer.from([0xff, 0x0a]))));
  // xattrs are written in byte order of their names
  assert.equal(writeDumpfile(fs).toString(), '/ 0 40755 2 4294967295 65536 0 4294967296.999999999 - - - security.selinux=x user.a\\x3db=\\xff\\x00\n/\\xff\\n 0 100600 1 0 0 0 5.5 - - -\n');
});

test('negative seconds (C mkcomposefs accepts them, composefs-rs prints them) read back', () => {
  const fs = parse('/ 0 40755 2 0 0 0 -2.500000000 - - -\n');
  assert.equal(fs.root.stat.mtimeSec, -2n);
  assert.equal(fs.root.stat.mtimeNsec, 500000000);
  assert.equal(parse('/ 0 40755 2 0 0 0 18446744073709551615.0 - - -\n').root.stat.mtimeSec, -1n);
  assert.throws(() => parse('/ 0 40755 2 0 0 0 -9223372036854775809.0 - - -\n'), /mtime seconds/);
});

test('blank lines are skipped, a later root line replaces the root stat, a duplicate path replaces', () => {
  const fs = parse('\n  \n/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 40755 2 0 0 0 0.0 - - -\n\n/ 0 40700 2 7 0 0 0.0 - - -\n/a 1 100644 1 0 0 0 0.0 - x -\n');
  assert.equal(fs.root.stat.mode, 0o700);
  assert.equal(fs.root.stat.uid, 7);
  const a = lookup(fs, Buffer.from('/a'));
  assert.ok(a && a.kind === 'leaf');
});

function assertLineError(text: string, line: number, re: RegExp) {
  assert.throws(
    () => parse(text),
    (e: unknown) => e instanceof DumpfileError && e.line === line && re.test(e.message) && e.message.startsWith(`dumpfile line ${line}: `),
  );
}

test('bad input: errors name the line and the reason', () => {
  const root = '/ 0 40755 2 0 0 0 0.0 - - -\n';
  assertLineError('/a 0 40755 2 0 0 0 0.0 - - -\n', 1, /must start with the root/);
  assertLineError(root + '/a 0 100644 1 0 0 0 0.0 - - -\n/b 0 100644\n', 3, /missing nlink/);
  assertLineError(root + '/a 0 100644 1 0 0 0 0 - - -\n', 2, /missing \. in mtime/);
  assertLineError(root + '/a 0 100644 1 0 0 0 1.1000000000 - - -\n', 2, /nanoseconds/);
  assertLineError(root + '/a 0 100644 1 0 0 0 -x.0 - - -\n', 2, /invalid mtime seconds/);
  assertLineError(root + '/a 0 100644 1 0 0 0 0.0 - - - novalue\n', 2, /missing = in xattr/);
  assertLineError(root + '/a/b 0 100644 1 0 0 0 0.0 - - -\n', 2, /parent directory not found/);
  assertLineError(root + 'a 0 100644 1 0 0 0 0.0 - - -\n', 2, /not an absolute path/);
  assertLineError(root + '/a/../b 0 100644 1 0 0 0 0.0 - - -\n', 2, /'\.\.'/);
  assertLineError(root + '/a// 0 100644 1 0 0 0 0.0 - - -\n', 2, /empty path component/);
  assertLineError(root + '/x 0 @100644 - - - - 0.0 /nope - -\n', 2, /hardlink target not found/);
  assertLineError(root + '/w 0 20644 2 0 0 0 0.0 - - -\n', 2, /whiteout/);
  assertLineError(root + '/s 4 120777 1 0 0 0 0.0 - - -\n', 2, /symlink without a target/);
  assertLineError(root + `/s 1025 120777 1 0 0 0 0.0 ${'a'.repeat(1025)} - -\n`, 2, /exceeds limit 1024/);
  assertLineError(root + `/f 513 100644 1 0 0 0 0.0 - ${'a'.repeat(513)} -\n`, 2, /maximum of 512/);
  assertLineError(root + '/f 1 100644 1 0 0 5 0.0 - a -\n', 2, /rdev/);
  assertLineError(root + '/f 1 100644 1 0 0 0 0.0 - \\q -\n', 2, /invalid escape/);
  assertLineError(root + '/f 1 170644 1 0 0 0 0.0 - - -\n', 2, /unhandled file type/);
  assertLineError(root + `/f 1 100644 1 0 0 0 0.0 aa/bb - ${'ab'.repeat(20)}\n`, 2, /digest/);
  assertLineError(root + '/f 1 100644 99999999999 0 0 0 0.0 - - -\n', 2, /nlink/);
  assertLineError(root + '/d 0 40755 2 0 0 0 0.0 - x -\n', 2, /cannot have content/);
  assert.throws(() => parse(''), /empty dumpfile/);
  assert.throws(() => parseDumpfile(Buffer.from([0x2f, 0x20, 0xff])), /not valid UTF-8/);
  // a path given twice whose first leaf is left unreferenced
  assert.throws(() => parse(root + '/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 40755 2 0 0 0 0.0 - - -\n'), /orphaned/);
});

test('object hash: object paths before, after and without a DIGEST field, both hashes (cfsctl reads all of these)', () => {
  const root = '/ 0 40755 2 0 0 0 0.0 - - -\n';
  for (const [alg, len] of [['sha256', 32], ['sha512', 64]] as const) {
    const hex = Buffer.alloc(len, 0x3c).toString('hex');
    const other = Buffer.alloc(len, 0x50).toString('hex');
    const objPath = (h: string) => `${h.slice(0, 2)}/${h.slice(2)}`;
    const noDigest = `/nov 10 100644 1 0 0 0 0.0 ${objPath(hex)} - -\n`;
    const prefixed = `/nov2 10 100644 1 0 0 0 0.0 /objects/${objPath(other)} - -\n`;
    const withDigest = `/ext 10 100644 1 0 0 0 0.0 ${objPath(other)} - ${other}\n`;
    for (const [label, text] of [
      ['object path only', root + noDigest + prefixed],
      ['object path before the digest', root + noDigest + withDigest],
      ['object path after the digest', root + withDigest + noDigest],
    ]) {
      for (const opts of [{}, { objectHash: alg }]) {
        const { fs, objectHash } = parseDumpfile(Buffer.from(text), opts);
        assert.equal(objectHash, alg, `${alg} ${label}`);
        const nov = lookup(fs, Buffer.from('/nov'));
        assert.ok(nov && nov.kind === 'leaf');
        assert.deepEqual(nov.content, { type: 'external-no-verity', id: Buffer.from(hex, 'hex'), size: 10n }, `${alg} ${label}`);
      }
    }
    // The other hash, asked for (cfsctl's --hash decides its ObjectID type): refused, naming the line.
    const wrong = alg === 'sha256' ? 'sha512' : 'sha256';
    assert.throws(
      () => parseDumpfile(Buffer.from(root + noDigest), { objectHash: wrong }),
      (e: unknown) => e instanceof DumpfileError && e.line === 2 && new RegExp(`${alg} object id.*${wrong}`).test(e.message),
    );
  }
});

test('object hash: a dumpfile mixing 64- and 128-digit ids is an error naming the line', () => {
  const root = '/ 0 40755 2 0 0 0 0.0 - - -\n';
  const h256 = 'ab'.repeat(32);
  const h512 = 'cd'.repeat(64);
  const p = (h: string) => `${h.slice(0, 2)}/${h.slice(2)}`;
  assertLineError(root + `/a 1 100644 1 0 0 0 0.0 ${p(h256)} - -\n/b 1 100644 1 0 0 0 0.0 ${p(h512)} - -\n`, 3, /sha512 object id.*sha256 \(line 2\)/);
  assertLineError(root + `/a 1 100644 1 0 0 0 0.0 ${p(h512)} - -\n/b 1 100644 1 0 0 0 0.0 ${p(h256)} - -\n`, 3, /sha256 object id.*sha512 \(line 2\)/);
  assertLineError(root + `/a 1 100644 1 0 0 0 0.0 ${p(h512)} - ${h512}\n/b 1 100644 1 0 0 0 0.0 ${p(h256)} - -\n`, 3, /sha256 object id.*sha512/);
  assertLineError(root + `/a 1 100644 1 0 0 0 0.0 ${p(h256)} - -\n/b 1 100644 1 0 0 0 0.0 ${p(h512)} - ${h512}\n`, 3, /digest.*sha512 object id.*sha256/);
  assertLineError(root + `/a 1 100644 1 0 0 0 0.0 ab/${'0'.repeat(100)} - -\n`, 2, /not an object path/);
});

test('xattr names: the limits shared with the image writer and reader', () => {
  const root = '/ 0 40755 2 0 0 0 0.0 - - -';
  assertLineError(`${root} =v\n`, 1, /xattr with an empty name/);
  assertLineError(`${root} user.a\\x00b=v\n`, 1, /NUL/);
  assertLineError(`${root} ${'a'.repeat(256)}=v\n`, 1, /too long/);
  assertLineError(`${root} user.a=${'v'.repeat(65536)}\n`, 1, /65536-byte value/);
  const many = Array.from({ length: 6000 }, (_, i) => `user.x${String(i).padStart(5, '0')}=`).join(' ');
  assertLineError(`${root} ${many}\n`, 1, /too many xattrs/);
});
