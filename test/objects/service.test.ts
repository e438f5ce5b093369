/**
 * The object service (src/objects/service.ts): every strategy it picks (ranges read by a worker,
 * streams handed to a worker, small contents hashed at once, contents stored in a repository)
 * gives the fs-verity digest of the content, checked against `fsverity digest` (fsverity-utils)
 * where it is installed and the JS hasher otherwise; stored objects hold the content.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { FsVerityHasher } from '../../src/fsverity/fsverity.js';
import { objectService } from '../../src/objects/service.js';
import { Repository } from '../../src/repo/repo.js';
import { loadRawTree } from '../../src/source/load.js';
import { bootReads } from '../../src/transform/boot.js';
import { type FileSystem, type HashAlg, type Leaf } from '../../src/tree/tree.js';
import { TarBuilder } from '../tar-builder.js';
import { have, tempDir } from '../helpers.js';

/** Sizes on both sides of every threshold: inline (64), ranges/streams (64 KiB), gzip streams (1 MiB). */
const SIZES = [65, 4096, (64 << 10) - 1, 64 << 10, (1 << 20) + 3, 3 << 20];

function content(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** The oracle: fsverity-utils when present, else the JS hasher (checked against golden vectors). */
function expected(dir: string, data: Buffer, alg: HashAlg): string {
  if (have('fsverity')) {
    const f = path.join(dir, 'oracle');
    writeFileSync(f, data);
    return execFileSync('fsverity', ['digest', '--hash-alg', alg, '--compact', f], { encoding: 'utf8' }).trim();
  }
  return new FsVerityHasher(alg).update(data).digest().toString('hex');
}

function leaf(fs: FileSystem, name: string): Leaf {
  const l = (fs.root.entries.get('f') as { entries: Map<string, Leaf> }).entries.get(name);
  assert.ok(l && l.kind === 'leaf', name);
  return l;
}

test('every strategy of the object service gives the content digest; storing keeps the content', async () => {
  const { dir, cleanup } = tempDir('cfs-objects-');
  try {
    const files = SIZES.map((n, i) => content(n, i + 1));
    const tb = new TarBuilder().dir('f');
    files.forEach((c, i) => tb.file(`f/${i}`, c));
    const tar = tb.build();
    writeFileSync(path.join(dir, 'l.tar'), tar);
    writeFileSync(path.join(dir, 'l.tar.gz'), gzipSync(tar));
    for (const alg of ['sha256', 'sha512'] as HashAlg[]) {
      const want = files.map((c) => expected(dir, c, alg));
      const repo = await Repository.openOrCreate(path.join(dir, `repo-${alg}`), alg, 1);
      for (const file of ['l.tar', 'l.tar.gz']) {
        for (const jobs of [1, 2]) {
          // hash only (plain file: ranges read by workers; gzip: streams or inline) and storing
          for (const store of [false, true]) {
            const what = `${alg} ${file} -j${jobs}${store ? ' --repo' : ''}`;
            const { fs } = await loadRawTree({ kind: 'layers', spec: `layers:${path.join(dir, file)}` }, { hash: alg, jobs, jobsGiven: true, repo: store ? repo : undefined });
            files.forEach((c, i) => {
              const l = leaf(fs, String(i));
              assert.equal(l.content.type, 'external', what);
              if (l.content.type !== 'external') return;
              assert.equal(l.content.id.toString('hex'), want[i], `${what}: member ${i} (${c.length} bytes)`);
              if (store) assert.ok(readFileSync(repo.objectPath(l.content.id)).equals(c), `${what}: object ${i} holds the content`);
            });
          }
        }
      }
      // files by path: hash only and storing agree with the oracle
      for (const r of [undefined, repo]) {
        const objects = objectService({ alg, repo: r, jobs: 2 });
        try {
          for (const [i, c] of files.entries()) {
            const f = path.join(dir, `file-${i}`);
            writeFileSync(f, c);
            assert.equal((await objects.hashFile(Buffer.from(f), BigInt(c.length))).toString('hex'), want[i]);
          }
        } finally {
          await objects.close();
        }
      }
    }
  } finally {
    cleanup();
  }
});

test('bootReads names the policy files the bootable transform reads; an OCI source keeps only what keep asks', async () => {
  for (const p of ['/etc/selinux/config', 'etc/selinux/config', './etc/selinux/targeted/contexts/files/file_contexts', 'etc//selinux/./mls/contexts/files/file_contexts.subs_dist'])
    assert.equal(bootReads(Buffer.from(p)), true, p);
  for (const p of ['etc/selinux/targeted/contexts/files/x/y', 'etc/selinux/targeted/policy/policy.33', 'usr/etc/selinux/config', 'etc/passwd', 'etc/selinux'])
    assert.equal(bootReads(Buffer.from(p)), false, p);
  const { dir, cleanup } = tempDir('cfs-objects-');
  try {
    const config = 'SELINUX=enforcing\nSELINUXTYPE=targeted\n' + '#'.repeat(100) + '\n';
    const fc = '/usr(/.*)?\tsystem_u:object_r:usr_t:s0\n'.repeat(10);
    const tar = new TarBuilder().dir('etc').dir('etc/selinux').file('etc/selinux/config', config).dir('etc/selinux/targeted').dir('etc/selinux/targeted/contexts').dir('etc/selinux/targeted/contexts/files').file('etc/selinux/targeted/contexts/files/file_contexts', fc).file('etc/other', 'x'.repeat(200)).build();
    writeFileSync(path.join(dir, 'l.tar'), tar);
    const source = { kind: 'layers' as const, spec: `layers:${path.join(dir, 'l.tar')}` };
    const kept = await loadRawTree(source, { hash: 'sha256', jobs: 1, keep: bootReads });
    const find = (fs: FileSystem, p: string): Leaf => {
      let n: unknown = fs.root;
      for (const c of p.split('/').filter((x) => x)) n = (n as { entries: Map<string, unknown> }).entries.get(c);
      return n as Leaf;
    };
    assert.equal((await kept.read(Buffer.from('/etc/selinux/config'), find(kept.fs, '/etc/selinux/config')))?.toString(), config);
    const fcPath = '/etc/selinux/targeted/contexts/files/file_contexts';
    assert.equal((await kept.read(Buffer.from(fcPath), find(kept.fs, fcPath)))?.toString(), fc);
    await assert.rejects(kept.read(Buffer.from('/etc/other'), find(kept.fs, '/etc/other')), /the content of \/etc\/other was not kept/);
    const none = await loadRawTree(source, { hash: 'sha256', jobs: 1 });
    await assert.rejects(none.read(Buffer.from('/etc/selinux/config'), find(none.fs, '/etc/selinux/config')), /was not kept/);
  } finally {
    cleanup();
  }
});

test('a directory source takes a given object service (storing), leaves it open, and its ids are the content digests', async () => {
  const { dir, cleanup } = tempDir('cfs-objects-dir-');
  try {
    const files = SIZES.map((n, i) => content(n, i + 7));
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'f'), { recursive: true });
    files.forEach((c, i) => writeFileSync(path.join(root, 'f', String(i)), c));
    for (const alg of ['sha256', 'sha512'] as HashAlg[]) {
      const repo = await Repository.openOrCreate(path.join(dir, `repo-${alg}`), alg, 1);
      const objects = objectService({ alg, repo, jobs: 2 });
      try {
        // `hash` says the other algorithm: the service's decides
        const other: HashAlg = alg === 'sha256' ? 'sha512' : 'sha256';
        const raw = await loadRawTree({ kind: 'dir', path: root }, { hash: other, jobs: 2, objects });
        assert.equal(raw.objectHash, alg);
        files.forEach((c, i) => {
          const l = leaf(raw.fs, String(i));
          assert.equal(l.content.type, 'external', `${alg} file ${i}`);
          if (l.content.type !== 'external') return;
          assert.equal(l.content.id.toString('hex'), expected(dir, c, alg), `${alg}: file ${i} (${c.length} bytes)`);
          assert.ok(readFileSync(repo.objectPath(l.content.id)).equals(c), `${alg}: object ${i} holds the content`);
        });
        // still open: the caller closes it
        const f = path.join(dir, 'after');
        writeFileSync(f, files[1]);
        assert.equal((await objects.hashFile(Buffer.from(f), BigInt(files[1].length))).toString('hex'), expected(dir, files[1], alg));
      } finally {
        await objects.close();
      }
    }
  } finally {
    cleanup();
  }
});
