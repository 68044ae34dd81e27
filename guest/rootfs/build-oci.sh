#!/usr/bin/env bash
# Make an ext4 root filesystem image for libmicrovm guests from an OCI image
# layout directory (what `skopeo copy docker://... oci:DIR:TAG`, `umoci` or
# `buildah push ... oci:DIR:TAG` produce), with the guest agent as
# /.microvm/agent.
#
#   guest/rootfs/build-oci.sh LAYOUT[:TAG] [--out PATH] [--agent PATH]
#
#   LAYOUT[:TAG]  the layout directory and the tag (org.opencontainers.image.
#                 ref.name) of the image in it; without TAG, the layout must
#                 hold exactly one image (else the error lists the tags)
#   --out PATH    write the image to PATH (default: in the cache, below)
#   --agent PATH  the guest agent binary (static; default
#                 build/guest/agent/microvm-agent of the repository root)
#
# The last line on stdout is the absolute path of the image; progress goes
# to stderr.  Boot it like the Debian image (guest/rootfs/build-debian.sh):
#   root=/dev/vda ro rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs
#
# The image holds the image's root file system (`umoci unpack`: the layers
# applied in order, whiteouts honoured, owners kept) plus /.microvm/agent and
# the empty directories /.microvm/overlay /dev /proc /sys /tmp /run.
#
# Next to the image, IMAGE.config holds the image's process configuration
# (from the image config: Entrypoint, Cmd, Env, WorkingDir, User) for a C
# program to read without a JSON parser: a sequence of records, each
# "KEY=VALUE" followed by one NUL byte (no other separator, no escaping; a
# value never contains a NUL):
#   entrypoint=V  one per Entrypoint element, in order
#   cmd=V         one per Cmd element, in order (the default arguments,
#                 replaced by a user's command as container runtimes do)
#   env=N=V       one per Env entry, in order; PATH=/usr/local/sbin:
#                 /usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin first when
#                 the image sets no PATH (as container runtimes do)
#   cwd=PATH      WorkingDir (absent: "/")
#   user=SPEC     User as the image says it ("name", "uid", "name:group",
#                 "uid:gid"; resolved in the guest at run time); absent: root
# A reader skips keys it does not know.  Example (NUL shown as \0):
#   entrypoint=/bin/sh\0entrypoint=-c\0cmd=echo hi\0env=PATH=/bin\0cwd=/\0
# microvm-sandbox (examples/sandbox/procconf.c) reads it.
#
# Cache: without --out the image is
#   ${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}/rootfs/oci-<KEY>.ext4
# where <KEY> hashes the manifest digest, the agent, this script and
# mkext4.sh; a cache hit takes no lock and writes nothing.  With --out, PATH.key
# records the key of what PATH holds, and an equal key is a hit.  Files are
# written under temporary names and renamed (the .config before the image;
# the image last in the cache, PATH.key last with --out); builders of the
# same key are serialised with flock.
#
# Needs root (the image keeps the files' owners); installs umoci with apt-get
# when it is missing.  Single-architecture images only (a layout whose
# manifest entry is an image index, e.g. from `skopeo copy --all`, is
# refused by umoci).
set -euo pipefail

readonly SCHEMA=2

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
self="$here/$(basename -- "${BASH_SOURCE[0]}")"
prog=rootfs/build-oci.sh

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

ref='' out='' agent=$root/build/guest/agent/microvm-agent
while (($#)); do
    case $1 in
    -h | --help) usage 0 ;;
    --out | --agent)
        (($# >= 2)) || usage
        if [[ $1 == --out ]]; then out=$2; else agent=$2; fi
        shift 2
        ;;
    --out=*) out=${1#--out=} && shift ;;
    --agent=*) agent=${1#--agent=} && shift ;;
    -*) usage ;;
    *)
        [[ -z $ref ]] || usage
        ref=$1
        shift
        ;;
    esac
done
[[ -n $ref ]] || usage
[[ -f $agent && -x $agent ]] || die "agent binary '$agent' not found (build the tree first, or pass --agent)"

# LAYOUT[:TAG]: the whole argument if it is a layout, else split at the last ':'.
layout=$ref tag=
if [[ ! -f $layout/index.json && $ref == *:* ]]; then
    layout=${ref%:*} tag=${ref##*:}
fi
[[ -f $layout/index.json && -f $layout/oci-layout ]] ||
    die "$layout is not an OCI image layout (no index.json / oci-layout)"

# "TAG DIGEST" of the chosen manifest, or an error that lists the tags.
pick_manifest() {
    python3 - "$layout/index.json" "$tag" <<'EOF'
import json, sys
index, want = json.load(open(sys.argv[1])), sys.argv[2]
tags = []
for m in index.get("manifests", []):
    t = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    tags.append((t, m["digest"]))
names = ", ".join(t or "<untagged " + d + ">" for t, d in tags) or "none"
hits = [x for x in tags if x[0] == want] if want else tags
if len(hits) != 1 or not hits[0][0]:
    why = "no image tagged " + repr(want) if want else "%d images" % len(tags)
    sys.exit("%s in %s (tags: %s); name one as LAYOUT:TAG" % (why, sys.argv[1], names))
print(hits[0][0], hits[0][1])
EOF
}
read -r tag digest < <(pick_manifest) || die "cannot choose an image"

key=$({
    printf 'schema=%s manifest=%s\n' "$SCHEMA" "$digest"
    printf 'agent=%s\n' "$(sha256sum <"$agent" | cut -d' ' -f1)"
    cat -- "$self" "$here/mkext4.sh"
} | sha256sum | cut -c1-16)

cache=${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}
if [[ -n $out ]]; then
    img=$(cd -- "$(dirname -- "$out")" && pwd)/$(basename -- "$out")
else
    img=$cache/rootfs/oci-$key.ext4
fi
is_hit() {
    [[ -f $img && -f $img.config ]] || return 1
    [[ -z $out ]] || [[ -f $img.key && $(cat -- "$img.key") == "$key" ]]
}

# ---------------------------------------------------------------- fast path
if is_hit; then
    printf '%s\n' "$img"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root (file owners in the image)"
mkdir -p -- "$(dirname -- "$img")" "$cache/locks"
exec 9>"$cache/locks/rootfs-oci-$key.lock"
if ! flock -n 9; then
    log "another build of this image is running; waiting for it"
    flock 9
fi
if is_hit; then
    printf '%s\n' "$img"
    exit 0
fi
if ! command -v umoci >/dev/null; then
    log "installing umoci"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends umoci >&2 || {
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends umoci >&2
    }
fi

tmp=$(mktemp -d "$(dirname -- "$img")/.tmp.oci.XXXXXX")
cleanup() {
    progress_stop
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# The process configuration of the image config (the manifest's config
# blob) as NUL records.
write_config() { # $1 = manifest digest, $2 = output
    python3 - "$layout" "$1" "$2" <<'EOF'
import json, os, sys
layout, digest, out = sys.argv[1:]
def blob(d):
    algo, hexd = d.split(":", 1)
    return json.load(open(os.path.join(layout, "blobs", algo, hexd)))
c = blob(blob(digest)["config"]["digest"]).get("config") or {}
env = c.get("Env") or []
if not any(e.startswith("PATH=") for e in env):
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + env
recs = ["entrypoint=" + a for a in c.get("Entrypoint") or []]
recs += ["cmd=" + a for a in c.get("Cmd") or []]
recs += ["env=" + e for e in env]
recs += ["cwd=" + (c.get("WorkingDir") or "/")]
if c.get("User"):
    recs.append("user=" + c["User"])
if any("\0" in r for r in recs):
    sys.exit("a value of the image's config contains a NUL byte")
open(out, "wb").write(b"".join(r.encode() + b"\0" for r in recs))
EOF
}

t0=$(date +%s)
log "unpacking $layout:$tag ($digest) with umoci"
progress_start "unpacking the image's layers"
umoci unpack --image "$layout:$tag" "$tmp/bundle" >&2 || die "umoci unpack failed"
progress_stop
tree=$tmp/bundle/rootfs
write_config "$digest" "$tmp/image.config" || die "cannot read the image's configuration"
mkdir -p -- "$tree/.microvm/overlay" "$tree/dev" "$tree/proc" "$tree/sys" "$tree/run"
mkdir -p -- "$tree/tmp" && chmod 1777 "$tree/tmp"
install -m 0755 -o 0 -g 0 -- "$agent" "$tree/.microvm/agent"
"$here/mkext4.sh" "$tree" "$tmp/image.ext4" oci-rootfs || die "mke2fs failed"

mv -f -- "$tmp/image.config" "$img.config"
mv -f -- "$tmp/image.ext4" "$img"
if [[ -n $out ]]; then
    printf '%s\n' "$key" >"$tmp/key"
    mv -f -- "$tmp/key" "$img.key"
fi
log "image $img ($(du -m "$img" | cut -f1) MB) in $(($(date +%s) - t0))s"
printf '%s\n' "$img"
