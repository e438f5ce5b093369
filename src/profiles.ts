/**
 * Named presets for what each composefs-rs / bootc release computes, so a user can say "the
 * digest bootc 1.16 would bake into the UKI" without knowing format, hash, rules and the
 * spelling of the kernel argument. Explicit options override a profile.
 *
 * Every profile names the upstream files and revisions it was checked against (`checked`); the
 * README's profile table repeats them.
 */
import type { ErofsVersion } from './erofs/writer.js';
import type { XattrFilterMode } from './transform/transform.js';
import type { HashAlg } from './tree/tree.js';
import type { LoadedSource } from './source/load.js';
import type { Rules } from './transform/rules.js';

/**
 * How a release spells one kernel argument:
 *  - `composefs`: `composefs=[?]HEX` (composefs-boot KARG_V2; bootc's ComposefsCmdline Display);
 *  - `composefs.digest`: `composefs.digest=[?]vN-ALG-12:HEX` (composefs-boot
 *    KARG_COMPOSEFS_DIGEST; V0 images are announced as v1, as cfsctl does).
 */
export type KargForm = 'composefs' | 'composefs.digest';

/** One kernel argument a release writes: which image (format) and how it is spelled. */
export interface KargSpec {
  erofsVersion: ErofsVersion;
  form: KargForm;
}

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
  /**
   * composefs-rs #396 (merged 2026-09-18, after v0.9.2): /boot and /sysroot take /usr's mtime
   * nanoseconds too, not only its seconds.
   */
  bootMtimeNsec: boolean;
  /** The kernel arguments `compute-karg` prints, in the release's order (one line). */
  kargs: KargSpec[];
  /** The newest of its kind (composefs-rs; bootc), marked in --help and the README. */
  newest?: boolean;
  /** In no release: named after released ones when both give the same digest. */
  unreleased?: boolean;
  /** Upstream files and revisions this profile was checked against. */
  checked: string;
}

/** cfsctl compute-karg: V0/V1 -> composefs.digest=v1-..., V2 -> composefs= (composefs-ctl lib.rs v0.9.0). */
function cfsctlKarg(v: ErofsVersion): KargSpec {
  return { erofsVersion: v, form: v === 2 ? 'composefs' : 'composefs.digest' };
}

export const PROFILES: readonly Profile[] = [
  {
    name: 'composefs-rs-main',
    summary:
      'composefs-rs main after PR #396 (2026-09-18, in no release yet): cfsctl 0.9 defaults, and with --bootable /boot and /sysroot also take /usr\'s mtime nanoseconds',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: false,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
    bootMtimeNsec: true,
    kargs: [cfsctlKarg(1)],
    newest: true,
    unreleased: true,
    checked:
      'composefs-rs crates/composefs-boot/src/lib.rs empty_toplevel_dirs at 235f25b9 (after #396); karg: crates/composefs-boot/src/cmdline.rs v0.9.0',
  },
  {
    name: 'bootc-1.17.0',
    summary:
      'bootc after PR #2248 (expected in 1.17.0; release tag not verified): V1, sha512, bootable; karg composefs.digest=v1-sha512-12:V1 plus composefs=V2 on one line',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: true,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
    bootMtimeNsec: false,
    kargs: [
      { erofsVersion: 1, form: 'composefs.digest' },
      { erofsVersion: 2, form: 'composefs' },
    ],
    newest: true,
    checked:
      'bootc crates/lib/src/ukify.rs composefs_kargs_for_uki at 1cab35f7 and status.rs build_composefs_karg (bootc main after #2248); its composefs-rs pin (before/after #396) not seen',
  },
  {
    name: 'bootc-1.16.4',
    summary: 'bootc 1.16.4 to 1.16.9 (sealed images): V1, sha512, bootable, allowlist-only xattrs; karg composefs=V1',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: true,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
    bootMtimeNsec: false,
    kargs: [{ erofsVersion: 1, form: 'composefs' }],
    checked:
      'bootc v1.16.4..v1.16.9 crates/lib/src/ukify.rs, bootc_composefs/status.rs (ComposefsCmdline Display), bootc_composefs/digest.rs; composefs-rs a29622c / 0a819c3 / 0fbc853 (Cargo.toml pins)',
  },
  {
    name: 'bootc-1.13',
    summary: 'bootc 1.13 to 1.16.3: V2, sha512, bootable, root from /usr; tarball view keeps all xattrs; karg composefs=V2',
    erofsVersion: 2,
    hash: 'sha512',
    bootable: true,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: true,
    bootMtimeNsec: false,
    kargs: [{ erofsVersion: 2, form: 'composefs' }],
    checked: 'bootc v1.13.0..v1.16.3 crates/lib/src/bootc_composefs/status.rs (ComposefsCmdline Display), ukify.rs',
  },
  {
    name: 'cfsctl-0.9',
    summary: 'cfsctl 0.9.0 to 0.9.2 defaults (compute-id, create-image): V1, sha512, not bootable, allowlist-only; karg composefs.digest=v1-sha512-12:',
    erofsVersion: 1,
    hash: 'sha512',
    bootable: false,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: false,
    bootMtimeNsec: false,
    kargs: [cfsctlKarg(1)],
    checked:
      'composefs-rs v0.9.0 crates/composefs-ctl/src/lib.rs (ComputeKarg), crates/composefs-boot/src/{lib,cmdline}.rs; 0.9.1/0.9.2 not read (not in the sources available): 0.9.2 carries #381 (layer decompression, per the #383 thread); what #390, the change in 0.9.2, does was not found',
  },
  {
    name: 'cfsctl-0.7',
    summary: 'cfsctl 0.7 (before V1 became the default): V2, sha512, not bootable; tarball view keeps all xattrs',
    erofsVersion: 2,
    hash: 'sha512',
    bootable: false,
    xattrs: 'allowlist-only',
    tarKeepsAllXattrs: true,
    bootMtimeNsec: false,
    kargs: [cfsctlKarg(2)],
    checked: 'composefs-rs v0.7.0 crates/cfsctl (V2 default), composefs-boot cmdline.rs v0.7.0',
  },
];

/**
 * Profile by name. `bootc` is the newest bootc release whose tag could be read (1.16.4 to
 * 1.16.9): the `composefs=` karg every sealed UKI of those releases carries.
 */
export function findProfile(name: string): Profile | undefined {
  if (name === 'bootc') return PROFILES.find((p) => p.name === 'bootc-1.16.4');
  return PROFILES.find((p) => p.name === name);
}

/** The kernel arguments of a profile when the EROFS format may have been overridden. */
export function profileKargs(p: Profile | undefined, erofsVersion: ErofsVersion): KargSpec[] {
  if (!p) return [cfsctlKarg(erofsVersion)];
  // bootc's `ukify --erofs-version v1` keeps its V2 compatibility karg; any other format gets
  // the profile's spelling for that format (or cfsctl's), alone.
  if (erofsVersion === p.erofsVersion) return p.kargs;
  const same = p.kargs.find((k) => k.erofsVersion === erofsVersion);
  return [same ?? cfsctlKarg(erofsVersion)];
}

/** One kernel argument. */
export function formatKarg(form: KargForm, erofsVersion: ErofsVersion, hash: HashAlg, hex: string, insecure: boolean): string {
  const q = insecure ? '?' : '';
  if (form === 'composefs') return `composefs=${q}${hex}`;
  return `composefs.digest=${q}v${erofsVersion === 2 ? 2 : 1}-${hash}-12:${hex}`;
}

/**
 * Every rule set worth trying for a source kind. Bootable sets come twice: /boot and /sysroot
 * with /usr's mtime seconds only (composefs-rs up to v0.9.2) and with its nanoseconds too (#396).
 */
export function ruleSets(kind: LoadedSource['kind'], bootables: boolean[] = [false, true]): Rules[] {
  const out: Rules[] = [];
  for (const bootable of bootables) {
    for (const bootMtimeNsec of bootable ? [false, true] : [false]) {
      if (kind === 'dumpfile') {
        out.push({ propagateUsrToRoot: false, xattrs: 'allowlist-only', bootable, bootMtimeNsec });
        continue;
      }
      for (const xattrs of ['allowlist-only', 'keep-user-xattrs'] as XattrFilterMode[]) out.push({ propagateUsrToRoot: true, xattrs, bootable, bootMtimeNsec });
      if (kind === 'oci') out.push({ propagateUsrToRoot: true, xattrs: 'allowlist-only', bootable, tarKeepsAllXattrs: true, bootMtimeNsec });
      if (kind === 'dir') out.push({ propagateUsrToRoot: false, xattrs: 'allowlist-only', bootable, bootMtimeNsec });
    }
  }
  return out;
}
