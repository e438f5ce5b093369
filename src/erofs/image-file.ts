/**
 * Reading an image file for the reader, bounded by what the image says it is: the header and
 * superblock first (a non-image costs 1152 bytes, not its size), then exactly the
 * `blocks * 4096` bytes the superblock declares, with positioned reads (no 2 GiB `readFile`
 * limit). Regular files and block devices (an image on a partition or a loop device) are
 * read; anything else (character devices such as /dev/zero, FIFOs, directories) is refused.
 */
import { constants as bufferConstants } from 'node:buffer';
import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE } from './format.js';
import { IMAGE_HEAD_SIZE, ImageError, decodeImageHead } from './reader.js';
import { InputError } from '../errors.js';

/** A file that cannot be read as an image; the message names the file. */
export class ImageFileError extends InputError {}

/** The largest image held in memory: the largest Buffer this Node allows. */
export const MAX_IMAGE_BYTES = bufferConstants.MAX_LENGTH;

/** Reads `len` bytes at `pos` (fewer only at the end of the file). */
async function readAt(fh: FileHandle, buf: Buffer, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, got, Math.min(len - got, 1 << 30), pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** The bytes of the composefs image in file `path` (a regular file or a block device). */
export async function readImageFile(path: string): Promise<Buffer> {
  const where = (e: ImageError) => new ImageFileError(`${path}: ${e.message}`);
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const st = await fh.stat({ bigint: true });
    if (st.isDirectory()) throw new ImageFileError(`${path}: is a directory, not an image file`);
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new ImageFileError(`${path}: not a regular file or block device (an image is read from one of those)`);
    }
    const head = Buffer.alloc(IMAGE_HEAD_SIZE);
    const got = await readAt(fh, head, head.length, 0);
    let sb;
    try {
      ({ sb } = decodeImageHead(head.subarray(0, got)));
    } catch (e) {
      if (e instanceof ImageError) throw where(e);
      throw e;
    }
    const length = sb.blocks * BLOCK_SIZE;
    if (length < IMAGE_HEAD_SIZE) {
      throw where(new ImageError(`the superblock says ${sb.blocks} blocks: too few for an image`, 1024 + 36));
    }
    if (length > MAX_IMAGE_BYTES) {
      throw new ImageFileError(`${path}: the superblock says the image is ${length} bytes; at most ${MAX_IMAGE_BYTES} can be read`);
    }
    // Is it all there? One byte at the end, before allocating for the whole.
    const last = Buffer.alloc(1);
    if ((await readAt(fh, last, 1, length - 1)) !== 1) {
      const size = st.isFile() ? `${st.size} bytes` : 'the device is shorter';
      throw where(new ImageError(`image is truncated: the superblock says ${sb.blocks} blocks (${length} bytes) but there are ${size}`, 1024 + 36));
    }
    const img = Buffer.allocUnsafe(length);
    head.copy(img, 0, 0, got);
    const n = got + (await readAt(fh, img.subarray(got), length - got, got));
    if (n !== length) {
      throw where(new ImageError(`image is truncated: the superblock says ${length} bytes, the file ended after ${n}`, n));
    }
    return img;
  } finally {
    await fh.close();
  }
}
