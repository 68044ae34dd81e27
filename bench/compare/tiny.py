"""The process and memory parts of bench/compare.sh's native rows (run by
bench/compare/tiny.sh, not by hand):

  tiny.py RUNS CYCLES MEM_N IDLE_ELF     one JSON object on stdout

process: RUNS starts of `busybox echo x` (subprocess, stdout a pipe):
  start -> its first byte (ms each); and CYCLES starts to its exit from 1
  and 2 threads (starts/s): the floor for bench-density's VM rows.
memory: MEM_N idle tiny VMs (the `idle` payload: prints "idle: ready",
  halts until console input; 1 vCPU, 128 MiB) in this process, each up to
  its "ready" line: the Pss they add / MEM_N; and MEM_N `busybox sleep`
  processes: their Pss / MEM_N."""
import json
import os
import select
import subprocess
import sys
import threading
import time

import microvm

BUSYBOX = "/bin/busybox"


def now_ms():
    return time.monotonic() * 1e3


def pss_kib(pid="self"):
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def first_byte(fd, timeout_s=30):
    if not select.select([fd], [], [], timeout_s)[0] or not os.read(fd, 1):
        raise RuntimeError("no output within %d s" % timeout_s)


def process_start():
    t0 = now_ms()
    p = subprocess.Popen([BUSYBOX, "echo", "x"], stdout=subprocess.PIPE)
    first_byte(p.stdout.fileno())
    ms = now_ms() - t0
    p.stdout.close()
    p.wait(30)
    return ms


def process_rate(threads, cycles):
    def work(n):
        for _ in range(n):
            subprocess.run([BUSYBOX, "true"], check=True, timeout=30)
    t0 = now_ms()
    th = [threading.Thread(target=work, args=(cycles // threads,)) for _ in range(threads)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return (cycles // threads) * threads * 1e3 / (now_ms() - t0)


def vm_memory(idle, n):
    base = pss_kib()
    held = []
    try:
        for _ in range(n):
            r, w = os.pipe()
            vm = microvm.VM(vcpus=1, memory_mib=128, kernel=idle, console_out=w)
            held.append((vm, r, w))
            vm.start()
            buf = b""
            end = time.monotonic() + 30
            while b"idle: ready" not in buf:
                left = end - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise RuntimeError("idle guest: no 'idle: ready' within 30 s: %r" % buf)
                buf += os.read(r, 256)
        return (pss_kib() - base) / n
    finally:
        for vm, r, w in held:
            vm.close()
            os.close(w)
            os.close(r)


def process_memory(n):
    procs = [subprocess.Popen([BUSYBOX, "sleep", "600"]) for _ in range(n)]
    try:
        time.sleep(0.2)
        return sum(pss_kib(p.pid) for p in procs) / n
    finally:
        for p in procs:
            p.kill()
            p.wait(30)


def main(runs, cycles, mem_n, idle):
    starts = [process_start() for _ in range(runs)]
    rates = {t: process_rate(t, cycles) for t in (1, 2)}
    mem = {"n": mem_n, "libmicrovm_kib": vm_memory(idle, mem_n),
           "process_kib": process_memory(mem_n)}
    print(json.dumps({"process": {"start_ms": starts, "rate_per_s": rates}, "memory": mem}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
