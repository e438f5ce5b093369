/**
 * composefs kernel arguments: reading them off a command line and writing every spelling.
 *
 * Spellings (composefs-boot crates/composefs-boot/src/cmdline.rs v0.9.0; bootc
 * crates/lib/src/bootc_composefs/status.rs):
 *   composefs=[?]HEX                      V2 image for composefs-rs; bootc 1.16.4 to 1.16.9 put the
 *                                         V1 image's digest here, so the key alone does not say
 *                                         which format made the digest
 *   composefs.digest=[?]vN-ALG-12:HEX     self-describing: format (v1/v2), hash, block size
 * `?` makes fs-verity optional at boot (insecure); several such arguments may share one line.
 */
import { writeErofs, type ErofsVersion } from '../erofs/writer.js';
import { fsverityDigest } from '../fsverity/fsverity.js';
import type { FileSystem, HashAlg } from '../tree/tree.js';
import { formatKarg, type KargForm } from '../profiles.js';

/** One composefs argument found on a command line. */
export interface ParsedKarg {
  /** The argument as written. */
  token: string;
  key: KargForm;
  insecure: boolean;
  /** The digest, lowercase (absent when the value is malformed). */
  hex?: string;
  hash?: HashAlg;
  /** The format the argument declares (composefs.digest= only). */
  erofsVersion?: 1 | 2;
  /** Why the value is unusable. */
  error?: string;
}

/**
 * Kernel command line splitting (composefs-boot `split_cmdline`): whitespace separates, double
 * quotes protect whitespace, there is no escape.
 */
export function splitCmdline(cmdline: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of cmdline) {
    if (c === '"') quoted = !quoted;
    if (!quoted && /\s/.test(c)) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur !== '') out.push(cur);
  return out;
}

function hashOfHex(hex: string): HashAlg | undefined {
  if (!/^[0-9a-fA-F]*$/.test(hex)) return undefined;
  return hex.length === 64 ? 'sha256' : hex.length === 128 ? 'sha512' : undefined;
}

/** Every `composefs=` and `composefs.digest=` argument of a command line, in order. */
export function parseComposefsKargs(cmdline: string): ParsedKarg[] {
  const out: ParsedKarg[] = [];
  for (const token of splitCmdline(cmdline)) {
    const m = /^(composefs|composefs\.digest)=(.*)$/s.exec(token);
    if (!m) continue;
    const key = m[1] as KargForm;
    let value = m[2];
    const insecure = value.startsWith('?');
    if (insecure) value = value.slice(1);
    const k: ParsedKarg = { token, key, insecure };
    if (key === 'composefs') {
      const hash = hashOfHex(value);
      if (hash) Object.assign(k, { hex: value.toLowerCase(), hash });
      else k.error = `'${token}': the value is not 64 or 128 hex digits`;
    } else {
      const d = /^(v\d+)-([^-:]+)-(\d+):(.*)$/s.exec(value);
      if (!d) k.error = `'${token}': expected composefs.digest=[?]vN-ALG-12:HEX`;
      else if (d[1] !== 'v1' && d[1] !== 'v2') k.error = `'${token}': unsupported format version '${d[1]}'`;
      else if (d[2] !== 'sha256' && d[2] !== 'sha512') k.error = `'${token}': unsupported hash '${d[2]}'`;
      else if (d[3] !== '12') k.error = `'${token}': unsupported block size 2^${d[3]} (only 12, 4 KiB)`;
      else if (hashOfHex(d[4]) !== d[2]) k.error = `'${token}': the digest is not ${d[2] === 'sha256' ? 64 : 128} hex digits`;
      else Object.assign(k, { hex: d[4].toLowerCase(), hash: d[2], erofsVersion: d[1] === 'v1' ? 1 : 2 });
    }
    out.push(k);
  }
  return out;
}

/** One line of `compute-karg --all-forms`. */
export interface KargFormLine {
  karg: string;
  erofsVersion: ErofsVersion;
  hash: HashAlg;
  form: KargForm;
  /** Who writes or reads this spelling. */
  note: string;
}

/**
 * Every spelling of the bootable image's digest for one hash: V1 and V2 images, each under both
 * keys. `fs` is the tree after the bootable transform, its files hashed with `hash`.
 */
export function allKargForms(fs: FileSystem, hash: HashAlg, insecure: boolean): KargFormLine[] {
  const v1 = fsverityDigest(writeErofs(fs, 1), hash).toString('hex');
  const v2 = fsverityDigest(writeErofs(fs, 2), hash).toString('hex');
  const line = (erofsVersion: ErofsVersion, form: KargForm, hex: string, note: string): KargFormLine => ({
    karg: formatKarg(form, erofsVersion, hash, hex, insecure),
    erofsVersion,
    hash,
    form,
    note,
  });
  return [
    line(1, 'composefs.digest', v1, `V1 image, ${hash}: cfsctl 0.9 compute-karg; bootc after PR #2248 (first of its two)`),
    line(1, 'composefs', v1, `V1 image, ${hash}, bare key: bootc 1.16.4 to 1.16.9 (container ukify)`),
    line(2, 'composefs', v2, `V2 image, ${hash}: bootc up to 1.16.3; cfsctl --erofs-version 2; bootc after PR #2248 (second, compatibility)`),
    line(2, 'composefs.digest', v2, `V2 image, ${hash}, explicit form: read by composefs-boot 0.9, written by no release seen`),
  ];
}
