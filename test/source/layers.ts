/** Shared by the tar and OCI source tests: layer tars → raw tree, and error-message checks. */
import assert from 'node:assert/strict';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { buildFromLayers } from '../../src/source/tar/members.js';
import type { FileSystem } from '../../src/tree/tree.js';
import { TarBuilder } from '../tar-builder.js';

/** The bytes as a stream, in `chunk`-sized pieces (0: one piece). */
export async function* once(b: Buffer, chunk = 0): AsyncGenerator<Buffer> {
  if (chunk <= 0) {
    yield b;
    return;
  }
  for (let i = 0; i < b.length; i += chunk) yield b.subarray(i, i + chunk);
}

/** The raw tree of `layers` (uncompressed tars), applied in order. */
export async function build(layers: Buffer[], chunk = 0): Promise<FileSystem> {
  return buildFromLayers(
    layers.map((l) => () => once(l, chunk)),
    { hash: 'sha256' },
  );
}

export async function dump(layers: Buffer[], chunk = 0): Promise<string> {
  return writeDumpfile(await build(layers, chunk)).toString('latin1');
}

/** Asserts `p` rejects with one line (no stack) containing every part. */
export async function rejectsWith(p: Promise<unknown>, ...parts: (string | RegExp)[]): Promise<Error> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof Error, 'expected an error');
  for (const part of parts) {
    if (typeof part === 'string') assert.ok(err.message.includes(part), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(part)}`);
    else assert.match(err.message, part);
  }
  assert.ok(!/\n\s+at /.test(err.message), 'message must not look like a stack trace');
  return err;
}

/** A layer's usual first directories. */
export const base = (): TarBuilder => new TarBuilder().dir('usr/').dir('usr/bin/').dir('etc/');
