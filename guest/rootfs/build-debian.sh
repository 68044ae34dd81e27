#!/usr/bin/env bash
# Build (or fetch from the cache) a Debian bookworm root filesystem image
# (ext4) for libmicrovm guests, with the guest agent as /.microvm/agent.
#
#   guest/rootfs/build-debian.sh [--agent PATH] [--packages PKG[,PKG...]]
#
#   --agent PATH  the guest agent binary (static; default
#                 build/guest/agent/microvm-agent of the repository root)
#   --packages L  Debian packages to add to the default set (a variant
#                 image with its own cache keys, e.g. fio,iperf3 for
#                 bench/compare.sh)
#
# The last line on stdout is the absolute path of the image; progress goes
# to stderr.  Boot it read-only with the agent as init and a private
# writable overlay (see guest/README.md):
#   root=/dev/vda ro rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs
#
# Contents: `mmdebstrap --variant=minbase` of bookworm plus python3, procps,
# iproute2, less, ca-certificates and netbase, without documentation, man
# pages and translations (~190 MB); the packages come from the host's APT
# sources (/etc/apt/sources.list and /etc/apt/sources.list.d/*.list,
# *.sources, pasted into the build as they are).  Added: /.microvm/agent,
# the empty directories /.microvm/overlay (the agent's overlay mount point),
# /dev /proc /sys /tmp /run.
#
# Cache (root ${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}):
#   rootfs/debian-bookworm-<K1>.tar         the mmdebstrap output; <K1> hashes
#                                           the package list, the options,
#                                           the APT sources and the function
#                                           that runs mmdebstrap
#   rootfs/debian-bookworm-<K1>.tar.sha256  its SHA-256
#   rootfs/debian-bookworm-<K2>.ext4        the image; <K2> hashes the
#                                           tarball, the agent, this script
#                                           and mkext4.sh
# so a new agent only redoes the last step (a few seconds).  Files appear
# atomically (written to a temporary name, then renamed); concurrent builders
# are serialised with flock; a cache hit takes no lock and writes nothing.
#
# Needs root (mmdebstrap's root mode; the image keeps the files' owners);
# installs mmdebstrap with apt-get when it is missing.
#
# Environment:
#   MICROVM_CACHE_DIR       cache root (see above)
#   MICROVM_PROGRESS_EVERY  seconds between progress lines (default 15)
set -euo pipefail

# Bump when a step changes in a way its hashed inputs do not show.
readonly SCHEMA=1
readonly SUITE=bookworm
readonly VARIANT=minbase
# Not readonly: --packages appends to it (run_mmdebstrap reads it, so the
# default image keeps its cache key).
INCLUDE=python3,procps,iproute2,less,ca-certificates,netbase
readonly DPKG_OPTS=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/lintian/*'
)

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
self="$here/$(basename -- "${BASH_SOURCE[0]}")"
prog=rootfs/build-debian.sh

log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}
# shellcheck source=guest/progress.sh
. "$here/../progress.sh"

agent=$root/build/guest/agent/microvm-agent
while (($#)); do
    case $1 in
    -h | --help) usage 0 ;;
    --agent)
        (($# >= 2)) || usage
        agent=$2
        shift 2
        ;;
    --agent=*)
        agent=${1#--agent=}
        shift
        ;;
    --packages)
        (($# >= 2)) || usage
        [[ $2 =~ ^[a-z0-9][a-z0-9.+-]*(,[a-z0-9][a-z0-9.+-]*)*$ ]] || die "--packages: bad list '$2'"
        INCLUDE+=,$2
        shift 2
        ;;
    *) usage ;;
    esac
done
[[ -f $agent && -x $agent ]] || die "agent binary '$agent' not found (build the tree first, or pass --agent)"
agent=$(cd -- "$(dirname -- "$agent")" && pwd)/$(basename -- "$agent")

cache=${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}
dir=$cache/rootfs

# The host's APT sources, as files mmdebstrap pastes into its apt config.
host_sources() {
    local f
    if [[ -f /etc/apt/sources.list ]] && grep -qE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
        printf '%s\n' /etc/apt/sources.list
    fi
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && printf '%s\n' "$f"
    done
    return 0
}
mapfile -t sources < <(host_sources)
((${#sources[@]})) || die "no APT sources found in /etc/apt/sources.list{,.d}"

# mmdebstrap into the tarball $1 (the only step that downloads).
run_mmdebstrap() {
    local args=(--variant="$VARIANT" --include="$INCLUDE" --format=tar)
    local o
    for o in "${DPKG_OPTS[@]}"; do args+=(--dpkgopt="$o"); done
    mmdebstrap "${args[@]}" "$SUITE" "$1" "${sources[@]}" >&2
}

tar_key() {
    {
        printf 'schema=%s suite=%s variant=%s include=%s\n' "$SCHEMA" "$SUITE" "$VARIANT" "$INCLUDE"
        printf 'dpkgopt=%s\n' "${DPKG_OPTS[@]}"
        declare -f run_mmdebstrap
        for f in "${sources[@]}"; do
            printf -- '--- %s\n' "$f"
            cat -- "$f"
        done
    } | sha256sum | cut -c1-16
}

image_key() { # $1 = the tarball's SHA-256
    {
        printf 'schema=%s tar=%s\n' "$SCHEMA" "$1"
        printf 'agent=%s\n' "$(sha256sum <"$agent" | cut -d' ' -f1)"
        cat -- "$self" "$here/mkext4.sh"
    } | sha256sum | cut -c1-16
}

tar=$dir/debian-$SUITE-$(tar_key).tar

# ---------------------------------------------------------------- fast path
if [[ -f $tar.sha256 ]]; then
    img=$dir/debian-$SUITE-$(image_key "$(cat -- "$tar.sha256")").ext4
    if [[ -f $img ]]; then
        printf '%s\n' "$img"
        exit 0
    fi
fi

[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap root mode, file owners in the image)"
mkdir -p -- "$dir" "$cache/locks"
exec 9>"$cache/locks/rootfs-debian.lock"
if ! flock -n 9; then
    log "another rootfs build is running; waiting for it"
    flock 9
fi

tmp=$(mktemp -d "$dir/.tmp.XXXXXX")
cleanup() {
    progress_stop
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- tarball
if [[ ! -f $tar.sha256 ]]; then
    if ! command -v mmdebstrap >/dev/null; then
        log "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2 || {
            apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2
        }
    fi
    log "mmdebstrap $VARIANT $SUITE + $INCLUDE from ${sources[*]} (a few minutes; mmdebstrap's own progress follows)"
    t0=$(date +%s)
    progress_start "running mmdebstrap (downloading, unpacking, configuring packages)"
    run_mmdebstrap "$tmp/rootfs.tar" || die "mmdebstrap failed"
    progress_stop
    sha256sum <"$tmp/rootfs.tar" | cut -d' ' -f1 >"$tmp/rootfs.tar.sha256"
    mv -f -- "$tmp/rootfs.tar" "$tar"
    mv -f -- "$tmp/rootfs.tar.sha256" "$tar.sha256" # last: marks the tarball complete
    log "tarball $tar ($(du -m "$tar" | cut -f1) MB) in $(($(date +%s) - t0))s"
fi

# ---------------------------------------------------------------- image
# A private copy: the key and the image's agent are then the same bytes even
# if the build tree's agent is rebuilt meanwhile (mmdebstrap takes minutes).
cp -- "$agent" "$tmp/agent"
agent=$tmp/agent
img=$dir/debian-$SUITE-$(image_key "$(cat -- "$tar.sha256")").ext4
if [[ -f $img ]]; then # built by whoever held the lock before us
    printf '%s\n' "$img"
    exit 0
fi
t0=$(date +%s)
tree=$tmp/tree
mkdir -- "$tree"
log "unpacking $tar"
progress_start "unpacking the tarball"
tar --xattrs --xattrs-include='*' --numeric-owner -xpf "$tar" -C "$tree"
progress_stop
mkdir -p -- "$tree/.microvm/overlay" "$tree/dev" "$tree/proc" "$tree/sys" "$tree/tmp" "$tree/run"
chmod 1777 "$tree/tmp"
install -m 0755 -o 0 -g 0 -- "$agent" "$tree/.microvm/agent"

"$here/mkext4.sh" "$tree" "$tmp/image.ext4" "debian-$SUITE" || die "mke2fs failed"
mv -f -- "$tmp/image.ext4" "$img"
log "image $img ($(du -m "$img" | cut -f1) MB allocated) in $(($(date +%s) - t0))s"
printf '%s\n' "$img"
