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

const BLOB_NAME = /^(?:\.\/)?blobs\/sha256\/([0-9a-f]{64})$/;

/**
 * Makes the `blobs/sha256/<hex>` members of an OCI archive match their names again after a
 * mutation: each mismatching blob's hex is replaced everywhere in the archive (member names,
 * descriptors in other JSON, diff_ids) by its actual sha256, repeated so that a changed config
 * re-digests the manifest that names it, and so on. Same-length replacement keeps the layout, so
 * mutants reach the manifest and config parsers behind the digest checks. Descriptor sizes are
 * not adjusted: mutations that change a blob's length still stop at the size check.
 */
export function fixOciDigests(b: Buffer, sha256: (x: Buffer) => string): Buffer {
  const out = Buffer.from(b);
  const members: { hex: string; start: number; size: number }[] = [];
  for (let off = 0; off + 512 <= out.length; ) {
    const h = out.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const nul = h.indexOf(0);
    const name = h.subarray(0, nul === -1 || nul > 100 ? 100 : nul).toString('latin1');
    const sizeField = h.subarray(124, 136).toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
    if (!/^[0-7]{1,11}$/.test(sizeField)) break;
    const size = parseInt(sizeField, 8);
    const m = BLOB_NAME.exec(name);
    if (m && off + 512 + size <= out.length) members.push({ hex: m[1], start: off + 512, size });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  for (let round = 0; round < 4; round++) {
    let changed = false;
    for (const m of members) {
      const actual = sha256(out.subarray(m.start, m.start + m.size));
      if (actual === m.hex) continue;
      const from = Buffer.from(m.hex, 'latin1');
      for (let i = out.indexOf(from); i !== -1; i = out.indexOf(from, i + 64)) out.write(actual, i, 'latin1');
      for (const o of members) if (o.hex === m.hex) o.hex = actual;
      changed = true;
    }
    if (!changed) break;
  }
  return out;
}
