#!/usr/bin/env bash
# Build a busybox initramfs for libmicrovm guests.
#
#   guest/initramfs/build.sh OUT.cpio.gz [--agent PATH | --init FILE] [--add SRC:DEST ...]
#
#   OUT.cpio.gz     output: a gzip-compressed newc cpio archive
#   --agent PATH    use the guest agent binary PATH (build/guest/agent/microvm-agent,
#                   a static executable) as /init: it mounts /proc, /sys, /dev,
#                   /dev/pts, /tmp, /run, listens on vsock port 1024 and prints
#                   MICROVM-AGENT-READY; the host runs commands through
#                   <microvm_agent.h>. It is also kept as /sbin/microvm-agent.
#                   busybox stays in the image for the commands.
#   --init FILE     use FILE as /init (default: a small shell script, below)
#   --add SRC:DEST  copy SRC (file or directory, recursively) to DEST in the
#                   image (DEST is an absolute path inside the guest);
#                   may be repeated
#
# Contents: Debian's busybox-static as /bin/busybox with a symlink per applet
# (installed with apt-get when missing), the directories /dev /proc /sys /tmp
# /run /root /etc /mnt, the device node /dev/console, and /init.
#
# The default /init mounts proc, sysfs and devtmpfs, prints
#   MICROVM-INIT-OK
#   MICROVM-CPUS: <n> (online: <list>)
# on the console, runs `sh` on the console and, when the shell exits, prints
#   MICROVM-INIT-EXIT
# and reboots the guest (`reboot -f`; with `reboot=k` an i8042 reset, which
# the VMM reports as a guest-requested reset).  Kernel command-line words that
# the kernel does not know reach /init as environment variables:
#   MICROVM_SHELL=0        do not start the shell (boot, print, reboot)
#   MICROVM_EXIT=poweroff  power off (ACPI) instead of rebooting
#
# No root privileges are needed: the files are archived with `cpio -o -H newc`
# as owned by root (-R 0:0), and /dev/console (a character device the kernel
# needs for init's stdio before devtmpfs is mounted) is written as a second,
# hand-made newc archive appended to the first (the kernel unpacks
# concatenated archives), so no mknod is required.
set -euo pipefail

prog=initramfs/build.sh
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

out=
init=
agent=
adds=()
while (($#)); do
    case $1 in
    -h | --help) usage 0 ;;
    --init)
        (($# >= 2)) || usage
        init=$2
        shift 2
        ;;
    --init=*)
        init=${1#--init=}
        shift
        ;;
    --agent)
        (($# >= 2)) || usage
        agent=$2
        shift 2
        ;;
    --agent=*)
        agent=${1#--agent=}
        shift
        ;;
    --add)
        (($# >= 2)) || usage
        adds+=("$2")
        shift 2
        ;;
    --add=*)
        adds+=("${1#--add=}")
        shift
        ;;
    -*) die "unknown option $1" ;;
    *)
        [[ -z $out ]] || die "more than one output given ($out, $1)"
        out=$1
        shift
        ;;
    esac
done
[[ -n $out ]] || usage
[[ -z $init || -r $init ]] || die "--init: cannot read $init"
[[ -z $init || -z $agent ]] || die "--agent and --init are exclusive"
if [[ -n $agent ]]; then
    [[ -f $agent && -r $agent ]] || die "--agent: cannot read $agent"
    # /init runs before anything else exists: it must not need a loader.
    if command -v file >/dev/null && ! file -L -- "$agent" | grep -q 'statically linked'; then
        die "--agent: $agent is not a statically linked executable"
    fi
fi

busybox=/bin/busybox
if ! dpkg-query -W -f='${db:Status-Abbrev}' busybox-static 2>/dev/null | grep -q '^ii'; then
    [[ $(id -u) -eq 0 ]] || die "busybox-static is not installed (apt-get install busybox-static)"
    log "installing busybox-static"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static >&2 || {
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static >&2
    }
fi
for tool in cpio gzip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
[[ -x $busybox ]] || die "$busybox not found"

stage=$(mktemp -d "${TMPDIR:-/tmp}/microvm-initramfs.XXXXXX")
trap 'rm -rf -- "$stage"' EXIT

# ---------------------------------------------------------------- tree
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,mnt}
chmod 1777 "$stage/tmp"
chmod 0700 "$stage/root"
cp -- "$busybox" "$stage/bin/busybox"
chmod 0755 "$stage/bin/busybox"
while IFS= read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    mkdir -p -- "$stage/$(dirname -- "$applet")"
    ln -sf /bin/busybox "$stage/$applet"
done < <("$busybox" --list-full)

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"

if [[ -n $agent ]]; then
    cp -- "$agent" "$stage/init"
    cp -- "$agent" "$stage/sbin/microvm-agent"
    chmod 0755 "$stage/sbin/microvm-agent"
elif [[ -n $init ]]; then
    cp -- "$init" "$stage/init"
else
    cat >"$stage/init" <<'EOF'
#!/bin/sh
# libmicrovm default guest /init (guest/initramfs/build.sh)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo MICROVM-INIT-OK
online=$(cat /sys/devices/system/cpu/online 2>/dev/null)
echo "MICROVM-CPUS: $(nproc) (online: ${online:-?})"
# Kernel command-line words NAME=VALUE that the kernel does not know reach
# init as environment variables: MICROVM_SHELL=0 skips the shell,
# MICROVM_EXIT=poweroff powers off instead of rebooting.
if [ "${MICROVM_SHELL:-1}" != 0 ]; then
    setsid cttyhack sh
fi
echo MICROVM-INIT-EXIT
sync
if [ "${MICROVM_EXIT:-reboot}" = poweroff ]; then
    poweroff -f
fi
reboot -f
EOF
fi
chmod 0755 "$stage/init"

for spec in ${adds[@]+"${adds[@]}"}; do
    [[ $spec == *:* ]] || die "--add wants SRC:DEST, got '$spec'"
    src=${spec%:*}
    dest=${spec##*:}
    [[ -e $src ]] || die "--add: $src does not exist"
    [[ $dest == /* ]] || die "--add: DEST must be absolute, got '$dest'"
    dest=${dest%/}
    [[ -n $dest ]] || die "--add: DEST cannot be /"
    mkdir -p -- "$stage$(dirname -- "$dest")"
    cp -aT -- "$src" "$stage$dest"
done

# ---------------------------------------------------------------- archive
# One newc header: the 13 fields are 8 hex digits each; name and data are
# padded with NULs to 4-byte boundaries (the header is 110 bytes long).
newc_entry() { # name mode(octal) rdevmajor rdevminor
    local name=$1 mode=$2 major=$3 minor=$4
    local namesize=$((${#name} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 "$((8#$mode))" 0 0 1 0 0 0 0 "$major" "$minor" "$namesize" 0
    printf '%s\0' "$name"
    local pad=$(((4 - (110 + namesize) % 4) % 4))
    ((pad == 0)) || head -c "$pad" /dev/zero
}

tmp_out="$out.tmp.$$"
trap 'rm -rf -- "$stage" "$tmp_out"' EXIT
mkdir -p -- "$(dirname -- "$out")"
{
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --quiet)
    newc_entry dev/console 020600 5 1
    newc_entry TRAILER!!! 0 0 0
} | gzip -9 -n >"$tmp_out"
mv -f -- "$tmp_out" "$out"
log "wrote $out ($(stat -c %s -- "$out") bytes)"
