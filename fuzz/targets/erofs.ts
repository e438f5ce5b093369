/**
 * composefs EROFS images, V0/V1/V2 (src/erofs/reader.ts). Invariants: a rejection is a one-line
 * ImageError; an accepted tree, written again in the image's own version and read back, gives
 * the same dumpfile, and its dumpfile round-trips (fuzz/roundtrip.ts).
 */
import { ImageError, readErofs } from '../../src/erofs/reader.js';
import { checkRoundTrip } from '../roundtrip.js';
import { expectRejection, type FuzzTarget } from '../target.js';

export const target: FuzzTarget = {
  description: 'EROFS images: typed one-line rejections; accepted images re-write and re-read to the same dumpfile',
  maxLen: 64 << 10,
  timeoutMs: 5000,
  blockSize: 4096,
  dictionary: [
    Buffer.from([0xe2, 0xe1, 0xf5, 0xe0]), Buffer.from([0x9a, 0x62, 0x78, 0xd0]),
    Buffer.from([0xff, 0xff]), Buffer.from([0x00, 0x10]), Buffer.from([0xed, 0x41]), Buffer.from([0xa4, 0x81]),
    Buffer.from([0xff, 0xa1]), 'overlay.', 'overlay.metacopy', 'overlay.redirect', 'overlay.whiteout', 'opaque',
    'selinux', 'posix_acl_access', '..', '.',
  ],
  run(input) {
    let r;
    try {
      r = readErofs(input);
    } catch (e) {
      expectRejection(e, [ImageError], 'readErofs');
      return;
    }
    checkRoundTrip(r.fs, r.version);
  },
};
