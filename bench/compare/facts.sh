#!/usr/bin/env bash
# Host facts for the results file, as one JSON object on stdout: date, host
# name, CPU, cores, memory, kernel, whether /dev/kvm has VT-x/AMD-V behind
# it, which KVM module, load average, and the versions of what is compared.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
hw=no
grep -qE '\b(vmx|svm)\b' /proc/cpuinfo && hw=yes
kvm_mods=$(ls /sys/module 2>/dev/null | grep '^kvm' | paste -sd, - || true)
ver() { "$@" 2>/dev/null | head -n1 || true; }
python3 - "$hw" "$kvm_mods" \
    "$(ver qemu-system-x86_64 --version)" "$(ver runc --version)" "$(ver fio --version)" \
    "$(ver iperf3 --version)" "$(dpkg-query -W -f='${Version}' seabios 2>/dev/null || true)" \
    "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)" <<'PY'
import datetime, json, os, platform, socket, sys
hw, mods, qemu, runc, fio, iperf, seabios, commit, dirty = sys.argv[1:10]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
print(json.dumps({
    "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    "host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
    "memory_gib": round(mem / 2**20, 1), "kernel": platform.release(),
    "kvm_hw_virt": hw == "yes", "kvm_modules": mods or "none",
    "load_avg": open("/proc/loadavg").read().split()[:3],
    "qemu": qemu, "runc": runc, "fio": fio, "iperf3": iperf, "seabios": seabios,
    "commit": commit + ("+%s changed files" % dirty if dirty != "0" else ""),
}))
PY
