/**
 * Just enough of the PE/COFF format to read the sections of a UKI or UKI addon (systemd-stub's
 * `.cmdline`, `.osrel`, `.linux`, ...): DOS header -> PE signature -> COFF file header ->
 * section table. Every offset and size comes from the file and is checked against its size
 * before it is used; an error names the offset of the field at fault (Microsoft PE format
 * specification, "MS-DOS Stub", "COFF File Header", "Section Table").
 *
 * Files are read in place through a {@link ByteReader}: only the headers and the sections asked
 * for are read, never the kernel or the initrd.
 */
import { open } from 'node:fs/promises';
import { InputError } from '../errors.js';

/** Random access to the bytes of a file (or of a file kept in memory). */
export interface ByteReader {
  /** For messages. */
  name: string;
  size: number;
  /** Exactly `length` bytes at `offset` (the caller has checked the range). */
  read(offset: number, length: number): Promise<Buffer>;
}

export function bufferReader(name: string, buf: Buffer): ByteReader {
  return { name, size: buf.length, read: async (o, n) => buf.subarray(o, o + n) };
}

/** Runs `f` with a reader over a file (a Buffer path: names are bytes), closing it afterwards. */
export async function withFileReader<T>(path: string | Buffer, f: (r: ByteReader) => Promise<T>): Promise<T> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const r: ByteReader = {
      name: path.toString(),
      size,
      read: async (offset, length) => {
        const buf = Buffer.alloc(length);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) throw new PeError(offset + done, 'the file ended while it was being read (it changed?)');
          done += bytesRead;
        }
        return buf;
      },
    };
    return await f(r);
  } finally {
    await fh.close();
  }
}

/** The file is not a (readable) PE image; `offset` is where the fault is. */
export class PeError extends InputError {
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`offset 0x${offset.toString(16)}: ${reason}`);
    this.name = 'PeError';
  }
}

export interface PeSection {
  /** The 8-byte name up to its first NUL (e.g. `.cmdline`). */
  name: string;
  /** Position in the section table (0-based). */
  index: number;
  /** Offset of this section's table entry. */
  entryOffset: number;
  virtualSize: number;
  virtualAddress: number;
  rawSize: number;
  rawOffset: number;
}

export interface PeImage {
  machine: number;
  sections: PeSection[];
}

const DOS_HEADER = 64;
const E_LFANEW = 0x3c;
const COFF_HEADER = 20;
const SECTION_ENTRY = 40;

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Parses the headers and section table; checks every section's file range. */
export async function readPe(r: ByteReader): Promise<PeImage> {
  if (r.size < DOS_HEADER) throw new PeError(0, `truncated DOS header: the file is ${r.size} bytes, a PE image has at least ${DOS_HEADER}`);
  const dos = await r.read(0, DOS_HEADER);
  if (dos[0] !== 0x4d || dos[1] !== 0x5a) throw new PeError(0, "not a PE image: no 'MZ' signature");
  const peOff = dos.readUInt32LE(E_LFANEW);
  if (peOff < DOS_HEADER - 4 || peOff + 4 + COFF_HEADER > r.size)
    throw new PeError(E_LFANEW, `the PE header offset ${hex(peOff)} lies outside the file (${r.size} bytes)`);
  const head = await r.read(peOff, 4 + COFF_HEADER);
  if (head.readUInt32BE(0) !== 0x50450000) throw new PeError(peOff, "no 'PE\\0\\0' signature at the PE header offset");
  const machine = head.readUInt16LE(4);
  const count = head.readUInt16LE(6);
  const optSize = head.readUInt16LE(20);
  const tableOff = peOff + 4 + COFF_HEADER + optSize;
  const tableEnd = tableOff + count * SECTION_ENTRY;
  if (tableEnd > r.size)
    throw new PeError(tableOff, `the section table (${count} sections of ${SECTION_ENTRY} bytes, after a ${optSize}-byte optional header) runs past the end of the file (${r.size} bytes)`);
  if (optSize >= 2) {
    const magic = (await r.read(peOff + 4 + COFF_HEADER, 2)).readUInt16LE(0);
    if (magic !== 0x10b && magic !== 0x20b) throw new PeError(peOff + 4 + COFF_HEADER, `unknown optional header magic ${hex(magic)} (PE32 0x10b or PE32+ 0x20b)`);
  }
  const table = count > 0 ? await r.read(tableOff, count * SECTION_ENTRY) : Buffer.alloc(0);
  const sections: PeSection[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * SECTION_ENTRY, (i + 1) * SECTION_ENTRY);
    const nul = e.indexOf(0);
    const name = e.subarray(0, nul === -1 || nul > 8 ? 8 : nul).toString('latin1');
    const s: PeSection = {
      name,
      index: i,
      entryOffset: tableOff + i * SECTION_ENTRY,
      virtualSize: e.readUInt32LE(8),
      virtualAddress: e.readUInt32LE(12),
      rawSize: e.readUInt32LE(16),
      rawOffset: e.readUInt32LE(20),
    };
    if (s.rawSize > 0 && s.rawOffset + s.rawSize > r.size)
      throw new PeError(
        s.entryOffset + 16,
        `section ${JSON.stringify(name)} claims ${s.rawSize} bytes at ${hex(s.rawOffset)}, past the end of the file (${r.size} bytes)`,
      );
    sections.push(s);
  }
  return { machine, sections };
}

/**
 * The content of a section: VirtualSize bytes (the file's copy is padded to the file alignment),
 * or the whole raw data when VirtualSize is 0 or larger (the rest would be zero fill).
 */
export async function readSection(r: ByteReader, s: PeSection, max: number): Promise<Buffer> {
  const len = s.virtualSize > 0 ? Math.min(s.virtualSize, s.rawSize) : s.rawSize;
  if (len > max) throw new PeError(s.entryOffset + 8, `section ${JSON.stringify(s.name)} is ${len} bytes, more than the ${max} this reader accepts`);
  return len === 0 ? Buffer.alloc(0) : r.read(s.rawOffset, len);
}

/** A kernel command line is at most a few KiB; systemd-stub takes the section whole. */
export const CMDLINE_MAX = 1 << 20;

/** One `.cmdline` section: systemd-stub's view (trailing NULs and whitespace dropped). */
export interface PeCmdline {
  section: PeSection;
  /** Index of the `.profile` section it follows (multi-profile UKIs), or undefined for the base. */
  profile?: number;
  text: string;
}

/** Every `.cmdline` section of a PE image, with the `.profile` it belongs to. */
export async function readCmdlines(r: ByteReader, pe?: PeImage): Promise<PeCmdline[]> {
  const img = pe ?? (await readPe(r));
  const out: PeCmdline[] = [];
  let profile: number | undefined;
  for (const s of img.sections) {
    if (s.name === '.profile') profile = (profile ?? -1) + 1;
    if (s.name !== '.cmdline') continue;
    const raw = await readSection(r, s, CMDLINE_MAX);
    const text = raw.toString('utf8').replace(/[\0\s]+$/, '');
    out.push({ section: s, profile, text });
  }
  return out;
}
