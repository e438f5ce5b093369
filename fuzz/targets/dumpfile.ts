/**
 * Dumpfiles (src/dumpfile/parse.ts, escapes in src/dumpfile/escape.ts). Invariants: a rejection
 * is a one-line DumpfileError (naming the line); an accepted tree passes the round trips of
 * fuzz/roundtrip.ts (print -> parse -> print is stable; EROFS write -> read gives it back).
 */
import { DumpfileError, parseDumpfile } from '../../src/dumpfile/parse.js';
import { checkRoundTrip, versionFor } from '../roundtrip.js';
import { expectRejection, type FuzzTarget } from '../target.js';

export const target: FuzzTarget = {
  description: 'dumpfile text: typed one-line rejections; accepted trees round-trip (dumpfile and EROFS)',
  maxLen: 16 << 10,
  timeoutMs: 5000,
  dictionary: [
    ' ', '\n', '/', '\\x', '\\\\', '\\n', '\\t', '\\x3d', '=', '-', '@', '.', '..', '1234567890.123456789',
    '40755', '41777', '100644', '100755', '120777', '20644', '60644', '10644', '140755', '0', '4294967295',
    'trusted.overlay.', 'trusted.overlay.overlay.whiteout=', 'trusted.overlay.opaque=y', 'user.overlay.whiteout=',
    'security.selinux=', 'security.capability=', 'system.posix_acl_access=', 'user.', 'trusted.', 'security.',
    'a'.repeat(64), 'f'.repeat(128), '/00', '/ff', '/usr', '/run',
  ],
  run(input) {
    let fs;
    try {
      fs = parseDumpfile(input).fs;
    } catch (e) {
      expectRejection(e, [DumpfileError], 'parseDumpfile');
      return;
    }
    checkRoundTrip(fs, versionFor(input));
  },
};
