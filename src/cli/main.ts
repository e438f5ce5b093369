/**
 * `cfs`: compute composefs images and their fs-verity digests.
 *
 * Exit codes: 0 success; 1 "different" (a digest did not match `--expect`); 2 any error
 * (bad usage, bad input, I/O). Errors are one line on stderr, never a stack trace
 * (set CFS_DEBUG=1 to get one).
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { isMainThread, workerData } from 'node:worker_threads';
import { runHashWorker } from '../fsverity/hash-worker.js';
import { setWorkerEntry } from '../fsverity/pool.js';
import { ImageError, readErofs } from '../erofs/reader.js';
import { ErofsVersion, writeErofs } from '../erofs/writer.js';
import { dumpfileChunks } from '../dumpfile/write.js';
import { fsverityDigest, fsverityDigestFile } from '../fsverity/fsverity.js';
import type { HashAlg } from '../tree/tree.js';
import { writeFileAtomic } from './atomic.js';
import { EXIT_ERROR, UsageError } from './errors.js';
import { loadSource } from './source.js';

export const VERSION = '0.1.0';

interface GlobalOpts {
  hash: HashAlg;
  erofsVersion: ErofsVersion;
}

const SOURCE_HELP = `
SOURCE is one of:
  dumpfile:PATH    a composefs dumpfile (PATH '-' reads standard input)

The object hash of a dumpfile source is taken from its DIGEST fields; --hash selects the
hash of the image id.
`;

function parseErofsVersion(v: string): ErofsVersion {
  if (v === '0' || v === '1' || v === '2') return Number(v) as ErofsVersion;
  throw new InvalidArgumentError('must be 0, 1 or 2');
}

async function writeStdout(chunks: Iterable<string | Uint8Array>): Promise<void> {
  for (const c of chunks) {
    if (!process.stdout.write(c)) await new Promise((r) => process.stdout.once('drain', r));
  }
}

/** Builds the image of a source (the shared core of compute-id and create-image). */
async function buildImage(source: string, g: GlobalOpts): Promise<{ image: Buffer; id: Buffer }> {
  const { fs } = await loadSource(source, { hash: g.hash });
  const image = writeErofs(fs, g.erofsVersion);
  return { image, id: fsverityDigest(image, g.hash) };
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
    .addOption(new Option('--hash <alg>', 'hash of the image id (and of new object ids)').choices(['sha256', 'sha512']).default('sha512'))
    .addOption(new Option('--erofs-version <n>', 'EROFS format: 0 and 1 are the C mkcomposefs layouts, 2 the older composefs-rs layout').argParser(parseErofsVersion).default(1))
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `${SOURCE_HELP}

Exit status: 0 success, 1 digests differ (--expect), 2 error.`,
    );

  const globals = (cmd: Command): GlobalOpts => cmd.optsWithGlobals() as GlobalOpts;

  program
    .command('compute-id')
    .description('print the image id: the fs-verity digest of the composefs image of SOURCE (hex)')
    .argument('<source>', 'what to build the image from (see SOURCE below)')
    .addHelpText('after', SOURCE_HELP)
    .action(async (source: string, _o: unknown, cmd: Command) => {
      const { id } = await buildImage(source, globals(cmd));
      process.stdout.write(`${id.toString('hex')}\n`);
    });

  program
    .command('create-image')
    .description('write the composefs image of SOURCE to a file (atomically) and print its id as ALG:HEX')
    .argument('<source>', 'what to build the image from (see SOURCE below)')
    .requiredOption('-o, --output <image>', 'image file to write')
    .addHelpText('after', SOURCE_HELP)
    .action(async (source: string, o: { output: string }, cmd: Command) => {
      const g = globals(cmd);
      const { image, id } = await buildImage(source, g);
      await writeFileAtomic(o.output, [image]);
      process.stdout.write(`${g.hash}:${id.toString('hex')}\n`);
    });

  program
    .command('create-dumpfile')
    .description('print the composefs dumpfile of the tree built from SOURCE')
    .argument('<source>', 'what to build the tree from (see SOURCE below)')
    .option('-o, --output <file>', 'write to this file (atomically) instead of standard output')
    .addHelpText('after', SOURCE_HELP)
    .action(async (source: string, o: { output?: string }, cmd: Command) => {
      const { fs } = await loadSource(source, { hash: globals(cmd).hash });
      if (o.output) await writeFileAtomic(o.output, dumpfileChunks(fs));
      else await writeStdout(dumpfileChunks(fs));
    });

  program
    .command('dump')
    .description('print the dumpfile of an existing composefs image (any format: V0, V1, V2, C mkcomposefs)')
    .argument('<image>', 'composefs EROFS image file')
    .action(async (imagePath: string) => {
      const image = await readFile(imagePath);
      let fs;
      try {
        ({ fs } = readErofs(image));
      } catch (e) {
        if (e instanceof ImageError) throw new Error(`${imagePath}: ${e.message}`);
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
        for (const alg of algs) {
          const d = await fsverityDigestFile(f, alg);
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
    process.stderr.write(`cfs: ${describe(e)}\n`);
    if (process.env.CFS_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    if (e instanceof UsageError) process.stderr.write(`(run 'cfs --help' for usage)\n`);
    return EXIT_ERROR;
  }
}

/** The file this code runs from (the bundle, in a bundled build). */
function selfFile(): string {
  return fileURLToPath(import.meta.url);
}

const bundled = (globalThis as { __cfsBundled?: boolean }).__cfsBundled === true;
if (!isMainThread && (workerData as { cfsWorker?: string } | null)?.cfsWorker === 'hash') {
  runHashWorker();
} else if (isMainThread) {
  // A single-file bundle has no separate worker script: workers re-enter this file.
  if (bundled) setWorkerEntry(selfFile(), { cfsWorker: 'hash' });
  main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
