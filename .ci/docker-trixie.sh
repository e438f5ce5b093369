#!/usr/bin/env bash
# Fetches Debian trixie's Docker (docker.io 26.1 dockerd, docker-cli, the docker-buildx plugin and
# containerd 1.7) into a cache directory, without installing anything and without touching the
# system's apt sources: a private sources.list, apt state and cache under the cache directory,
# `apt-get download`, `dpkg-deb -x`. The engine tests (test/e2e-recipes-docker26.test.ts) run the
# daemon from there with private roots; bookworm's docker.io 20.10 has no `rewrite-timestamp`
# and no containerd image store.
#
#   .ci/docker-trixie.sh            # prints the directory whose usr/ holds the binaries
#
# CFS_DOCKER_TRIXIE=DIR chooses the cache directory (default ~/.cache/composefs-ts/docker-trixie).
# A second run with the binaries in place does nothing.
set -euo pipefail

dir=${CFS_DOCKER_TRIXIE:-${HOME:-/root}/.cache/composefs-ts/docker-trixie}
pkgs=(docker.io docker-cli docker-buildx containerd)
root=$dir/root
if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi

mkdir -p "$dir"
apt=$dir/apt
rm -rf "$apt" "$root.new"
mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$apt/none" "$root.new"
touch "$apt/state/status"
# trixie's keys ship in bookworm's debian-archive-keyring
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
opts=(
  -o "Dir::State=$apt/state" -o "Dir::State::status=$apt/state/status"
  -o "Dir::Cache=$apt/cache" -o "Dir::Etc::SourceList=$apt/sources.list"
  -o "Dir::Etc::SourceParts=$apt/none" -o "Dir::Etc::Preferences=$apt/none"
  -o "Dir::Etc::PreferencesParts=$apt/none" -o "APT::Sandbox::User=root"
)
apt-get "${opts[@]}" -qq update >&2
(cd "$apt/debs" && apt-get "${opts[@]}" -qq download "${pkgs[@]}" >&2)
for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$root.new"; done
for b in usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/libexec/docker/cli-plugins/docker-buildx; do
  [ -x "$root.new/$b" ] || { echo "docker-trixie: $b is missing from the packages" >&2; exit 2; }
done
(cd "$apt/debs" && ls) >"$root.new/.complete"
rm -rf "$root"
mv "$root.new" "$root"
rm -rf "$apt"
echo "$root"
