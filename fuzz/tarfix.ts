/** Tar helpers of the fuzz targets: header checksum repair and a dictionary. */

const USTAR = Buffer.from('ustar', 'latin1');

/**
 * Recomputes the checksum of every 512-byte block (from `start`, in steps of 512) that carries
 * the ustar/GNU magic, so mutated headers get past the checksum check into the field parsers.
 */
export function fixTarChecksums(b: Buffer, start = 0, end = b.length): Buffer {
  const out = Buffer.from(b);
  for (let off = start; off + 512 <= end; off += 512) {
    if (!out.subarray(off + 257, off + 262).equals(USTAR)) continue;
    let sum = 8 * 0x20;
    for (let i = 0; i < 148; i++) sum += out[off + i];
    for (let i = 156; i < 512; i++) sum += out[off + i];
    out.write(sum.toString(8).padStart(6, '0').slice(-6) + '\0 ', off + 148, 'latin1');
  }
  return out;
}

export const TAR_DICTIONARY: (string | Uint8Array)[] = [
  'ustar\x0000', 'ustar  \x00', '././@LongLink', '././@PaxHeader',
  'path=', 'linkpath=', 'size=', 'uid=', 'gid=', 'mtime=', 'uname=', 'gname=', 'atime=', 'ctime=',
  'SCHILY.xattr.', 'SCHILY.xattr.security.capability=', 'SCHILY.xattr.trusted.overlay.opaque=',
  'LIBARCHIVE.xattr.', 'GNU.sparse.', 'SCHILY.devmajor=', 'SCHILY.devminor=',
  '.wh.', '.wh..wh..opq', 'usr/', './', '../', '/',
  '0', '1', '2', '3', '4', '5', '6', '7', 'x', 'g', 'L', 'K', 'S', 'V', 'M', 'N', 'D',
  '0000644\x00', '0000755\x00', '00000000000\x00', '77777777777\x00', '\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01',
  '\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff', '30 path=', '\n',
  Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
];
