/**
 * The library (src/index.ts) in-process: load → rules → image → id → karg, identify, compare,
 * verify and the error kinds, against the golden vectors and `fsverity digest`; and the README's
 * "As a library" example, compiled against the package's `exports` and run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  CfsError,
  InputError,
  InternalError,
  PROFILES,
  UsageError,
  VerifyError,
  applyRules,
  buildImage,
  compareSources,
  findProfile,
  identify,
  imageId,
  karg,
  loadRawTree,
  loadSource,
  parseSource,
  profileKarg,
  verifyImage,
  verifyPeFile,
  writeImage,
  type Attempt,
  type ErofsVersion,
  type HashAlg,
  type PipelineOptions,
} from '../src/index.js';
import { buildPe } from './pe-builder.js';
import { GOLDEN, IN_CI, ROOT, have, readGolden, tempDir } from './helpers.js';

const LOAD = { jobs: 2 } as const;
const RAW_RULES = { propagateUsrToRoot: false, xattrs: 'allowlist-only', bootable: false } as const;
const opts = (hash: HashAlg, extra: Partial<PipelineOptions> = {}): PipelineOptions => ({ hash, ...LOAD, ...RAW_RULES, ...extra });
const golden = (name: string) => readFileSync(path.join(GOLDEN, name), 'utf8').trim();

test('load → rules → image → id: the golden images and ids of every format and hash', async () => {
  for (const name of ['acl', 'special', 'hardlinks']) {
    for (const hash of ['sha256', 'sha512'] as HashAlg[]) {
      const raw = await loadRawTree(parseSource(`dumpfile:${path.join(GOLDEN, `${name}.dump`)}`), { hash, ...LOAD });
      assert.equal(raw.kind, 'dumpfile');
      await applyRules(raw, RAW_RULES);
      for (const version of [0, 1, 2] as ErofsVersion[]) {
        const image = writeImage(raw.fs, { version });
        assert.ok(image.equals(readGolden(`${name}.v${version}.img`)), `${name} V${version}: image bytes`);
        assert.equal(imageId(image, hash).toString('hex'), golden(`${name}.v${version}.${hash}`), `${name} V${version} ${hash}`);
      }
    }
  }
  // buildImage is the same composed; a Source object and a SOURCE string are the same
  const b = await buildImage({ kind: 'dumpfile', path: path.join(GOLDEN, 'acl.dump') }, { ...opts('sha512'), version: 1 });
  assert.equal(b.id.toString('hex'), golden('acl.v1.sha512'));
  assert.ok(b.image.equals(readGolden('acl.v1.img')));
});

test('the id is the fs-verity digest of the image written (fsverity digest)', async (t) => {
  if (!have('fsverity')) {
    if (IN_CI) assert.fail('fsverity (package fsverity) is required under CI');
    return t.skip('needs the fsverity tool');
  }
  const { dir, cleanup } = tempDir('lib-fsverity-');
  try {
    const b = await buildImage(`dumpfile:${path.join(ROOT, 'examples/rootfs.dump')}`, { ...opts('sha512'), version: 1 });
    const f = path.join(dir, 'rootfs.cfs');
    writeFileSync(f, b.image);
    const want = execFileSync('fsverity', ['digest', '--hash-alg=sha512', '--compact', f]).toString().trim();
    assert.equal(b.id.toString('hex'), want);
  } finally {
    cleanup();
  }
});

test('directory source with the finishing rules: root from /usr, /run emptied, xattrs filtered', async () => {
  const { dir, cleanup } = tempDir('lib-dir-');
  try {
    for (const d of ['usr/bin', 'run/stale', 'etc']) mkdirSync(path.join(dir, d), { recursive: true });
    writeFileSync(path.join(dir, 'usr/bin/tool'), Buffer.alloc(5000, 7));
    writeFileSync(path.join(dir, 'etc/conf'), 'x\n');
    utimesSync(path.join(dir, 'usr'), 1700000000, 1700000000);
    const l = await loadSource(dir, opts('sha256', { propagateUsrToRoot: true }));
    assert.equal(l.kind, 'dir');
    const usr = l.fs.root.entries.get('usr')!;
    assert.equal(l.fs.root.stat.mtimeSec, 1700000000n);
    assert.equal(l.fs.root.stat.mode, usr.stat.mode);
    const run = l.fs.root.entries.get('run');
    assert.ok(run?.kind === 'dir' && run.entries.size === 0, '/run emptied');
    // a raw load of the same directory keeps /run's entry
    const raw = await loadSource(`dir:${dir}`, opts('sha256'));
    const rawRun = raw.fs.root.entries.get('run');
    assert.ok(rawRun?.kind === 'dir' && rawRun.entries.has('stale'));
    // the file's object id is its fs-verity digest
    const tool = usr.kind === 'dir' ? usr.entries.get('bin') : undefined;
    const leaf = tool?.kind === 'dir' ? tool.entries.get('tool') : undefined;
    assert.ok(leaf?.kind === 'leaf' && leaf.content.type === 'external');
    if (have('fsverity')) {
      const want = execFileSync('fsverity', ['digest', '--hash-alg=sha256', '--compact', path.join(dir, 'usr/bin/tool')]).toString().trim();
      assert.equal(leaf.content.id.toString('hex'), want);
    }
  } finally {
    cleanup();
  }
});

test('karg: the cfsctl spelling per format, the insecure marker, and each profile\'s line', async () => {
  const raw = await loadSource(`dumpfile:${path.join(GOLDEN, 'acl.dump')}`, opts('sha512'));
  const v1 = golden('acl.v1.sha512');
  const v2 = golden('acl.v2.sha512');
  assert.equal(karg(Buffer.from(v1, 'hex'), 1, 'sha512'), `composefs.digest=v1-sha512-12:${v1}`);
  assert.equal(karg(Buffer.from(v1, 'hex'), 0, 'sha512', true), `composefs.digest=?v1-sha512-12:${v1}`);
  assert.equal(karg(Buffer.from(v2, 'hex'), 2, 'sha512'), `composefs=${v2}`);
  // bootc 1.17: V1 and V2 on one line; bootc 1.16.4: composefs= with the V1 digest
  assert.equal(profileKarg(raw.fs, { profile: findProfile('bootc-1.17.0'), version: 1, hash: 'sha512' }), `composefs.digest=v1-sha512-12:${v1} composefs=${v2}`);
  assert.equal(profileKarg(raw.fs, { profile: findProfile('bootc'), version: 1, hash: 'sha512' }), `composefs=${v1}`);
  assert.equal(profileKarg(raw.fs, { version: 2, hash: 'sha512', insecure: true }), `composefs=?${v2}`);
  assert.ok(PROFILES.length > 0 && PROFILES.every((p) => p.checked.length > 0));
});

test('identify: finds the format and hash behind each golden id', async () => {
  for (const [version, hash] of [[2, 'sha256'], [0, 'sha512'], [1, 'sha512']] as [ErofsVersion, HashAlg][]) {
    const want = golden(`acl.v${version}.${hash}`);
    const raw = await loadRawTree(parseSource(`dumpfile:${path.join(GOLDEN, 'acl.dump')}`), { hash, ...LOAD });
    const tried: Attempt[] = [];
    const [m, ...more] = await identify(want, raw, (a) => tried.push(a));
    assert.equal(more.length, 0);
    assert.equal(m.erofsVersion, version);
    assert.equal(m.hash, hash);
    assert.equal(m.rules.bootable, false);
    assert.equal(m.id, want);
    assert.ok(tried.length >= 1 && tried.at(-1) === m);
  }
  const raw = await loadRawTree(parseSource(`dumpfile:${path.join(GOLDEN, 'acl.dump')}`), { hash: 'sha256', ...LOAD });
  assert.deepEqual(await identify('0'.repeat(64), raw, () => {}), []);
});

test('compare: equal sources give no difference and the golden id; a changed mtime is named', async () => {
  const { dir, cleanup } = tempDir('lib-compare-');
  try {
    const a = path.join(GOLDEN, 'special.dump');
    const same = await compareSources(`dumpfile:${a}`, `dumpfile:${a}`, { ...opts('sha512'), version: 1 });
    assert.equal(same.differences.length, 0);
    assert.equal(same.idA.toString('hex'), golden('special.v1.sha512'));
    assert.ok(same.idA.equals(same.idB));
    // the same tree with one mtime in whole seconds moved by 5 s
    const lines = readFileSync(a, 'utf8').split('\n');
    const i = lines.findIndex((l) => l.startsWith('/') && !l.startsWith('/ ') && / \d+\.\d+ /.test(l));
    const p = lines[i].split(' ')[0];
    lines[i] = lines[i].replace(/ (\d+)\.(\d+) /, (_m, s: string, n: string) => ` ${Number(s) + 5}.${n} `);
    const b = path.join(dir, 'b.dump');
    writeFileSync(b, lines.join('\n'));
    const c = await compareSources(`dumpfile:${a}`, { kind: 'dumpfile', path: b }, { ...opts('sha512'), version: 1 });
    assert.equal(c.paths, 1);
    assert.deepEqual(
      c.differences.map((d) => [d.path.toString(), d.field]),
      [[p, 'mtime']],
    );
    assert.equal(c.summary.length, 1);
    assert.notEqual(c.idA.toString('hex'), c.idB.toString('hex'));
    assert.equal(c.idA.toString('hex'), golden('special.v1.sha512'));
  } finally {
    cleanup();
  }
});

/** A PE with a .cmdline, built in-process. */
const uki = (cmdline: string) =>
  buildPe({ sections: [{ name: '.osrel', data: 'ID=test\n' }, { name: '.cmdline', data: `${cmdline}\n` }, { name: '.linux', data: 'kernel' }] });

test('verify: a UKI sealing its image matches; a stale karg, a bad PE and a dumpfile are reported', async () => {
  const { dir, cleanup } = tempDir('lib-verify-');
  try {
    const root = path.join(dir, 'root');
    for (const d of ['usr/bin', 'boot/EFI/Linux', 'sysroot', 'etc']) mkdirSync(path.join(root, d), { recursive: true });
    writeFileSync(path.join(root, 'usr/bin/tool'), 'x'.repeat(500));
    // cfsctl compute-karg: the bootable V1 image, sha512
    const b = await buildImage(root, { ...opts('sha512', { propagateUsrToRoot: true, bootable: true }), version: 1 });
    const k = karg(b.id, 1, 'sha512');
    const efi = path.join(root, 'boot/EFI/Linux/sealed.efi');
    writeFileSync(efi, uki(`rw ${k}`));
    const ok = await verifyImage(root, LOAD);
    assert.equal(ok.ok, true, ok.problems.join('\n'));
    assert.equal(ok.files[0].kargs[0].status, 'match');
    assert.ok(ok.files[0].kargs[0].matched!.profiles.includes('cfsctl-0.9'));
    // the same UKI as a file against the image: match; alone: only its form is checked
    const copy = path.join(dir, 'copy.efi');
    writeFileSync(copy, uki(`rw ${k}`));
    assert.equal((await verifyPeFile(copy, root, LOAD)).ok, true);
    assert.equal((await verifyPeFile(copy, undefined, LOAD)).ok, true);
    // a karg of another image
    writeFileSync(efi, uki(`rw composefs.digest=v1-sha512-12:${'ab'.repeat(64)}`));
    const bad = await verifyImage(root, LOAD);
    assert.equal(bad.ok, false);
    assert.equal(bad.files[0].kargs[0].status, 'mismatch');
    // not a PE: bad input, with the file named
    writeFileSync(copy, 'not a PE file');
    await assert.rejects(verifyPeFile(copy, undefined, LOAD), (e: Error) => e instanceof VerifyError && (e as CfsError).kind === 'input' && e.message.startsWith(copy));
    await assert.rejects(verifyImage(`dumpfile:${path.join(GOLDEN, 'acl.dump')}`, LOAD), (e: Error) => e instanceof VerifyError && /holds no file contents/.test(e.message));
  } finally {
    cleanup();
  }
});

test('errors carry a kind: usage, input (the message names it), internal', async () => {
  const { dir, cleanup } = tempDir('lib-errors-');
  try {
    assert.throws(() => parseSource('nosuchkind:x'), (e: Error) => e instanceof UsageError && e instanceof CfsError && e.kind === 'usage');
    const bad = path.join(dir, 'bad.dump');
    writeFileSync(bad, '/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 zero - - -\n');
    await assert.rejects(loadSource(`dumpfile:${bad}`, opts('sha512')), (e: Error) => {
      assert.ok(e instanceof InputError && (e as InputError).kind === 'input', String(e));
      assert.match(e.message, /^dumpfile line 2: missing \. in mtime/);
      return true;
    });
    // a directory without /usr cannot take the root's metadata from it
    mkdirSync(path.join(dir, 'nousr'));
    await assert.rejects(loadSource(path.join(dir, 'nousr'), opts('sha512', { propagateUsrToRoot: true })), (e: Error) => {
      assert.ok(e instanceof InputError, String(e));
      assert.equal(e.message.split(' (')[0], `directory ${path.join(dir, 'nousr')}: Directory entry "usr" does not exist`);
      return true;
    });
    // errno errors pass through with their path
    await assert.rejects(loadSource(`dumpfile:${path.join(dir, 'missing.dump')}`, opts('sha512')), { code: 'ENOENT' });
    assert.equal(new InternalError('x').kind, 'internal');
  } finally {
    cleanup();
  }
});

test("README 'As a library': the example compiles against the package exports and prints the documented id", async (t) => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## As a library'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(m, "README: no ```ts block under '## As a library'");
  const example = m[1];
  assert.match(example, /from 'composefs-ts'/, 'the example imports the package by its name');
  // the id the README's first command prints (independent of this example)
  const documented = /^([0-9a-f]{128})$/m.exec(readme)?.[1];
  assert.ok(documented, 'README: the id of examples/rootfs.dump');
  // Inside the package (build/), so that 'composefs-ts' resolves through package.json "exports"
  // (self-reference) to build/src/index.js and its declarations, as for a dependent project.
  const work = mkdtempSync(path.join(ROOT, 'build', 'library-example-'));
  const run = mkdtempSync(path.join(tempDir('lib-example-').dir, 'cwd-'));
  try {
    const out = path.join(run, 'image.cfs');
    writeFileSync(
      path.join(work, 'example.mts'),
      `${example}\n// added by the test: keep the image for an independent digest\nimport { writeFile as keepImage } from 'node:fs/promises';\nawait keepImage(${JSON.stringify(out)}, image);\n`,
    );
    writeFileSync(
      path.join(work, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, types: ['node'], skipLibCheck: true, outDir: '.' },
        files: ['example.mts'],
      }),
    );
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', work], { stdio: 'pipe' });
    symlinkSync(path.join(ROOT, 'examples'), path.join(run, 'examples'));
    const printed = execFileSync(process.execPath, [path.join(work, 'example.mjs')], { cwd: run }).toString().split('\n');
    assert.equal(printed[0], documented);
    assert.equal(printed[1], `composefs.digest=v1-sha512-12:${documented}`);
    if (!have('fsverity')) {
      if (IN_CI) assert.fail('fsverity (package fsverity) is required under CI');
      return t.skip('fsverity missing: the image written was not measured');
    }
    assert.equal(execFileSync('fsverity', ['digest', '--hash-alg=sha512', '--compact', out]).toString().trim(), documented);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(path.dirname(run), { recursive: true, force: true });
  }
});
