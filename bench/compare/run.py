"""The Linux-guest part of bench/compare.sh: every system side by side in
one run on this machine (the emulated one when the host's KVM cannot run
Linux guests). Run as root by bench/compare/linux.sh, not by hand.

  run.py SETTINGS.json PHASES   writes the results as JSON on stdout,
                                progress on stderr
PHASES: cold, warm, memory, rate, workloads, or several of them separated
by commas, run in that order (a full run: linux.sh runs each in a machine
of its own, so that a crash of the emulated machine loses one; --quick:
all in one machine).

SETTINGS.json: kernel, kernel_pci, image, the run counts and the time
limits (see bench/compare.sh). Every step that waits on an instance has a
time limit; on top, settings.deadline_s (when > 0) bounds the whole run:
when it passes, the results so far are written with an error naming the
cases still running, and the runner exits."""
import json
import os
import sys
import threading
import time

import common
from common import Settings, log
import cases
from containers import Process, Runc
from hostenv import HostEnv
from vms import Libmicrovm, LibmicrovmClone, Qemu


def main(path, phases):
    with open(path) as f:
        s = Settings(**json.load(f))
    s.workdir = os.environ["CMP_WORKDIR"]
    common.set_timeouts(s.ready_timeout, s.cmd_timeout)
    env = HostEnv(s)
    res = cases.Results()
    cases.RES = res
    t_start = time.time()
    done = threading.Lock()  # whoever takes it writes the results

    def write(extra_error=None):
        out = res.as_dict()
        if extra_error:
            out["errors"] = dict(out["errors"], **extra_error)
        out["settings"] = s.__dict__
        out["runner_seconds"] = time.time() - t_start
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()

    def deadline():
        if not done.acquire(blocking=False):
            return
        running = ", ".join(sorted(cases.RUNNING)) or "none (between cases)"
        msg = ("the runner's deadline (%d s) passed; cases still running: %s"
               % (s.deadline_s, running))
        log("DEADLINE: " + msg)
        write({"deadline": msg})
        try:
            env.close()
        finally:
            os._exit(0)  # the errors in the results fail the run

    timer = None
    if s.deadline_s > 0:
        timer = threading.Timer(s.deadline_s, deadline)
        timer.daemon = True
        timer.start()
    try:
        run_all(s, env, res, phases.split(","))
    finally:
        if timer:
            timer.cancel()
        if done.acquire(blocking=False):
            env.close()
            write()
    return 0


PHASES = ("cold", "warm", "memory", "rate", "workloads")


def run_all(s, env, res, phases):
    for p in phases:
        assert p in PHASES, "unknown phase " + p
    log("== %s: setting up (root file system mount, network%s)"
        % (",".join(phases), ", block I/O file" if "workloads" in phases else ""))
    rootfs = env.mount_rootfs()
    netdesc = env.network()
    s.template = os.path.join(s.workdir, "template")
    boot = Libmicrovm(s)
    qm, q35 = Qemu(s, "microvm"), Qemu(s, "q35")
    runc = Runc(s, rootfs, s.workdir, env.cgroup_root())
    proc = Process(s)
    clone = LibmicrovmClone(s, s.template)
    w = s.warmup

    def need_template():
        if not os.path.exists(s.template):
            log("making the libmicrovm template (boot, agent ready, snapshot)")
            cases.retried("libmicrovm template", lambda: boot.make_template(s.template))

    def qemu_template(q):
        if q.template is None:
            log("making the %s template (boot, agent ready, migrate to a file)" % q.name)
            cases.retried(q.name + " template", lambda: q.make_template(
                os.path.join(s.workdir, q.name + ".migration")))

    def workloads():
        log("== workloads: compute kernel, fio, iperf3, ping (one instance per system)")
        data = env.data_file(s.data_mib)
        cases.workloads(res, [boot, qm, q35, runc, proc], env, s, netdesc, data)

    if "cold" in phases:
        keep = {}
        if s.templates_from_cold:
            # --quick: the last cold start of each VM is saved as the warm
            # starts' template instead of booting one more for it.
            keep = {
                boot.name: (boot.start, lambda inst: boot.save_template(inst, s.template)),
            }
            for q in (qm, q35):
                keep[q.name] = (
                    lambda q=q: q.start(qmp=os.path.join(s.workdir, q.name + ".qmp")),
                    lambda inst, q=q: q.save_template(
                        inst, os.path.join(s.workdir, q.name + ".migration")))
        log("== cold start: %d runs per system (+%d warm-up)%s" % (
            s.runs, w, "; the last VM starts saved as the templates" if keep else ""))
        cases.cold(res, [boot, qm, q35, runc, proc], s.runs, w, keep, s.rate_from_one)

    if "warm" in phases:
        log("== warm start: %d runs per kind (+%d warm-up)" % (s.warm_runs, w))
        cases.guarded(res, "warm start", "libmicrovm-restore",
                      lambda: (need_template(), cases.warm_restore(res, clone, s.warm_runs, w,
                                                                   s.rate_from_one)))
        cases.guarded(res, "warm start", "libmicrovm-reset",
                      lambda: (need_template(), cases.warm_reset(res, clone, s.warm_runs, w)))
        cases.guarded(res, "warm start", "libmicrovm-fork",
                      lambda: (need_template(), cases.warm_fork(res, s.template, s.warm_runs, w)))
        for q in (qm, q35):
            cases.guarded(res, "warm start", q.name + "-restore",
                          lambda q=q: (qemu_template(q), cases.warm_qemu(res, q, s.warm_runs, w)))
        cases.guarded(res, "warm start", "runc-start",
                      lambda: cases.warm_runc(res, runc, s.warm_runs, w))

    if "memory" in phases:
        log("== memory: Pss of %d idle instances, how many fit in %d MiB (at most %d)"
            % (s.mem_n, s.budget_mib, s.fit_cap))
        cases.guarded(res, "memory", "libmicrovm-restore template", need_template)
        cases.memory(res, env, s, [boot, clone, qm, q35, runc, proc], s.mem_n,
                     s.budget_mib, s.fit_cap)

    if "rate" in phases:
        rated = [boot, clone, qm, q35, runc, proc]
        if s.rate_from_one:
            log("== start rate of the VMs: taken from their cold and restore starts above")
            rated = [runc, proc]
        else:
            cases.guarded(res, "start rate", "libmicrovm-restore template", need_template)
        for starters in s.rate_starters:
            log("== start rate: %d starter(s), %d starts each" % (starters, s.rate_starts))
            cases.rate(res, rated, starters, s.rate_starts)

    if "workloads" in phases:
        workloads()



if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
