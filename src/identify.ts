/**
 * `cfs identify DIGEST SOURCE`: which combination of format, hash and rules that composefs-rs
 * versions have used produces DIGEST. The source is read (and every file hashed) once; each
 * combination starts from a copy of that raw tree.
 */
import { writeErofs, type ErofsVersion } from './erofs/writer.js';
import { fsverityDigest } from './fsverity/fsverity.js';
import { cloneTree } from './tree/clone.js';
import type { HashAlg } from './tree/tree.js';
import type { LoadedSource } from './source/load.js';
import { applyRules, readerForCopies, type Rules } from './transform/rules.js';
import { countSubsecond, type MtimeView } from './transform/mtimes.js';
import { ruleSets } from './profiles.js';

/** One combination tried. */
export interface Attempt {
  erofsVersion: ErofsVersion;
  hash: HashAlg;
  rules: Rules;
  id?: string;
  error?: string;
}

/** The hex digest inside DIGEST, which may also be a karg or an annotation. */
export function parseDigestArg(arg: string): string | undefined {
  const m = /^(?:composefs=\??|composefs\.digest=\??v[12]-sha(?:256|512)-12:|[\w.-]*=)?([0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.exec(arg.trim());
  return m ? m[1].toLowerCase() : undefined;
}

/**
 * Tries every combination (formats 1, 2, 0 × rules) on copies of the raw tree. The digest's
 * length fixes the hash, and cfsctl uses one hash for objects and image, so the raw tree was
 * read with that hash once. Stops at the first match unless `all`.
 */
export async function identify(
  want: string,
  raw: LoadedSource,
  onAttempt: (a: Attempt) => void,
  all = false,
  views: MtimeView[] = [{ layerMtimes: 'keep' }],
): Promise<Attempt[]> {
  const hash = digestHash(want);
  const matches: Attempt[] = [];
  const combos = views.flatMap((mtimes) => ruleSets(raw.kind).map((r): Rules => ({ ...r, mtimes })));
  for (const rules of combos) {
    let fs;
    let error: string | undefined;
    try {
      fs = cloneTree(raw.fs);
      await applyRules({ fs, kind: raw.kind, read: readerForCopies(raw) }, rules);
    } catch (e) {
      error = (e as Error).message;
    }
    for (const erofsVersion of [1, 2, 0] as ErofsVersion[]) {
      const a: Attempt = { erofsVersion, hash, rules, error };
      if (fs && !error) {
        try {
          a.id = fsverityDigest(writeErofs(fs, erofsVersion), hash).toString('hex');
        } catch (e) {
          a.error = (e as Error).message;
        }
      }
      onAttempt(a);
      if (a.id === want) {
        matches.push(a);
        if (!all) return matches;
      }
    }
  }
  return matches;
}

/**
 * The mtime views worth trying: the one asked for, else as read, then (when some mtime has a
 * fraction of a second, i.e. when it changes anything) with whole seconds as layers carry them.
 */
export function mtimeViews(raw: LoadedSource, asked: MtimeView | undefined, clampMtime: bigint | undefined): MtimeView[] {
  if (asked) return [{ ...asked, clampMtime }];
  const out: MtimeView[] = [{ layerMtimes: 'keep', clampMtime }];
  if (countSubsecond(raw.fs).subsecond > 0) out.push({ layerMtimes: 'seconds', clampMtime });
  return out;
}

/** The hash a digest of this length was made with. */
export function digestHash(hex: string): HashAlg {
  return hex.length === 64 ? 'sha256' : 'sha512';
}

/** The options that reproduce an attempt. */
export function describeAttempt(a: Attempt, kind: LoadedSource['kind']): string {
  const parts = [`--erofs-version ${a.erofsVersion}`, `--hash ${a.hash}`];
  if (a.rules.bootable) parts.push('--bootable');
  if (a.rules.bootMtimeNsec) parts.push("(boot dirs take /usr's mtime nanoseconds: composefs-rs #396, --profile composefs-rs-main)");
  if (kind !== 'dumpfile') {
    if (!a.rules.propagateUsrToRoot) parts.push('--no-propagate-usr-to-root');
    else if (a.rules.tarKeepsAllXattrs) parts.push('(tar xattrs unfiltered: composefs-rs < 0.8, e.g. --profile bootc-1.13)');
    else parts.push(`--xattrs ${a.rules.xattrs}`);
  }
  const m = a.rules.mtimes;
  if (m && m.layerMtimes !== 'keep') parts.push(`--layer-mtimes ${m.layerMtimes}`);
  if (m?.clampMtime !== undefined) parts.push(`--clamp-mtime ${m.clampMtime}`);
  return parts.join(' ');
}
