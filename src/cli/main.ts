/**
 * `cfs`: compute composefs images and their fs-verity digests.
 *
 * Exit codes: 0 success; 1 "different" (a digest did not match `--expect`); 2 any error
 * (bad usage, bad input, I/O, or a bug). Errors of input and usage are one line on stderr
 * (set CFS_DEBUG=1 for a stack trace); a bug (see isBug) shows its stack trace.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { stat } from 'node:fs/promises';
import { readImageFile } from '../erofs/image-file.js';
import { ImageError, readErofs } from '../erofs/reader.js';
import type { ErofsVersion } from '../erofs/format.js';
import { dumpfileChunks } from '../dumpfile/write.js';
import { fsverityDigestFile } from '../fsverity/fsverity.js';
import type { HashAlg } from '../tree/tree.js';
import { checkOutput, isStdout, writeOutput, writeStdout } from './atomic.js';
import { abandonTemps, errnoReason, exitRemovingTemps } from '../repo/files.js';
import { EXIT_DIFFERENT, EXIT_ERROR, UsageError } from './errors.js';
import { CfsError, InputError } from '../errors.js';
import { loadRawTree, parseSource, type LoadedSource, type LoadProgress, type Source } from '../source/load.js';
import { annotationKey, compareSources, imageId, loadSource, profileKarg, writeImage, type Built, type PipelineOptions as SourceOptions } from '../pipeline.js';
import { describeAttempt, digestHash, identify, mtimeViews, parseDigestArg, type Attempt } from '../identify.js';
import { PATHS_PER_CAUSE, formatReport, subsecondHint } from './compare.js';
import { bootReads } from '../transform/boot.js';
import { availableParallelism } from 'node:os';
import { keepYoungGenerationSmall } from '../source/oci/young-gen.js';
import { DEFER_OPTIMISATION_ENTRIES, deferOptimisingCompiler, optimiseFromNow } from './jit.js';
import { Repository, checkImageName, isInside } from '../repo/repo.js';
import { DEFAULT_XATTR_FILTER_MODE, XATTR_FILTER_MODES, type XattrFilterMode } from '../transform/transform.js';
import { treeCounts } from '../tree/counts.js';
import { PROFILES, findProfile, type Profile } from '../profiles.js';
import { profilesHelp } from './profiles.js';
import { allKargForms, type KargFormLine } from '../verify/karg.js';
import { verifyImage, verifyPeFile } from '../verify/verify.js';
import { formatVerifyReport } from '../verify/format.js';
import { LAYER_MTIMES, parseEpoch, type LayerMtimes, type MtimeView } from '../transform/mtimes.js';
import { progressPrinter } from './progress.js';

export const VERSION = '0.1.0';

interface GlobalOpts {
  hash: HashAlg;
  erofsVersion: ErofsVersion;
}

/** Options of commands that build a tree from a SOURCE. */
interface TreeOpts {
  bootable?: boolean;
  propagateUsrToRoot: boolean;
  xattrs: XattrFilterMode;
  jobs?: number;
  progress?: boolean;
  json?: boolean;
  platform?: string;
  layerMtimes?: LayerMtimes;
  clampMtime?: bigint;
  /** --layer-mtimes was given on the command line (silences the sub-second warning). */
  layerMtimesExplicit?: boolean;
}

const SOURCE_HELP = `
SOURCE is one of:
  PATH, dir:PATH   a directory: a container root filesystem, e.g. the bind mount of an earlier
                   build stage (RUN --mount=type=bind,from=base,target=/mnt/base)
  dumpfile:PATH    a composefs dumpfile (PATH '-' reads standard input)
  oci:DIR[:REF]    an OCI image layout (REF: org.opencontainers.image.ref.name, or the only image).
                   REF may hold ':' and '/' (oci:out:docker.io/library/base:latest): DIR is the
                   whole text if it is a layout (has an oci-layout file), else the shortest
                   prefix before a ':' that is one, and REF all the rest
  oci-archive:FILE[:REF]     the same, as a tar file
  docker-archive:FILE[:REF]  docker save / podman save output
  layers:A.tar,B.tar.gz,...  plain layer tarballs in order (gzip, zstd or none)

A directory becomes a tree exactly as cfsctl/bootc read it: hardlinks kept, files of at most
64 bytes inline, larger ones by fs-verity digest (--hash); OCI layers are merged as
composefs-rs merges them (whiteouts, opaque directories, hardlinks), blob digests verified. Then
the root takes /usr's metadata, /run is emptied and xattrs are filtered (--xattrs).
Container engines write layer tarballs with whole-second mtimes (BuildKit's rewrite-timestamp
also clamps them to SOURCE_DATE_EPOCH): --layer-mtimes seconds and --clamp-mtime EPOCH give any
source that view first, so that a mounted build stage gives the id of the shipped layers.
The object hash of a dumpfile source is taken from its DIGEST fields and object paths (64 or
128 hex digits; one dumpfile uses one); --hash selects the hash of the image id.
`;

function parseErofsVersion(v: string): ErofsVersion {
  if (v === '0' || v === '1' || v === '2') return Number(v) as ErofsVersion;
  throw new InvalidArgumentError('must be 0, 1 or 2');
}

function parseJobs(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new InvalidArgumentError('must be a whole number from 1 to 1024');
  return n;
}

function parseClampMtime(v: string): bigint {
  const e = parseEpoch(v);
  if (e === undefined) throw new InvalidArgumentError('must be whole seconds since 1970 (SOURCE_DATE_EPOCH), e.g. 1700000000');
  return e;
}

/** The engine-faithful view the options ask for. */
function mtimeView(t: TreeOpts): MtimeView {
  return { layerMtimes: t.layerMtimes ?? 'keep', clampMtime: t.clampMtime };
}

/** The view as --json reports it. */
function describeMtimes(v: MtimeView): Record<string, unknown> {
  return { layerMtimes: v.layerMtimes, clampMtime: v.clampMtime === undefined ? null : Number(v.clampMtime) };
}

/** Adds --layer-mtimes and --clamp-mtime. */
function mtimeOptions(cmd: Command, defaultKeep = true): Command {
  const lm = new Option(
    '--layer-mtimes <mode>',
    "engine-faithful view: 'seconds' drops the sub-second part of every mtime, as every container engine's layer writer does (buildah, podman, Docker BuildKit); 'keep' reads them as they are (cfsctl, bootc on a directory)",
  ).choices([...LAYER_MTIMES]);
  cmd.addOption(defaultKeep ? lm.default('keep') : lm);
  cmd.option(
    '--clamp-mtime <epoch>',
    'engine-faithful view: mtimes later than EPOCH (seconds) become EPOCH, as BuildKit exports with rewrite-timestamp=true and SOURCE_DATE_EPOCH',
    parseClampMtime,
  );
  return cmd;
}

function parseHex(v: string): string {
  if (!/^([0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/.test(v)) throw new InvalidArgumentError('must be 64 or 128 hex digits');
  return v.toLowerCase();
}

/** Adds the options shared by every command that builds a tree. */
function treeOptions(cmd: Command, opts: { bootable?: boolean; xattrs?: boolean } = {}): Command {
  if (opts.bootable !== false) {
    cmd.option('--bootable', 'apply the boot transform (bootc sealed images): empty /boot and /sysroot, relabel every path from the SELinux policy in the tree (or drop security.selinux when it has none)');
  }
  cmd.option('--no-propagate-usr-to-root', "directory sources: keep the raw tree (root keeps its own metadata, /run is kept, no xattr filtering), as cfsctl's flag of that name");
  if (opts.xattrs !== false) {
    cmd.addOption(
      new Option('--xattrs <mode>', 'which xattrs a directory source keeps: allowlist-only keeps security.capability; keep-user-xattrs also user.*')
        .choices([...XATTR_FILTER_MODES])
        .default(DEFAULT_XATTR_FILTER_MODE),
    );
  }
  mtimeOptions(cmd);
  cmd
    .option('--platform <os/arch>', 'OCI sources: which image of a multi-platform index (default: this host)')
    .option('-j, --jobs <n>', 'parallel hashing: threads, and files and directories read at once (default: one per core)', parseJobs)
    .option('--progress', 'show progress on stderr even when it is not a terminal')
    .addHelpText('after', SOURCE_HELP);
  return cmd;
}

function sourceOptions(g: GlobalOpts, t: TreeOpts, bootable: boolean, repo?: Repository, tarKeepsAllXattrs = false, bootMtimeNsec = false): SourceOptions {
  return {
    tarKeepsAllXattrs,
    bootMtimeNsec,
    hash: g.hash,
    jobs: t.jobs ?? availableParallelism(),
    jobsGiven: t.jobs !== undefined,
    propagateUsrToRoot: t.propagateUsrToRoot,
    xattrs: t.xattrs,
    bootable,
    repo,
    onProgress: tieringProgress(progressPrinter(t.progress === true || process.stderr.isTTY === true)),
    platform: t.platform,
    mtimes: mtimeView(t),
    // OCI sources keep what the bootable transform reads (compare and identify apply it later)
    keep: bootReads,
  };
}

/**
 * Progress also ends the deferral of V8's optimising compiler once a scan has listed many
 * entries (src/cli/jit.ts): the tree is no longer small.
 */
function tieringProgress(print: ((p: LoadProgress) => void) | undefined): (p: LoadProgress) => void {
  return (p) => {
    if (p.entries >= DEFER_OPTIMISATION_ENTRIES) optimiseFromNow();
    print?.(p);
  };
}

/** A directory source is read with V8's optimising compiler deferred (src/cli/jit.ts); no other. */
function deferOptimisingForDirectory(source: Source): void {
  if (source.kind === 'dir') deferOptimisingCompiler();
}

/** Builds the tree and image of a source: the shared core of the image commands. */
async function build(source: Source, g: GlobalOpts, t: TreeOpts, bootable: boolean, repo?: Repository, tarKeepsAllXattrs = false, bootMtimeNsec = false): Promise<Built> {
  deferOptimisingForDirectory(source);
  const loaded = await loadSource(source, sourceOptions(g, t, bootable, repo, tarKeepsAllXattrs, bootMtimeNsec));
  if (loaded.kind === 'dir' && !t.layerMtimesExplicit) warnSubsecond(loaded.fs, t.propagateUsrToRoot);
  const image = writeImage(loaded.fs, { version: g.erofsVersion });
  return { loaded, image, id: imageId(image, g.hash) };
}

/**
 * Warns (stderr, one line) when a directory tree has mtimes that no layer tarball an engine
 * writes will carry: then the shipped image's id differs from this one.
 */
function warnSubsecond(fs: LoadedSource['fs'], propagated: boolean): void {
  const hint = subsecondHint(fs, propagated);
  if (hint) process.stderr.write(`cfs: warning: ${hint}\n`);
}

/** Everything that determined the digest, for --json. */
function describeBuild(b: Built, g: GlobalOpts, t: TreeOpts, bootable: boolean): Record<string, unknown> {
  return {
    id: b.id.toString('hex'),
    hash: g.hash,
    erofsVersion: g.erofsVersion,
    objectHash: b.loaded.objectHash ?? null,
    source: b.loaded.description,
    mtimes: describeMtimes(mtimeView(t)),
    rules:
      b.loaded.kind === 'dir'
        ? { propagateUsrToRoot: t.propagateUsrToRoot, xattrs: t.propagateUsrToRoot ? t.xattrs : 'all (raw tree)', bootable }
        : { bootable },
    imageBytes: b.image.length,
    counts: treeCounts(b.loaded.fs),
  };
}

export function makeProgram(): Command {
  const program = new Command();
  // Before any subcommand is added, so that they inherit it: errors come back to main().
  program.exitOverride();
  program
    .name('cfs')
    .description(
      'Compute composefs EROFS images and their fs-verity digests, byte-identical with composefs-rs (cfsctl) v0.9.0.',
    )
    .version(VERSION, '-V, --version')
    .addOption(new Option('--hash <alg>', 'hash of the image id and of file object ids').choices(['sha256', 'sha512']).default('sha512'))
    .addOption(new Option('--erofs-version <n>', 'EROFS format: 0 and 1 are the C mkcomposefs layouts, 2 the older composefs-rs layout').argParser(parseErofsVersion).default(1))
    .option('--profile <name>', 'what a composefs-rs/bootc release computes (format, hash, rules); explicit options override it (the list: cfs --help)')
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `${SOURCE_HELP}
Profiles (--profile NAME):
${profilesHelp()}

Exit status: 0 success, 1 different (compute-id --expect, compare, identify: no match), 2 error.`,
    );

  const globals = (cmd: Command): GlobalOpts => cmd.optsWithGlobals() as GlobalOpts;

  /**
   * The effective options of a tree command: explicit options, else the --profile's values,
   * else the defaults.
   */
  const resolve = <T extends TreeOpts>(
    cmd: Command,
    o: T,
  ): { g: GlobalOpts; t: T; bootable: boolean; tarKeepsAllXattrs: boolean; bootMtimeNsec: boolean; profile?: Profile } => {
    const g = { ...globals(cmd) };
    const t = { ...o, layerMtimesExplicit: cmd.getOptionValueSource('layerMtimes') === 'cli' };
    const name = (program.opts() as { profile?: string }).profile;
    if (!name) return { g, t, bootable: o.bootable === true, tarKeepsAllXattrs: false, bootMtimeNsec: false };
    const p = findProfile(name);
    if (!p) throw new UsageError(`unknown profile '${name}'; known: ${PROFILES.map((x) => x.name).join(', ')}`);
    const explicit = (c: Command, key: string) => c.getOptionValueSource(key) === 'cli';
    if (!explicit(program, 'erofsVersion')) g.erofsVersion = p.erofsVersion;
    if (!explicit(program, 'hash')) g.hash = p.hash;
    if (!explicit(cmd, 'xattrs') && cmd.options.some((x) => x.attributeName() === 'xattrs')) t.xattrs = p.xattrs;
    const bootable = explicit(cmd, 'bootable') ? o.bootable === true : p.bootable;
    return { g, t, bootable, tarKeepsAllXattrs: p.tarKeepsAllXattrs && !explicit(cmd, 'xattrs'), bootMtimeNsec: p.bootMtimeNsec, profile: p };
  };

  treeOptions(
    program
      .command('compute-id')
      .description('print the image id: the fs-verity digest of the composefs image of SOURCE (hex)')
      .argument('<source>', 'what to build the image from (see SOURCE below)')
      .option('--expect <hex>', 'exit 1, printing both values, when the id is not this one', parseHex)
      .option('--write-dumpfile-to <path>', "also write the dumpfile of the tree (atomically; '-' for standard output, the id then goes to stderr)")
      .option('--annotation', 'print the composefs sealing annotation KEY=HEX (composefs.merged[.bootable].erofs.vN.fsverity-ALG-12) for `buildah config --annotation`')
      .option('--json', 'print a JSON object with the id and every parameter that determined it'),
  ).action(async (source: string, opts: TreeOpts & { expect?: string; writeDumpfileTo?: string; annotation?: boolean }, cmd: Command) => {
    const { g, t: o, bootable, tarKeepsAllXattrs, bootMtimeNsec } = resolve(cmd, opts);
    if (o.writeDumpfileTo) await checkOutput(o.writeDumpfileTo);
    const b = await build(parseSource(source), g, o, bootable, undefined, tarKeepsAllXattrs, bootMtimeNsec);
    if (o.writeDumpfileTo) await writeOutput(o.writeDumpfileTo, dumpfileChunks(b.loaded.fs));
    const hex = b.id.toString('hex');
    const ann = `${annotationKey(g.erofsVersion, g.hash, bootable)}=${hex}`;
    // With the dumpfile on standard output, the id goes to stderr (not into the dumpfile).
    const say = o.writeDumpfileTo && isStdout(o.writeDumpfileTo) ? process.stderr : process.stdout;
    if (o.json) say.write(`${JSON.stringify({ ...describeBuild(b, g, o, bootable), annotation: ann }, null, 2)}
`);
    else say.write(o.annotation ? `${ann}
` : `${hex}
`);
    if (o.expect !== undefined && o.expect.length !== hex.length) {
      // Not a different image: a digest of another hash, which can never match.
      const algOf = (h: string) => (h.length === 64 ? 'sha256' : 'sha512');
      process.stderr.write(
        `cfs: --expect is a ${algOf(o.expect)} digest (${o.expect.length} hex digits) but the id is ${g.hash} (${hex.length}); add --hash ${algOf(o.expect)} to compute a ${algOf(o.expect)} id
`,
      );
      process.exitCode = EXIT_ERROR;
    } else if (o.expect !== undefined && o.expect !== hex) {
      process.stderr.write(`cfs: digest mismatch\n  expected: ${o.expect}\n  computed: ${hex}\n`);
      process.exitCode = EXIT_DIFFERENT;
    }
  });

  treeOptions(
    program
      .command('compute-karg')
      .description(
        "print the kernel argument(s) for the bootable image of SOURCE as the release of --profile writes them (default, like cfsctl: composefs.digest=v1-ALG-12:HEX for V0/V1, composefs=HEX for V2)",
      )
      .argument('<source>', 'what to build the image from (see SOURCE below)')
      .option('--insecure', "emit the insecure form ('?' before the digest): boot even where fs-verity is unavailable")
      .option('--all-forms', 'print every form instead: V1 and V2 images, sha256 and sha512, each spelling, one per line with who writes it')
      .option('--json', 'print a JSON object with the karg, the id and every parameter that determined it'),
    { bootable: false, xattrs: false },
  ).action(async (source: string, o: TreeOpts & { insecure?: boolean; allForms?: boolean }, cmd: Command) => {
    const { g, tarKeepsAllXattrs, bootMtimeNsec, profile } = resolve(cmd, o);
    // Like cfsctl: always bootable, always allowlist-only.
    const t: TreeOpts = { ...o, xattrs: DEFAULT_XATTR_FILTER_MODE };
    const insecure = o.insecure === true;
    const src = parseSource(source);
    if (o.allForms) {
      const forms: KargFormLine[] = [];
      for (const hash of ['sha256', 'sha512'] as HashAlg[]) {
        const { fs } = await loadSource(src, sourceOptions({ ...g, hash }, t, true, undefined, tarKeepsAllXattrs, bootMtimeNsec));
        forms.push(...allKargForms(fs, hash, insecure));
      }
      if (o.json) process.stdout.write(`${JSON.stringify({ forms }, null, 2)}\n`);
      else for (const f of forms) process.stdout.write(`${f.karg}\t# ${f.note}\n`);
      return;
    }
    const b = await build(src, g, t, true, undefined, tarKeepsAllXattrs, bootMtimeNsec);
    const k = profileKarg(b.loaded.fs, { profile, version: g.erofsVersion, hash: g.hash, insecure, id: b.id });
    if (o.json) process.stdout.write(`${JSON.stringify({ karg: k, profile: profile?.name ?? null, ...describeBuild(b, g, t, true) }, null, 2)}\n`);
    else process.stdout.write(`${k}\n`);
  });

  treeOptions(
    program
      .command('create-image')
      .description('write the composefs image of SOURCE to a file and/or a repository (atomically) and print its id as ALG:HEX')
      .argument('<source>', 'what to build the image from (see SOURCE below)')
      .argument('[name]', 'with --repo: also link images/refs/NAME to the image')
      .option('-o, --output <image>', "image file to write (atomically; '-' for standard output, the id then goes to stderr)")
      .option('--repo <dir>', 'composefs-rs style repository (created if missing): store every external file as objects/XX/REST and the image under images/'),
  ).action(async (source: string, name: string | undefined, opts: TreeOpts & { output?: string; repo?: string }, cmd: Command) => {
    const { g, t: o, bootable, tarKeepsAllXattrs, bootMtimeNsec } = resolve(cmd, opts);
    if (!o.output && !o.repo) throw new UsageError('create-image needs -o IMAGE, --repo DIR, or both');
    if (name !== undefined && !o.repo) throw new UsageError('an image NAME needs --repo');
    // Everything that can be refused is refused before any work is done.
    if (name !== undefined) checkImageName(name);
    if (o.output) await checkOutput(o.output);
    const src = parseSource(source);
    const srcDir = src.kind === 'dir' ? src.path : undefined;
    if (o.repo && srcDir !== undefined && (await isInside(o.repo, srcDir))) {
      throw new InputError(
        `--repo ${o.repo} is inside the source directory ${srcDir}: the repository's own files would be part of the image (and change it on every run); put the repository outside the source`,
      );
    }
    const repo = o.repo ? await Repository.openOrCreate(o.repo, g.hash, g.erofsVersion) : undefined;
    const b = await build(src, g, o, bootable, repo, tarKeepsAllXattrs, bootMtimeNsec);
    if (repo) await repo.storeImage(b.id, b.image, name);
    if (o.output) await writeOutput(o.output, [b.image]);
    // With the image on standard output, the id goes to stderr.
    (o.output && isStdout(o.output) ? process.stderr : process.stdout).write(`${g.hash}:${b.id.toString('hex')}\n`);
  });

  treeOptions(
    program
      .command('create-dumpfile')
      .description('print the composefs dumpfile of the tree built from SOURCE')
      .argument('<source>', 'what to build the tree from (see SOURCE below)')
      .option('-o, --output <file>', 'write to this file (atomically) instead of standard output'),
  ).action(async (source: string, opts: TreeOpts & { output?: string }, cmd: Command) => {
    const { g, t: o, bootable, tarKeepsAllXattrs, bootMtimeNsec } = resolve(cmd, opts);
    if (o.output) await checkOutput(o.output);
    const { fs } = await loadSource(source, sourceOptions(g, o, bootable, undefined, tarKeepsAllXattrs, bootMtimeNsec));
    if (o.output) await writeOutput(o.output, dumpfileChunks(fs));
    else await writeStdout(dumpfileChunks(fs));
  });

  treeOptions(
    program
      .command('compare')
      .description(
        'build two trees with the same options and show why their ids differ: a summary of counts per cause, then the differing paths (field, both values) grouped by cause (exit 0 equal, 1 different)',
      )
      .argument('<source-a>', 'first SOURCE, e.g. the mounted root (a directory)')
      .argument('<source-b>', 'second SOURCE, e.g. the same image as oci:DIR:REF')
      .option('--all', `list every differing path (default: ${PATHS_PER_CAUSE} per cause)`)
      .option('--json', 'print the result as JSON (summary and every difference)')
      .addHelpText(
        'after',
        `
--layer-mtimes and --clamp-mtime apply to the side(s) that are not layer sources (oci:,
oci-archive:, docker-archive:, layers:), i.e. to a directory or a dumpfile of one; to both sides
when both are layer sources. The layers of an exported image are what the engine shipped, and
bootc reads them as they are: so 'cfs compare --layer-mtimes seconds MOUNT oci:DIR:REF' checks
exactly whether 'cfs compute-id --layer-mtimes seconds MOUNT' gives the shipped id.`,
      ),
  ).action(async (a: string, b: string, opts0: TreeOpts & { all?: boolean }, cmd: Command) => {
    const { g, t: o, bootable, tarKeepsAllXattrs, bootMtimeNsec } = resolve(cmd, opts0);
    const c = await compareSources(a, b, { ...sourceOptions(g, o, bootable, undefined, tarKeepsAllXattrs, bootMtimeNsec), version: g.erofsVersion });
    const { viewA, viewB, summary, paths } = c;
    const diffs = c.differences;
    const ids = [c.idA, c.idB].map((id) => id.toString('hex'));
    if (o.json) {
      const list = diffs.map((d) => ({ path: d.path.toString('utf8'), field: d.field, a: d.a ?? null, b: d.b ?? null, cause: d.cause, note: d.note ?? null }));
      process.stdout.write(
        `${JSON.stringify(
          { equal: diffs.length === 0, idA: ids[0], idB: ids[1], hash: g.hash, erofsVersion: g.erofsVersion, mtimes: { a: describeMtimes(viewA), b: describeMtimes(viewB) }, paths, summary, differences: list },
          null,
          2,
        )}\n`,
      );
    } else if (diffs.length === 0) {
      process.stdout.write(`equal: both give ${g.hash} ${ids[0]} (erofs V${g.erofsVersion})\n`);
    } else {
      await writeStdout([formatReport(diffs, summary, { all: o.all === true, nameA: 'A', nameB: 'B' })]);
      const shown = (v: MtimeView) => (v.layerMtimes === 'keep' && v.clampMtime === undefined ? '' : ` (--layer-mtimes ${v.layerMtimes}${v.clampMtime === undefined ? '' : ` --clamp-mtime ${v.clampMtime}`})`);
      process.stdout.write(`\n${diffs.length} difference(s) in ${paths} path(s)\nA: ${g.hash} ${ids[0]}${shown(viewA)}\nB: ${g.hash} ${ids[1]}${shown(viewB)}\n`);
    }
    if (diffs.length > 0) process.exitCode = EXIT_DIFFERENT;
  });

  mtimeOptions(program
    .command('identify')
    .description(
      'find which combination composefs-rs versions have used (EROFS format, hash, xattr mode, bootable, /usr-root propagation) produces DIGEST for SOURCE; mtimes are tried as read and, when some have a fraction of a second, as whole seconds (--layer-mtimes seconds) unless --layer-mtimes is given',
    ), false)
    .argument('<digest>', 'hex digest (64 = sha256, 128 = sha512), or a karg / annotation carrying one')
    .argument('<source>', 'the tree (see SOURCE)')
    .option('--all', 'list every matching combination, not just the first')
    .option('--platform <os/arch>', 'OCI sources: which image of a multi-platform index (default: this host)')
    .option('-j, --jobs <n>', 'parallel hashing: threads, and files and directories read at once (default: one per core)', parseJobs)
    .option('--progress', 'show progress on stderr even when it is not a terminal')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', SOURCE_HELP)
    .action(async (digestArg: string, source: string, o: TreeOpts & { all?: boolean }, cmd: Command) => {
      const want = parseDigestArg(digestArg);
      if (!want) throw new UsageError(`'${digestArg}' is not a digest: expected 64 or 128 hex digits, a composefs karg or an annotation`);
      const hash = digestHash(want);
      const raw = await loadRawTree(parseSource(source), {
        ...sourceOptions({ hash, erofsVersion: 1 }, { ...o, propagateUsrToRoot: false, xattrs: DEFAULT_XATTR_FILTER_MODE }, false),
      });
      const tried: Attempt[] = [];
      const asked = cmd.getOptionValueSource('layerMtimes') === 'cli' ? mtimeView(o) : undefined;
      const matches = await identify(want, raw, (a) => tried.push(a), o.all === true, mtimeViews(raw, asked, o.clampMtime));
      if (o.json) {
        const show = (a: Attempt) => {
          const { mtimes, ...rules } = a.rules;
          return { erofsVersion: a.erofsVersion, hash: a.hash, ...rules, mtimes: describeMtimes(mtimes ?? { layerMtimes: 'keep' }), id: a.id ?? null, error: a.error ?? null, options: describeAttempt(a, raw.kind) };
        };
        process.stdout.write(`${JSON.stringify({ digest: want, matches: matches.map(show), tried: tried.map(show) }, null, 2)}\n`);
      } else if (matches.length > 0) {
        for (const m of matches) process.stdout.write(`match: ${describeAttempt(m, raw.kind)}\n`);
      } else {
        process.stdout.write(`no combination gives ${want}; tried ${tried.length}:\n`);
        for (const a of tried) process.stdout.write(`  ${describeAttempt(a, raw.kind)}: ${a.id ?? `error: ${a.error}`}\n`);
      }
      if (matches.length === 0) process.exitCode = EXIT_DIFFERENT;
    });

  program
    .command('verify')
    .description(
      "check that the UKIs of a sealed image carry its digest: every .cmdline karg (composefs=HEX, composefs.digest=vN-ALG-12:HEX) of the UKIs and addons in /boot/EFI/Linux, /boot/loader/addons and /usr/lib/modules/*/ against the image's bootable digest, and its composefs.merged[.bootable].* labels/annotations (exit 0 all match, 1 a mismatch or no karg, 2 error)",
    )
    .argument('<target>', 'an image SOURCE holding UKIs (see SOURCE), or a UKI / .addon.efi file')
    .argument('[source]', 'with a UKI file: the image SOURCE it should seal (without: only reads and checks the form of its kargs)')
    .option('--platform <os/arch>', 'OCI sources: which image of a multi-platform index (default: this host)')
    .option('-j, --jobs <n>', 'parallel hashing: threads, and files and directories read at once (default: one per core)', parseJobs)
    .option('--progress', 'show progress on stderr even when it is not a terminal')
    .option('--json', 'print the whole report as JSON')
    .addHelpText('after', SOURCE_HELP)
    .action(async (target: string, source: string | undefined, o: TreeOpts) => {
      const opts = {
        jobs: o.jobs ?? availableParallelism(),
        jobsGiven: o.jobs !== undefined,
        onProgress: progressPrinter(o.progress === true || process.stderr.isTTY === true),
        platform: o.platform,
      };
      const isPeFile = !/^[a-z][a-z-]*:/.test(target) && (await stat(target).then((st) => st.isFile(), () => false));
      if (!isPeFile && source !== undefined) throw new UsageError(`'${target}' is not a UKI file: a second argument only goes with a UKI file`);
      const report = isPeFile ? await verifyPeFile(target, source, opts) : await verifyImage(target, opts);
      if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else await writeStdout([formatVerifyReport(report)]);
      if (!report.ok) process.exitCode = EXIT_DIFFERENT;
    });

  program
    .command('dump')
    .description('print the dumpfile of an existing composefs image (any format: V0, V1, V2, C mkcomposefs)')
    .argument('<image>', 'composefs EROFS image: a file or a block device')
    .action(async (imagePath: string) => {
      const image = await readImageFile(imagePath);
      let fs;
      try {
        ({ fs } = readErofs(image));
      } catch (e) {
        if (e instanceof ImageError) throw new InputError(`${imagePath}: ${e.message}`, { cause: e });
        throw e;
      }
      await writeStdout(dumpfileChunks(fs));
    });

  program
    .command('measure')
    .description("print each file's fs-verity digest as ALG:HEX PATH (like `fsverity digest`); both hashes unless --hash is given")
    .argument('<file...>', 'files to measure')
    .action(async (files: string[], _o: unknown, cmd: Command) => {
      const explicit = cmd.parent!.getOptionValueSource('hash') === 'cli';
      const algs: HashAlg[] = explicit ? [globals(cmd).hash] : ['sha256', 'sha512'];
      for (const f of files) {
        // fs-verity measures a regular file's content. `fsverity digest` would take a device or
        // FIFO for its st_size (0) and print the empty file's digest; reading one instead never
        // ends (/dev/zero). Neither is a measurement: refuse. The size also bounds the read.
        const st = await stat(f, { bigint: true });
        if (!st.isFile()) throw new InputError(`${f}: not a regular file (fs-verity digests are of regular files)`);
        for (const alg of algs) {
          const d = await fsverityDigestFile(f, alg, st.size);
          process.stdout.write(`${alg}:${d.toString('hex')} ${f}\n`);
        }
      }
    });

  return program;
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const err = e as NodeJS.ErrnoException;
    if (err.code && err.syscall && err.path !== undefined) {
      // "ENOENT: no such file or directory, open '/x'" -> "/x: no such file or directory (open)"
      const m = /^[A-Z0-9_]+: ([^,]+),/.exec(err.message);
      return `${String(err.path)}: ${m ? m[1] : err.code} (${err.syscall})`;
    }
    return e.message;
  }
  return String(e);
}

/**
 * Whether an error is a bug rather than bad input or usage: a CfsError of kind 'internal', or
 * one of the errors JavaScript itself throws for broken code (a TypeError from reading a field of
 * undefined, a failed assertion). Everything else is one line: the library's input and usage
 * errors, errno errors (with their path) and the plain errors whose message names the input.
 * RangeError stays one line: Node reports input limits with it (ERR_FS_FILE_TOO_LARGE,
 * "Array buffer allocation failed").
 */
function isBug(e: unknown): boolean {
  if (e instanceof CfsError) return e.kind === 'internal';
  if (!(e instanceof Error)) return true;
  if ((e as NodeJS.ErrnoException).code === 'ERR_ASSERTION') return true;
  return e instanceof TypeError || e instanceof ReferenceError || e instanceof SyntaxError || e instanceof EvalError || e instanceof URIError;
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = makeProgram();
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed its message (or the help / version text).
      return e.exitCode === 0 ? 0 : EXIT_ERROR;
    }
    if (isBug(e)) {
      // Not something the input or the user did: show where, so that it can be reported.
      process.stderr.write(`cfs: internal error (please report this): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      return EXIT_ERROR;
    }
    process.stderr.write(`cfs: ${describe(e)}\n`);
    if (process.env.CFS_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    if (e instanceof UsageError) process.stderr.write(`(run 'cfs --help' for usage)\n`);
    return EXIT_ERROR;
  }
}

/**
 * Interrupts and a failing standard output end the process at once, like the default signal
 * actions would, but first remove our temporary files (repository objects, -o outputs).
 * SIGINT/SIGTERM/SIGHUP exit 128+N, the shell's convention. A write error on standard output
 * (a full disk, /dev/full) is one line and exit 2; a reader that went away (EPIPE, `| head`)
 * ends it quietly with exit 2, as the pipe's SIGPIPE ends other tools (never 1: "different").
 */
function exitCleanlyOnInterrupts(): void {
  const signals: [NodeJS.Signals, number][] = [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]];
  for (const [sig, code] of signals) {
    process.on(sig, () => exitRemovingTemps(code));
  }
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') process.stderr.write(`cfs: standard output: ${errnoReason(e)} (${e.syscall ?? 'write'})\n`);
    exitRemovingTemps(EXIT_ERROR);
  });
  // Nothing sensible is left to do when stderr itself fails; never a crash about it.
  process.stderr.on('error', () => {});
  process.on('exit', abandonTemps);
}

/**
 * Ends the process once standard output and error have taken everything written (a write's
 * callback runs after every earlier write): the command has finished, and its files are
 * complete or removed. Waiting for the event loop to run dry and for Node's orderly teardown
 * (freeing the environment and the heap) adds tens of milliseconds to every run and does
 * nothing cfs needs.
 */
function endOnceWritten(code: number): void {
  let pending = 2;
  let failed = false;
  // A stream that failed is left to its 'error' handler (exitCleanlyOnInterrupts): exit 2.
  const done = (e?: Error | null) => {
    if (e) failed = true;
    if (--pending === 0 && !failed) exitRemovingTemps(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

// This module is the process's entry point (hash workers run a script of their own, embedded in
// bundled builds: src/fsverity/pool.ts), so node:worker_threads is not loaded at start-up.
{
  keepYoungGenerationSmall();
  exitCleanlyOnInterrupts();
  let settled = false;
  main(process.argv).then((code) => {
    settled = true;
    process.exitCode = code;
    endOnceWritten(code);
  });
  // If the event loop runs dry while the command is still pending, some awaited work lost its
  // handle: never let that pass as a silent success.
  process.on('beforeExit', () => {
    if (settled) return;
    settled = true;
    process.stderr.write('cfs: internal error: the work stopped before it finished (please report this)\n');
    process.exitCode = EXIT_ERROR;
  });
}
