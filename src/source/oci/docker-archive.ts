/**
 * docker-archive sources: `docker save` / `podman save` output (manifest.json + layer tars).
 */
import { createHash } from 'node:crypto';
import { type ImageMetadata, MAX_JSON, badField, diffIdsOf, isObject, labelsOf, listSome, parseJson, readJsonMember, tooLarge, MAX_JSON_LIST } from './manifest.js';
import { type ArchiveStore, type LayerSpec, OciSourceError, normMember, readAll } from './store.js';

/** One entry of a docker-archive manifest.json (`docker save` format), fields type-checked. */
interface DockerEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function dockerEntries(m: unknown, where: string): DockerEntry[] {
  if (!Array.isArray(m)) throw badField(where, '', 'is not a list');
  if (m.length === 0) throw new OciSourceError(`${where} lists no images`);
  return m.map((e, i) => {
    const f = `[${i}]`;
    if (!isObject(e)) throw badField(where, f, 'is not an object');
    if (typeof e.Config !== 'string') throw badField(where, `${f}.Config`, 'is not a string');
    const strings = (key: string, optional: boolean): string[] => {
      const v = e[key];
      if (v === undefined || (v === null && optional)) {
        if (optional) return [];
        throw badField(where, `${f}.${key}`, 'is missing');
      }
      if (!Array.isArray(v)) throw badField(where, `${f}.${key}`, 'is not a list');
      v.forEach((x, j) => {
        if (typeof x !== 'string') throw badField(where, `${f}.${key}[${j}]`, 'is not a string');
      });
      return v as string[];
    };
    return { Config: e.Config, RepoTags: strings('RepoTags', true), Layers: strings('Layers', false) };
  });
}

export async function dockerArchiveLayers(store: ArchiveStore, ref: string | undefined, meta?: ImageMetadata): Promise<LayerSpec[]> {
  const entries = dockerEntries(await readJsonMember(store, 'manifest.json', MAX_JSON_LIST), `${store.describe}: manifest.json`);
  let entry: DockerEntry | undefined;
  if (ref === undefined) {
    if (entries.length > 1) throw new OciSourceError(`${store.describe}: ${entries.length} images in the archive; choose one with :TAG or :@N`);
    entry = entries[0];
  } else if (/^@\d+$/.test(ref)) {
    entry = entries[Number(ref.slice(1))];
  } else {
    entry =
      entries.find((e) => e.RepoTags.includes(ref)) ??
      entries.find((e) => e.RepoTags.includes(`${ref}:latest`)) ??
      entries.find((e) => e.RepoTags.some((t) => t.endsWith(`/${ref}`) || t.endsWith(`/${ref}:latest`)));
  }
  if (!entry) {
    const tags = listSome(entries.flatMap((e) => e.RepoTags));
    throw new OciSourceError(`${store.describe}: no image ${JSON.stringify(ref)} in manifest.json (tags: ${tags})`);
  }
  const configName = entry.Config;
  const cb = await store.get(configName);
  if (!cb) throw new OciSourceError(`${store.describe}: config ${configName} is missing`);
  if (cb.size > MAX_JSON) throw tooLarge(`${store.describe}: config ${configName}`, cb.size, MAX_JSON);
  const data = await readAll(cb);
  // The config's name is its sha256 ("<hex>.json" or "blobs/sha256/<hex>"): verify it.
  const hexName = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/.exec(configName)?.[1];
  if (hexName !== undefined) {
    const actual = createHash('sha256').update(data).digest('hex');
    if (actual !== hexName)
      throw new OciSourceError(`${store.describe}: config ${configName} does not match its digest (content is sha256:${actual})`);
  }
  const cwhere = `${store.describe}: config ${configName}`;
  const configJson = parseJson(data, cwhere);
  if (meta) Object.assign(meta, { annotations: {}, labels: labelsOf(configJson) });
  const diffIds = diffIdsOf(configJson, cwhere);
  const layers = entry.Layers;
  if (diffIds.length !== layers.length)
    throw new OciSourceError(`${store.describe}: ${layers.length} layers but config lists ${diffIds.length} diff_ids`);
  const out: LayerSpec[] = [];
  for (let i = 0; i < layers.length; i++) {
    const name = layers[i];
    const label = `layer ${i + 1} (${name})`;
    const blob = await store.get(name);
    if (!blob) throw new OciSourceError(`${store.describe}: ${label} is missing`);
    const blobHex = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(normMember(name))?.[1];
    out.push({ blob, label, diffId: diffIds[i], ...(blobHex ? { digest: `sha256:${blobHex}` } : {}) });
  }
  return out;
}
