/** Shared test helpers: where the vectors are, temp dirs, running the CLI. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Project root (tests run from build/test/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The project's own copy of the golden vectors (the contract). */
export const GOLDEN = path.join(ROOT, 'test/vectors/golden');
/** C mkcomposefs outputs of the same kind of inputs. */
export const C_VECTORS = path.join(ROOT, 'test/vectors/erofs-v0-v1');
/** ../shared beside the project, when present. */
export const SHARED = path.resolve(ROOT, '../shared');

/** Names of the golden cases (NAME of NAME.dump). */
export function goldenCases(): string[] {
  return readdirSync(GOLDEN)
    .filter((f) => f.endsWith('.dump'))
    .map((f) => f.slice(0, -5))
    .sort();
}

export function readGolden(file: string): Buffer {
  return readFileSync(path.join(GOLDEN, file));
}

/** A fresh temporary directory, removed by the returned cleanup function. */
export function tempDir(prefix = 'cfs-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const CLI = path.join(ROOT, 'dist/cfs.mjs');

/** Runs the bundled CLI; returns status, stdout (Buffer) and stderr (string). */
export function runCfs(
  args: string[],
  input?: Buffer | string,
  as?: { uid: number; gid: number },
): { status: number; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, maxBuffer: 1 << 30, ...as });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** True when a command exists on PATH. */
export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Under CI (CI=true) a test that needs a tool or root must run, not skip. */
export const IN_CI = process.env.CI === 'true';

/** A CLI failure as users must see it: exit 2, one message matching `re`, no stack trace. */
export function assertCleanError(r: { status: number; stderr: string }, re: RegExp): void {
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.ok(r.stderr.startsWith('cfs: ') || r.stderr.startsWith('error: '), r.stderr);
}
