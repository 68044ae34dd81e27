#!/usr/bin/env bash
# Build (or fetch from the cache) a Linux 6.1 kernel for libmicrovm.
#
#   guest/kernel/build.sh [guest|l1]
#
#   guest  the minimal guest kernel: tinyconfig + microvm.config
#          outputs bzImage and vmlinux
#   l1     the harness L1 kernel (tests/harness/run-nested.sh):
#          tinyconfig + microvm.config + l1.config; outputs bzImage
#   pci    the guest kernel plus virtio-pci, for PCI machines (QEMU q35
#          in bench/compare.sh): tinyconfig + microvm.config + pci.config
#
# Source: Debian's linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz),
# unpacked once into the cache.  Results are cached in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/microvm/kernel/<target>-<key>/
# where <key> is a hash of the fragment files, the target and the
# linux-source package version.  The last line on stdout is the path of
# that directory; progress goes to stderr.  A cache hit takes no lock and
# writes nothing, so it also works on a read-only cache.
#
# Environment:
#   MICROVM_CACHE_DIR   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/microvm)
#   MICROVM_KERNEL_JOBS make -j value (default: nproc)
#   MICROVM_KEEP_BUILD  1 = keep the object tree after a successful build
#   MICROVM_PROGRESS_EVERY  seconds between progress lines of the long steps
#                       (default 15): elapsed time, objects built, last step
set -euo pipefail

# Bump when the build procedure changes in a way that changes the output.
readonly SCHEMA=1
readonly SRC_PKG=linux-source-6.1
readonly SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
target=${1:-guest}

log() { printf 'kernel/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=guest/progress.sh
. "$here/../progress.sh"
trap progress_stop EXIT

case $target in
guest) fragments=("$here/microvm.config") ;;
l1) fragments=("$here/microvm.config" "$here/l1.config") ;;
pci) fragments=("$here/microvm.config" "$here/pci.config") ;;
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown target '$target' (expected guest, l1 or pci)" ;;
esac
for f in "${fragments[@]}"; do
    [[ -r $f ]] || die "missing config fragment $f"
done

cache=${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}

src_version() {
    dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$SRC_PKG" 2>/dev/null |
        sed -n 's/^ii *//p'
}

cache_key() {
    {
        printf 'schema=%s\ntarget=%s\nsource=%s %s\n' "$SCHEMA" "$target" "$SRC_PKG" "$1"
        for f in "${fragments[@]}"; do
            printf -- '--- %s\n' "$(basename -- "$f")"
            cat -- "$f"
        done
    } | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------- fast path
version=$(src_version || true)
if [[ -n $version ]]; then
    out="$cache/kernel/$target-$(cache_key "$version")"
    if [[ -f $out/.done ]]; then
        printf '%s\n' "$out"
        exit 0
    fi
fi

# ---------------------------------------------------------------- tools
need_pkgs=()
for p in "$SRC_PKG" build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils; do
    if ! dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii'; then
        need_pkgs+=("$p")
    fi
done
if ((${#need_pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (install them as root): ${need_pkgs[*]}"
    log "installing ${need_pkgs[*]}"
    # Serialise with other apt users of this script; apt has its own lock too.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${need_pkgs[@]}" >&2; then
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${need_pkgs[@]}" >&2
    fi
fi
version=$(src_version)
[[ -n $version ]] || die "$SRC_PKG is not installed"
[[ -r $SRC_TARBALL ]] || die "$SRC_TARBALL not found"

key=$(cache_key "$version")
out="$cache/kernel/$target-$key"
mkdir -p "$cache/kernel" "$cache/src" "$cache/locks"

exec 9>"$cache/locks/kernel-$target-$key.lock"
if ! flock -n 9; then
    log "another build of $target-$key is running; waiting for it"
    flock 9
fi
if [[ -f $out/.done ]]; then # built by whoever held the lock before us
    printf '%s\n' "$out"
    exit 0
fi

# ---------------------------------------------------------------- source
src="$cache/src/$SRC_PKG-$version"
if [[ ! -f $src/.unpacked ]]; then
    exec 8>"$cache/locks/src-$SRC_PKG-$version.lock"
    flock 8
    if [[ ! -f $src/.unpacked ]]; then
        log "unpacking $SRC_TARBALL ($version) into $src"
        rm -rf -- "$src" "$src.tmp"
        mkdir -p -- "$src.tmp"
        progress_start "unpacking the kernel source"
        tar -xJf "$SRC_TARBALL" -C "$src.tmp" --strip-components=1
        progress_stop
        touch -- "$src.tmp/.unpacked"
        mv -- "$src.tmp" "$src"
    fi
    flock -u 8
    exec 8>&-
fi

# ---------------------------------------------------------------- build
rm -rf -- "$out"
mkdir -p -- "$out"
build="$out/build"
logfile="$out/build.log"
jobs=${MICROVM_KERNEL_JOBS:-$(nproc)}
start=$(date +%s)

fail() {
    log "error: $*"
    if [[ -s $logfile ]]; then
        log "last lines of $logfile:"
        tail -n 40 -- "$logfile" >&2
    fi
    exit 1
}

kmake() { make -C "$src" O="$build" "$@" >>"$logfile" 2>&1; }

log "building $target kernel in $out (log: $logfile)"
{
    printf 'target=%s key=%s source=%s %s\n' "$target" "$key" "$SRC_PKG" "$version"
    printf 'fragments=%s\n' "${fragments[*]}"
} >"$logfile"

kmake tinyconfig || fail "make tinyconfig failed"
(cd "$src" && ./scripts/kconfig/merge_config.sh -m -O "$build" \
    "$build/.config" "${fragments[@]}") >>"$logfile" 2>&1 ||
    fail "merge_config.sh failed"
kmake olddefconfig || fail "make olddefconfig failed"

# Every option a fragment sets must end up in .config with that value
# (olddefconfig silently drops options whose dependencies are not met).
missing=()
while IFS= read -r line; do
    case $line in
    CONFIG_*=*)
        grep -qxF -- "$line" "$build/.config" || missing+=("$line")
        ;;
    "# CONFIG_"*" is not set")
        opt=${line#\# }
        opt=${opt%% *}
        if grep -q -- "^$opt=" "$build/.config"; then missing+=("$line"); fi
        ;;
    esac
done < <(cat -- "${fragments[@]}")
if ((${#missing[@]})); then
    for m in "${missing[@]}"; do
        opt=${m#\# }
        opt=${opt%%[= ]*}
        have=$(grep -E "^($opt=|# $opt is not set)" "$build/.config" || true)
        log "option not applied: wanted '$m', got '${have:-<absent>}'"
    done
    die "${#missing[@]} requested option(s) missing from the final .config ($build/.config)"
fi

# One line for the progress ticker: objects so far and the last build step.
build_progress() {
    local n last
    n=$(find "$build" -name '*.o' 2>/dev/null | wc -l)
    last=$(tail -n 40 -- "$logfile" | grep -E '^ +[A-Z][A-Z0-9_]* +[^ ]' | tail -n 1 | sed 's/^ *//; s/  */ /')
    printf '%s objects built%s' "$n" "${last:+, last: $last}"
}
log "compiling with make -j$jobs (nice 10); a progress line every ${MICROVM_PROGRESS_EVERY:-15}s"
progress_start "compiling the $target kernel" build_progress
nice -n 10 make -C "$src" O="$build" -j"$jobs" bzImage >>"$logfile" 2>&1 || {
    progress_stop
    fail "kernel build failed"
}
progress_stop

cp -- "$build/arch/x86/boot/bzImage" "$out/bzImage"
cp -- "$build/.config" "$out/config"
if [[ $target == guest ]]; then
    cp -- "$build/vmlinux" "$out/vmlinux"
fi
[[ ${MICROVM_KEEP_BUILD:-0} == 1 ]] || rm -rf -- "$build"
end=$(date +%s)
printf 'built in %ss\n' "$((end - start))" >>"$logfile"
log "$target kernel built in $((end - start))s"
touch -- "$out/.done"
printf '%s\n' "$out"
