/**
 * Sealed images end to end with buildah, offline (as root): containerfiles/Containerfile.sealed
 * builds a busybox-static base image, computes its karg with the single-executable `dist/cfs`
 * from a bind mount of it, assembles a real UKI from systemd-stub with objcopy and ships it in
 * /boot/EFI/Linux/. `cfs verify oci:...` must pass on that image and fail, saying why, on a
 * variant whose later layer changes /usr, and on images whose UKI has a wrong or no karg. The
 * digest is then attached as annotation and label after the build (the README's recipes) and
 * `cfs verify` checks those too.
 *
 * Independent checks: objcopy extracts the UKI's .cmdline (against our PE reader), and the karg
 * computed inside the build from the directory equals the one computed from the pushed layers.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IN_CI, ROOT, have, runCfs, tempDir } from './helpers.js';
import { cannotMakeUki } from './pe-builder.js';
import { readCmdlines, withFileReader } from '../src/pe/pe.js';

const BROKEN = `
FROM sealed AS tampered
RUN mkdir -p /usr/share/demo && echo 'changed after sealing' > /usr/share/demo/tampered

FROM tools AS uki-broken
RUN --mount=type=bind,from=base,target=/mnt/base \\
    mkdir -p /out \\
 && printf 'rw quiet\\n' > /out/none \\
 && printf 'rw quiet composefs.digest=v1-sha512-12:%0128d\\n' 0 > /out/wrong \\
 && for k in none wrong; do \\
      objcopy --add-section .osrel=/mnt/base/usr/lib/os-release --change-section-vma .osrel=0x20000 \\
        --add-section .cmdline=/out/$k --change-section-vma .cmdline=0x30000 \\
        --add-section .linux=/mnt/base/usr/lib/modules/6.1.0-sealed/vmlinuz --change-section-vma .linux=0x2000000 \\
        --add-section .initrd=/mnt/base/usr/lib/modules/6.1.0-sealed/initramfs.img --change-section-vma .initrd=0x3000000 \\
        /usr/lib/systemd/boot/efi/linuxx64.efi.stub /out/$k.efi || exit 1; \\
    done

FROM base AS nokarg
COPY --from=uki-broken /out/none.efi /boot/EFI/Linux/sealed.efi

FROM base AS wrongkarg
COPY --from=uki-broken /out/wrong.efi /boot/EFI/Linux/sealed.efi
`;

const DRIVER = process.env.CFS_E2E_STORAGE_DRIVER ?? 'overlay';
const ANN_KEY = 'composefs.merged.bootable.erofs.v1.fsverity-sha512-12';

let why = '';
let work = '';
let cleanupDir: (() => void) | undefined;
let buildahArgs: string[] = [];
let env: NodeJS.ProcessEnv = process.env;
const layouts = new Map<string, string>();
let inBuildCmdline = '';
let ukiFile = '';

function buildah(args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync('buildah', [...buildahArgs, ...args], { env, cwd: opts.cwd, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`buildah ${args.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).split('\n').slice(-25).join('\n')}`);
  return r.stdout;
}

function diffIds(image: string): string[] {
  return buildah(['inspect', '--type', 'image', '--format', '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}', image]).trim().split(/\s+/);
}

function push(image: string): string {
  const spec = `oci:${path.join(work, 'oci')}:${image}`;
  buildah(['push', '-q', image, spec]);
  layouts.set(image, spec);
  return spec;
}

function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && m.startsWith(prefix))
    .sort()
    .reverse();
}

before(
  () => {
    if (process.getuid?.() !== 0) why = 'needs root (buildah --isolation chroot with overlay mounts)';
    else if (!have('buildah')) why = 'buildah is not installed (apt-get install buildah)';
    else if (!have('busybox')) why = 'a static busybox is needed for the base image (apt-get install busybox-static)';
    else why = cannotMakeUki() ?? '';
    if (why) return;
    const sea = path.join(ROOT, 'dist/cfs');
    assert.ok(existsSync(sea), `${sea} is missing: run npm run build`);
    ({ dir: work, cleanup: cleanupDir } = tempDir('cfs-e2e-sealed-'));
    buildahArgs = ['--root', path.join(work, 'storage'), '--runroot', path.join(work, 'run'), '--storage-driver', DRIVER];
    mkdirSync(path.join(work, 'tmp'));
    writeFileSync(path.join(work, 'containers.conf'), `[network]\nnetwork_config_dir = "${path.join(work, 'net')}"\n`);
    env = { ...process.env, TMPDIR: path.join(work, 'tmp'), CONTAINERS_CONF: path.join(work, 'containers.conf') };
    const context = path.join(work, 'context');
    execFileSync(path.join(ROOT, 'containerfiles/make-sealed-context.sh'), [context, sea], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const containerfile = path.join(context, 'Containerfile');
    writeFileSync(containerfile, readFileSync(path.join(ROOT, 'containerfiles/Containerfile.sealed'), 'utf8') + BROKEN);

    buildah(['bud', '--isolation', 'chroot', '-q', '-f', path.join(ROOT, 'containerfiles/Containerfile.cfs'), '-t', 'cfs-image', ROOT]);
    for (const target of ['sealed', 'uki', 'tampered', 'nokarg', 'wrongkarg']) {
      buildah(['bud', '--isolation', 'chroot', '--layers', '-q', '--target', target, '-f', containerfile, '-t', target, context]);
    }
    for (const image of ['sealed', 'tampered', 'nokarg', 'wrongkarg']) push(image);

    // what the build made: the karg file and the UKI, read out of the uki stage
    const ctr = buildah(['from', 'uki']).trim();
    try {
      const mnt = buildah(['mount', ctr]).trim();
      inBuildCmdline = readFileSync(path.join(mnt, 'out/cmdline'), 'utf8').trim();
      ukiFile = path.join(work, 'sealed.efi');
      writeFileSync(ukiFile, readFileSync(path.join(mnt, 'out/sealed.efi')));
      buildah(['umount', ctr]);
    } finally {
      buildah(['rm', ctr]);
    }
  },
  { timeout: 300_000 },
);

after(() => {
  if (!work) return;
  try {
    spawnSync('buildah', [...buildahArgs, 'rm', '--all'], { env, stdio: 'ignore' });
    spawnSync('buildah', [...buildahArgs, 'rmi', '--all', '--force'], { env, stdio: 'ignore' });
  } finally {
    for (const m of mountsUnder(work)) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
    cleanupDir?.();
  }
});

function proceed(t: { skip: (m: string) => void }): boolean {
  if (!why) return true;
  if (IN_CI) throw new Error(`sealed-image end-to-end test cannot run under CI: ${why}`);
  t.skip(`sealed-image end-to-end test skipped: ${why}`);
  return false;
}

function cfs(args: string[]): string {
  const r = runCfs(args);
  assert.equal(r.status, 0, `cfs ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout.toString().trim();
}

test('the UKI is a real systemd-stub PE whose .cmdline carries the karg computed in the build', async (t) => {
  if (!proceed(t)) return;
  assert.match(inBuildCmdline, /^rw quiet composefs\.digest=v1-sha512-12:[0-9a-f]{128}$/);
  // objcopy, not our reader, extracts the section
  const out = path.join(work, 'cmdline.bin');
  execFileSync('objcopy', ['-O', 'binary', '--only-section=.cmdline', ukiFile, out]);
  assert.equal(readFileSync(out, 'utf8').trim(), inBuildCmdline);
  const sections = execFileSync('objdump', ['-h', ukiFile], { encoding: 'utf8' });
  for (const s of ['.text', '.sbat', '.sdmagic', '.osrel', '.cmdline', '.linux', '.initrd']) assert.ok(sections.includes(` ${s} `), `${s} in the UKI`);
  await withFileReader(ukiFile, async (r) => assert.deepEqual((await readCmdlines(r)).map((c) => c.text), [inBuildCmdline]));
  // the karg from the directory (in the build) is the digest of the pushed layers
  assert.equal(inBuildCmdline.split(':')[1], cfs(['compute-id', '--bootable', layouts.get('sealed')!]));
});

test('cfs verify passes on the sealed image', (t) => {
  if (!proceed(t)) return;
  const r = runCfs(['verify', layouts.get('sealed')!]);
  const out = r.stdout.toString();
  assert.equal(r.status, 0, out + r.stderr);
  assert.match(out, /\/boot\/EFI\/Linux\/sealed\.efi \(UKI\)/);
  assert.match(out, /ok       composefs\.digest=v1-sha512-12:/);
  assert.match(out, /= --profile .*cfsctl-0\.9/);
  assert.match(out, /OK: every composefs karg and sealing label matches this image/);
  // the UKI file on its own, against the image
  assert.equal(runCfs(['verify', ukiFile, layouts.get('sealed')!]).status, 0);
});

test('a later layer that changes /usr: verify fails with both digests and points at cfs compare', (t) => {
  if (!proceed(t)) return;
  assert.deepEqual(diffIds('tampered').slice(0, diffIds('sealed').length), diffIds('sealed'));
  const r = runCfs(['verify', layouts.get('tampered')!]);
  const out = r.stdout.toString();
  assert.equal(r.status, 1, out + r.stderr);
  assert.match(out, /MISMATCH composefs\.digest=v1-sha512-12:/);
  assert.ok(out.includes(`karg:     ${inBuildCmdline.split(':')[1]}`), out);
  assert.ok(out.includes(`computed: ${cfs(['compute-id', '--bootable', layouts.get('tampered')!])}`), out);
  assert.match(out, /hint: .*cfs compare/);
  // and cfs compare names the difference
  const c = runCfs(['compare', layouts.get('sealed')!, layouts.get('tampered')!]);
  assert.equal(c.status, 1);
  assert.match(c.stdout.toString(), /\/usr\/share\/demo: presence: \(absent\) \(A\) vs directory \(B\)/);
});

test('a UKI without a karg, or with a wrong one, fails with a clear message', (t) => {
  if (!proceed(t)) return;
  let r = runCfs(['verify', layouts.get('nokarg')!]);
  assert.equal(r.status, 1, r.stdout.toString() + r.stderr);
  assert.match(r.stdout.toString(), /\/boot\/EFI\/Linux\/sealed\.efi: no composefs= or composefs\.digest= karg on its \.cmdline: it does not seal any image/);
  r = runCfs(['verify', layouts.get('wrongkarg')!]);
  assert.equal(r.status, 1, r.stdout.toString() + r.stderr);
  assert.match(r.stdout.toString(), /MISMATCH composefs\.digest=v1-sha512-12:0000/);
  assert.match(r.stdout.toString(), /'composefs\.digest=' digest does not match this image/);
});

test('recipe: the digest as annotation and label after the build, layers unchanged; verify reads them', (t) => {
  if (!proceed(t)) return;
  const ann = cfs(['compute-id', '--bootable', '--annotation', layouts.get('sealed')!]);
  assert.ok(ann.startsWith(`${ANN_KEY}=`));
  // 1. buildah bud --layers: a LABEL-only Containerfile and --annotation add no layer
  const dir = path.join(work, 'label');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'Containerfile'), `FROM sealed\nLABEL ${ann}\n`);
  buildah(['bud', '--isolation', 'chroot', '--layers', '-q', '--annotation', ann, '-f', path.join(dir, 'Containerfile'), '-t', 'sealed-labelled', dir]);
  assert.deepEqual(diffIds('sealed-labelled'), diffIds('sealed'), 'the layers are the same');
  let r = runCfs(['verify', '--json', push('sealed-labelled')]);
  assert.equal(r.status, 0, r.stdout.toString());
  const report = JSON.parse(r.stdout.toString());
  assert.deepEqual(
    report.labels.map((l: any) => [l.where, l.key, l.status]),
    [
      ['annotation', ANN_KEY, 'match'],
      ['label', ANN_KEY, 'match'],
    ],
  );
  // 2. buildah config + commit: the layers stay, commit appends one empty layer (no file changes)
  const ctr = buildah(['from', 'sealed']).trim();
  try {
    buildah(['config', '--annotation', ann, '--label', ann, ctr]);
    buildah(['commit', '-q', ctr, 'sealed-committed']);
  } finally {
    buildah(['rm', ctr]);
  }
  const ids = diffIds('sealed-committed');
  assert.deepEqual(ids.slice(0, diffIds('sealed').length), diffIds('sealed'));
  // sha256 of an empty tar (1024 zero bytes): the only addition
  assert.deepEqual(ids.slice(diffIds('sealed').length), ['sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef']);
  r = runCfs(['verify', push('sealed-committed')]);
  assert.equal(r.status, 0, r.stdout.toString());
  assert.match(r.stdout.toString(), new RegExp(`ok       annotation ${ANN_KEY.replace(/\./g, '\\.')}`));
  // 3. a label that does not match is a failure naming the key
  writeFileSync(path.join(dir, 'Containerfile'), `FROM tampered\nLABEL ${ann}\n`);
  buildah(['bud', '--isolation', 'chroot', '--layers', '-q', '-f', path.join(dir, 'Containerfile'), '-t', 'tampered-labelled', dir]);
  r = runCfs(['verify', push('tampered-labelled')]);
  assert.equal(r.status, 1);
  assert.match(r.stdout.toString(), new RegExp(`- label ${ANN_KEY.replace(/\./g, '\\.')} does not match this image`));
});
