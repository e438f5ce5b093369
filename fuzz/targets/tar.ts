/**
 * Layer tars (src/source/tar/reader.ts, merged by src/source/tar/members.ts; gzip/zstd layers go
 * through src/source/decompress.ts). The input is up to four layers separated by LAYER_SEP, applied bottom
 * first. Invariants: a rejection is a LayerApplyError/DecompressError naming the layer in one
 * line; an accepted tree passes the round trips of fuzz/roundtrip.ts.
 */
import { objectService } from '../../src/objects/service.js';
import { DecompressError } from '../../src/source/decompress.js';
import { applyLayer, LayerApplyError, newOciFileSystem } from '../../src/source/tar/members.js';
import { S_IFDIR } from '../../src/tree/tree.js';
import { TransformError, transformForOci } from '../../src/transform/transform.js';
import { checkRoundTrip, versionFor } from '../roundtrip.js';
import { expectRejection, type FuzzTarget } from '../target.js';
import { fixTarChecksums, TAR_DICTIONARY } from '../tarfix.js';

export const LAYER_SEP = Buffer.from('\0--cfs-fuzz-next-layer--\0', 'latin1');

async function* once(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b;
}

function split(input: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const i = out.length < 3 ? input.indexOf(LAYER_SEP, at) : -1;
    if (i === -1) {
      out.push(input.subarray(at));
      return out;
    }
    out.push(input.subarray(at, i));
    at = i + LAYER_SEP.length;
  }
}

export const target: FuzzTarget = {
  description: 'layer tars (1-4, merged): typed one-line rejections; accepted trees round-trip',
  maxLen: 64 << 10,
  timeoutMs: 5000,
  blockSize: 512,
  dictionary: [...TAR_DICTIONARY, LAYER_SEP],
  fixup(input) {
    const parts = split(input).map((p) => fixTarChecksums(p));
    const joined: Buffer[] = [];
    parts.forEach((p, i) => joined.push(...(i === 0 ? [p] : [LAYER_SEP, p])));
    return Buffer.concat(joined);
  },
  async run(input) {
    const fs = newOciFileSystem();
    const layers = split(input);
    const objects = objectService({ alg: 'sha256', jobs: 1 });
    try {
      for (const [i, l] of layers.entries()) {
        await applyLayer(fs, once(l), { objects, label: `layer ${i + 1}` });
      }
    } catch (e) {
      expectRejection(e, [LayerApplyError, DecompressError], 'applyLayer');
      return;
    } finally {
      await objects.close();
    }
    // As the CLI does: the root takes /usr's metadata. Trees without /usr get a plain root.
    if (fs.root.entries.has('usr')) {
      try {
        transformForOci(fs, { propagateUsrToRoot: true, xattrs: 'keep-user-xattrs' });
      } catch (e) {
        expectRejection(e, [TransformError], 'transformForOci');
        return;
      }
    } else fs.root.stat.mode = S_IFDIR | 0o755;
    checkRoundTrip(fs, versionFor(input));
  },
};
