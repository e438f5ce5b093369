/**
 * Linux fs-verity file digests: a Merkle tree over 4096-byte blocks, no salt, SHA-256 or
 * SHA-512, then the hash of the 256-byte fsverity_descriptor. This is both the object id of an
 * external file and the id of a composefs image.
 *
 * The hasher accepts input in chunks of any size: partial blocks are buffered, so the digest
 * never depends on how the input was split (composefs-rs shipped exactly that bug once).
 */
import crypto from 'node:crypto';
import { open } from 'node:fs/promises';
import { DIGEST_SIZE, type HashAlg } from '../tree/tree.js';
import { nativeAddonOrNull, type NativeAddon } from '../native/addon.js';

export const FSVERITY_BLOCK_SIZE = 4096;
/** fs-verity algorithm numbers (FS_VERITY_HASH_ALG_*). */
export const ALG_NUMBER: Record<HashAlg, number> = { sha256: 1, sha512: 2 };

// crypto.hash (one-shot) has far less per-call overhead than createHash; it exists from
// Node 20.12. Per-block hashing is the hot path, so prefer it when present. Chosen at the first
// call, not at load: reading `crypto.hash` loads node:crypto (the bundle makes it a lazy
// stand-in), which runs that never hash in JS (--version, the native hash path) need not pay.
type OneShot = (alg: string, data: Uint8Array) => Buffer;
let hashOnce: OneShot = (alg, data) => {
  const cryptoHash = (crypto as unknown as { hash?: (a: string, d: Uint8Array, enc: 'buffer') => Buffer }).hash;
  hashOnce = cryptoHash
    ? (a, d) => cryptoHash(a, d, 'buffer')
    : (a, d) => crypto.createHash(a).update(d).digest();
  return hashOnce(alg, data);
};

/**
 * The native hash functions (native/verity.c): SHA-256/512 of the OpenSSL inside the node
 * binary, called without per-block JS overhead. Optional: without the addon, when node's SHA
 * functions were not found, or with CFS_NO_NATIVE_HASH=1, everything falls back to node:crypto,
 * with identical results.
 */
export type NativeHash = Pick<NativeAddon, 'verityFileAsync' | 'verityBuffer' | 'verityNew' | 'verityUpdate' | 'verityDigest'>;

let native: NativeHash | null = null;
/** The addon `native` was decided for (worker threads switch files once, at start). */
let nativeFor: NativeAddon | null | undefined;
/** CFS_NO_NATIVE_HASH, read once (this is called per file). */
let disabled: boolean | undefined;

/** The native hash functions, or null when unavailable. */
export function nativeHash(): NativeHash | null {
  if ((disabled ??= !!process.env.CFS_NO_NATIVE_HASH)) return null;
  const addon = nativeAddonOrNull();
  if (addon !== nativeFor) {
    nativeFor = addon;
    native = addon?.hashAvailable() ? addon : null;
  }
  return native;
}

/** One level of the Merkle tree: a block being filled with child hashes. */
interface Level {
  block: Buffer;
  used: number;
  /** Hashes ever added to this level. */
  count: number;
}

/** Incremental fs-verity digest computation. */
export class FsVerityHasher {
  private readonly digestSize: number;
  private pending: Buffer | undefined;
  private pendingLen = 0;
  private size = 0n;
  private readonly levels: Level[] = [];
  private done = false;
  /** The native incremental state, when the addon is there (then nothing below is used). */
  private readonly native: NativeHash | null;
  private readonly handle: object | undefined;
  private result: Buffer | undefined;

  constructor(readonly alg: HashAlg) {
    this.digestSize = DIGEST_SIZE[alg];
    this.native = nativeHash();
    this.handle = this.native?.verityNew(ALG_NUMBER[alg]);
  }

  private level(i: number): Level {
    let level = this.levels[i];
    if (!level) {
      level = { block: Buffer.alloc(FSVERITY_BLOCK_SIZE), used: 0, count: 0 };
      this.levels[i] = level;
    }
    return level;
  }

  /** Feeds more data. Any chunk size is fine. */
  update(data: Uint8Array): this {
    if (this.done) throw new Error('FsVerityHasher: update after digest');
    if (this.handle) {
      this.native!.verityUpdate(this.handle, data);
      return this;
    }
    this.size += BigInt(data.length);
    let off = 0;
    const pending = (this.pending ??= Buffer.alloc(FSVERITY_BLOCK_SIZE));
    if (this.pendingLen > 0) {
      const take = Math.min(FSVERITY_BLOCK_SIZE - this.pendingLen, data.length);
      pending.set(data.subarray(0, take), this.pendingLen);
      this.pendingLen += take;
      off = take;
      if (this.pendingLen === FSVERITY_BLOCK_SIZE) {
        this.addHash(0, hashOnce(this.alg, pending));
        this.pendingLen = 0;
      }
    }
    // Whole blocks straight from the caller's buffer: no copy.
    while (data.length - off >= FSVERITY_BLOCK_SIZE) {
      this.addHash(0, hashOnce(this.alg, data.subarray(off, off + FSVERITY_BLOCK_SIZE)));
      off += FSVERITY_BLOCK_SIZE;
    }
    if (off < data.length) {
      pending.set(data.subarray(off), this.pendingLen);
      this.pendingLen += data.length - off;
    }
    return this;
  }

  private addHash(levelIndex: number, hash: Buffer): void {
    const level = this.level(levelIndex);
    hash.copy(level.block, level.used);
    level.used += this.digestSize;
    level.count++;
    if (level.used === FSVERITY_BLOCK_SIZE) {
      const h = hashOnce(this.alg, level.block);
      level.used = 0;
      this.addHash(levelIndex + 1, h);
    }
  }

  /** The Merkle tree root hash (all zeros for empty input). */
  private rootHash(): Buffer {
    if (this.pendingLen > 0 && this.pending) {
      this.pending.fill(0, this.pendingLen);
      this.addHash(0, hashOnce(this.alg, this.pending));
      this.pendingLen = 0;
    }
    if (this.levels.length === 0) return Buffer.alloc(this.digestSize);
    for (let i = 0; ; i++) {
      const level = this.levels[i];
      const isTop = i === this.levels.length - 1;
      // The root is the single hash of the topmost level.
      if (isTop && level.count === 1) return Buffer.from(level.block.subarray(0, this.digestSize));
      if (level.used > 0) {
        level.block.fill(0, level.used);
        const h = hashOnce(this.alg, level.block);
        level.used = 0;
        this.addHash(i + 1, h);
      }
    }
  }

  /** Finishes and returns the fs-verity digest. */
  digest(): Buffer {
    if (this.handle) {
      if (!this.result) {
        this.done = true;
        this.result = Buffer.allocUnsafe(this.digestSize);
        this.native!.verityDigest(this.handle, this.result);
      }
      return Buffer.from(this.result);
    }
    const root = this.rootHash();
    this.done = true;
    const desc = Buffer.alloc(256);
    desc[0] = 1; // version
    desc[1] = ALG_NUMBER[this.alg];
    desc[2] = 12; // log2(block size)
    desc[3] = 0; // salt size
    desc.writeBigUInt64LE(this.size, 8);
    root.copy(desc, 16);
    return hashOnce(this.alg, desc);
  }
}

/** fs-verity digest of an in-memory buffer. */
export function fsverityDigest(data: Uint8Array, alg: HashAlg): Buffer {
  const nat = nativeHash();
  if (nat) {
    const out = Buffer.allocUnsafe(DIGEST_SIZE[alg]);
    nat.verityBuffer(data, ALG_NUMBER[alg], out);
    return out;
  }
  return new FsVerityHasher(alg).update(data).digest();
}

const READ_SIZE = 1 << 20;

/**
 * fs-verity digest of a file, streamed in 1 MiB reads (memory stays constant).
 * If `expectedSize` is given and the file turns out longer or shorter, this throws: the file
 * changed while it was being hashed.
 */
export async function fsverityDigestFile(path: string | Buffer, alg: HashAlg, expectedSize?: bigint): Promise<Buffer> {
  const nat = expectedSize !== undefined && expectedSize <= BigInt(Number.MAX_SAFE_INTEGER) ? nativeHash() : null;
  if (nat) {
    // Read and hashed in C on the libuv thread pool: no JS per block, nothing copied to JS.
    const r = await nat.verityFileAsync(Buffer.from(path), ALG_NUMBER[alg], Number(expectedSize));
    if (typeof r !== 'number') return r;
    const how = BigInt(r) > expectedSize! ? 'grew' : 'shrank';
    throw new Error(`${pathText(path)}: file changed while being hashed (it ${how}: ${expectedSize} bytes when listed)`);
  }
  const fh = await open(path, 'r');
  try {
    const hasher = new FsVerityHasher(alg);
    const buf = Buffer.allocUnsafe(READ_SIZE);
    let total = 0n;
    for (;;) {
      // With an expected size, read at most one byte past it: enough to notice growth.
      const room = expectedSize === undefined ? BigInt(READ_SIZE) : expectedSize - total + 1n;
      const want = Number(room < BigInt(READ_SIZE) ? room : BigInt(READ_SIZE));
      const { bytesRead } = await fh.read(buf, 0, want, null);
      if (bytesRead === 0) break;
      total += BigInt(bytesRead);
      if (expectedSize !== undefined && total > expectedSize) break;
      hasher.update(buf.subarray(0, bytesRead));
    }
    if (expectedSize !== undefined && total !== expectedSize) {
      const how = total > expectedSize ? 'grew' : 'shrank';
      throw new Error(`${pathText(path)}: file changed while being hashed (it ${how}: ${expectedSize} bytes when listed)`);
    }
    return hasher.digest();
  } finally {
    await fh.close();
  }
}

function pathText(p: string | Buffer): string {
  return typeof p === 'string' ? p : p.toString('latin1');
}
