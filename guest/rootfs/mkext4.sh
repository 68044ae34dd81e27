#!/usr/bin/env bash
# Make an ext4 image from a directory tree, without mounting anything.
#
#   guest/rootfs/mkext4.sh TREE OUT [LABEL]
#
# Runs `mke2fs -t ext4 -d TREE` into a new file OUT sized to the tree plus
# headroom: 10% + 16 MiB of blocks and 25% + 1024 of inodes over what the
# tree uses (the image is meant as a read-only base whose writes go to an
# overlay, so the headroom is for the file system's own needs, not for
# data).  4 KiB blocks, no reserved blocks, label LABEL (default "rootfs").
# File owners, modes, device nodes, symlinks, hard links and extended
# attributes are copied as they are in TREE (so build TREE as root).
set -euo pipefail

(($# >= 2 && $# <= 3)) || {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
tree=$1 out=$2 label=${3:-rootfs}
log() { printf 'rootfs/mkext4.sh: %s\n' "$*" >&2; }

[[ -d $tree ]] || {
    log "error: $tree is not a directory"
    exit 1
}
# Space in 4 KiB blocks as the files will take it (du rounds each file up to
# its blocks on the host file system, close to ext4's own use).
kib=$(du -s -k --one-file-system -- "$tree" | cut -f1)
inodes=$(find "$tree" -xdev | wc -l)
blocks=$(((kib / 4) * 11 / 10 + 4096))
ninodes=$((inodes * 5 / 4 + 1024))
log "mke2fs -t ext4 -d $tree: $((kib / 1024)) MiB in $inodes files -> $((blocks / 256)) MiB image, $ninodes inodes"
rm -f -- "$out"
mke2fs -q -F -t ext4 -b 4096 -m 0 -N "$ninodes" -L "$label" -d "$tree" "$out" "$blocks" >&2
