"""The Linux-guest part of bench/compare.sh: every system side by side in
one run on this machine (the emulated one when the host's KVM cannot run
Linux guests). Run as root by bench/compare/linux.sh, not by hand.

  run.py SETTINGS.json PHASE    writes the results as JSON on stdout,
                                progress on stderr
PHASE: cold, warm, memory, rate or workloads (linux.sh runs each in a
machine of its own, so that a crash of the emulated machine loses one).

SETTINGS.json: kernel, kernel_pci, image, workdir, and the run counts
(see bench/compare.sh)."""
import json
import os
import sys
import time

from common import Settings, log
import cases
from containers import Process, Runc
from hostenv import HostEnv
from vms import Libmicrovm, LibmicrovmClone, Qemu


def main(path, phase):
    with open(path) as f:
        s = Settings(**json.load(f))
    s.workdir = os.environ["CMP_WORKDIR"]
    env = HostEnv(s)
    res = cases.Results()
    cases.RES = res
    t_start = time.time()
    try:
        run_all(s, env, res, phase)
    finally:
        env.close()
    out = res.as_dict()
    out["settings"] = s.__dict__
    out["runner_seconds"] = time.time() - t_start
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


PHASES = ("cold", "warm", "memory", "rate", "workloads")


def run_all(s, env, res, phase):
    log("== %s: setting up (root file system mount, network%s)"
        % (phase, ", block I/O file" if phase == "workloads" else ""))
    rootfs = env.mount_rootfs()
    netdesc = env.network()
    s.template = os.path.join(s.workdir, "template")
    boot = Libmicrovm(s)
    qm, q35 = Qemu(s, "microvm"), Qemu(s, "q35")
    runc = Runc(s, rootfs, s.workdir, env.cgroup_root())
    proc = Process(s)
    clone = LibmicrovmClone(s, s.template)
    if phase in ("warm", "memory", "rate"):
        log("making the libmicrovm template (boot, agent ready, snapshot)")
        cases.retried("libmicrovm template", lambda: boot.make_template(s.template))
    w = s.warmup

    if phase == "cold":
        log("== cold start: %d runs per system (+%d warm-up)" % (s.runs, w))
        cases.cold(res, [boot, qm, q35, runc, proc], s.runs, w)

    if phase == "warm":
        log("== warm start: %d runs per kind (+%d warm-up)" % (s.warm_runs, w))
        cases.guarded(res, "warm start", "libmicrovm-restore",
                      lambda: cases.warm_restore(res, clone, s.warm_runs, w))
        cases.guarded(res, "warm start", "libmicrovm-reset",
                      lambda: cases.warm_reset(res, clone, s.warm_runs, w))
        cases.guarded(res, "warm start", "libmicrovm-fork",
                      lambda: cases.warm_fork(res, s.template, s.warm_runs, w))
        for q in (qm, q35):
            def qwarm(q=q):
                log("making the %s template (boot, agent ready, migrate to a file)" % q.name)
                cases.retried(q.name + " template", lambda: q.make_template(
                    os.path.join(s.workdir, q.name + ".migration")))
                cases.warm_qemu(res, q, s.warm_runs, w)
            cases.guarded(res, "warm start", q.name + "-restore", qwarm)
        cases.guarded(res, "warm start", "runc-start",
                      lambda: cases.warm_runc(res, runc, s.warm_runs, w))

    if phase == "memory":
        log("== memory: Pss of %d idle instances, how many fit in %d MiB (at most %d)"
            % (s.mem_n, s.budget_mib, s.fit_cap))
        cases.memory(res, env, s, [boot, clone, qm, q35, runc, proc], s.mem_n,
                     s.budget_mib, s.fit_cap)

    if phase == "rate":
        for starters in s.rate_starters:
            log("== start rate: %d starter(s), %d starts each" % (starters, s.rate_starts))
            cases.rate(res, [boot, clone, qm, q35, runc, proc], starters, s.rate_starts)

    if phase == "workloads":
        log("== workloads: compute kernel, fio, iperf3, ping (one instance per system)")
        data = env.data_file(s.data_mib)
        cases.workloads(res, [boot, qm, q35, runc, proc], env, s, netdesc, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
