/**
 * The data path composed: SOURCE → raw tree → rules → final tree → EROFS image → id (and the
 * kernel argument that names it), and the comparison of two sources. Each step is also usable
 * on its own; `cfs` (src/cli/) is a thin layer over these.
 */
import { explain, summarize, type CauseSummary, type Explained } from './compare.js';
import { InputError } from './errors.js';
import { writeErofs, type ErofsVersion } from './erofs/writer.js';
import { fsverityDigest } from './fsverity/fsverity.js';
import { formatKarg, profileKargs, type Profile } from './profiles.js';
import { loadRawTree, parseSource, type LoadedSource, type Source, type SourceOptions } from './source/load.js';
import { TransformError } from './transform/transform.js';
import { applyRules, type Rules } from './transform/rules.js';
import type { MtimeView } from './transform/mtimes.js';
import { diffTrees } from './tree/diff.js';
import type { FileSystem, HashAlg } from './tree/tree.js';

/** What loading a source and finishing its tree takes. */
export type PipelineOptions = SourceOptions & Rules;

/** A SOURCE argument (parsed with {@link parseSource}) or an already parsed {@link Source}. */
export type SourceArg = Source | string;

const asSource = (s: SourceArg): Source => (typeof s === 'string' ? parseSource(s) : s);

/**
 * Loads a source into its final tree: {@link loadRawTree}, then {@link applyRules}. A rule that
 * cannot apply (e.g. no /usr to take the root's metadata from) is an {@link InputError} naming the
 * source.
 */
export async function loadSource(source: SourceArg, opts: PipelineOptions): Promise<LoadedSource> {
  const loaded = await loadRawTree(asSource(source), opts);
  try {
    await applyRules(loaded, opts);
  } catch (e) {
    if (e instanceof TransformError) throw new InputError(`${loaded.description}: ${e.message} (${e.hint})`, { cause: e });
    throw e;
  }
  return loaded;
}

/** How the image is written. */
export interface ImageOptions {
  /** EROFS layout: 0 and 1 are the C mkcomposefs layouts (1 is cfsctl 0.9's default), 2 the older composefs-rs one. */
  version: ErofsVersion;
}

/** The composefs EROFS image of a final tree, byte-identical with composefs-rs (one buffer). */
export function writeImage(fs: FileSystem, opts: ImageOptions): Buffer {
  return writeErofs(fs, opts.version);
}

/** The image id: the fs-verity digest (4096-byte blocks, no salt) of the image's bytes. */
export function imageId(image: Uint8Array, hash: HashAlg): Buffer {
  return fsverityDigest(image, hash);
}

/**
 * The kernel argument `cfsctl compute-karg` prints for an image id: `composefs=HEX` for V2
 * images, `composefs.digest=v1-ALG-12:HEX` for V0/V1 (composefs-ctl lib.rs v0.9.0); `insecure`
 * adds the `?` that lets the system boot without fs-verity.
 */
export function karg(id: Uint8Array, version: ErofsVersion, hash: HashAlg, insecure = false): string {
  return formatKarg(version === 2 ? 'composefs' : 'composefs.digest', version, hash, Buffer.from(id).toString('hex'), insecure);
}

/**
 * The kernel argument(s) a release (`profile`; none = cfsctl) writes for the bootable tree `fs`,
 * on one line. bootc 1.17 also names the V2 image: images of other formats than `version` are
 * written here as needed; `id` (the id of the `version` image) saves writing that one again.
 */
export function profileKarg(fs: FileSystem, o: { profile?: Profile; version: ErofsVersion; hash: HashAlg; insecure?: boolean; id?: Uint8Array }): string {
  const ids = new Map<ErofsVersion, Uint8Array>();
  if (o.id) ids.set(o.version, o.id);
  const idOf = (v: ErofsVersion): Uint8Array => {
    let id = ids.get(v);
    if (!id) ids.set(v, (id = imageId(writeImage(fs, { version: v }), o.hash)));
    return id;
  };
  return profileKargs(o.profile, o.version)
    .map((spec) => formatKarg(spec.form, spec.erofsVersion, o.hash, Buffer.from(idOf(spec.erofsVersion)).toString('hex'), o.insecure === true))
    .join(' ');
}

/**
 * The manifest annotation key composefs-rs's sealing design gives the merged image's digest
 * (crates/composefs-oci/src/sealing_spec.rs): role `merged`, `.bootable` for the boot variant,
 * the EROFS format version, the fs-verity algorithm and block size.
 */
export function annotationKey(version: ErofsVersion, hash: HashAlg, bootable: boolean): string {
  return `composefs.merged${bootable ? '.bootable' : ''}.erofs.v${version}.fsverity-${hash}-12`;
}

/** A source built all the way: its final tree, image and id. */
export interface Built {
  loaded: LoadedSource;
  image: Buffer;
  id: Buffer;
}

/** {@link loadSource}, {@link writeImage} and {@link imageId} in one call (the image hash is `opts.hash`). */
export async function buildImage(source: SourceArg, opts: PipelineOptions & ImageOptions): Promise<Built> {
  const loaded = await loadSource(source, opts);
  const image = writeImage(loaded.fs, opts);
  return { loaded, image, id: imageId(image, opts.hash) };
}

/** The result of {@link compareSources}. */
export interface Comparison {
  a: LoadedSource;
  b: LoadedSource;
  /** The mtime view each side was read with. */
  viewA: MtimeView;
  viewB: MtimeView;
  /** Every difference, with its cause (src/compare.ts). */
  differences: Explained[];
  /** Counts per cause, most paths first. */
  summary: CauseSummary[];
  /** Distinct paths that differ. */
  paths: number;
  idA: Buffer;
  idB: Buffer;
}

/**
 * Builds two sources with the same rules and explains why their ids differ. The mtime view
 * (`opts.mtimes`) applies to the sides that are not layer sources, or to both when both are:
 * the layers of an exported image are what the engine shipped, and bootc reads them as they are.
 * Directory provenance of OCI sources is recorded (which layer a directory came from).
 */
export async function compareSources(a: SourceArg, b: SourceArg, opts: PipelineOptions & ImageOptions): Promise<Comparison> {
  const base = { ...opts, provenance: true };
  const la = await loadRawTree(asSource(a), base);
  const lb = await loadRawTree(asSource(b), base);
  const view: MtimeView = opts.mtimes ?? { layerMtimes: 'keep' };
  const keep: MtimeView = { layerMtimes: 'keep', clampMtime: undefined };
  const bothLayers = la.kind === 'oci' && lb.kind === 'oci';
  const viewA = bothLayers || la.kind !== 'oci' ? view : keep;
  const viewB = bothLayers || lb.kind !== 'oci' ? view : keep;
  await applyRules(la, { ...base, mtimes: viewA });
  await applyRules(lb, { ...base, mtimes: viewB });
  const found = diffTrees(la.fs, lb.fs, { nanoseconds: opts.version !== 2 });
  const differences = explain(found, la, lb, { viewA, viewB, propagated: opts.propagateUsrToRoot });
  const summary = summarize(differences);
  const [idA, idB] = [la, lb].map((l) => imageId(writeImage(l.fs, opts), opts.hash));
  const paths = new Set(differences.map((d) => d.path.toString('latin1'))).size;
  return { a: la, b: lb, viewA, viewB, differences, summary, paths, idA, idB };
}
