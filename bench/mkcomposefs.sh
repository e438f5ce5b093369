#!/bin/sh
# Prints the path of C mkcomposefs 1.0.8 (the bench's peer), obtaining it once from Debian's
# source package (`apt-get source composefs`, sid; bookworm has no composefs package and sid's
# binary needs glibc 2.38) and building it with meson into a cache directory outside the
# repository. Nothing fetched or built is kept in the repository.
#
# On failure: one line on stderr saying why (and what to install), exit 1; the bench then skips
# the peer. The Debian mirror is the one apt on this machine already uses (its index targets),
# with a private sources.list and apt state under the cache directory, so the system's apt
# configuration is neither read for sources nor changed.
set -eu
VERSION=1.0.8
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/composefs-ts/mkcomposefs-$VERSION
BIN=$CACHE/build/tools/mkcomposefs

fail() { echo "mkcomposefs peer unavailable: $*" >&2; exit 1; }

if [ -x "$BIN" ] && "$BIN" --help 2>&1 | grep -q -- --print-digest-only; then
  echo "$BIN"
  exit 0
fi

for t in apt-get dpkg-source meson ninja cc pkg-config; do
  command -v "$t" >/dev/null 2>&1 || fail "'$t' not found (apt-get install --no-install-recommends dpkg-dev meson ninja-build gcc pkg-config libssl-dev)"
done
pkg-config --exists libcrypto || fail "libcrypto development files not found (apt-get install --no-install-recommends libssl-dev)"

MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(ORIGIN)' 2>/dev/null |
  awk '$3 == "Debian" && $2 !~ /-/ { print $1; exit }')
[ -n "$MIRROR" ] || fail "apt on this machine has no Debian archive configured to take a sid deb-src line from"

echo "obtaining mkcomposefs $VERSION (apt-get source composefs from sid, meson build) into $CACHE…" >&2
LOG=$CACHE/build.log
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial"
: > "$LOG"
printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "$MIRROR" > "$CACHE/apt/sources.list"
# Private apt state: only this list, lists and caches under $CACHE; run as the invoking user
# (the _apt sandbox user cannot write into a home cache directory).
set -- -o Dir::Etc::SourceList="$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
  -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache" \
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User="$(id -un)" -q
apt-get "$@" update >>"$LOG" 2>&1 || fail "apt-get update of the private sid deb-src list failed (see $LOG)"
rm -rf "$CACHE/src" "$CACHE/build"
mkdir -p "$CACHE/src"
# `apt-get source` checks the .dsc's files against the signed Sources index.
(cd "$CACHE/src" && apt-get "$@" source "composefs=$VERSION-3") >>"$LOG" 2>&1 ||
  fail "apt-get source composefs=$VERSION-3 failed (see $LOG)"
# Only mkcomposefs is needed: no FUSE mount helper, no man pages (fewer build dependencies).
meson setup "$CACHE/build" "$CACHE/src/composefs-$VERSION" -Dfuse=disabled -Dman=disabled --buildtype=release >>"$LOG" 2>&1 ||
  fail "meson setup failed (see $LOG)"
ninja -C "$CACHE/build" tools/mkcomposefs >>"$LOG" 2>&1 || fail "build failed (see $LOG)"
[ -x "$BIN" ] || fail "build produced no $BIN (see $LOG)"
echo "$BIN"
