/** The object store: layout like composefs-rs, atomic, idempotent, safe with concurrent writers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fsverityDigest } from '../src/fsverity/fsverity.js';
import { metaJson } from '../src/repo/repo.js';
import { CLI, runCfs, tempDir } from './helpers.js';

function makeTree(dir: string): Buffer[] {
  const contents = [randomBytes(100), randomBytes(5000), randomBytes(70000)];
  mkdirSync(path.join(dir, 'usr/lib'), { recursive: true });
  contents.forEach((c, i) => writeFileSync(path.join(dir, 'usr/lib', `f${i}`), c));
  writeFileSync(path.join(dir, 'usr/small'), 'inline');
  return contents;
}

function allFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

test('meta.json has the exact bytes cfsctl init writes', () => {
  assert.equal(
    metaJson('sha512', 1),
    '{\n  "version": 1,\n  "algorithm": "fsverity-sha512-12",\n  "features": {\n    "compatible": [],\n    "read-only-compatible": [\n      "v1_erofs"\n    ],\n    "incompatible": []\n  },\n  "erofs_formats": {\n    "default": 1\n  }\n}\n',
  );
  assert.match(metaJson('sha256', 2), /"read-only-compatible": \[\],[\s\S]*"default": 2/);
});

test('create-image --repo stores objects, the image and its ref; a second run changes nothing', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'src');
    const contents = makeTree(src);
    const repo = path.join(dir, 'repo');
    const r = runCfs(['create-image', '--repo', repo, src, 'my-image']);
    assert.equal(r.status, 0, r.stderr);
    const hex = r.stdout.toString().trim().replace(/^sha512:/, '');
    assert.equal(readFileSync(path.join(repo, 'meta.json'), 'utf8'), metaJson('sha512', 1));
    for (const c of contents) {
      const id = fsverityDigest(c, 'sha512').toString('hex');
      const obj = path.join(repo, 'objects', id.slice(0, 2), id.slice(2));
      assert.ok(readFileSync(obj).equals(c), `object ${id}`);
    }
    assert.equal(readlinkSync(path.join(repo, 'images', hex)), `../objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
    assert.equal(readlinkSync(path.join(repo, 'images/refs/my-image')), `../${hex}`);
    assert.equal(fsverityDigest(readFileSync(path.join(repo, 'images', hex)), 'sha512').toString('hex'), hex);
    const before = allFiles(repo);
    assert.equal(before.filter((f) => f.includes('tmp')).length, 0, 'no temporary files');
    const again = runCfs(['create-image', '--repo', repo, src, 'my-image']);
    assert.equal(again.stdout.toString(), r.stdout.toString());
    assert.deepEqual(allFiles(repo), before);
  } finally {
    cleanup();
  }
});

test('two cfs processes filling one repository at once both succeed with the same result', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'src');
    makeTree(src);
    for (let i = 0; i < 50; i++) writeFileSync(path.join(src, 'usr', `many${i}`), randomBytes(3000 + i));
    const repo = path.join(dir, 'repo');
    const one = () =>
      new Promise<{ code: number; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [CLI, 'create-image', '--repo', repo, src, 'img']);
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
      });
    const [a, b, c] = await Promise.all([one(), one(), one()]);
    for (const x of [a, b, c]) assert.equal(x.code, 0, x.err);
    assert.equal(a.out, b.out);
    assert.equal(b.out, c.out);
    assert.equal(allFiles(repo).filter((f) => f.includes('tmp')).length, 0);
  } finally {
    cleanup();
  }
});

test('a repository of another hash is refused; create-image needs -o or --repo', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'src');
    makeTree(src);
    const repo = path.join(dir, 'repo');
    assert.equal(runCfs(['create-image', '--repo', repo, src]).status, 0);
    const r = runCfs(['--hash', 'sha256', 'create-image', '--repo', repo, src]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /repository uses fsverity-sha512-12, but --hash sha256/);
    const n = runCfs(['create-image', src]);
    assert.equal(n.status, 2);
    assert.match(n.stderr, /needs -o IMAGE, --repo DIR/);
    assert.ok(!existsSync(path.join(dir, 'out.img')));
  } finally {
    cleanup();
  }
});

test('create-image --repo with layer tarballs stores every external file as an object', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = path.join(dir, 'src');
    const contents = makeTree(src);
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['--numeric-owner', '-C', src, '-cf', tar, '.']);
    const repo = path.join(dir, 'repo');
    const r = runCfs(['create-image', '--repo', repo, `layers:${tar}`, 'from-tar']);
    assert.equal(r.status, 0, r.stderr);
    for (const c of contents) {
      const id = fsverityDigest(c, 'sha512').toString('hex');
      assert.ok(readFileSync(path.join(repo, 'objects', id.slice(0, 2), id.slice(2))).equals(c));
    }
    assert.equal(r.stdout.toString(), `sha512:${runCfs(['compute-id', `layers:${tar}`]).stdout.toString().trim()}\n`);
    assert.equal(allFiles(repo).filter((f) => f.includes('tmp')).length, 0);
  } finally {
    cleanup();
  }
});
