/** The PE reader of `cfs verify`: real UKIs, and hostile files that must fail with the offset at fault. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { bufferReader, readCmdlines, readPe, PeError, withFileReader, CMDLINE_MAX } from '../src/pe/pe.js';
import { buildPe, cannotMakeUki, makeUki } from './pe-builder.js';
import { IN_CI, assertCleanError, runCfs, tempDir } from './helpers.js';

const r = (b: Buffer) => bufferReader('test.efi', b);

async function peError(b: Buffer): Promise<PeError> {
  try {
    await readCmdlines(r(b));
  } catch (e) {
    assert.ok(e instanceof PeError, `expected a PeError, got ${String(e)}`);
    return e;
  }
  assert.fail('the file was accepted');
}

test('reads the sections and the .cmdline of a built PE', async () => {
  const pe = buildPe({ sections: [{ name: '.osrel', data: 'ID=x\n' }, { name: '.cmdline', data: 'rw composefs=abc\0\0\n' }, { name: '.linux', data: 'k' }] });
  const img = await readPe(r(pe));
  assert.deepEqual(img.sections.map((s) => s.name), ['.osrel', '.cmdline', '.linux']);
  const cl = await readCmdlines(r(pe));
  assert.equal(cl.length, 1);
  // trailing NULs and whitespace are not part of the command line
  assert.equal(cl[0].text, 'rw composefs=abc');
});

test('VirtualSize bounds the section data; the file copy is padded', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'quiet composefs=1', virtualSize: 5 }] });
  assert.equal((await readCmdlines(r(pe)))[0].text, 'quiet');
});

test('multi-profile UKIs: each .cmdline is reported with its .profile', async () => {
  const pe = buildPe({
    sections: [
      { name: '.cmdline', data: 'base' },
      { name: '.profile', data: 'ID=one' },
      { name: '.cmdline', data: 'one' },
      { name: '.profile', data: 'ID=two' },
      { name: '.cmdline', data: 'two' },
    ],
  });
  assert.deepEqual(
    (await readCmdlines(r(pe))).map((c) => [c.profile, c.text]),
    [
      [undefined, 'base'],
      [0, 'one'],
      [1, 'two'],
    ],
  );
});

test('hostile: truncated DOS header', async () => {
  const e = await peError(Buffer.from([0x4d, 0x5a, 0x90, 0]));
  assert.equal(e.offset, 0);
  assert.match(e.message, /truncated DOS header: the file is 4 bytes/);
});

test('hostile: no MZ signature', async () => {
  const pe = buildPe({ sections: [] });
  pe.write('ZM', 0, 'latin1');
  assert.match((await peError(pe)).message, /^offset 0x0: not a PE image: no 'MZ' signature/);
});

test('hostile: PE header offset outside the file', async () => {
  const pe = buildPe({ sections: [] });
  pe.writeUInt32LE(0xfffffff0, 0x3c);
  const e = await peError(pe);
  assert.equal(e.offset, 0x3c);
  assert.match(e.message, /PE header offset 0xfffffff0 lies outside the file/);
});

test('hostile: PE header truncated at the end of the file', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x' }] });
  pe.writeUInt32LE(pe.length - 10, 0x3c);
  assert.match((await peError(pe)).message, /lies outside the file/);
});

test('hostile: no PE signature', async () => {
  const pe = buildPe({ sections: [] });
  pe.write('XX', 0x40, 'latin1');
  const e = await peError(pe);
  assert.equal(e.offset, 0x40);
  assert.match(e.message, /no 'PE\\0\\0' signature/);
});

test('hostile: section table runs past the end of the file', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x' }], numberOfSections: 0xffff });
  const e = await peError(pe);
  assert.equal(e.offset, 0x40 + 24 + 0xf0);
  assert.match(e.message, /section table \(65535 sections/);
});

test('hostile: huge optional header size pushes the table outside the file', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x' }] });
  pe.writeUInt16LE(0xffff, 0x40 + 20);
  assert.match((await peError(pe)).message, /runs past the end of the file/);
});

test('hostile: unknown optional header magic', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x' }], optionalMagic: 0x1234 });
  assert.match((await peError(pe)).message, /unknown optional header magic 0x1234/);
});

test('hostile: section data outside the file', async () => {
  const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x', rawOffset: 0x7fff0000, rawSize: 0x200 }] });
  const e = await peError(pe);
  assert.equal(e.offset, 0x40 + 24 + 0xf0 + 16, 'names the SizeOfRawData field of the entry');
  assert.match(e.message, /section "\.cmdline" claims 512 bytes at 0x7fff0000, past the end of the file/);
});

test('hostile: section end overflowing 32 bits', async () => {
  const pe = buildPe({ sections: [{ name: '.linux', data: 'x', rawOffset: 0xfffffe00, rawSize: 0xffffffff }] });
  assert.match((await peError(pe)).message, /past the end of the file/);
});

test('hostile: a .cmdline larger than any command line', async () => {
  const big = Buffer.alloc(CMDLINE_MAX + 1, 0x61);
  const pe = buildPe({ sections: [{ name: '.cmdline', data: big }] });
  const e = await peError(pe);
  assert.match(e.message, /section "\.cmdline" is 1048577 bytes, more than the 1048576/);
});

test('a file reader reads in place, and the CLI reports hostile files in one line with exit 2', async () => {
  const { dir, cleanup } = tempDir('cfs-pe-');
  try {
    const f = path.join(dir, 'bad.efi');
    const pe = buildPe({ sections: [{ name: '.cmdline', data: 'x', rawOffset: 0x100000, rawSize: 0x200 }] });
    writeFileSync(f, pe);
    await assert.rejects(withFileReader(f, (rd) => readPe(rd)), /past the end of the file/);
    assertCleanError(runCfs(['verify', f]), /bad\.efi: offset 0x158: section "\.cmdline" claims 512 bytes at 0x100000, past the end of the file/);
    writeFileSync(f, Buffer.from('MZ'));
    assertCleanError(runCfs(['verify', f]), /bad\.efi: offset 0x0: truncated DOS header/);
    writeFileSync(f, Buffer.alloc(0));
    assertCleanError(runCfs(['verify', f]), /truncated DOS header: the file is 0 bytes/);
  } finally {
    cleanup();
  }
});

test('a real UKI made from systemd-stub with objcopy', async (t) => {
  const why = cannotMakeUki();
  if (why) {
    if (IN_CI) assert.fail(why);
    t.skip(why);
    return;
  }
  const { dir, cleanup } = tempDir('cfs-pe-');
  try {
    const uki = path.join(dir, 'uki.efi');
    makeUki(uki, 'rw quiet composefs=?0123', dir);
    await withFileReader(uki, async (rd) => {
      const img = await readPe(rd);
      const names = img.sections.map((s) => s.name);
      for (const n of ['.text', '.sbat', '.osrel', '.cmdline', '.linux', '.initrd']) assert.ok(names.includes(n), `${n} in ${names.join(' ')}`);
      // the added sections sit above the stub's own image, as the chosen addresses intend
      const stubEnd = Math.max(...img.sections.filter((s) => !['.osrel', '.cmdline', '.linux', '.initrd'].includes(s.name)).map((s) => s.virtualAddress + s.virtualSize));
      assert.ok(img.sections.find((s) => s.name === '.osrel')!.virtualAddress >= stubEnd);
      assert.equal(img.machine, 0x8664);
      assert.deepEqual((await readCmdlines(rd, img)).map((c) => c.text), ['rw quiet composefs=?0123']);
    });
  } finally {
    cleanup();
  }
});
