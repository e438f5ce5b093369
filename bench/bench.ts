/**
 * npm run bench -- [--hash sha256|sha512|both] [--jobs N] [--only NAME,...] [--cfs PATH]
 *                   [--pairs N] [--no-peer] [--no-tar] [DIR...]
 *
 * Times `cfs compute-id` side by side with the floor, on directory and tarball sources, for
 * SHA-256 and SHA-512 (both by default). Each row: wall time, CPU time (user+sys), peak RSS,
 * throughput (external-file bytes per wall second) and the ratio to the floor:
 *
 *  - directory source: floor = the same external files (> 64 bytes) hashed by `fsverity digest`
 *    (C, OpenSSL) on all cores; "ratio" = floor wall / cfs wall (100% = as fast as the floor);
 *  - tarball source (`layers:X.tar`, uncompressed): throughput of the tar bytes; the floor is
 *    `openssl dgst -shaN` of the tar (one pass of the hash over the stream, one core);
 *  - gzip tarball (`layers:X.tar.gz`): floor = `gzip -dc X | openssl dgst` (decompression +
 *    hashing, pipelined).
 *
 * Peer (directory sources, SHA-256, trees deb, deb8, os2g, small): C `mkcomposefs
 * --print-digest-only` 1.0.8, what users would otherwise run. bench/mkcomposefs.sh obtains it
 * once from Debian's source package into ~/.cache (outside the repository); where it cannot,
 * the peer is skipped with one line saying why. Both sides build the same image: mkcomposefs
 * with `--min-version=1` (its default picks format 0) and cfs with `--erofs-version 1
 * --no-propagate-usr-to-root` (mkcomposefs takes the tree as it is: no transform_for_oci).
 * `--pairs N` (default 3) interleaved runs; the row shows the median pair (by wall ratio) and
 * ratio = cfs / mkcomposefs (wall, CPU, RSS; < 1.00x = cfs better). The two digests must be
 * equal (an independent oracle): a difference is printed as DIGEST MISMATCH and the bench
 * exits 1.
 *
 * Trees (generated once under /var/tmp/cfs-bench and reused; DIR arguments replace the
 * debootstrap root):
 *  - deb:    a debootstrap bookworm minbase root (the DIR arguments if given; generated with
 *            debootstrap from the Debian mirror apt already uses, skipped where it cannot be);
 *  - deb8:   8 copies of deb (`cp -a`): the root is one, /copy2 … /copy8 the others;
 *  - os2g:   synthetic 2 GB / 60k files, OS-like size mix;
 *  - small:  500k entries, small files (half inline, half 65..4096 bytes), 1000 per directory;
 *  - sparse: one 8 GB sparse file.
 * `--only deb,os2g` restricts the trees; `--no-tar` skips tarball sources.
 *
 * The program measured is the shipped `dist/cfs` (`--cfs 'node dist/cfs.mjs'` for the bundle;
 * without `--jobs`, cfs picks its own parallelism, as users run it). The machine's own speed
 * varies from run to run: compare rows of one run, not figures of different runs.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, ftruncateSync, writeFileSync, writeSync, renameSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BENCH_DIR = '/var/tmp/cfs-bench';
/** Trees the peer runs on (the issue's rows); sparse would only time hashing 8 GB of zeros. */
const PEER_TREES = ['deb', 'deb8', 'os2g', 'small'];

interface Run {
  wall: number;
  cpu: number;
  rss: number;
  out: string;
}

/** Runs a command under /usr/bin/time to get CPU time and peak RSS (of the largest process). */
function timed(cmd: string[], input?: string): Run {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', ...cmd], { input, maxBuffer: 1 << 30 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const err = r.stderr.toString().trim().split('\n');
  const [u, s, m] = err[err.length - 1].split(' ').map(Number);
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed: ${err.join('\n')}`);
  return { wall, cpu: u + s, rss: m * 1024, out: r.stdout.toString() };
}

/** Runs a command without timing it (digest checks): stdout, or undefined with the reason. */
function run(cmd: string[]): { out?: string; err: string } {
  const r = spawnSync(cmd[0], cmd.slice(1), { maxBuffer: 1 << 30 });
  const err = (r.error?.message ?? r.stderr?.toString() ?? '').trim();
  return r.status === 0 ? { out: r.stdout.toString(), err } : { err: err.split('\n').pop() || `exit ${r.status}` };
}

function sh(script: string): void {
  const r = spawnSync('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`failed: ${script}`);
}

/** External files (> 64 bytes, regular, first name of each inode) of a directory and their total size. */
function externalFiles(dir: string): { files: string[]; bytes: number } {
  const files: string[] = [];
  const seen = new Set<string>();
  let bytes = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile() && st.size > 64) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
        files.push(p);
        bytes += st.size;
      }
    }
  }
  return { files, bytes };
}

/** Creates `dir` by running `fill(tmp)` into a temporary sibling, then renaming (reused afterwards). */
function generate(dir: string, what: string, fill: (tmp: string) => void): string {
  if (existsSync(dir)) return dir;
  process.stderr.write(`generating ${dir} (${what}; once, reused)…\n`);
  const tmp = `${dir}.tmp`;
  sh(`rm -rf '${tmp}'`);
  mkdirSync(tmp, { recursive: true });
  fill(tmp);
  renameSync(tmp, dir);
  return dir;
}

/** Deterministic pseudo-random numbers (the trees are the same on every machine). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** ~2 GB in ~60k files with an OS-like size mix (many small files, a few large ones). */
function os2g(dir: string): void {
  const rand = rng(1);
  // size class (bytes) and share of files; mean ≈ 34 KB
  const classes: [number, number][] = [
    [40, 22],
    [600, 20],
    [3000, 20],
    [12000, 18],
    [50000, 13],
    [200000, 4],
    [1000000, 0.8],
    [16000000, 0.05],
  ];
  const total = classes.reduce((a, [, w]) => a + w, 0);
  const pool = randomBytes(64 << 20);
  let left = 2e9;
  let i = 0;
  while (left > 0) {
    let r = rand() * total;
    let k = 0;
    while ((r -= classes[k][1]) > 0 && k < classes.length - 1) k++;
    const size = Math.max(1, Math.round(classes[k][0] * (0.3 + 1.4 * rand())));
    const sub = path.join(dir, 'usr', `d${i % 211}`, `e${i % 7}`);
    if (i < 211 * 7) mkdirSync(sub, { recursive: true });
    const fd = openSync(path.join(sub, `f${i}`), 'w');
    for (let off = 0; off < size; ) {
      const n = Math.min(size - off, pool.length);
      const start = Math.floor(rand() * (pool.length - n));
      off += writeSync(fd, pool, start, n);
    }
    closeSync(fd);
    left -= size;
    i++;
  }
}

/** 500k entries: small files, half of them inline (≤ 64 bytes), 1000 per directory. */
function small500k(dir: string): void {
  const rand = rng(2);
  const pool = randomBytes(1 << 20);
  for (let d = 0; d < 500; d++) {
    const sub = path.join(dir, 'usr', `d${d}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < 1000; f++) {
      const size = f % 2 === 0 ? Math.floor(rand() * 65) : 65 + Math.floor(rand() * 4032);
      const start = Math.floor(rand() * (pool.length - size));
      writeFileSync(path.join(sub, `f${f}`), pool.subarray(start, start + size));
    }
  }
}

/** The Debian archive apt on this machine already uses (not naming a mirror of our own). */
function debianMirror(): string | undefined {
  const r = run(['apt-get', 'indextargets', '--format', '$(REPO_URI) $(CODENAME) $(ORIGIN)']);
  for (const line of (r.out ?? '').split('\n')) {
    const [uri, codename, origin] = line.split(' ');
    if (origin === 'Debian' && codename && !codename.includes('-')) return uri;
  }
  return undefined;
}

/** The debootstrap root, generated once; undefined (with one line why) where it cannot be. */
function debRoot(): string | undefined {
  const dir = path.join(BENCH_DIR, 'deb-bookworm-minbase');
  if (existsSync(dir)) return dir;
  const mirror = debianMirror();
  const why = process.getuid?.() !== 0 ? 'needs root' : !run(['sh', '-c', 'command -v debootstrap']).out ? 'debootstrap not installed' : !mirror ? 'apt has no Debian archive configured' : '';
  if (why) {
    console.log(`deb: skipped (debootstrap root: ${why}; or pass a DIR)`);
    return undefined;
  }
  try {
    return generate(dir, 'debootstrap --variant=minbase bookworm', (tmp) => sh(`debootstrap --variant=minbase bookworm '${tmp}' '${mirror}' > '${tmp}.log' 2>&1 && rm -f '${tmp}.log'`));
  } catch {
    console.log(`deb: skipped (debootstrap failed, see ${dir}.tmp.log)`);
    return undefined;
  }
}

function sparse8g(dir: string): void {
  mkdirSync(path.join(dir, 'usr'));
  const fd = openSync(path.join(dir, 'usr', 'sparse'), 'w');
  ftruncateSync(fd, 8 * 2 ** 30);
  closeSync(fd);
}

/** A tar of `dir` (and, with gzip, its gzip) in BENCH_DIR. */
function tarOf(name: string, dir: string, gzip: boolean): string {
  const tar = path.join(BENCH_DIR, `${name}.tar`);
  if (!existsSync(tar)) {
    process.stderr.write(`creating ${tar}…\n`);
    sh(`tar --numeric-owner -C '${dir}' -cf '${tar}.tmp' . && mv '${tar}.tmp' '${tar}'`);
  }
  if (!gzip) return tar;
  const gz = `${tar}.gz`;
  if (!existsSync(gz)) {
    process.stderr.write(`creating ${gz}…\n`);
    sh(`gzip -6 -c '${tar}' > '${gz}.tmp' && mv '${gz}.tmp' '${gz}'`);
  }
  return gz;
}

// --- arguments ---------------------------------------------------------------------------------
const args = process.argv.slice(2);
let hashes = ['sha256', 'sha512'];
let jobs = availableParallelism();
/** `--jobs` for cfs only when asked for: by default cfs picks its own (as users run it). */
let jobsArg: string[] = [];
let only: string[] | undefined;
let withTar = true;
let withPeer = true;
let pairs = 3;
// The shipped single executable, as users run it (dist/cfs.mjs with --cfs 'node dist/cfs.mjs'
// is the same code; it pays Node's start-up work that the executable skips).
let cfs = existsSync(path.join(ROOT, 'dist/cfs')) ? [path.join(ROOT, 'dist/cfs')] : [process.execPath, path.join(ROOT, 'dist/cfs.mjs')];
const dirs: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--hash') hashes = args[++i] === 'both' ? ['sha256', 'sha512'] : [args[i]];
  else if (a === '--jobs') {
    jobs = Number(args[++i]);
    jobsArg = ['--jobs', String(jobs)];
  }
  else if (a === '--only') only = args[++i].split(',');
  else if (a === '--no-tar') withTar = false;
  else if (a === '--no-peer') withPeer = false;
  else if (a === '--pairs') pairs = Math.max(1, Number(args[++i]) || 1);
  else if (a === '--cfs') cfs = args[++i].split(' ');
  else if (a === '--help' || a === '-h') {
    process.stdout.write(
      'npm run bench -- [--hash sha256|sha512|both] [--jobs N] [--only deb,deb8,os2g,small,sparse] [--cfs PATH]\n' +
        '                 [--pairs N] [--no-peer] [--no-tar] [DIR...]\n' +
        'Times cfs compute-id against the fsverity-digest floor and C mkcomposefs (the peer); see bench/bench.ts.\n',
    );
    process.exit(0);
  } else if (a.startsWith('-')) {
    process.stderr.write(`bench: unknown option ${a} (--help lists them)\n`);
    process.exit(2);
  } else dirs.push(a);
}

interface Tree {
  name: string;
  dir: string;
  tar: boolean;
  gzip: boolean;
}
const trees: Tree[] = [];
const want = (n: string) => !only || only.includes(n);
mkdirSync(BENCH_DIR, { recursive: true });
if (dirs.length) dirs.forEach((d, i) => trees.push({ name: i ? `dir${i}` : 'deb', dir: d, tar: true, gzip: true }));
else if (want('deb') || want('deb8')) {
  const deb = debRoot();
  if (deb && want('deb')) trees.push({ name: 'deb', dir: deb, tar: true, gzip: true });
  if (deb && want('deb8')) {
    // The root is copy 1 (so it has the /usr that cfs's default transform_for_oci needs), with
    // copies 2..8 beside its own directories.
    const dir = generate(path.join(BENCH_DIR, 'deb-x8'), '8 copies of the debootstrap root', (tmp) => {
      sh(`cp -a '${deb}/.' '${tmp}/'`);
      for (let k = 2; k <= 8; k++) sh(`cp -a '${deb}' '${tmp}/copy${k}'`);
    });
    trees.push({ name: 'deb8', dir, tar: false, gzip: false });
  }
}
if (want('os2g')) trees.push({ name: 'os2g', dir: path.join(BENCH_DIR, 'os-2g-60k'), tar: true, gzip: false });
if (want('small')) trees.push({ name: 'small', dir: path.join(BENCH_DIR, 'small-500k'), tar: true, gzip: false });
if (want('sparse')) trees.push({ name: 'sparse', dir: path.join(BENCH_DIR, 'sparse-8g'), tar: false, gzip: false });

const mb = (b: number) => (b / 1e6).toFixed(1);
const row = (name: string, r: Run, bytes: number, floor?: Run, note = '') =>
  console.log(
    `${name.padEnd(34)} wall ${r.wall.toFixed(2).padStart(6)} s  cpu ${r.cpu.toFixed(2).padStart(6)} s  peak RSS ${mb(r.rss).padStart(7)} MB` +
      `  ${(bytes / 1e6 / r.wall).toFixed(0).padStart(5)} MB/s` +
      (floor ? `  ${((floor.wall / r.wall) * 100).toFixed(0).padStart(3)}% of floor` : '') +
      note,
  );

/** The peer's path, or undefined after one line saying why it is skipped. */
function peerBinary(): string | undefined {
  if (!withPeer) return undefined;
  if (!hashes.includes('sha256')) {
    console.log('peer: skipped (mkcomposefs has SHA-256 only)');
    return undefined;
  }
  if (!trees.some((t) => PEER_TREES.includes(t.name))) return undefined;
  const r = spawnSync('sh', [path.join(ROOT, 'bench/mkcomposefs.sh')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const err = r.stderr.toString().trim();
  if (r.status !== 0) {
    console.log(err.split('\n').pop() || 'mkcomposefs peer unavailable');
    return undefined;
  }
  if (err) process.stderr.write(err + '\n');
  return r.stdout.toString().trim();
}
const peer = peerBinary();
let mismatches = 0;

/**
 * The dumpfile with every hard link made a file of its own (nlink 1), as C mkcomposefs 1.0.8
 * reads a directory: its lcfs_build() (libcomposefs/lcfs-writer.c) makes a new node with nlink 1
 * for every name and never keys by inode, where composefs-rs (and cfs) keep one inode per
 * (st_dev, st_ino) (HardlinkBehavior::Tracked, crates/composefs/src/fs.rs). Dumpfile fields are
 * escaped, so splitting on spaces is exact: PATH SIZE MODE NLINK …; a hard link is
 * `PATH 0 @MODE - - - - 0.0 TARGET - -`.
 */
function splitHardlinks(dump: string): { text: string; links: number } {
  const lines = dump.split('\n').filter((l) => l);
  const rest = new Map<string, string[]>();
  for (const l of lines) {
    const f = l.split(' ');
    if (!f[2].startsWith('@')) rest.set(f[0], f.slice(1));
  }
  let links = 0;
  const out = lines.map((l) => {
    const f = l.split(' ');
    if (f[2].startsWith('@')) {
      links++;
      f.splice(1, f.length - 1, ...rest.get(f[8])!);
    }
    if (!f[2].startsWith('4')) f[3] = '1';
    return f.join(' ');
  });
  return { text: out.join('\n') + '\n', links };
}

/**
 * Checks cfs against mkcomposefs on one tree: the directory digests must be equal, except that
 * mkcomposefs does not keep hard links (see splitHardlinks). Then both of these must hold:
 * mkcomposefs --from-file on cfs's dumpfile gives cfs's digest (the image writer), and on that
 * dumpfile with its hard links split gives mkcomposefs's directory digest (the tree read).
 */
function checkDigests(t: Tree, cfsCmd: string[], dc: string, dm: string): string {
  if (dc === dm) return 'digest equal';
  const dumpCmd = cfsCmd.map((a) => (a === 'compute-id' ? 'create-dumpfile' : a));
  const dump = run(dumpCmd);
  const fromFile = (text: string) => spawnSync(peer!, ['--from-file', '--min-version=1', '--print-digest-only', '-'], { input: text, maxBuffer: 1 << 30 }).stdout?.toString().trim();
  const split = dump.out !== undefined ? splitHardlinks(dump.out) : undefined;
  const writer = dump.out !== undefined ? fromFile(dump.out) : undefined;
  const reader = split ? fromFile(split.text) : undefined;
  if (split && split.links > 0 && writer === dc && reader === dm)
    return `digests differ by hard links only (${split.links} names): mkcomposefs does not keep them; its --from-file of cfs's dumpfile gives cfs's digest, of it with the links split its own`;
  mismatches++;
  console.log(
    `DIGEST MISMATCH on ${t.dir}: cfs ${dc}, mkcomposefs ${dm}; mkcomposefs --from-file of cfs's dumpfile: ${writer ?? dump.err}` +
      (split ? `, with its ${split.links} hard links split: ${reader}` : ''),
  );
  return 'digest DIFFERENT';
}

/** Interleaved cfs / mkcomposefs pairs on one tree (same image on both sides), digests compared. */
function peerRows(t: Tree, bytes: number): void {
  if (!peer || !PEER_TREES.includes(t.name)) return;
  const cfsCmd = [...cfs, '--hash', 'sha256', 'compute-id', '--erofs-version', '1', '--no-propagate-usr-to-root', '--layer-mtimes', 'keep', ...jobsArg, t.dir];
  const peerCmd = [peer, '--min-version=1', '--print-digest-only', t.dir];
  const got: [Run, Run][] = [];
  for (let k = 0; k < pairs; k++) got.push([timed(cfsCmd), timed(peerCmd)]);
  const verdict = checkDigests(t, cfsCmd, got[0][0].out.trim(), got[0][1].out.trim());
  got.sort((a, b) => a[0].wall / a[1].wall - b[0].wall / b[1].wall);
  const [c, m] = got[Math.floor((got.length - 1) / 2)];
  const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  row(`sha256 dir:  cfs V1, raw tree`, c, bytes);
  row(`sha256 dir:  peer mkcomposefs`, m, bytes);
  console.log(
    `sha256 dir:  cfs / mkcomposefs       wall ${x(c.wall, m.wall)}  cpu ${x(c.cpu, m.cpu)}  peak RSS ${x(c.rss, m.rss)}` +
      `  (median of ${got.length} interleaved pair${got.length > 1 ? 's' : ''})`,
  );
  console.log(`sha256 dir:  ${verdict}`
  );
}

console.log(`cfs: ${cfs.join(' ')}; ${jobs} jobs; ${availableParallelism()} cores${peer ? `; peer: ${peer}` : ''}`);
for (const t of trees.filter((x) => want(x.name))) {
  if (t.name === 'os2g') generate(t.dir, '2 GB / 60k files', os2g);
  if (t.name === 'small') generate(t.dir, '500k small files', small500k);
  if (t.name === 'sparse') generate(t.dir, 'one 8 GB sparse file', sparse8g);
  const { files, bytes } = externalFiles(t.dir);
  console.log(`\n== ${t.name}: ${t.dir} — ${files.length} external files, ${mb(bytes)} MB`);
  // warm the page cache so both sides measure hashing, not the disk
  sh(`find '${t.dir}' -type f -size +64c -print0 | xargs -0 -P ${jobs} -n 256 cat > /dev/null`);
  for (const hash of hashes) {
    const c = timed([...cfs, '--hash', hash, 'compute-id', ...jobsArg, t.dir]);
    const floor = files.length
      ? timed(['sh', '-c', `xargs -0 -P ${jobs} -n 256 fsverity digest --hash-alg=${hash} > /dev/null`], files.join('\0'))
      : undefined;
    row(`${hash} dir:  cfs compute-id`, c, bytes, floor);
    if (floor) row(`${hash} dir:  floor fsverity digest`, floor, bytes);
    if (hash === 'sha256') peerRows(t, bytes);
  }
  if (!withTar || !t.tar) continue;
  const tar = tarOf(t.name, t.dir, false);
  const tarBytes = lstatSync(tar).size;
  sh(`cat '${tar}' > /dev/null`);
  for (const hash of hashes) {
    const c = timed([...cfs, '--hash', hash, 'compute-id', ...jobsArg, `layers:${tar}`]);
    const floor = timed(['sh', '-c', `openssl dgst -${hash} '${tar}' > /dev/null`]);
    row(`${hash} tar:  cfs compute-id`, c, tarBytes, floor, `  (${mb(tarBytes)} MB tar)`);
    row(`${hash} tar:  floor openssl dgst`, floor, tarBytes);
  }
  if (!t.gzip) continue;
  const gz = tarOf(t.name, t.dir, true);
  sh(`cat '${gz}' > /dev/null`);
  for (const hash of hashes) {
    const c = timed([...cfs, '--hash', hash, 'compute-id', ...jobsArg, `layers:${gz}`]);
    const floor = timed(['sh', '-c', `gzip -dc '${gz}' | openssl dgst -${hash} > /dev/null`]);
    row(`${hash} tgz:  cfs compute-id`, c, tarBytes, floor, `  (${mb(tarBytes)} MB uncompressed)`);
    row(`${hash} tgz:  floor gzip -dc | openssl`, floor, tarBytes);
  }
}

// Start-up time of the single-executable build (the issue's `dist/cfs --version`).
const sea = path.join(ROOT, 'dist/cfs');
if (existsSync(sea)) {
  const runs = Array.from({ length: 5 }, () => timed([sea, '--version']));
  const nodeRuns = Array.from({ length: 5 }, () => timed([process.execPath, '-e', '0']));
  const best = (rs: Run[]) => Math.min(...rs.map((r) => r.wall));
  console.log(`\nstart-up: dist/cfs --version best of 5 ${(best(runs) * 1000).toFixed(0)} ms (node -e 0: ${(best(nodeRuns) * 1000).toFixed(0)} ms)`);
}

if (mismatches) {
  console.log(`\n${mismatches} tree(s) where cfs and mkcomposefs disagree on the digest`);
  process.exitCode = 1;
}
