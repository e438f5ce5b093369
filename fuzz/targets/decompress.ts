/**
 * Layer decompression framing (src/source/decompress.ts): gzip (multi-member), zstd (fzstd), plain
 * pass-through, xz/bzip2 refusal. Invariants: a rejection is a one-line DecompressError; the
 * output does not depend on how the input is cut into chunks (one chunk vs. pieces of sizes
 * drawn from the input), and plain input comes out unchanged. Output is read up to OUTPUT_CAP.
 */
import { decompress, DecompressError } from '../../src/source/decompress.js';
import { expectRejection, expectSame, Finding, type FuzzTarget } from '../target.js';

/** Enough to see framing errors; bombs beyond this are the memory bound's business. */
const OUTPUT_CAP = 16 << 20;

async function* chunks(parts: Buffer[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

/** Pieces of 1..64 bytes, sizes from the input itself (reproducible). */
function cut(input: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  let h = 0x9e3779b9;
  while (at < input.length) {
    h = (Math.imul(h ^ input[at], 0x85ebca6b) + 0x6b) >>> 0;
    const n = 1 + (h % 64);
    out.push(input.subarray(at, at + n));
    at += n;
  }
  return out;
}

/**
 * Buffer memory the decoder may hold beyond the output we keep (a streaming decoder holds its
 * window and a chunk or two). One that decodes a whole input chunk before yielding anything
 * (a 32 KiB zstd input can expand to 1 GiB) shows up here before the RSS bound.
 */
const HELD_CAP = 256 << 20;

async function inflate(parts: Buffer[]): Promise<{ out: Buffer; error?: string }> {
  const got: Buffer[] = [];
  let n = 0;
  const base = process.memoryUsage().arrayBuffers;
  try {
    for await (const c of decompress(chunks(parts), 'layer 1')) {
      got.push(c);
      n += c.length;
      const held = process.memoryUsage().arrayBuffers - base - n;
      if (held > HELD_CAP) throw new Finding('memory', `decoder has allocated ${held >> 20} MiB of buffers beyond the ${n} bytes of output read so far`);
      if (n >= OUTPUT_CAP) break;
    }
  } catch (e) {
    expectRejection(e, [DecompressError], 'decompress');
    return { out: Buffer.concat(got), error: (e as Error).message };
  }
  const out = Buffer.concat(got);
  return { out: out.subarray(0, Math.min(out.length, OUTPUT_CAP)) };
}

export const target: FuzzTarget = {
  description: 'gzip/zstd/plain framing: typed one-line rejections; same output however the input is chunked',
  maxLen: 32 << 10,
  timeoutMs: 5000,
  dictionary: [
    Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.from([0x1f, 0x8b, 0x08, 0x1f]), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
    Buffer.from([0x50, 0x2a, 0x4d, 0x18]), Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'BZh9',
    Buffer.from([0x03, 0x00, 0x00]), Buffer.from([0x01, 0x00, 0x00]), Buffer.from([0x00, 0x00, 0x00, 0x00]),
  ],
  async run(input) {
    const whole = await inflate([input]);
    const pieces = await inflate(cut(input));
    if ((whole.error === undefined) !== (pieces.error === undefined))
      throw new Finding('invariant', `one chunk: ${whole.error ?? 'ok'}; small chunks: ${pieces.error ?? 'ok'}`);
    // Up to an error, the same bytes must have come out (an error may surface a chunk earlier or later).
    if (whole.error === undefined) expectSame(pieces.out, whole.out, 'output by chunking');
    // A leading skippable frame (magic 0x184D2A50..5F, little-endian) also marks zstd.
    const skippable = input.length >= 4 && (input[0] & 0xf0) === 0x50 && input[1] === 0x2a && input[2] === 0x4d && input[3] === 0x18;
    const plain = !(input[0] === 0x1f && input[1] === 0x8b) && !(input[0] === 0x28 && input[1] === 0xb5 && input[2] === 0x2f && input[3] === 0xfd) && !skippable;
    if (plain && whole.error === undefined) expectSame(whole.out, input, 'plain pass-through');
  },
};
