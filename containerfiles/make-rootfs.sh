#!/usr/bin/env bash
# Makes a tiny merged-/usr root filesystem tarball from this host's own binaries, to serve as
# the base of containerfiles/Containerfile.example (`ADD rootfs.tar /`) without any registry or
# mirror: a shell, the coreutils the example's RUN steps use, setcap and setfattr, the dynamic
# libraries they need, and the libraries of every extra ELF given (e.g. dist/cfs, so that the
# Node single-executable runs in a stage built FROM this base).
#
#   containerfiles/make-rootfs.sh OUT.tar [ELF...]
#
# The tarball is reproducible for a given host: names sorted, owner 0:0, every mtime set to
# SOURCE_DATE_EPOCH (default 1700000000), no xattrs.
set -euo pipefail

out=${1:?usage: make-rootfs.sh OUT.tar [ELF...]}
shift
epoch=${SOURCE_DATE_EPOCH:-1700000000}

tools=(sh rm rmdir mkdir ln cp cat touch chmod mv ls true head printf setcap setfattr)
for t in "${tools[@]}"; do
  type -P "$t" >/dev/null || { echo "make-rootfs: '$t' is not installed on this host" >&2; exit 2; }
done

umask 022
tree=$(mktemp -d "${TMPDIR:-/tmp}/cfs-rootfs.XXXXXX")
chmod 0755 "$tree"
trap 'rm -rf "$tree"' EXIT

# merged /usr, as on current Debian/Fedora
mkdir -p "$tree"/usr/{bin,sbin,lib,lib64} "$tree"/{etc,tmp,root,var,run,dev,proc,sys,mnt,boot,sysroot}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$tree/$d"; done
chmod 1777 "$tree/tmp"
chmod 0700 "$tree/root"

# copy a host path (and, if it is a symlink, what it points to) into the tree, keeping the
# path as given; the tree's top-level symlinks route /bin, /lib... into /usr.
copy() {
  local p=$1 d
  d=$(dirname "$p")
  mkdir -p "$tree$d"
  cp -a "$p" "$tree$d/"
  if [ -L "$p" ]; then copy "$(realpath "$p")"; fi
}

elfs=()
for t in "${tools[@]}"; do
  p=$(type -P "$t")
  p=$(realpath -s "$p")
  copy "$p"
  elfs+=("$(realpath "$p")")
done
for e in "$@"; do elfs+=("$e"); done

for e in "${elfs[@]}"; do
  # "libx.so => /path (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
  ldd "$e" 2>/dev/null | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }'
done | sort -u | while read -r lib; do copy "$lib"; done

cat >"$tree/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$tree/etc/group" <<'EOF'
root:x:0:
EOF

tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --no-xattrs \
  -C "$tree" -cf "$out" .
