/**
 * The engine-faithful view of a tree's mtimes: what the layer tarballs a container engine
 * writes will carry, so that a directory (the mounted stage of a build) gives the id bootc will
 * compute from the shipped layers.
 *
 * - `seconds`: every layer writer tried (buildah/podman, Docker BuildKit on overlay2, vfs and
 *   the containerd store) stores whole-second mtimes: the sub-second part is dropped (rounded
 *   down, never to nearest). BuildKit's differs write headers with `hdr.ModTime =
 *   hdr.ModTime.Truncate(time.Second)` (moby/buildkit at 73ed6825c4b7569379ef89df0aedcdbe64473d31:
 *   vendor/github.com/containerd/containerd/v2/pkg/archive/tar.go, after clamping to its
 *   modTimeUpperBound; vendor/github.com/moby/go-archive/archive.go, the classic store).
 * - `clampMtime`: BuildKit's exporter with `rewrite-timestamp=true` and SOURCE_DATE_EPOCH
 *   rewrites every tar header of the layers it rewrites: `if hdr.ModTime.After(epoch) {
 *   hdr.ModTime = epoch }` (moby/buildkit util/converter/converter.go,
 *   rewriteTimestampInTarHeader, at 73ed6825c4b7569379ef89df0aedcdbe64473d31). `After` is
 *   strict and compares nanoseconds: an mtime equal to the epoch stays, one a fraction of a
 *   second later becomes exactly the epoch. Every entry type is clamped (directories,
 *   symlinks, files). Layers identical to the base image's leading layers are not rewritten
 *   (exporter/containerimage/writer.go, rewriteRemoteWithEpoch, same revision): files only a
 *   FROM image carries keep their mtimes; this view cannot know which those are.
 *
 * Both act on the raw tree, before the finishing rules: the root then takes /usr's clamped,
 * truncated mtime, as bootc computes it from the shipped layers. Clamping and truncating commute
 * (the epoch is whole seconds), and both commute with the root/run copies of /usr's mtime.
 */
import type { FileSystem } from '../tree/tree.js';
import { forEachStat } from './transform.js';

export const LAYER_MTIMES = ['keep', 'seconds'] as const;
export type LayerMtimes = (typeof LAYER_MTIMES)[number];

export interface MtimeView {
  /** `keep` (default): mtimes as read (composefs-rs read_container_root). */
  layerMtimes: LayerMtimes;
  /** Mtimes later than this (seconds since the epoch) become it. */
  clampMtime?: bigint;
}

/** True when the view changes nothing. */
export function isIdentityView(v: MtimeView | undefined): boolean {
  return !v || (v.layerMtimes === 'keep' && v.clampMtime === undefined);
}

/** Applies the view to every inode of a raw tree, in place (hardlinked leaves once). */
export function applyMtimeView(fs: FileSystem, v: MtimeView): void {
  if (isIdentityView(v)) return;
  const seconds = v.layerMtimes === 'seconds';
  const epoch = v.clampMtime;
  forEachStat(fs, (s) => {
    if (seconds) s.mtimeNsec = 0;
    if (epoch !== undefined && (s.mtimeSec > epoch || (s.mtimeSec === epoch && s.mtimeNsec > 0))) {
      s.mtimeSec = epoch;
      s.mtimeNsec = 0;
    }
  });
}

/** Number of distinct inodes with a sub-second mtime, of how many. */
export function countSubsecond(fs: FileSystem): { subsecond: number; total: number } {
  let subsecond = 0;
  let total = 0;
  forEachStat(fs, (s) => {
    total++;
    if (s.mtimeNsec !== 0) subsecond++;
  });
  return { subsecond, total };
}

/** SOURCE_DATE_EPOCH syntax: a non-negative decimal integer of seconds (fits in int64). */
export function parseEpoch(s: string): bigint | undefined {
  if (!/^\d{1,19}$/.test(s)) return undefined;
  const v = BigInt(s);
  return v <= 0x7fffffffffffffffn ? v : undefined;
}
