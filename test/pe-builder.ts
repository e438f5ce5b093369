/**
 * Builds small PE32+ images for tests: a DOS header, the PE signature, a COFF header, a minimal
 * optional header and the given sections, laid out the way the PE specification describes (file
 * alignment 0x200). Fields can be overridden to make hostile files.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface SectionSpec {
  name: string;
  data: Buffer | string;
  /** Defaults: VirtualSize = data length, VirtualAddress increasing by 0x1000. */
  virtualSize?: number;
  virtualAddress?: number;
  rawSize?: number;
  rawOffset?: number;
}

export interface PeSpec {
  sections: SectionSpec[];
  peOffset?: number;
  optionalHeaderSize?: number;
  numberOfSections?: number;
  optionalMagic?: number;
}

const ALIGN = 0x200;
const up = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

export function buildPe(spec: PeSpec): Buffer {
  const peOff = spec.peOffset ?? 0x40;
  const optSize = spec.optionalHeaderSize ?? 0xf0;
  const count = spec.numberOfSections ?? spec.sections.length;
  const tableOff = peOff + 24 + optSize;
  const headersEnd = up(tableOff + 40 * spec.sections.length);
  const datas = spec.sections.map((s) => (typeof s.data === 'string' ? Buffer.from(s.data) : s.data));
  let at = headersEnd;
  const placed = spec.sections.map((s, i) => {
    const raw = s.rawOffset ?? at;
    const rawSize = s.rawSize ?? up(datas[i].length);
    // an explicit (hostile) offset does not grow the file
    if (s.rawOffset === undefined) at = raw + up(datas[i].length);
    return { raw, rawSize };
  });
  const file = Buffer.alloc(Math.max(at, headersEnd));
  file.write('MZ', 0, 'latin1');
  file.writeUInt32LE(peOff, 0x3c);
  file.write('PE\0\0', peOff, 'latin1');
  file.writeUInt16LE(0x8664, peOff + 4);
  file.writeUInt16LE(count, peOff + 6);
  file.writeUInt16LE(optSize, peOff + 20);
  file.writeUInt16LE(0x22, peOff + 22);
  if (optSize >= 2) file.writeUInt16LE(spec.optionalMagic ?? 0x20b, peOff + 24);
  spec.sections.forEach((s, i) => {
    const e = tableOff + 40 * i;
    file.write(s.name.padEnd(8, '\0').slice(0, 8), e, 'latin1');
    file.writeUInt32LE(s.virtualSize ?? datas[i].length, e + 8);
    file.writeUInt32LE(s.virtualAddress ?? 0x1000 * (i + 1), e + 12);
    file.writeUInt32LE(placed[i].rawSize, e + 16);
    file.writeUInt32LE(placed[i].raw, e + 20);
    file.writeUInt32LE(0x40000040, e + 36);
    if (placed[i].raw + datas[i].length <= file.length) datas[i].copy(file, placed[i].raw);
  });
  return file;
}

/** systemd-boot-efi's stub on Debian. */
export const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

/** Why a real UKI cannot be made here (undefined: it can). */
export function cannotMakeUki(): string | undefined {
  if (!existsSync(STUB)) return `${STUB} is missing (apt-get install systemd-boot-efi)`;
  try {
    execFileSync('objcopy', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'objcopy is missing (apt-get install binutils)';
  }
  return undefined;
}

/**
 * A UKI assembled from the systemd stub with objcopy, at the section addresses systemd's
 * documentation gives for objcopy-built UKIs (the stub of systemd 252 ends at 0x19300).
 */
export function makeUki(out: string, cmdline: string | undefined, work: string): void {
  const files: [string, string, string][] = [
    ['.osrel', 'osrel', 'ID=cfs-test\nNAME="cfs test"\n'],
    ...(cmdline === undefined ? [] : [['.cmdline', 'cmdline', `${cmdline}\n`] as [string, string, string]]),
    ['.linux', 'linux', 'a stand-in kernel\n'],
    ['.initrd', 'initrd', 'a stand-in initrd\n'],
  ];
  const vma: Record<string, string> = { '.osrel': '0x20000', '.cmdline': '0x30000', '.linux': '0x2000000', '.initrd': '0x3000000' };
  const args: string[] = [];
  for (const [sec, name, content] of files) {
    const f = path.join(work, `${path.basename(out)}.${name}`);
    writeFileSync(f, content);
    args.push('--add-section', `${sec}=${f}`, '--change-section-vma', `${sec}=${vma[sec]}`);
  }
  execFileSync('objcopy', [...args, STUB, out], { stdio: ['ignore', 'ignore', 'pipe'] });
}
