#!/usr/bin/env bash
# Build the ext4 root file system image for the virtio-blk Linux test with
# busybox-static and tests/linux/rootfs/init, without root privileges
# (mkfs.ext4 -d).   tests/linux/mkrootfs.sh OUT.ext4
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
command -v mkfs.ext4 >/dev/null || { apt-get install -y -q e2fsprogs >&2; }
[ -x /bin/busybox ] || apt-get install -y -q busybox-static >&2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,mnt}
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -sf busybox "$stage/bin/$a"
done
cp "$here/rootfs/init" "$stage/init"
rm -f "$out"
mkfs.ext4 -q -F -d "$stage" "$out" 32M
