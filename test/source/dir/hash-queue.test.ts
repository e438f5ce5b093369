/** The directory source's hand-off of large files to hashing (src/source/dir/hash-queue.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HashQueue } from '../../../src/source/dir/hash-queue.js';
import type { ExternalContent } from '../../../src/source/dir/entries.js';
import type { DirAnchor } from '../../../src/source/dir/paths.js';
import { RepoError } from '../../../src/repo/repo.js';

/** A stand-in for a long-path directory fd: counts what holds it. */
function fakeAnchor(): DirAnchor & { held: number } {
  const a = { held: 1, retain: () => void a.held++, release: () => void a.held-- };
  return a as unknown as DirAnchor & { held: number };
}

const content = (size: number): ExternalContent => ({ type: 'external', id: Buffer.alloc(0), size: BigInt(size) });
const tick = () => new Promise((r) => setImmediate(r));

test('hash queue: at most `limit` hashes at once, every id filled in, anchors released', async () => {
  let running = 0;
  let most = 0;
  const q = new HashQueue(async (p, size) => {
    running++;
    most = Math.max(most, running);
    await tick();
    running--;
    return Buffer.from(`${p.toString()}:${size}`);
  }, 3);
  const anchor = fakeAnchor();
  const files = Array.from({ length: 20 }, (_, i) => content(100 + i));
  files.forEach((c, i) => q.add(c, Buffer.from(`/a/${i}`), Buffer.from(`/real/${i}`), i % 2 ? anchor : undefined));
  assert.ok(q.waiting > 0);
  await q.drain(0);
  assert.equal(most, 3);
  assert.equal(q.waiting, 0);
  assert.equal(q.error, undefined);
  files.forEach((c, i) => assert.equal(c.id.toString(), `/a/${i}:${100 + i}`));
  assert.equal(anchor.held, 1, 'every hash released the anchor it held');
});

test('hash queue: drain(max) returns once at most `max` files wait', async () => {
  const q = new HashQueue(async () => {
    await tick();
    return Buffer.alloc(32);
  }, 1);
  for (let i = 0; i < 10; i++) q.add(content(100), Buffer.from('/x'), Buffer.from('/x'), undefined);
  await q.drain(4);
  assert.ok(q.waiting <= 4);
  await q.drain(0);
  assert.equal(q.waiting, 0);
});

test('hash queue: the first failure names the file, stops the rest and releases what they hold', async () => {
  const calls: string[] = [];
  const q = new HashQueue(async (p) => {
    calls.push(p.toString());
    await tick();
    if (p.toString() === '/a/1') throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    return Buffer.alloc(32);
  }, 2);
  const anchor = fakeAnchor();
  for (let i = 0; i < 10; i++) q.add(content(100), Buffer.from(`/a/${i}`), Buffer.from(`/real/${i}`), anchor);
  await q.drain(0);
  assert.ok(q.stopped);
  assert.match(String((q.error as Error).message), /^cannot hash \/real\/1: EIO: i\/o error$/);
  assert.equal((q.error as Error & { code?: string }).code, 'EIO');
  assert.ok(calls.length < 10, `hashing stopped after the failure (${calls.length} started)`);
  assert.equal(anchor.held, 1);
});

test('hash queue: a repository error is kept as it is (it is not about the file)', async () => {
  const repoErr = new RepoError('repository /r: ENOSPC');
  const q = new HashQueue(async () => {
    throw repoErr;
  }, 4);
  q.add(content(100), Buffer.from('/a'), Buffer.from('/a'), undefined);
  await q.drain(0);
  assert.equal(q.error, repoErr);
});

test('hash queue: after abort nothing queued is hashed', async () => {
  let calls = 0;
  const q = new HashQueue(async () => {
    calls++;
    await tick();
    return Buffer.alloc(32);
  }, 1);
  const anchor = fakeAnchor();
  for (let i = 0; i < 5; i++) q.add(content(100), Buffer.from('/a'), Buffer.from('/a'), anchor);
  q.abort();
  await q.drain(0);
  assert.equal(calls, 1, 'only the hash already running');
  assert.equal(anchor.held, 1);
});
