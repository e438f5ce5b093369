/** The `cfs` command as users run it: the bundled dist/cfs.mjs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDumpfile } from '../src/dumpfile/parse.js';
import { writeDumpfile } from '../src/dumpfile/write.js';
import { GOLDEN, IN_CI, ROOT, have, readGolden, runCfs, tempDir, assertCleanError } from './helpers.js';

const CASES = ['simple', 'hardlinks', 'xattrs', 'whiteouts', 'special', 'rs_sha512', 'names', 'big5000-sha512'];

test('compute-id prints the golden ids for every format and hash', () => {
  for (const name of CASES) {
    for (const v of [0, 1, 2]) {
      for (const alg of ['sha256', 'sha512']) {
        const r = runCfs(['--hash', alg, '--erofs-version', String(v), 'compute-id', `dumpfile:${path.join(GOLDEN, `${name}.dump`)}`]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout.toString(), readGolden(`${name}.v${v}.${alg}`).toString().trim() + '\n', `${name} V${v} ${alg}`);
      }
    }
  }
});

test('defaults are V1 and sha512, options work after the subcommand too, stdin works', () => {
  const dump = readGolden('simple.dump');
  const a = runCfs(['compute-id', 'dumpfile:-'], dump);
  assert.equal(a.stdout.toString().trim(), readGolden('simple.v1.sha512').toString().trim());
  const b = runCfs(['compute-id', '--hash', 'sha256', '--erofs-version', '2', 'dumpfile:-'], dump);
  assert.equal(b.stdout.toString().trim(), readGolden('simple.v2.sha256').toString().trim());
});

test('create-image writes the golden bytes and prints ALG:HEX; dump gives the dumpfile back', () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const name of ['special', 'hardlinks', 'nested_hardlink_xattr-sha512']) {
      const input = path.join(GOLDEN, `${name}.dump`);
      for (const v of [0, 1, 2]) {
        const out = path.join(dir, `${name}.v${v}.img`);
        const r = runCfs(['--erofs-version', String(v), 'create-image', `dumpfile:${input}`, '-o', out]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout.toString(), `sha512:${readGolden(`${name}.v${v}.sha512`).toString().trim()}\n`);
        assert.ok(readFileSync(out).equals(readGolden(`${name}.v${v}.img`)), `${name} V${v} bytes`);
        const d = runCfs(['dump', out]);
        assert.equal(d.status, 0, d.stderr);
        const canonical = writeDumpfile(parseDumpfile(readFileSync(input)).fs);
        if (v === 2) assert.equal(d.stdout.toString(), canonical.toString().replace(/ (\d+)\.\d+ /g, ' $1.0 '));
        else assert.ok(d.stdout.equals(canonical), `${name} V${v} dump`);
      }
    }
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), [], 'no temporary files left');
  } finally {
    cleanup();
  }
});

test('create-dumpfile prints the canonical dumpfile', () => {
  const r = runCfs(['create-dumpfile', `dumpfile:${path.join(GOLDEN, 'hardlinks_cstyle.dump')}`]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.equals(writeDumpfile(parseDumpfile(readGolden('hardlinks_cstyle.dump')).fs)));
});

test('measure equals `fsverity digest`', (t) => {
  if (!have('fsverity')) {
    if (IN_CI) assert.fail('fsverity is required under CI');
    t.skip('fsverity not installed');
    return;
  }
  const { dir, cleanup } = tempDir();
  try {
    const f = path.join(dir, 'data');
    writeFileSync(f, Buffer.alloc(100000, 7));
    const r = runCfs(['measure', f]);
    assert.equal(r.status, 0, r.stderr);
    const want = ['sha256', 'sha512'].map((a) => execFileSync('fsverity', ['digest', `--hash-alg=${a}`, f]).toString()).join('');
    assert.equal(r.stdout.toString(), want);
    const only = runCfs(['--hash', 'sha256', 'measure', f]);
    assert.equal(only.stdout.toString(), want.split('\n')[0] + '\n');
  } finally {
    cleanup();
  }
});

/** One line on stderr, exit 2, no stack trace. */
test('bad input: one-line errors, exit 2, nothing written', () => {
  const { dir, cleanup } = tempDir();
  try {
    const bad = path.join(dir, 'bad.dump');
    writeFileSync(bad, '/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 zero - - -\n');
    const out = path.join(dir, 'out.img');
    assertCleanError(runCfs(['create-image', `dumpfile:${bad}`, '-o', out]), /dumpfile line 2: missing \. in mtime/);
    assert.equal(existsSync(out), false);
    assertCleanError(runCfs(['compute-id', `dumpfile:${path.join(dir, 'missing.dump')}`]), /missing\.dump: no such file or directory/);
    assertCleanError(runCfs(['compute-id', 'nosuchkind:x']), /unknown source kind 'nosuchkind'/);
    assertCleanError(runCfs(['--erofs-version', '3', 'compute-id', 'dumpfile:-']), /must be 0, 1 or 2/);
    // truncated and corrupt images
    const img = readGolden('special.v1.img');
    const cut = path.join(dir, 'cut.img');
    writeFileSync(cut, img.subarray(0, 5000));
    assertCleanError(runCfs(['dump', cut]), /cut\.img: .*offset \d+/);
    const corrupt = Buffer.from(img);
    corrupt.writeUInt32LE(0xdeadbeef, 1024);
    writeFileSync(cut, corrupt);
    assertCleanError(runCfs(['dump', cut]), /cut\.img: .*magic.*offset 1024/);
    assert.deepEqual(readdirSync(dir).sort(), ['bad.dump', 'cut.img']);
  } finally {
    cleanup();
  }
});

test('--help explains sources and exit codes; --version prints the version', () => {
  const h = runCfs(['--help']);
  assert.equal(h.status, 0);
  assert.match(h.stdout.toString(), /compute-id/);
  assert.match(h.stdout.toString(), /dumpfile:PATH/);
  assert.match(h.stdout.toString(), /Exit status/);
  const v = runCfs(['--version']);
  assert.equal(v.status, 0);
  assert.match(v.stdout.toString(), /^\d+\.\d+\.\d+\n$/);
});

test('a SHA-512 dumpfile whose first external file is an object path without DIGEST: the golden ids, with or without --hash', () => {
  // chunks-sha512 reordered so that its digest-less file (/noverity: 128-digit object path,
  // DIGEST '-') comes before every DIGEST field: the same tree, so the same golden ids.
  const lines = readGolden('chunks-sha512.dump').toString().split('\n');
  const nov = lines.findIndex((l) => l.startsWith('/noverity '));
  assert.ok(nov > 1 && / - -$/.test(lines[nov]));
  const reordered = [lines[0], lines[nov], ...lines.slice(1, nov), ...lines.slice(nov + 1)].join('\n');
  const onlyPaths = [lines[0], lines[nov]].join('\n') + '\n';
  for (const v of [0, 1, 2]) {
    for (const hashArgs of [[], ['--hash', 'sha512']]) {
      const r = runCfs([...hashArgs, '--erofs-version', String(v), 'compute-id', 'dumpfile:-'], reordered);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.toString(), readGolden(`chunks-sha512.v${v}.sha512`).toString().trim() + '\n', `V${v} ${hashArgs.join(' ')}`);
    }
  }
  const j = runCfs(['compute-id', '--json', 'dumpfile:-'], onlyPaths);
  assert.equal(j.status, 0, j.stderr);
  assert.equal(JSON.parse(j.stdout.toString()).objectHash, 'sha512');
  // Mixed with a 64-digit object path: an error naming the line.
  const mixed = onlyPaths + `/b 1 100644 1 0 0 0 0.0 ab/${'c'.repeat(62)} - -\n`;
  assertCleanError(runCfs(['compute-id', 'dumpfile:-'], mixed), /dumpfile line 3: object path .* is a sha256 object id, but this dumpfile's object ids are sha512 \(line 2\)/);
});

test('messages that help: --expect of the other hash, a tree without /usr, sub-command help', () => {
  const dump = readGolden('simple.dump');
  const sha256 = readGolden('simple.v1.sha256').toString().trim();
  const r = runCfs(['compute-id', '--expect', sha256, 'dumpfile:-'], dump);
  assertCleanError(r, /^cfs: --expect is a sha256 digest \(64 hex digits\) but the id is sha512 \(128\); add --hash sha256 to compute a sha256 id\n$/);
  assert.equal(runCfs(['--hash', 'sha256', 'compute-id', '--expect', sha256, 'dumpfile:-'], dump).status, 0);
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(path.join(dir, 'f'), 'x');
    const noUsr = runCfs(['compute-id', dir]);
    assertCleanError(noUsr, new RegExp(`^cfs: directory ${dir}: Directory entry "usr" does not exist \\(the image root takes /usr's metadata \\(cfsctl's transform_for_oci\\); --no-propagate-usr-to-root keeps the tree as it is\\)\\n$`));
    assert.equal(runCfs(['compute-id', '--no-propagate-usr-to-root', dir]).status, 0);
  } finally {
    cleanup();
  }
  for (const cmd of ['compute-id', 'compute-karg', 'create-image', 'create-dumpfile', 'compare', 'dump', 'measure']) {
    const help = runCfs([cmd, '--help']).stdout.toString();
    // Every "see X below" has its X below.
    assert.doesNotMatch(help, /Profiles below/, `${cmd} --help`);
    if (/see SOURCE below/.test(help)) assert.match(help, /\nSOURCE is one of:/, `${cmd} --help`);
  }
  assert.match(runCfs(['--help']).stdout.toString(), /Profiles \(--profile NAME\):/);
});

test('a bug shows its stack trace (exit 2); bad input stays one line', () => {
  const { dir, cleanup } = tempDir('lib-cli-bug-');
  try {
    // The CLI module run with one library function broken, as a bug would break it. The
    // unbundled build shares its modules with this preamble (the bundle would have copies).
    const main = path.join(ROOT, 'build/src/cli/main.js');
    const errors = path.join(ROOT, 'build/src/errors.js');
    const run = (fault: string, args: string[]) => {
      const pre = path.join(dir, `pre-${fault}.mjs`);
      writeFileSync(
        pre,
        `import { InternalError } from ${JSON.stringify(errors)};\n` +
          `const fault = ${JSON.stringify(fault)};\n` +
          `JSON.stringify = () => { if (fault === 'type') null.x; throw new InternalError('the writer lost count'); };\n` +
          `await import(${JSON.stringify(main)});\n`,
      );
      const r = spawnSync(process.execPath, [pre, ...args], { input: readGolden('simple.dump') });
      return { status: r.status ?? -1, stderr: r.stderr.toString() };
    };
    for (const [fault, re] of [
      ['type', /^cfs: internal error \(please report this\): TypeError: Cannot read properties of null/],
      ['internal', /^cfs: internal error \(please report this\): Error: the writer lost count/],
    ] as const) {
      const r = run(fault, ['compute-id', '--json', 'dumpfile:-']);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /\n\s+at .*main\.js/, 'the stack trace names where');
    }
    // the same preamble, bad input: one line as always
    assertCleanError(run('type', ['compute-id', '--json', 'nosuchkind:x']), /^cfs: source 'nosuchkind:x': unknown source kind/);
  } finally {
    cleanup();
  }
});
