/**
 * Named presets for what each composefs-rs / bootc release computes, so a user can say "the
 * digest bootc 1.16 would bake into the UKI" without knowing format, hash and rules. Explicit
 * options override a profile.
 */
import type { ErofsVersion } from '../erofs/writer.js';
import type { XattrFilterMode } from '../transform/transform.js';
import type { HashAlg } from '../tree/tree.js';

export interface Profile {
  name: string;
  summary: string;
  erofsVersion: ErofsVersion;
  hash: HashAlg;
  bootable: boolean;
  xattrs: XattrFilterMode;
  /**
   * Before composefs-rs v0.8.0 (#337) the tar path kept every xattr: only the directory scan
   * filtered (to what allowlist-only keeps).
   */
  tarKeepsAllXattrs: boolean;
}

export const PROFILES: readonly Profile[] = [
  {
    name: 'bootc-1.16.4',
    summary: 'bootc 1.16.4 and later (sealed images): V1, sha512, bootable, allowlist-only xattrs',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: true,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
  },
  {
    name: 'bootc-1.13',
    summary: 'bootc 1.13 to 1.16.3: V2, sha512, bootable, root from /usr; tarball view keeps all xattrs',
    erofsVersion: 2,
    hash: 'sha512',
    bootable: true,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: true,
  },
  {
    name: 'cfsctl-0.9',
    summary: 'cfsctl 0.9 defaults (compute-id, create-image): V1, sha512, not bootable, allowlist-only',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: false,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
  },
  {
    name: 'cfsctl-0.7',
    summary: 'cfsctl 0.7 (before V1 became the default): V2, sha512, not bootable; tarball view keeps all xattrs',
    erofsVersion: 2,
    hash: 'sha512',
    bootable: false,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: true,
  },
];

/** Profile by name; `bootc` is the newest bootc profile. */
export function findProfile(name: string): Profile | undefined {
  if (name === 'bootc') return PROFILES[0];
  return PROFILES.find((p) => p.name === name);
}

/** One line per profile, for --help. */
export function profilesHelp(): string {
  return PROFILES.map((p) => `  ${p.name.padEnd(14)} ${p.summary}`).join('\n');
}
