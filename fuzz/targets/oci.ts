/**
 * OCI image archives (src/source/oci/image.ts): the input is written to a private temporary file and
 * loaded as `oci-archive:` (index.json, manifests, configs, blob digests; when it has an
 * oci-layout member) or `docker-archive:` (manifest.json, config, diff_ids). The outer tar is
 * read by the same reader as layers. Invariants: a rejection is one of the typed one-line errors
 * of the OCI path; an accepted tree passes the round trips of fuzz/roundtrip.ts.
 *
 * A mutated blob no longer matches its digest: `fixup` re-digests blobs/sha256/* members and
 * rewrites the references (fuzz/tarfix.ts), so manifests and configs behind the digest checks are
 * fuzzed too, as long as a mutation keeps a blob's length.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DecompressError } from '../../src/source/decompress.js';
import { loadOciSource } from '../../src/source/oci/image.js';
import { OciSourceError } from '../../src/source/oci/store.js';
import { LayerApplyError } from '../../src/source/tar/members.js';
import { S_IFDIR } from '../../src/tree/tree.js';
import { TransformError, transformForOci } from '../../src/transform/transform.js';
import { checkRoundTrip, versionFor } from '../roundtrip.js';
import { expectRejection, type FuzzTarget } from '../target.js';
import { fixOciDigests, fixTarChecksums, TAR_DICTIONARY } from '../tarfix.js';

export const target: FuzzTarget = {
  description: 'oci-archive / docker-archive: typed one-line rejections; accepted trees round-trip',
  maxLen: 64 << 10,
  timeoutMs: 5000,
  blockSize: 512,
  dictionary: [
    ...TAR_DICTIONARY,
    'oci-layout', 'index.json', 'manifest.json', 'blobs/sha256/', '"manifests"', '"layers"', '"config"', '"digest"',
    '"size"', '"mediaType"', '"platform"', '"annotations"', '"rootfs"', '"diff_ids"', '"Config"', '"Layers"',
    '"RepoTags"', '"org.opencontainers.image.ref.name"', '"architecture":"amd64"', '"os":"linux"', '"variant"',
    'application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.oci.image.layer.v1.tar+zstd',
    'application/vnd.docker.distribution.manifest.list.v2+json', 'null', 'true', '[]', '{}', '-1', '1e309',
    '9007199254740993', '"sha256:', '"sha512:',
  ],
  fixup: (input) => fixTarChecksums(fixOciDigests(input, (x) => createHash('sha256').update(x).digest('hex'))),
  async run(input) {
    const dir = mkdtempSync(path.join(tmpdir(), 'cfs-fuzz-oci-'));
    try {
      const file = path.join(dir, 'image.tar');
      writeFileSync(file, input);
      const kind = input.includes('oci-layout') || !input.includes('manifest.json') ? 'oci-archive' : 'docker-archive';
      let fs;
      try {
        // Inputs are at most 64 KiB: no content is large enough for the object service to start
        // hashing threads.
        fs = await loadOciSource(`${kind}:${file}`, { hash: 'sha256', jobs: 1 });
      } catch (e) {
        expectRejection(e, [OciSourceError, LayerApplyError, DecompressError], `loadOciSource ${kind}`);
        return;
      }
      if (fs.root.entries.has('usr')) {
        try {
          transformForOci(fs, { propagateUsrToRoot: true, xattrs: 'allowlist-only' });
        } catch (e) {
          expectRejection(e, [TransformError], 'transformForOci');
          return;
        }
      } else fs.root.stat.mode = S_IFDIR | 0o755;
      checkRoundTrip(fs, versionFor(input));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
