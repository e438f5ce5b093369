/**
 * npm run bench -- [--hash sha256|sha512] [--jobs N] [SOURCE...]
 *
 * Times `cfs compute-id` on each SOURCE (a directory by default, or any SOURCE kind) and, for
 * directories, the floor: the same external files (> 64 bytes) hashed by `fsverity digest`
 * (C, OpenSSL) on all cores. Prints wall time, CPU time, peak RSS, throughput and the ratio.
 * Without a SOURCE it generates a synthetic tree under /tmp (a few hundred MB, OS-like sizes).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CFS = path.join(ROOT, 'dist/cfs.mjs');

interface Run {
  wall: number;
  cpu: number;
  rss: number;
  out: string;
}

/** Runs a command under /usr/bin/time to get CPU time and peak RSS. */
function timed(cmd: string[], input?: string): Run {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', ...cmd], { input, maxBuffer: 1 << 30 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const err = r.stderr.toString().trim().split('\n');
  const [u, s, m] = err[err.length - 1].split(' ').map(Number);
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed: ${err.join('\n')}`);
  return { wall, cpu: u + s, rss: m * 1024, out: r.stdout.toString() };
}

/** External files (> 64 bytes, regular) of a directory and their total size. */
function externalFiles(dir: string): { files: string[]; bytes: number } {
  const files: string[] = [];
  let bytes = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile() && st.size > 64) {
        files.push(p);
        bytes += st.size;
      }
    }
  }
  return { files, bytes };
}

/** A synthetic tree with an OS-like size mix (many small files, some large). */
function synthetic(dir: string, totalMB: number): void {
  if (existsSync(path.join(dir, '.done'))) return;
  mkdirSync(path.join(dir, 'usr'), { recursive: true });
  let left = totalMB * 1e6;
  let i = 0;
  const sizes = [200, 1500, 6000, 20000, 90000, 400000, 3000000];
  const weights = [30, 30, 15, 10, 8, 5, 2];
  while (left > 0) {
    const r = Math.random() * 100;
    let acc = 0;
    let k = 0;
    while ((acc += weights[k]) < r) k++;
    const size = Math.max(65, Math.round(sizes[k] * (0.5 + Math.random())));
    const sub = path.join(dir, 'usr', `d${i % 97}`, `e${i % 13}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(path.join(sub, `f${i}`), randomBytes(size));
    left -= size;
    i++;
  }
  writeFileSync(path.join(dir, '.done'), '');
}

const args = process.argv.slice(2);
let hash = 'sha256';
let jobs = availableParallelism();
const sources: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--hash') hash = args[++i];
  else if (args[i] === '--jobs') jobs = Number(args[++i]);
  else sources.push(args[i]);
}
if (sources.length === 0) {
  const dir = '/tmp/cfs-bench-tree';
  process.stderr.write(`generating ${dir} (300 MB synthetic tree)…\n`);
  synthetic(dir, 300);
  sources.push(dir);
}

const mb = (b: number) => (b / 1e6).toFixed(1);
for (const src of sources) {
  const isDir = existsSync(src) && lstatSync(src).isDirectory();
  console.log(`\n== ${src} (--hash ${hash}, ${jobs} jobs)`);
  let bytes = 0;
  let files: string[] = [];
  if (isDir) ({ files, bytes } = externalFiles(src));
  // warm the page cache so both sides measure hashing, not the disk
  if (isDir) spawnSync('sh', ['-c', `find '${src}' -type f -exec cat {} + > /dev/null`]);
  const cfs = timed([process.execPath, CFS, '--hash', hash, 'compute-id', '--jobs', String(jobs), src]);
  const row = (name: string, r: Run) =>
    console.log(
      `${name.padEnd(28)} wall ${r.wall.toFixed(2)} s  cpu ${r.cpu.toFixed(2)} s  peak RSS ${mb(r.rss)} MB` +
        (bytes ? `  ${(bytes / 1e6 / r.wall).toFixed(0)} MB/s` : ''),
    );
  row('cfs compute-id', cfs);
  if (isDir && files.length) {
    const floor = timed(['sh', '-c', `xargs -0 -P ${jobs} -n 256 fsverity digest --hash-alg=${hash} > /dev/null`], files.join('\0'));
    row('floor: fsverity digest', floor);
    console.log(`external files: ${files.length}, ${mb(bytes)} MB; cfs reaches ${((floor.wall / cfs.wall) * 100).toFixed(0)}% of the floor's throughput`);
  }
}
