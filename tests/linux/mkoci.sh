#!/usr/bin/env bash
# Build a small OCI image layout offline (no registry) for the rootfs tests:
#
#   tests/linux/mkoci.sh OUTDIR
#
# OUTDIR (created; replaced if it already is an OCI layout) gets one image
# tagged "test": busybox-static as /bin/busybox with the applets sh, echo,
# env, id, pwd, cat, ls, mkdir as symlinks, an /etc/os-release, and the
# image config
#   Entrypoint ["/bin/sh", "-c"]
#   Cmd        [echo "cwd=$(pwd) uid=$(id -u) gid=$(id -g) greeting=$GREETING"]
#   Env        GREETING=hello-from-oci (plus umoci's default PATH)
#   WorkingDir /work
#   User       1000:1000
# so that running the entrypoint prints what a test can check:
#   cwd=/work uid=1000 gid=1000 greeting=hello-from-oci
# Needs root (umoci keeps file owners); installs umoci and busybox-static
# with apt-get when they are missing.  Prints OUTDIR:test on stdout.
set -euo pipefail
(($# == 1)) || {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
out=$1
for p in umoci busybox-static; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p" >&2
done
if [[ -e $out ]]; then
    if [[ -f $out/oci-layout ]]; then
        rm -rf -- "$out"
    elif [[ -n $(ls -A -- "$out") ]]; then
        echo "mkoci.sh: $out exists and is not an OCI layout; not touching it" >&2
        exit 1
    else
        rmdir -- "$out"
    fi
fi
bundle=$(mktemp -d "${TMPDIR:-/tmp}/mkoci.XXXXXX")
trap 'rm -rf -- "$bundle"' EXIT

umoci init --layout "$out"
umoci new --image "$out:test"
umoci unpack --image "$out:test" "$bundle/b" >&2
rootfs=$bundle/b/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/work"
chown 1000:1000 "$rootfs/work"
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh echo env id pwd cat ls mkdir; do ln -s busybox "$rootfs/bin/$a"; done
printf '%s\n' 'PRETTY_NAME="microvm OCI test image (busybox)"' 'ID=microvm-oci-test' >"$rootfs/etc/os-release"
umoci repack --image "$out:test" "$bundle/b" >&2
# shellcheck disable=SC2016 # the guest's shell expands these
umoci config --image "$out:test" \
    --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.cmd 'echo "cwd=$(pwd) uid=$(id -u) gid=$(id -g) greeting=$GREETING"' \
    --config.env GREETING=hello-from-oci \
    --config.workingdir /work \
    --config.user 1000:1000
umoci gc --layout "$out"
echo "$out:test"
