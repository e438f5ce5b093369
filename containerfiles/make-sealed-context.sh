#!/usr/bin/env bash
# Makes the build context of containerfiles/Containerfile.sealed from this host, offline:
#
#   containerfiles/make-sealed-context.sh CONTEXT [CFS]     (CFS: default dist/cfs)
#
# Needs a static busybox (Debian busybox-static), binutils (objcopy) and systemd-boot-efi.
set -euo pipefail

ctx=${1:?usage: make-sealed-context.sh CONTEXT [CFS]}
here=$(cd "$(dirname "$0")" && pwd)
cfs=${2:-$here/../dist/cfs}
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub

bb=$(type -P busybox) || { echo "make-sealed-context: busybox is not installed (apt-get install busybox-static)" >&2; exit 2; }
if ldd "$bb" >/dev/null 2>&1; then echo "make-sealed-context: $bb is dynamically linked; the base image needs a static one (busybox-static)" >&2; exit 2; fi
objcopy=$(realpath "$(type -P objcopy)") || { echo "make-sealed-context: objcopy is not installed (apt-get install binutils)" >&2; exit 2; }
[ -f "$stub" ] || { echo "make-sealed-context: $stub is missing (apt-get install systemd-boot-efi)" >&2; exit 2; }
[ -f "$cfs" ] || { echo "make-sealed-context: $cfs is missing (npm run build)" >&2; exit 2; }

mkdir -p "$ctx"
cp "$bb" "$ctx/busybox"
cp "$objcopy" "$ctx/objcopy"
cp "$stub" "$ctx/linuxx64.efi.stub"
"$here/make-rootfs.sh" "$ctx/tools.tar" "$cfs" "$objcopy"
