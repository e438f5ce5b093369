/**
 * `cfs verify`: does a sealed image boot? Its UKIs carry, on their `.cmdline`, the digest of the
 * bootable composefs image of the very image they sit in; this checks that they do.
 *
 * The UKIs are found where composefs-boot looks for Type 2 entries (`Type2Entry::load_all`,
 * crates/composefs-boot/src/bootloader.rs v0.9.0): every `*.efi` under /boot/EFI/Linux and under
 * /usr/lib/modules/KVER/ (recursively; `*.addon.efi` are addons), and the global addons under
 * /boot/loader/addons. The image's digest is computed from the same tree: the bootable transform
 * empties /boot, so the UKIs themselves do not change it.
 *
 * A karg that says how it was made (`composefs.digest=vN-ALG-12:`) is checked against that
 * format and hash; `composefs=HEX` is V2 for composefs-rs but V1 for bootc 1.16.4 to 1.16.9, so
 * both are tried. The rules (xattr filter, unfiltered tar xattrs before composefs-rs 0.8,
 * /usr's mtime nanoseconds on /boot and /sysroot after #396) are tried like `identify` does,
 * the profiles' combinations first, and the report says which matched.
 *
 * Labels and annotations with composefs-rs's sealing keys
 * (`composefs.merged[.bootable].erofs.vN.fsverity-ALG-12`, crates/composefs-oci/src/sealing_spec.rs)
 * are checked against the same computation.
 */
import path from 'node:path';
import type { ErofsVersion } from '../erofs/format.js';
import { writeErofs } from '../erofs/writer.js';
import { fsverityDigest } from '../fsverity/fsverity.js';
import { KeptContent } from '../source/tar/members.js';
import { bootReads } from '../transform/boot.js';
import type { ImageMetadata } from '../source/oci/manifest.js';
import { PeError, bufferReader, readCmdlines, readPe, withFileReader, type ByteReader, type PeCmdline } from '../pe/pe.js';
import { cloneTree } from '../tree/clone.js';
import { keyBytes, type Directory, type FileSystem, type HashAlg, type Leaf } from '../tree/tree.js';
import { PROFILES, ruleSets, type KargForm, type Profile } from '../profiles.js';
import { describeAttempt } from '../identify.js';
import { loadRawSource, type LoadedSource } from '../source/load.js';
import type { PipelineOptions as SourceOptions } from '../pipeline.js';
import { applyRules, readerForCopies, type Rules } from '../transform/rules.js';
import { parseComposefsKargs, type ParsedKarg } from './karg.js';
import { InputError } from '../errors.js';

/** Where composefs-boot looks for PE files, and what they are there. */
const PE_DIRS: { dir: string; kind: PeKind; perKernel?: boolean }[] = [
  { dir: '/boot/EFI/Linux', kind: 'uki' },
  { dir: '/boot/loader/addons', kind: 'global-addon' },
  { dir: '/usr/lib/modules', kind: 'uki', perKernel: true },
];

export type PeKind = 'uki' | 'addon' | 'global-addon';

/** One combination of rules, format and hash, and the digest it gives. */
export interface Candidate {
  erofsVersion: ErofsVersion;
  hash: HashAlg;
  rules: Rules;
  id?: string;
  error?: string;
  /** Profiles that compute exactly this (for the karg spelling at hand). */
  profiles: string[];
  /** The cfs options that compute it (as `identify` prints them). */
  options: string;
}

export interface KargCheck extends ParsedKarg {
  status: 'match' | 'mismatch' | 'invalid';
  /** The combination that gave the karg's digest. */
  matched?: Candidate;
  /** On a mismatch: what the image gives under the likeliest combinations. */
  computed?: Candidate[];
  /** How many combinations were tried. */
  tried?: number;
}

export interface PeCheck {
  /** Path inside the image, or the file given. */
  path: string;
  kind: PeKind;
  cmdlines: { profile?: number; text: string }[];
  kargs: KargCheck[];
  /** For a UKI: the addons whose command lines also apply to it. */
  addons?: string[];
}

export interface LabelCheck {
  where: 'annotation' | 'label';
  key: string;
  value: string;
  status: 'match' | 'mismatch' | 'invalid';
  erofsVersion?: ErofsVersion;
  hash?: HashAlg;
  bootable?: boolean;
  matched?: Candidate;
  computed?: Candidate[];
  error?: string;
}

export interface VerifyReport {
  source?: string;
  files: PeCheck[];
  labels: LabelCheck[];
  /** Why the image would not boot as sealed (empty: it would). */
  problems: string[];
  /** Worth saying but not a failure (e.g. the insecure marker). */
  notes: string[];
  ok: boolean;
}

/** How to read the source (the tree options are fixed by what is tried). */
export type VerifySourceOptions = Pick<SourceOptions, 'jobs' | 'jobsGiven' | 'onProgress' | 'platform' | 'keep'>;

/** The verification failed to run (bad input); the message names the file and the reason. */
export class VerifyError extends InputError {}

/**
 * How much of a PE file in a layer is kept: its headers and the sections before the kernel and
 * initrd (ukify and objcopy put .osrel and .cmdline first); a .cmdline beyond it is reported.
 */
export const UKI_KEEP = 16 << 20;

/** Keeps the SELinux policy (as always) and the start of the PE files composefs-boot would read. */
class UkiKept extends KeptContent {
  override wants(p: Buffer): boolean | number {
    const base = super.wants(p);
    if (base !== false) return base;
    if (p.length < 5 || p.subarray(p.length - 4).toString('latin1') !== '.efi') return false;
    const s = '/' + p.toString('latin1').split('/').filter((c) => c !== '' && c !== '.').join('/');
    return PE_DIRS.some((d) => s.startsWith(d.dir + '/')) ? UKI_KEEP : false;
  }
}

/** A reader over the kept start of a file of `size` bytes. */
function prefixReader(name: string, kept: Buffer, size: number): ByteReader {
  return {
    name,
    size,
    read: async (o, n) => {
      if (o + n > kept.length) throw new PeError(o, `${n} bytes here lie beyond the first ${kept.length} bytes of the file kept from its layer`);
      return kept.subarray(o, o + n);
    },
  };
}

function child(d: Directory, name: string): Directory | undefined {
  const e = d.entries.get(name);
  return e?.kind === 'dir' ? e : undefined;
}

function lookupDir(fs: FileSystem, p: string): Directory | undefined {
  let d: Directory | undefined = fs.root;
  for (const c of p.split('/').filter((x) => x !== '')) d = d && child(d, c);
  return d;
}

interface FoundPe {
  path: string;
  kind: PeKind;
  leaf: Leaf;
}

/** composefs-boot `find_uki_components`: `*.efi` regular files, recursively, names as bytes. */
function findPeFiles(fs: FileSystem): FoundPe[] {
  const out: FoundPe[] = [];
  const walk = (d: Directory, at: string, kind: PeKind): void => {
    for (const [name, inode] of d.sorted()) {
      const p = `${at}/${name}`;
      if (inode.kind === 'dir') walk(inode, p, kind);
      else if (name.endsWith('.efi') && (inode.content.type === 'external' || inode.content.type === 'inline')) {
        out.push({ path: p, kind: kind === 'uki' && name.endsWith('.addon.efi') ? 'addon' : kind, leaf: inode });
      }
    }
  };
  for (const { dir, kind, perKernel } of PE_DIRS) {
    const d = lookupDir(fs, dir);
    if (!d) continue;
    if (!perKernel) walk(d, dir, kind);
    else for (const [kver, inode] of d.sorted()) if (inode.kind === 'dir') walk(inode, `${dir}/${kver}`, kind);
  }
  return out;
}

/** The profiles that compute `c` and spell it as `form` (undefined: as a label). */
function profilesFor(c: Pick<Candidate, 'erofsVersion' | 'hash' | 'rules'>, form: KargForm | undefined, kind: LoadedSource['kind']): Profile[] {
  return PROFILES.filter((p) => {
    if (p.hash !== c.hash || c.rules.propagateUsrToRoot !== true || c.rules.xattrs !== p.xattrs) return false;
    if ((c.rules.bootMtimeNsec === true) !== p.bootMtimeNsec) return false;
    if (kind === 'oci' && (c.rules.tarKeepsAllXattrs === true) !== p.tarKeepsAllXattrs) return false;
    if (form === undefined) return p.erofsVersion === c.erofsVersion;
    return p.kargs.some((k) => k.erofsVersion === c.erofsVersion && k.form === form);
  });
}

const rulesKey = (hash: HashAlg, r: Rules): string =>
  `${hash}|${r.propagateUsrToRoot}|${r.xattrs}|${r.bootable}|${r.tarKeepsAllXattrs === true}|${r.bootMtimeNsec === true}`;

/** Computes digests of one source under any rules, each tree built once per hash. */
class Digests {
  private raws = new Map<HashAlg, LoadedSource>();
  private ids = new Map<string, { ids?: Map<ErofsVersion, string>; error?: string }>();
  constructor(
    private spec: string,
    private opts: VerifySourceOptions,
    first?: LoadedSource,
  ) {
    if (first) this.raws.set(first.objectHash ?? 'sha512', first);
  }

  async raw(hash: HashAlg): Promise<LoadedSource> {
    let r = this.raws.get(hash);
    if (!r) {
      r = await loadRawSource(this.spec, { ...this.opts, hash });
      this.raws.set(hash, r);
    }
    return r;
  }

  async candidate(hash: HashAlg, rules: Rules, erofsVersion: ErofsVersion): Promise<Omit<Candidate, 'profiles' | 'options'>> {
    const key = rulesKey(hash, rules);
    let e = this.ids.get(key);
    if (!e) {
      const raw = await this.raw(hash);
      try {
        const fs = cloneTree(raw.fs);
        await applyRules({ fs, kind: raw.kind, read: readerForCopies(raw) }, rules);
        // All three formats now, so that the tree copy is not kept.
        e = { ids: new Map(([1, 2, 0] as ErofsVersion[]).map((v) => [v, fsverityDigest(writeErofs(fs, v), hash).toString('hex')])) };
      } catch (err) {
        e = { error: (err as Error).message };
      }
      this.ids.set(key, e);
    }
    return { erofsVersion, hash, rules, id: e.ids?.get(erofsVersion), error: e.error };
  }
}

/** The combinations worth trying for a claimed digest, the profiles' own first. */
function orderCandidates(
  kind: LoadedSource['kind'],
  hash: HashAlg,
  versions: ErofsVersion[],
  bootable: boolean,
  form: KargForm | undefined,
): { rules: Rules; erofsVersion: ErofsVersion; profiles: string[] }[] {
  const all: { rules: Rules; erofsVersion: ErofsVersion; profiles: string[]; rank: number }[] = [];
  for (const rules of ruleSets(kind, [bootable])) {
    for (const erofsVersion of versions) {
      const ps = profilesFor({ erofsVersion, hash, rules }, form, kind);
      // released profiles first: when an unreleased rule gives the same digest, name the release
      const rankOf = (p: Profile) => PROFILES.indexOf(p) + (p.unreleased ? PROFILES.length : 0);
      const rank = ps.length ? Math.min(...ps.map(rankOf)) : 2 * PROFILES.length + all.length;
      all.push({ rules, erofsVersion, profiles: ps.map((p) => p.name), rank });
    }
  }
  return all.sort((a, b) => a.rank - b.rank);
}

/** Checks one claimed digest: the first combination that gives it, or the likeliest values. */
async function checkClaim(
  d: Digests,
  kind: LoadedSource['kind'],
  claim: { hex: string; hash: HashAlg; versions: ErofsVersion[]; bootable: boolean; form?: KargForm },
): Promise<{ matched?: Candidate; computed?: Candidate[]; tried: number }> {
  const order = orderCandidates(kind, claim.hash, claim.versions, claim.bootable, claim.form);
  const seen: Candidate[] = [];
  for (const o of order) {
    const got = await d.candidate(claim.hash, o.rules, o.erofsVersion);
    const c: Candidate = { ...got, profiles: o.profiles, options: describeAttempt(got, kind) };
    seen.push(c);
    if (c.id !== claim.hex) continue;
    // Other releases' rules may give the same digest for this tree (e.g. /usr's and /boot's
    // mtimes already equal): name every profile that agrees, not just the first.
    const profiles = [...c.profiles];
    for (const other of order.slice(order.indexOf(o) + 1)) {
      if (other.profiles.length === 0) continue;
      const again = await d.candidate(claim.hash, other.rules, other.erofsVersion);
      if (again.id === claim.hex) for (const p of other.profiles) if (!profiles.includes(p)) profiles.push(p);
    }
    return { matched: { ...c, profiles: PROFILES.map((p) => p.name).filter((n) => profiles.includes(n)) }, tried: seen.length };
  }
  // What the image gives under the likeliest combinations (the profiles' ones).
  const withProfile = seen.filter((c) => c.profiles.length > 0);
  const byId = new Map<string, Candidate>();
  for (const c of withProfile.length ? withProfile : seen) {
    const k = c.id ?? `error ${c.error}`;
    const prev = byId.get(k);
    if (prev) prev.profiles = [...prev.profiles, ...c.profiles.filter((p) => !prev.profiles.includes(p))];
    else byId.set(k, { ...c, profiles: [...c.profiles] });
  }
  return { computed: [...byId.values()].slice(0, 4), tried: seen.length };
}

const SEALING_KEY = /^composefs\.merged(\.bootable)?\.erofs\.v([012])\.fsverity-(sha256|sha512)-12$/;

async function checkLabels(d: Digests, kind: LoadedSource['kind'], meta: ImageMetadata): Promise<LabelCheck[]> {
  const out: LabelCheck[] = [];
  const entries: [LabelCheck['where'], Record<string, string>][] = [
    ['annotation', meta.annotations],
    ['label', meta.labels],
  ];
  for (const [where, map] of entries) {
    for (const [key, value] of Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const m = SEALING_KEY.exec(key);
      if (!m) continue;
      const bootable = m[1] !== undefined;
      const erofsVersion = Number(m[2]) as ErofsVersion;
      const hash = m[3] as HashAlg;
      const hex = value.trim().toLowerCase();
      const l: LabelCheck = { where, key, value, status: 'invalid', erofsVersion, hash, bootable };
      if (!new RegExp(`^[0-9a-f]{${hash === 'sha256' ? 64 : 128}}$`).test(hex)) {
        l.error = `the value is not a ${hash} digest (${hash === 'sha256' ? 64 : 128} hex digits)`;
        out.push(l);
        continue;
      }
      const r = await checkClaim(d, kind, { hex, hash, versions: [erofsVersion], bootable });
      Object.assign(l, r.matched ? { status: 'match', matched: r.matched } : { status: 'mismatch', computed: r.computed });
      out.push(l);
    }
  }
  return out;
}

/** The formats a karg's digest may have been made with. */
function versionsOf(k: ParsedKarg): ErofsVersion[] {
  if (k.erofsVersion === 2) return [2];
  // cfsctl announces V0 images as v1 too (composefs-ctl ComputeKarg, v0.9.0)
  if (k.erofsVersion === 1) return [1, 0];
  // composefs= : V2 for composefs-rs, V1 for bootc 1.16.4 to 1.16.9
  return [2, 1, 0];
}

async function checkPe(
  d: Digests,
  kind: LoadedSource['kind'],
  found: { path: string; kind: PeKind },
  reader: ByteReader,
  notes: string[],
): Promise<PeCheck> {
  let cmdlines: PeCmdline[];
  try {
    cmdlines = await readCmdlines(reader, await readPe(reader));
  } catch (e) {
    throw new VerifyError(`${found.path}: ${(e as Error).message}`);
  }
  const pe: PeCheck = { path: found.path, kind: found.kind, cmdlines: cmdlines.map((c) => ({ profile: c.profile, text: c.text })), kargs: [] };
  for (const c of cmdlines) {
    for (const k of parseComposefsKargs(c.text)) {
      if (k.error || !k.hex || !k.hash) {
        pe.kargs.push({ ...k, status: 'invalid' });
        continue;
      }
      if (k.insecure) notes.push(`${found.path}: '${k.token}' has the '?' marker: the image boots even where fs-verity is unavailable`);
      const r = await checkClaim(d, kind, { hex: k.hex, hash: k.hash, versions: versionsOf(k), bootable: true, form: k.key });
      pe.kargs.push({ ...k, status: r.matched ? 'match' : 'mismatch', matched: r.matched, computed: r.computed, tried: r.tried });
    }
  }
  return pe;
}

/** What a check says about problems, one line each. */
function problemsOf(report: VerifyReport): string[] {
  const out: string[] = [];
  const ukis = report.files.filter((f) => f.kind === 'uki');
  for (const f of report.files) {
    for (const k of f.kargs) {
      if (k.status === 'invalid') out.push(`${f.path}: unusable composefs karg: ${k.error}`);
      else if (k.status === 'mismatch') out.push(`${f.path}: '${k.key}=' digest does not match this image`);
    }
  }
  for (const u of ukis) {
    const own = u.kargs.length > 0;
    const viaAddon = (u.addons ?? []).some((a) => report.files.find((f) => f.path === a)?.kargs.length);
    if (!own && !viaAddon) out.push(`${u.path}: no composefs= or composefs.digest= karg on its .cmdline: it does not seal any image`);
  }
  for (const l of report.labels) {
    if (l.status === 'invalid') out.push(`${l.where} ${l.key}: ${l.error}`);
    else if (l.status === 'mismatch') out.push(`${l.where} ${l.key} does not match this image`);
  }
  return out;
}

/** The addons that apply to a UKI: its `NAME.efi.extra.d/*.addon.efi` and the global ones. */
function linkAddons(files: PeCheck[]): void {
  for (const u of files.filter((f) => f.kind === 'uki')) {
    const own = `${u.path}.extra.d/`;
    u.addons = files.filter((f) => (f.kind === 'addon' && f.path.startsWith(own)) || f.kind === 'global-addon').map((f) => f.path);
  }
}

function finish(report: Omit<VerifyReport, 'problems' | 'ok'>): VerifyReport {
  const r = report as VerifyReport;
  linkAddons(r.files);
  r.problems = problemsOf(r);
  r.ok = r.problems.length === 0;
  return r;
}

/**
 * Verifies an image SOURCE: every UKI and addon in it against the image's bootable digest, and
 * its sealing labels/annotations.
 */
export async function verifyImage(spec: string, opts: VerifySourceOptions): Promise<VerifyReport> {
  opts = { keep: bootReads, ...opts }; // the bootable digests read the SELinux policy
  const kept = new UkiKept(opts.keep);
  const metadata: ImageMetadata = { annotations: {}, labels: {} };
  const raw = await loadRawSource(spec, { ...opts, hash: 'sha512', kept, metadata });
  if (raw.kind === 'dumpfile') throw new VerifyError(`${spec}: a dumpfile holds no file contents: cannot read the UKIs or the SELinux policy`);
  const d = new Digests(spec, opts, raw);
  const notes: string[] = [];
  const files: PeCheck[] = [];
  for (const f of findPeFiles(raw.fs)) {
    // tree names are latin1 keys of the raw bytes; the report shows them as UTF-8
    const shown = { path: keyBytes(f.path).toString('utf8'), kind: f.kind };
    const check = async (r: ByteReader) => files.push(await checkPe(d, raw.kind, shown, r, notes));
    if (f.leaf.content.type === 'inline') await check(bufferReader(shown.path, f.leaf.content.data));
    else if (raw.dirPath !== undefined) {
      const onDisk = Buffer.concat([Buffer.from(raw.dirPath), keyBytes(f.path)]);
      await withFileReader(onDisk, check).catch((e: Error) => {
        throw e instanceof VerifyError ? e : new VerifyError(`${shown.path}: ${e.message}`);
      });
    } else {
      const c = kept.byLeaf.get(f.leaf);
      if (!c) throw new VerifyError(`${shown.path}: its content was not kept while reading the layers`);
      const size = f.leaf.content.type === 'external' ? Number(f.leaf.content.size) : c.length;
      await check(prefixReader(shown.path, c, size));
    }
  }
  const labels = await checkLabels(d, raw.kind, metadata);
  const report = finish({ source: spec, files, labels, notes });
  if (files.filter((f) => f.kind === 'uki').length === 0)
    report.problems.push(`no UKI in ${PE_DIRS.map((p) => (p.perKernel ? `${p.dir}/*/` : `${p.dir}/`)).join(', ')}: nothing seals this image`);
  report.ok = report.problems.length === 0;
  return report;
}

/**
 * Verifies one PE file (a UKI or an addon): its composefs kargs, against the image SOURCE when
 * one is given (and that source's labels), else only that they are well formed.
 */
export async function verifyPeFile(file: string, spec: string | undefined, opts: VerifySourceOptions): Promise<VerifyReport> {
  opts = { keep: bootReads, ...opts }; // the bootable digests read the SELinux policy
  const kind: PeKind = file.endsWith('.addon.efi') ? 'addon' : 'uki';
  const notes: string[] = [];
  if (spec === undefined) {
    // Without an image only the form can be checked: every karg counts as matched if well formed.
    const pe = await withFileReader(file, async (r) => {
      try {
        const cl = await readCmdlines(r, await readPe(r));
        const kargs: KargCheck[] = cl.flatMap((c) => parseComposefsKargs(c.text)).map((k) => ({ ...k, status: k.error ? 'invalid' : 'match' }));
        for (const k of kargs) if (k.insecure) notes.push(`${file}: '${k.token}' has the '?' marker: the image boots even where fs-verity is unavailable`);
        return { path: file, kind, cmdlines: cl.map((c) => ({ profile: c.profile, text: c.text })), kargs } as PeCheck;
      } catch (e) {
        throw new VerifyError(`${file}: ${(e as Error).message}`);
      }
    });
    return finish({ files: [pe], labels: [], notes });
  }
  const metadata: ImageMetadata = { annotations: {}, labels: {} };
  const raw = await loadRawSource(spec, { ...opts, hash: 'sha512', metadata });
  if (raw.kind === 'dumpfile') throw new VerifyError(`${spec}: a dumpfile holds no file contents: cannot read the SELinux policy`);
  const d = new Digests(spec, opts, raw);
  const pe = await withFileReader(file, (r) => checkPe(d, raw.kind, { path: path.normalize(file), kind }, r, notes));
  const labels = await checkLabels(d, raw.kind, metadata);
  return finish({ source: spec, files: [pe], labels, notes });
}
