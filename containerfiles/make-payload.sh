#!/usr/bin/env bash
# Makes payload.tar, the second layer of the engine recipes' toy base image (containerfiles/
# Containerfile.buildah, Dockerfile.buildkit, Dockerfile.outside; `ADD payload.tar /`): what an
# ADDed tarball can carry that the engines' own layer writers do not keep as it is. Every mtime
# has a sub-second part (PAX headers keep nanoseconds; the engines write whole seconds), a
# hardlink pair, a symlink, a user xattr, and directories a later RUN step removes or re-creates.
#
#   containerfiles/make-payload.sh OUT.tar
set -euo pipefail

out=${1:?usage: make-payload.sh OUT.tar}
# PAYLOAD_EPOCH moves every mtime and nothing else (the tests rebuild a base changed only in mtimes)
epoch=${PAYLOAD_EPOCH:-1700000000}
umask 022
tree=$(mktemp -d "${TMPDIR:-/tmp}/cfs-payload.XXXXXX")
trap 'rm -rf "$tree"' EXIT

mkdir -p "$tree"/usr/share/demo/{gone,keep} "$tree"/opt/app/data/sub
printf '%0300d\n' 7 >"$tree/usr/share/demo/big"            # over 64 bytes: an external object
ln "$tree/usr/share/demo/big" "$tree/usr/share/demo/big.link"
ln -s big "$tree/usr/share/demo/big.sym"
echo 'removed by a later layer' >"$tree/usr/share/demo/gone/file"
echo 'also removed by a later layer' >"$tree/usr/share/demo/keep/old"
echo 'kept' >"$tree/usr/share/demo/keep/kept"
setfattr -n user.demo -v hello "$tree/usr/share/demo/keep/kept" 2>/dev/null || true
echo 'replaced' >"$tree/opt/app/data/one"
echo 'replaced' >"$tree/opt/app/data/sub/two"

# distinct sub-second mtimes, files before directories (writing a file changes its directory's)
n=0
while IFS= read -r -d '' p; do
  n=$((n + 1))
  touch -h -d "@$epoch.$(printf '%03d' "$n")456789" "$p"
done < <(find "$tree" -mindepth 1 -depth -print0)

tar --format=posix --sort=name --owner=0 --group=0 --numeric-owner --xattrs --xattrs-include='user.*' \
  --pax-option=delete=atime,delete=ctime -C "$tree" -cf "$out" usr opt
