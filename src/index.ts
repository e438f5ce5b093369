/**
 * composefs-ts as a library: compute composefs EROFS images and their fs-verity digests,
 * byte-identical with composefs-rs (cfsctl) and bootc. Re-exports only; see README "As a library".
 *
 * The data path, each step usable on its own:
 *
 *   parseSource('dir:/mnt/root') ─▶ loadRawTree ─▶ applyRules ─▶ writeImage ─▶ imageId ─▶ karg
 *   (or loadSource = loadRawTree + applyRules; buildImage = all but karg)
 *
 * Nothing here prints or exits. Errors the library throws on purpose are {@link CfsError}s whose
 * `kind` says whether the input ('input'), the call ('usage') or the library ('internal') is at
 * fault; errno errors of the file system pass through with their path.
 */

// Errors
export { CfsError, InputError, InternalError, UsageError, type CfsErrorKind } from './errors.js';

// The tree every step passes on
export type { Directory, FileSystem, HashAlg, Inode, Leaf, Stat } from './tree/tree.js';
export type { ErofsVersion } from './erofs/writer.js';

// Sources: SOURCE strings and loading a raw tree
export { loadRawTree, parseSource, type LoadedSource, type LoadProgress, type Source, type SourceOptions } from './source/load.js';

// Rules: the finishing steps from raw tree to final tree
export { applyRules, readerForCopies, type Rules } from './transform/rules.js';
export { DEFAULT_XATTR_FILTER_MODE, XATTR_FILTER_MODES, type XattrFilterMode } from './transform/transform.js';
export { LAYER_MTIMES, type LayerMtimes, type MtimeView } from './transform/mtimes.js';
export type { ContentReader } from './transform/boot.js';

// The pipeline: final tree, image, id, karg, comparison
export {
  annotationKey,
  buildImage,
  compareSources,
  imageId,
  karg,
  loadSource,
  profileKarg,
  writeImage,
  type Built,
  type Comparison,
  type ImageOptions,
  type PipelineOptions,
  type SourceArg,
} from './pipeline.js';
export type { CauseId, CauseSummary, Explained } from './compare.js';
export { dumpfileChunks } from './dumpfile/write.js';
export { Repository } from './repo/repo.js';

// Releases as data: profiles, karg spellings, the rule sets worth trying
export { PROFILES, findProfile, formatKarg, profileKargs, ruleSets, type KargForm, type KargSpec, type Profile } from './profiles.js';

// identify: which format, hash and rules give a digest
export { describeAttempt, digestHash, identify, mtimeViews, parseDigestArg, type Attempt } from './identify.js';

// verify: do a sealed image's UKIs carry its digest
export {
  VerifyError,
  verifyImage,
  verifyPeFile,
  type Candidate,
  type KargCheck,
  type LabelCheck,
  type PeCheck,
  type PeKind,
  type VerifyReport,
  type VerifySourceOptions,
} from './verify/verify.js';
export { allKargForms, parseComposefsKargs, splitCmdline, type KargFormLine, type ParsedKarg } from './verify/karg.js';
