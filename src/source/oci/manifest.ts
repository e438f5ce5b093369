/**
 * OCI descriptors, image indexes, manifests and configs (each field type-checked, each document
 * size-capped and verified against its digest), and platform selection.
 */
import { createHash } from 'node:crypto';
import { withYoungGenerationGrowth } from './young-gen.js';
import { mediaTypeCompression } from '../decompress.js';
import { type Blob, type LayerSpec, OciSourceError, readAll, type Store } from './store.js';

/**
 * What an image says about itself besides its layers: the digest of a sealed image may travel
 * here (composefs-rs sealing keys, crates/composefs-oci/src/sealing_spec.rs v0.9.0).
 */
export interface ImageMetadata {
  /** Top-level annotations of the image manifest (OCI layouts; docker archives have none). */
  annotations: Record<string, string>;
  /** `config.Labels` of the image configuration. */
  labels: Record<string, string>;
}

/** String-valued entries of a JSON object (anything else is not an annotation/label). */
function stringMap(x: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return out;
  for (const [k, v] of Object.entries(x)) if (typeof v === 'string') out[k] = v;
  return out;
}

export function labelsOf(config: unknown): Record<string, string> {
  return stringMap((config as { config?: { Labels?: unknown } } | null)?.config?.Labels);
}

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

function blobPath(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

function shortDigest(d: string): string {
  return d.length > 19 ? d.slice(0, 19) + '…' : d;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** A JSON document's shape is wrong: names the document and the field. */
export function badField(where: string, field: string, expected: string): OciSourceError {
  return new OciSourceError(`${where}: ${field || 'the document'} ${expected}`);
}

export function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function optString(o: Record<string, unknown>, key: string, where: string, field: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'string') throw badField(where, `${field}.${key}`, 'is not a string');
}

/** An OCI descriptor (image-spec descriptor.md), every field we use type-checked. */
function asDescriptor(x: unknown, where: string, field: string): Descriptor {
  if (!isObject(x)) throw badField(where, field, 'is not an object');
  optString(x, 'mediaType', where, field);
  if (typeof x.digest !== 'string' || !DIGEST_RE.test(x.digest))
    throw badField(where, `${field}.digest`, `is not a supported digest (${preview(x.digest)})`);
  if (typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0)
    throw badField(where, `${field}.size`, 'is not a non-negative integer');
  if (x.annotations !== undefined) {
    if (!isObject(x.annotations)) throw badField(where, `${field}.annotations`, 'is not an object');
    for (const [k, v] of Object.entries(x.annotations))
      if (typeof v !== 'string') throw badField(where, `${field}.annotations[${JSON.stringify(k)}]`, 'is not a string');
  }
  if (x.platform !== undefined) {
    if (!isObject(x.platform)) throw badField(where, `${field}.platform`, 'is not an object');
    for (const k of ['os', 'architecture', 'variant']) optString(x.platform, k, where, `${field}.platform`);
  }
  return x as unknown as Descriptor;
}

/** A JSON value for a message, cut short. */
function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? s.slice(0, 80) + '…' : s;
}

/**
 * "a, b, c, … (N in all)": lists in messages stay one short line, whatever the input holds
 * (an index may list hundreds of thousands of images).
 */
export function listSome(items: string[], max = 8): string {
  if (items.length === 0) return 'none';
  if (items.length <= max) return items.join(', ');
  return `${items.slice(0, max).join(', ')}, … (${items.length} in all)`;
}

async function getBlob(store: Store, desc: Descriptor, what: string): Promise<Blob> {
  const b = await store.get(blobPath(desc.digest));
  if (!b) throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} is missing`);
  if (b.size !== desc.size)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} has size ${b.size}, descriptor says ${desc.size}`);
  return b;
}

/**
 * Largest manifest or config we read: containers/image's limits for the same documents
 * (`iolimits.MaxManifestBodySize`, `MaxConfigBodySize`: 4 MiB). Real ones are a few KB; a
 * larger one is refused before it is read, so a hostile image cannot make us hold gigabytes.
 */
export const MAX_JSON = 4 << 20;

/** index.json and docker-archive manifest.json list images, so they may be longer. */
export const MAX_JSON_LIST = 16 << 20;

export function tooLarge(where: string, size: number, limit: number): OciSourceError {
  return new OciSourceError(`${where} is too large (${size} bytes; the limit is ${limit} bytes)`);
}

/** Reads a small JSON blob, verifying size and digest. */
async function readJsonBlob(store: Store, desc: Descriptor, what: string): Promise<unknown> {
  if (desc.size > MAX_JSON) throw tooLarge(`${store.describe}: ${what} blob ${desc.digest}`, desc.size, MAX_JSON);
  const b = await getBlob(store, desc, what);
  const data = await readAll(b);
  const [alg, hex] = desc.digest.split(':');
  const actual = createHash(alg).update(data).digest('hex');
  if (actual !== hex)
    throw new OciSourceError(`${store.describe}: ${what} blob ${desc.digest} does not match its digest (content is ${alg}:${actual})`);
  return parseJson(data, `${store.describe}: ${what} ${desc.digest}`);
}

export function parseJson(data: Buffer, what: string): unknown {
  try {
    // Many values in a small young generation thrash the GC (src/tree/young-gen.ts).
    return withYoungGenerationGrowth(data.length > 1 << 20, () => JSON.parse(data.toString('utf8')));
  } catch (e) {
    throw new OciSourceError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

export async function readJsonMember(store: Store, name: string, limit: number): Promise<unknown> {
  const b = await store.get(name);
  if (!b) throw new OciSourceError(`${store.describe}: ${name} is missing`);
  if (b.size > limit) throw tooLarge(`${store.describe}: ${name}`, b.size, limit);
  return parseJson(await readAll(b), `${store.describe}: ${name}`);
}

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

const MANIFEST_TYPES = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);

const REF_NAME = 'org.opencontainers.image.ref.name';

const ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips64el: 'mips64le',
};

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function hostPlatform(): Platform {
  const architecture = ARCH[process.arch] ?? process.arch;
  return { os: 'linux', architecture, ...(architecture === 'arm64' ? { variant: 'v8' } : {}) };
}

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === ''))
    throw new OciSourceError(`invalid platform ${JSON.stringify(s)}: expected OS/ARCH[/VARIANT]`);
  return { os: parts[0], architecture: parts[1], ...(parts[2] ? { variant: parts[2] } : {}) };
}

function platformMatches(p: Descriptor['platform'], want: Platform): boolean {
  if (!p || p.os !== want.os || p.architecture !== want.architecture) return false;
  if (want.variant === undefined || p.variant === want.variant) return true;
  // arm64 images usually omit the (only) variant v8.
  return want.architecture === 'arm64' && want.variant === 'v8' && (p.variant === undefined || p.variant === '');
}

function showPlatform(p: Platform | Descriptor['platform']): string {
  if (!p) return '(none)';
  return [p.os, p.architecture, p.variant].filter((x) => x).join('/');
}

function pickPlatform(descs: Descriptor[], want: Platform, where: string): Descriptor {
  const m = descs.find((d) => platformMatches(d.platform, want));
  if (m) return m;
  const avail = listSome([...new Set(descs.map((d) => showPlatform(d.platform)))]);
  throw new OciSourceError(`${where}: no image for platform ${showPlatform(want)} (available: ${avail})`);
}

/** An image index (image-spec image-index.md): its `manifests`, each a valid descriptor. */
function manifestsOf(x: unknown, where: string): Descriptor[] {
  if (!isObject(x)) throw badField(where, '', 'is not a JSON object');
  const m = x.manifests;
  if (!Array.isArray(m)) throw badField(where, 'manifests', 'is not a list');
  return m.map((d, i) => asDescriptor(d, where, `manifests[${i}]`));
}

interface ResolvedImage {
  manifestDigest: string;
  manifest: { config: Descriptor; layers: Descriptor[]; annotations: Record<string, string> };
}

/** Follows indexes down to one image manifest. */
async function resolveDescriptor(store: Store, desc: Descriptor, want: Platform, depth = 0): Promise<ResolvedImage> {
  if (depth > 4) throw new OciSourceError(`${store.describe}: image indexes nested too deeply`);
  const json = await readJsonBlob(store, desc, 'manifest');
  const where = `${store.describe}: manifest ${desc.digest}`;
  if (!isObject(json)) throw badField(where, '', 'is not a JSON object');
  optString(json, 'mediaType', where, '');
  const mt = (json.mediaType as string | undefined) ?? desc.mediaType;
  if ((mt !== undefined && INDEX_TYPES.has(mt)) || (mt === undefined && Array.isArray(json.manifests))) {
    const iwhere = `${store.describe}: index ${desc.digest}`;
    const list = manifestsOf(json, iwhere);
    return resolveDescriptor(store, pickPlatform(list, want, iwhere), want, depth + 1);
  }
  if (mt !== undefined && !MANIFEST_TYPES.has(mt))
    throw new OciSourceError(`${store.describe}: ${desc.digest} has unsupported media type ${preview(mt)}`);
  const config = asDescriptor(json.config, where, 'config');
  if (!Array.isArray(json.layers)) throw badField(where, 'layers', 'is not a list');
  const layers = (json.layers as unknown[]).map((l, i) => asDescriptor(l, where, `layers[${i}]`));
  return { manifestDigest: desc.digest, manifest: { config, layers, annotations: stringMap(json.annotations) } };
}

/** The config's rootfs.diff_ids (image-spec config.md), each a sha256/sha512 digest. */
export function diffIdsOf(config: unknown, where: string): string[] {
  if (!isObject(config)) throw badField(where, '', 'is not a JSON object');
  if (!isObject(config.rootfs)) throw badField(where, 'rootfs', 'is not an object');
  const ids = config.rootfs.diff_ids;
  if (!Array.isArray(ids)) throw badField(where, 'rootfs.diff_ids', 'is not a list');
  return ids.map((d, i) => {
    if (typeof d !== 'string' || !DIGEST_RE.test(d)) throw badField(where, `rootfs.diff_ids[${i}]`, `is not a supported digest (${preview(d)})`);
    return d;
  });
}

export async function layoutLayers(store: Store, ref: string | undefined, want: Platform, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const layoutFile = await store.get('oci-layout');
  if (!layoutFile) throw new OciSourceError(`${store.describe}: not an OCI image layout (no oci-layout file)`);
  const index = await readJsonMember(store, 'index.json', MAX_JSON_LIST);
  let descs = manifestsOf(index, `${store.describe}: index.json`);
  if (ref !== undefined) {
    const named = descs.filter((d) => d.annotations?.[REF_NAME] === ref);
    if (named.length === 0) {
      const names = descs.map((d) => d.annotations?.[REF_NAME]).filter((n) => n !== undefined);
      throw new OciSourceError(`${store.describe}: no image named ${JSON.stringify(ref)} (available: ${listSome(names)})`);
    }
    descs = named;
  }
  if (descs.length === 0) throw new OciSourceError(`${store.describe}: index.json lists no images`);
  let desc: Descriptor;
  if (descs.length === 1) desc = descs[0];
  else if (descs.every((d) => d.platform)) desc = pickPlatform(descs, want, `${store.describe}: index.json`);
  else {
    const names = listSome(descs.map((d) => d.annotations?.[REF_NAME] ?? d.digest));
    throw new OciSourceError(`${store.describe}: index.json lists ${descs.length} images; choose one with :REF (${names})`);
  }
  const img = await resolveDescriptor(store, desc, want);
  const config = await readJsonBlob(store, img.manifest.config, 'config');
  if (meta) Object.assign(meta, { annotations: img.manifest.annotations, labels: labelsOf(config) });
  const diffIds = diffIdsOf(config, `${store.describe}: config ${img.manifest.config.digest}`);
  if (diffIds.length !== img.manifest.layers.length)
    throw new OciSourceError(
      `manifest ${img.manifestDigest}: ${img.manifest.layers.length} layers but config lists ${diffIds.length} diff_ids`,
    );
  const out: LayerSpec[] = [];
  for (let i = 0; i < img.manifest.layers.length; i++) {
    const d = img.manifest.layers[i];
    const label = `layer ${i + 1} (${shortDigest(d.digest)})`;
    if (d.mediaType !== undefined && mediaTypeCompression(d.mediaType) === undefined)
      throw new OciSourceError(`${label}: unsupported layer media type ${d.mediaType}`);
    out.push({ blob: await getBlob(store, d, label), label, digest: d.digest, diffId: diffIds[i], mediaType: d.mediaType });
  }
  return out;
}
