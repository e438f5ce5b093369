/**
 * The round-trip invariants every tree a parser accepted must satisfy:
 *
 *  1. printing it as a dumpfile works, and parsing that dumpfile and printing again gives the
 *     same bytes ("a dumpfile we print, we parse to the same tree"), unless the tree holds what the
 *     dumpfile grammar cannot (see beyondDumpfileLimits);
 *  2. writing it as an EROFS image either refuses with a one-line Error, or gives an image that
 *     our reader reads back to the same dumpfile, modulo the losses the format forces (V2 stores
 *     no nanoseconds; a V0/V1 root entry that looks like a whiteout stub is taken for one), as
 *     test/erofs/roundtrip.test.ts states them ("an image we write, we read back to the same dumpfile").
 */
import { DumpfileError, MAX_INLINE_CONTENT, parseDumpfile, SYMLINK_MAX } from '../src/dumpfile/parse.js';
import { writeDumpfile } from '../src/dumpfile/write.js';
import { ImageError, readErofs } from '../src/erofs/reader.js';
import type { ErofsVersion } from '../src/erofs/format.js';
import { writeErofs } from '../src/erofs/writer.js';
import { traverse, type FileSystem } from '../src/tree/tree.js';
import { expectSame, Finding, MAX_MESSAGE } from './target.js';

/** V0/V1 root stubs are character devices 0/0 named 00..ff at the root. */
const STUB_LINE = /^\/[0-9a-f]{2} 0 2[0-7]{4} \S+ \S+ \S+ 0 /;

function normalise(dump: string, version: ErofsVersion): string {
  let lines = dump.split('\n');
  if (version === 2) lines = lines.map((l) => l.replace(/^(\S+ \S+ \S+ \S+ \S+ \S+ \S+ -?\d+)\.\d+ /, '$1.0 '));
  else lines = lines.filter((l) => !STUB_LINE.test(l));
  return lines.join('\n');
}

/** Checks both invariants; `version` is the EROFS format to write (the caller varies it). */
export function checkRoundTrip(fs: FileSystem, version: ErofsVersion): void {
  let dump: Buffer;
  try {
    dump = writeDumpfile(fs);
  } catch (e) {
    throw new Finding('invariant', `printing an accepted tree as a dumpfile failed: ${String(e)}`);
  }
  if (beyondDumpfileLimits(fs)) return checkImage(fs, version, dump);
  let again: Buffer;
  try {
    again = writeDumpfile(parseDumpfile(dump).fs);
  } catch (e) {
    if (e instanceof DumpfileError) throw new Finding('invariant', `the dumpfile we printed does not parse: ${e.message}`);
    throw new Finding('invariant', `re-parsing our dumpfile threw ${String(e)}`);
  }
  expectSame(again, dump, 'dumpfile print -> parse -> print');
  checkImage(fs, version, dump);
}

/**
 * Inline content over 512 bytes and symlink targets over 1024 bytes: C mkcomposefs images and
 * tars may carry them, our reader and writer keep them, the composefs-rs dumpfile grammar (ours)
 * refuses them (test/erofs/reader.test.ts C_UNPARSEABLE). Such trees skip the dumpfile parse-back.
 */
function beyondDumpfileLimits(fs: FileSystem): boolean {
  for (const { inode } of traverse(fs)) {
    if (inode.kind !== 'leaf') continue;
    const c = inode.content;
    if (c.type === 'inline' && c.data.length > MAX_INLINE_CONTENT) return true;
    if (c.type === 'symlink' && c.target.length > SYMLINK_MAX) return true;
  }
  return false;
}

function checkImage(fs: FileSystem, version: ErofsVersion, dump: Buffer): void {
  let image: Buffer;
  try {
    image = writeErofs(fs, version);
  } catch (e) {
    // The writer may refuse a tree the format cannot hold (e.g. a device number over 32 bits);
    // it must say so in one line, and not with an internal TypeError/RangeError.
    if (!(e instanceof Error) || (e.constructor !== Error && !(e instanceof ImageError)))
      throw new Finding('untyped-error', `writeErofs V${version}: ${e instanceof Error ? e.constructor.name : typeof e}: ${String(e).slice(0, 300)}`);
    if (e.message.includes('\n') || e.message.length > MAX_MESSAGE)
      throw new Finding('bad-message', `writeErofs V${version}: message is not one short line`);
    return;
  }
  let back: Buffer;
  try {
    const r = readErofs(image);
    if (r.version !== version) throw new Finding('invariant', `wrote V${version}, read back V${r.version}`);
    back = writeDumpfile(r.fs);
  } catch (e) {
    if (e instanceof Finding) throw e;
    throw new Finding('invariant', `reading back the V${version} image we wrote failed: ${String(e).slice(0, 300)}`);
  }
  expectSame(back.toString('latin1'), normalise(dump.toString('latin1'), version), `EROFS V${version} write -> read -> dumpfile`);
}

/** A format version from the input's bytes, so every version gets its share, reproducibly. */
export function versionFor(input: Buffer): ErofsVersion {
  let h = input.length;
  for (let i = 0; i < input.length; i += 61) h = (h * 31 + input[i]) >>> 0;
  return (h % 3) as ErofsVersion;
}
