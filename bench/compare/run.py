"""The Linux-guest part of bench/compare.sh: every system side by side in
one run on this machine (the emulated one when the host's KVM cannot run
Linux guests). Run as root by bench/compare/linux.sh, not by hand.

  run.py SETTINGS.json     writes the results as JSON on stdout,
                           progress on stderr

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


def main(path):
    with open(path) as f:
        s = Settings(**json.load(f))
    s.workdir = os.environ["CMP_WORKDIR"]
    env = HostEnv(s)
    res = cases.Results()
    cases.RES = res
    t_start = time.time()
    try:
        run_all(s, env, res)
    finally:
        env.close()
    out = res.as_dict()
    out["settings"] = s.__dict__
    out["runner_seconds"] = time.time() - t_start
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def run_all(s, env, res):
    log("setting up: root file system mount, network, block I/O file")
    rootfs = env.mount_rootfs()
    netdesc = env.network()
    data = env.data_file(s.data_mib)
    s.template = os.path.join(s.workdir, "template")
    s.qemu_templates = s.workdir

    boot = Libmicrovm(s)
    qm, q35 = Qemu(s, "microvm"), Qemu(s, "q35")
    runc = Runc(s, rootfs, s.workdir, env.cgroup_root())
    proc = Process(s)
    log("making the libmicrovm template (boot, agent ready, snapshot)")
    cases.retried("libmicrovm template", lambda: boot.make_template(s.template))
    clone = LibmicrovmClone(s, s.template)
    cold_systems = [boot, qm, q35, runc, proc]

    w = s.warmup
    log("== cold start: %d runs per system (+%d warm-up)" % (s.runs, w))
    cases.cold(res, cold_systems, s.runs, w)

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

    log("== memory: Pss of %d idle instances, how many fit in %d MiB (at most %d)"
        % (s.mem_n, s.budget_mib, s.fit_cap))
    cases.memory(res, env, s, [boot, clone, qm, q35, runc, proc], s.mem_n, s.budget_mib,
                 s.fit_cap)

    for starters in s.rate_starters:
        log("== start rate: %d starter(s), %d starts each" % (starters, s.rate_starts))
        cases.rate(res, [boot, clone, qm, q35, runc, proc], starters, s.rate_starts)

    log("== workloads: compute kernel, fio, iperf3, ping (one instance per system)")
    cases.workloads(res, cold_systems, env, s, netdesc, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
