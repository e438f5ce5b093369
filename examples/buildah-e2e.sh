#!/usr/bin/env bash
# End to end with buildah, offline: builds containerfiles/Containerfile.example (a multi-layer
# base image and a stage that runs `cfs compute-karg`/`compute-id` on a bind mount of it), then
# pushes the base image to an OCI layout and checks that `cfs compute-id oci:DIR:base` (the
# tarball path: layers merged the composefs-rs way) prints the id computed inside the build
# (the directory path: the mounted root filesystem).
#
#   examples/buildah-e2e.sh            # as root, after `npm run build` (needs dist/cfs)
#
# Everything buildah stores goes into a temporary directory that is removed at the end (KEEP=1
# keeps it): --root/--runroot, TMPDIR for its cache mounts, CONTAINERS_CONF for its network
# configuration. STORAGE_DRIVER=vfs works too (the opaque directory then becomes one whiteout per
# removed file).
# Exit status: 0 ids equal, 1 ids differ, 2 error.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
sea=$root/dist/cfs
driver=${STORAGE_DRIVER:-overlay}

[ "$(id -u)" = 0 ] || { echo "buildah-e2e: run as root (buildah --isolation chroot, overlay mounts)" >&2; exit 2; }
command -v buildah >/dev/null || { echo "buildah-e2e: buildah is not installed" >&2; exit 2; }
[ -x "$sea" ] || { echo "buildah-e2e: $sea is missing: run npm run build" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cfs-buildah-e2e.XXXXXX")
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver "$driver")
cleanup() {
  set +e
  "${B[@]}" rm --all >/dev/null 2>&1
  "${B[@]}" rmi --all --force >/dev/null 2>&1
  # mounts a failed RUN may leave behind, deepest first
  awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/context" "$work/tmp"
export TMPDIR=$work/tmp # buildah keeps its RUN --mount=type=cache directories there
# and the network configuration it would otherwise create in /etc/containers/networks here
printf '[network]\nnetwork_config_dir = "%s"\n' "$work/net" >"$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf

step() { printf '\n== %s\n' "$*"; }

step "base root filesystem from this host's binaries (no registry)"
"$root/containerfiles/make-rootfs.sh" "$work/context/rootfs.tar" "$sea"

step "cfs-image (containerfiles/Containerfile.cfs, context $root)"
"${B[@]}" bud --isolation chroot -q -f "$root/containerfiles/Containerfile.cfs" -t cfs-image "$root"

step "the example build (storage driver $driver)"
"${B[@]}" bud --isolation chroot --layers -f "$root/containerfiles/Containerfile.example" -t uki "$work/context"
# tag the base stage: every step comes from the cache, so it is the very image mounted above
"${B[@]}" bud --isolation chroot --layers -q --target base -f "$root/containerfiles/Containerfile.example" -t base "$work/context" >/dev/null

diff_ids() { "${B[@]}" inspect --type image --format '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}' "$1"; }
base_layers=$(diff_ids base)
uki_layers=$(diff_ids uki)
case "$uki_layers" in
  "$base_layers"*) ;;
  *) echo "buildah-e2e: the uki image is not built on the tagged base image" >&2; exit 2 ;;
esac
echo "base has $(wc -w <<<"$base_layers") layers"

step "what the build wrote"
ctr=$("${B[@]}" from uki)
mnt=$("${B[@]}" mount "$ctr")
inside_karg=$(cat "$mnt/etc/kernel/cmdline")
inside_id=$(cat "$mnt/etc/kernel/composefs-id")
"${B[@]}" umount "$ctr" >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

step "the same from the pushed image (oci:$work/oci:base)"
"${B[@]}" push -q base "oci:$work/oci:base"
outside_id=$(node "$root/dist/cfs.mjs" compute-id "oci:$work/oci:base")
outside_karg=$(node "$root/dist/cfs.mjs" compute-karg "oci:$work/oci:base")

echo "compute-id   in the build: $inside_id"
echo "compute-id   oci:        : $outside_id"
echo "compute-karg in the build: $inside_karg"
echo "compute-karg oci:        : $outside_karg"
if [ "$inside_id" = "$outside_id" ] && [ "$inside_karg" = "$outside_karg" ]; then
  echo "OK: equal"
else
  echo "DIFFERENT: compare 'cfs create-dumpfile' of both (KEEP=1 keeps $work)" >&2
  exit 1
fi
