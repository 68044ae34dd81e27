#!/usr/bin/env bash
# Build the small ext4 root file system of the overlay-root Linux tests
# (test_linux_rootfs.c): busybox-static with a symlink per applet and the
# guest agent as /.microvm/agent, the layout guest/rootfs/build-*.sh give
# their images, in a few MiB and a second (no mmdebstrap).
#
#   tests/linux/mkagentroot.sh OUT.ext4 AGENT
set -euo pipefail
(($# == 2)) || { echo "usage: mkagentroot.sh OUT.ext4 AGENT" >&2; exit 2; }
out=$1 agent=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -x /bin/busybox ] || apt-get install -y -q busybox-static >&2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,etc,root,dev,proc,sys,run,.microvm/overlay}
mkdir -m 1777 "$stage/tmp"
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -sf busybox "$stage/bin/$a"
done
echo 'base image file' >"$stage/etc/base.txt"
install -m 0755 "$agent" "$stage/.microvm/agent"
"$here/../../guest/rootfs/mkext4.sh" "$stage" "$out" agentroot
