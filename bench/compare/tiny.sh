#!/usr/bin/env bash
# The native rows of bench/compare.sh, on any /dev/kvm (the tiny guests
# need no VT-x/AMD-V): libmicrovm's own costs next to a plain process.
#
#   bench/compare/tiny.sh RUNS DENSITY_N OUT.json
#
#  - create -> first guest output: bench-boot --runs RUNS (tiny hello guest)
#  - per-VM host memory and create/destroy rate (1 and 2 threads):
#    bench-density --vms DENSITY_N --starts DENSITY_N (tiny idle guest), and
#    the same with plain processes (--process: busybox)
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
runs=$1 n=$2 out=$3
b=$root/build/bench
tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
echo "compare: tiny guests: bench-boot, $runs runs" >&2
"$b/bench-boot" --runs "$runs" --samples "$tmp/boot" >&2
for mode in "" --process; do
    for t in 1 2; do
        echo "compare: tiny guests: bench-density --threads $t $mode ($n instances, $n starts per thread)" >&2
        "$b/bench-density" --vms "$n" --starts "$n" --threads "$t" $mode >>"$tmp/density"
    done
done
/usr/bin/python3 - "$tmp/boot" "$tmp/density" "$runs" >"$out" <<'PY'
import json, sys
boot = [float(x) for x in open(sys.argv[1])]
dens = [json.loads(l) for l in open(sys.argv[2])]
print(json.dumps({"runs": int(sys.argv[3]), "boot_first_ms": boot, "density": dens}))
PY
