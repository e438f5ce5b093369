/**
 * Harness of the engine recipe tests (e2e-recipes-*.test.ts): the shared build context, the stage
 * the tests append to a recipe to record what the build saw, buildah/podman with private storage,
 * and a private dockerd. Everything lives under one temporary directory per test file; every
 * daemon, mount and storage directory started or made here is removed by `cleanup()`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IN_CI, ROOT, have, runCfs, tempDir } from './helpers.js';

export const COMBOS = [
  ['1', 'sha256'],
  ['1', 'sha512'],
  ['2', 'sha256'],
  ['2', 'sha512'],
] as const;
export type Combo = `V${'1' | '2'}-${'sha256' | 'sha512'}`;
export type Ids = Map<Combo, string>;

/**
 * Appended to a recipe: computes, in the build, every id from the same bind mount the recipe's
 * uki stage measured, as it is (`keep`: no option, so that compute-id's warning shows) and as the
 * layers carry it (`--layer-mtimes seconds`; with `epoch`, also `clamp`: that plus
 * `--clamp-mtime $SOURCE_DATE_EPOCH`, as BuildKit's rewrite-timestamp writes them), with
 * compute-id's warnings and the in-build dumpfile (what `cfs compare` is given), and copies the
 * uki stage's kernel argument. FROM uki, so that the uki image's layers are the base's plus two.
 */
function idsStage(epoch: boolean): string {
  const modes = epoch ? 'keep seconds clamp' : 'keep seconds';
  return `
FROM uki AS ids
${epoch ? 'ARG SOURCE_DATE_EPOCH\n' : ''}RUN --mount=type=bind,source=cfs,target=/usr/local/bin/cfs \\
    --mount=type=bind,from=base,target=/mnt/base \\
    --mount=type=cache,target=/var/cache/cfs \\
    export CFS_CACHE_DIR=/var/cache/cfs && mkdir -p /out \\
 && for m in ${modes}; do for v in 1 2; do for h in sha256 sha512; do \\
      case "$m" in keep) f= ;; seconds) f="--layer-mtimes seconds" ;; \\
        clamp) [ -n "$SOURCE_DATE_EPOCH" ] || continue; f="--layer-mtimes seconds --clamp-mtime $SOURCE_DATE_EPOCH" ;; esac; \\
      printf '%s V%s-%s ' "$m" "$v" "$h"; \\
      cfs --erofs-version "$v" --hash "$h" compute-id $f /mnt/base 2>>/out/warnings-$m || exit 1; \\
    done; done; done > /out/ids \\
 && cfs create-dumpfile /mnt/base > /out/inbuild.dump \\
 && cp /etc/kernel/cmdline /out/karg
FROM scratch AS out
COPY --from=ids /out /
`;
}
export const IDS_STAGE = idsStage(false);
/** IDS_STAGE with the `clamp` view too (needs the build argument SOURCE_DATE_EPOCH). */
export const IDS_STAGE_EPOCH = idsStage(true);

/** What the ids stage recorded. */
export interface InBuild {
  keep: Ids;
  seconds: Ids;
  /** --layer-mtimes seconds --clamp-mtime $SOURCE_DATE_EPOCH (IDS_STAGE_EPOCH only) */
  clamp: Ids;
  warningsKeep: string;
  warningsSeconds: string;
  warningsClamp: string;
  dump: string;
  karg: string;
}

/** Asserts every V/hash combination of two id sets is equal. */
export function assertIds(got: Ids, want: Ids, what: string): void {
  for (const [v, h] of COMBOS) assert.equal(got.get(`V${v}-${h}`), want.get(`V${v}-${h}`), `${what}: V${v} ${h}`);
}

export function readOut(dir: string): InBuild {
  const keep: Ids = new Map();
  const seconds: Ids = new Map();
  const clamp: Ids = new Map();
  for (const line of readFileSync(path.join(dir, 'ids'), 'utf8').trim().split('\n')) {
    const [m, k, v] = line.split(' ');
    (m === 'keep' ? keep : m === 'clamp' ? clamp : seconds).set(k as Combo, v);
  }
  const text = (f: string) => (existsSync(path.join(dir, f)) ? readFileSync(path.join(dir, f), 'utf8') : '');
  return {
    keep,
    seconds,
    clamp,
    warningsKeep: text('warnings-keep'),
    warningsSeconds: text('warnings-seconds'),
    warningsClamp: text('warnings-clamp'),
    dump: text('inbuild.dump'),
    karg: text('karg').trim(),
  };
}

/** A recipe from containerfiles/, optionally without its final base LABEL, plus the ids stage. */
export function recipe(file: string, opts: { stripLabel?: boolean; append?: string } = {}): string {
  let text = readFileSync(path.join(ROOT, 'containerfiles', file), 'utf8');
  if (opts.stripLabel) {
    const before = text;
    text = text.replace(/^LABEL org\.example\.composefs\.stage=base\n/m, '');
    assert.notEqual(text, before, `${file} ends its base stage with the LABEL`);
  }
  return text + (opts.append ?? IDS_STAGE);
}

/** The build context every recipe uses: rootfs.tar, payload.tar, and the `cfs` executable. */
export function makeContext(dir: string, payloadEpoch?: number): void {
  const sea = path.join(ROOT, 'dist/cfs');
  assert.ok(existsSync(sea), `${sea} is missing: run npm run build`);
  mkdirSync(dir, { recursive: true });
  execFileSync(path.join(ROOT, 'containerfiles/make-rootfs.sh'), [path.join(dir, 'rootfs.tar'), sea], { stdio: ['ignore', 'ignore', 'pipe'] });
  makePayload(dir, payloadEpoch);
  try {
    linkSync(sea, path.join(dir, 'cfs'));
  } catch {
    copyFileSync(sea, path.join(dir, 'cfs'));
  }
}

export function makePayload(dir: string, payloadEpoch?: number): void {
  const env = payloadEpoch === undefined ? process.env : { ...process.env, PAYLOAD_EPOCH: String(payloadEpoch) };
  execFileSync(path.join(ROOT, 'containerfiles/make-payload.sh'), [path.join(dir, 'payload.tar')], { env, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function cfs(args: string[]): string {
  const r = runCfs(args);
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString().trim();
}

/** `cfs compute-id` of SOURCE for every combination: the shipped image's ids. */
export function outsideIds(source: string): Ids {
  const ids: Ids = new Map();
  for (const [v, h] of COMBOS) ids.set(`V${v}-${h}`, cfs(['--erofs-version', v, '--hash', h, 'compute-id', source]));
  return ids;
}

/** One line of compare's summary (--json). */
export interface CauseCount {
  cause: string;
  paths: number;
  differences: number;
}

/**
 * `cfs compare` of the in-build dumpfile with the shipped image: exit status, text, and the
 * summary of --json as cause -> paths.
 */
export function compare(dump: string, source: string, work: string): { status: number; text: string; causes: Map<string, number> } {
  const file = path.join(work, `inbuild-${Math.random().toString(36).slice(2)}.dump`);
  writeFileSync(file, dump);
  const r = runCfs(['compare', `dumpfile:${file}`, source]);
  assert.notEqual(r.status, 2, r.stderr);
  const j = runCfs(['compare', '--json', `dumpfile:${file}`, source]);
  assert.equal(j.status, r.status, j.stderr);
  const json = JSON.parse(j.stdout.toString()) as { summary: CauseCount[] };
  return { status: r.status, text: r.stdout.toString(), causes: new Map(json.summary.map((c) => [c.cause, c.paths])) };
}

/** Formats ids for the test's diagnostics (the lead's note takes them from there). */
export function idLines(label: string, ids: Ids): string[] {
  return [...ids].map(([k, v]) => `${label} ${k} ${v}`);
}

/** Skips (outside CI) or fails (under CI=true) when a tool or root is missing. */
export function missing(tools: string[]): string {
  if (process.getuid?.() !== 0) return 'needs root (engines with private storage, overlay mounts)';
  for (const t of tools) if (!have(t)) return `${t} is not installed`;
  return '';
}

export function proceed(t: { skip: (m: string) => void }, why: string): boolean {
  if (!why) return true;
  if (IN_CI) throw new Error(`engine end-to-end test cannot run under CI: ${why}`);
  t.skip(`skipped: ${why}`);
  return false;
}

/** Mount points under `dir` (deepest first): what a failed RUN or a daemon can leave behind. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && m.startsWith(prefix))
    .sort()
    .reverse();
}

export function unmountAll(dir: string): void {
  for (const m of mountsUnder(dir)) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
}

/** The OCI layout's layer blobs of its only image, in order (for `layers:` sources). */
export function layoutLayers(layout: string): string[] {
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  assert.equal(index.manifests.length, 1, `${layout} holds one image`);
  const blob = (d: string) => path.join(layout, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), 'utf8')) as { layers: { digest: string }[] };
  return manifest.layers.map((l) => blob(l.digest));
}

/**
 * buildah and podman over one private containers/storage (--root/--runroot), with the cache
 * mounts (TMPDIR) and network configuration (CONTAINERS_CONF) kept in it too.
 */
export class Containers {
  readonly global: string[];
  readonly env: NodeJS.ProcessEnv;
  constructor(
    readonly dir: string,
    driver = process.env.CFS_E2E_STORAGE_DRIVER ?? 'overlay',
  ) {
    mkdirSync(path.join(dir, 'tmp'), { recursive: true });
    this.global = ['--root', path.join(dir, 'storage'), '--runroot', path.join(dir, 'run'), '--storage-driver', driver];
    writeFileSync(path.join(dir, 'containers.conf'), `[network]\nnetwork_config_dir = "${path.join(dir, 'net')}"\n`);
    this.env = { ...process.env, TMPDIR: path.join(dir, 'tmp'), CONTAINERS_CONF: path.join(dir, 'containers.conf') };
  }

  private run(cmd: string, args: string[]): string {
    const r = spawnSync(cmd, args, { env: this.env, encoding: 'utf8', maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).split('\n').slice(-25).join('\n')}`);
    return r.stdout;
  }

  buildah(args: string[]): string {
    return this.run('buildah', [...this.global, ...args]);
  }

  /** podman with runc (crun is not installed), no systemd, no events journal. */
  podman(args: string[]): string {
    const g = [...this.global, '--runtime', 'runc', '--tmpdir', path.join(this.dir, 'podman'), '--events-backend', 'none', '--cgroup-manager', 'cgroupfs'];
    return this.run('podman', [...g, ...args]);
  }

  /** Writes a Containerfile into the context and builds it with buildah bud (or podman build). */
  build(tool: 'buildah' | 'podman', context: string, text: string, args: string[]): void {
    const file = path.join(this.dir, `Containerfile-${Math.random().toString(36).slice(2)}`);
    writeFileSync(file, text);
    // OCI isolation (runc): chroot isolation has no network namespace, so it cannot take --network none
    const common = ['--isolation', 'oci', '--network', 'none', '-q', '-f', file, ...args, context];
    if (tool === 'buildah') this.buildah(['bud', '--runtime', 'runc', ...common]);
    else this.podman(['build', ...common]);
  }

  /** Copies DIR out of an image (through a working container). */
  copyOut(image: string, dir: string, dest: string): void {
    const ctr = this.buildah(['from', '--pull-never', image]).trim();
    try {
      const mnt = this.buildah(['mount', ctr]).trim();
      try {
        mkdirSync(dest, { recursive: true });
        for (const f of readdirSync(path.join(mnt, dir))) copyFileSync(path.join(mnt, dir, f), path.join(dest, f));
      } finally {
        this.buildah(['umount', ctr]);
      }
    } finally {
      this.buildah(['rm', ctr]);
    }
  }

  diffIds(image: string): string[] {
    return this.buildah(['inspect', '--type', 'image', '--format', '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}', image]).trim().split(/\s+/);
  }

  cleanup(): void {
    try {
      spawnSync('buildah', [...this.global, 'rm', '--all'], { env: this.env, stdio: 'ignore' });
      spawnSync('buildah', [...this.global, 'rmi', '--all', '--force'], { env: this.env, stdio: 'ignore' });
    } finally {
      unmountAll(this.dir);
    }
  }
}

/**
 * A private Docker daemon with its own data root, exec root, pidfile and unix socket, no iptables
 * and no bridge; it starts its own containerd under the exec root. By default Debian bookworm's
 * dockerd 20.10 (docker.io) and its client /usr/bin/docker (a docker on PATH before it, e.g.
 * /usr/local/bin/docker, may be another release that expects buildx). With `bin`, the daemon,
 * client, buildx plugin and containerd unpacked from Debian trixie's packages by
 * .ci/docker-trixie.sh (dockerd 26.1, BuildKit 0.13, buildx 0.13, containerd 1.7; runc stays
 * bookworm's); `containerdStore` turns on the containerd image store (snapshotter overlayfs).
 */
export class Dockerd {
  static readonly DOCKERD = '/usr/sbin/dockerd';
  static readonly CLIENT = '/usr/bin/docker';
  readonly sock: string;
  readonly pidfile: string;
  readonly dockerd: string;
  readonly client: string;
  private readonly path: string;
  private log = '';

  constructor(
    readonly dir: string,
    readonly driver: 'overlay2' | 'vfs' | 'containerd-store',
    readonly bin?: string,
  ) {
    this.sock = path.join(dir, 'docker.sock');
    this.pidfile = path.join(dir, 'dockerd.pid');
    this.dockerd = bin ? path.join(bin, 'usr/sbin/dockerd') : Dockerd.DOCKERD;
    this.client = bin ? path.join(bin, 'usr/bin/docker') : Dockerd.CLIENT;
    // trixie's containerd and shim first (dockerd starts `containerd` from PATH)
    this.path = bin ? `${path.join(bin, 'usr/bin')}:${path.join(bin, 'usr/sbin')}:${process.env.PATH ?? '/usr/bin:/bin'}` : (process.env.PATH ?? '');
  }

  static available(): string {
    if (!existsSync(Dockerd.DOCKERD) || !existsSync(Dockerd.CLIENT)) return `Debian's docker.io is not installed (${Dockerd.DOCKERD}, ${Dockerd.CLIENT})`;
    return '';
  }

  /** Where .ci/docker-trixie.sh unpacks trixie's Docker (the same default and variable). */
  static trixieRoot(): string {
    const dir = process.env.CFS_DOCKER_TRIXIE ?? path.join(process.env.HOME ?? '/root', '.cache/composefs-ts/docker-trixie');
    return path.join(dir, 'root');
  }

  /** Why trixie's Docker cannot run here, or ''. */
  static trixieAvailable(): string {
    const root = Dockerd.trixieRoot();
    if (!existsSync(path.join(root, '.complete'))) return `trixie's docker.io 26.1 + buildx are not unpacked in ${root} (run .ci/docker-trixie.sh)`;
    if (!have('runc')) return 'runc is not installed';
    return '';
  }

  /** Host directories dockerd creates whatever its roots (plugin discovery; 26.1 also /run/containerd), if they were absent before. */
  private created: string[] = [];

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    this.created = ['/run/docker', '/run/docker/plugins', '/run/containerd'].filter((d) => !existsSync(d));
    // a configuration file of its own, so that no /etc/docker/daemon.json of the host applies
    // (empty but for the containerd image store, a feature flag of the file in dockerd 26)
    const config = this.driver === 'containerd-store' ? { features: { 'containerd-snapshotter': true } } : {};
    writeFileSync(path.join(this.dir, 'daemon.json'), JSON.stringify(config) + '\n');
    if (this.bin) {
      // the buildx plugin, found through the client's private configuration directory
      mkdirSync(path.join(this.dir, 'client/cli-plugins'), { recursive: true });
      symlinkSync(path.join(this.bin, 'usr/libexec/docker/cli-plugins/docker-buildx'), path.join(this.dir, 'client/cli-plugins/docker-buildx'));
    }
    this.log = path.join(this.dir, 'dockerd.log');
    const args = [
      '--config-file', path.join(this.dir, 'daemon.json'),
      '--data-root', path.join(this.dir, 'data'),
      '--exec-root', path.join(this.dir, 'exec'),
      '--pidfile', this.pidfile,
      '-H', `unix://${this.sock}`,
      '--iptables=false', '--ip6tables=false', '--bridge=none',
      ...(this.driver === 'containerd-store' ? [] : ['--storage-driver', this.driver]),
    ];
    const out = openSync(this.log, 'a');
    const child = spawn(this.dockerd, args, { stdio: ['ignore', out, out], detached: true, env: { ...process.env, PATH: this.path } });
    child.unref();
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = spawnSync(this.client, ['-H', `unix://${this.sock}`, 'version', '--format', '{{.Server.Version}}'], { encoding: 'utf8' });
      if (r.status === 0) break;
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`dockerd (${this.driver}) did not start:\n${readFileSync(this.log, 'utf8').split('\n').slice(-15).join('\n')}`);
      }
      await new Promise((res) => setTimeout(res, 250));
    }
  }

  docker(args: string[], env: NodeJS.ProcessEnv = {}): string {
    const r = spawnSync(this.client, ['-H', `unix://${this.sock}`, ...args], {
      env: { ...process.env, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: path.join(this.dir, 'client'), ...env },
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    });
    if (r.status !== 0) throw new Error(`docker ${args.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).split('\n').slice(-30).join('\n')}`);
    return r.stdout + r.stderr;
  }

  /** Like docker() but returns the result instead of throwing. */
  tryDocker(args: string[]): { status: number; output: string } {
    const r = spawnSync(this.client, ['-H', `unix://${this.sock}`, ...args], {
      env: { ...process.env, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: path.join(this.dir, 'client') },
      encoding: 'utf8',
    });
    return { status: r.status ?? -1, output: r.stdout + r.stderr };
  }

  /**
   * Writes a Dockerfile into the daemon's directory and builds it (BuildKit, no network): `docker
   * build` with 20.10, `docker buildx build` (the daemon's own builder) with trixie's client.
   */
  /** Builds the recipe's `out` stage (the ids the build recorded) into `outDir` and reads it. */
  buildOut(context: string, text: string, outDir: string, args: string[] = []): InBuild {
    this.build(context, text, [...args, '--target', 'out', '-o', `type=local,dest=${outDir}`]);
    return readOut(outDir);
  }

  build(context: string, text: string, args: string[]): string {
    const file = path.join(this.dir, `Dockerfile-${Math.random().toString(36).slice(2)}`);
    writeFileSync(file, text);
    return this.docker([...(this.bin ? ['buildx'] : []), 'build', '--network=none', '--progress=plain', '-f', file, ...args, context]);
  }

  layers(image: string): string[] {
    return JSON.parse(this.docker(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', image]).trim()) as string[];
  }

  /** Stops the daemon by its pidfile (SIGTERM, then SIGKILL), then unmounts what it left. */
  async stop(): Promise<void> {
    let pid = 0;
    try {
      pid = Number(readFileSync(this.pidfile, 'utf8').trim());
    } catch {
      /* never started, or already gone */
    }
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        pid = 0;
      }
      const deadline = Date.now() + 30_000;
      while (pid > 0 && Date.now() < deadline) {
        try {
          process.kill(pid, 0);
        } catch {
          pid = 0;
          break;
        }
        await new Promise((res) => setTimeout(res, 200));
      }
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    // its containerd (a child it started, pidfile under the exec root) goes with it; if not, stop it too
    const ctrPid = path.join(this.dir, 'exec/containerd/containerd.pid');
    if (existsSync(ctrPid)) {
      const p = Number(readFileSync(ctrPid, 'utf8').trim());
      // only if that pid is still our containerd (a stale pidfile may name another process by now)
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        /* gone */
      }
      if (p > 0 && cmdline.includes(path.join(this.dir, 'exec'))) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    unmountAll(this.dir);
    // deepest first; only while empty (another daemon may use them by now)
    for (const d of [...this.created].reverse()) {
      try {
        rmdirSync(d);
      } catch {
        /* not empty, or gone */
      }
    }
  }
}

/** A temporary directory for a whole test file, removed with everything under it. */
export function workDir(name: string): { dir: string; cleanup: () => void } {
  const t = tempDir(`cfs-e2e-${name}-`);
  return {
    dir: t.dir,
    cleanup: () => {
      unmountAll(t.dir);
      t.cleanup();
    },
  };
}
