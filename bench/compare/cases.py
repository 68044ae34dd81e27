"""The measurements of the Linux-guest comparison, each over every system
that can take it. Each case fills Results: samples (lists, for medians,
p99s and plots) or single values, per metric and system."""
import json
import re
import select
import subprocess
import threading
import time

import microvm

import common
from common import log, now_ms, pss_kib, timed_command
from vms import pss_of


class Results:
    def __init__(self):
        self.samples, self.values, self.errors = {}, {}, {}
        self.retries = []

    def add(self, metric, system, v):
        self.samples.setdefault(metric, {}).setdefault(system, []).append(v)

    def set(self, metric, system, v):
        self.values.setdefault(metric, {})[system] = v

    def error(self, case, system, e):
        log("FAILED %s / %s: %s" % (case, system, e))
        self.errors["%s / %s" % (case, system)] = str(e)[:3000]

    def as_dict(self):
        return {"samples": self.samples, "values": self.values, "errors": self.errors,
                "retries": self.retries}


RES = None  # the run's Results, for retried() (set by run.py)


def retried(what, fn):
    """fn(), and once more if it fails: under the emulator an L2 guest now
    and then stalls at boot (seen with every VM kind). Each retry is
    recorded and listed in the report; a second failure is the case's."""
    try:
        return fn()
    except Exception as e:
        msg = str(e)
        if len(msg) > 1500:  # the error, then the end of the console
            msg = msg[:200] + " [...] " + msg[-1300:]
        log("RETRY %s after: %s" % (what, msg))
        if RES is not None:
            RES.retries.append("%s: %s" % (what, msg))
        return fn()


RUNNING = {}  # "case / system" -> its start (time.monotonic()), for the deadline


def guarded(res, case, system, fn):
    """fn(), a failure recorded as the case's (the run goes on). Every step
    inside has a time limit of its own; the runner's overall deadline
    (run.py) names the cases still in RUNNING when it fires."""
    key = "%s / %s" % (case, system)
    RUNNING[key] = time.monotonic()
    try:
        fn()
    except Exception as e:
        res.error(case, system, e)
    finally:
        RUNNING.pop(key, None)


# ------------------------------------------------------------------ cold start

def one_start(system, start, keep=None):
    """start() an instance, run `true` in it, close it: its three times
    (first output, ready, exit of `true`) and the whole cycle to the end of
    the close (what a start costs a starter). keep(inst), when given, runs
    before the close (timed by none of them)."""
    def attempt():
        t0 = now_ms()
        return t0, start()
    t0, inst = retried("start of " + system, attempt)
    try:
        timed_command(inst, ["true"])
        done = now_ms() - t0
        if keep:
            keep(inst)
    except BaseException:
        inst.close()
        raise
    t1 = now_ms()
    inst.close()
    return inst.first_ms, inst.ready_ms, done, done + now_ms() - t1


def rate_of_one(res, name, done, cycle):
    """--quick: the start rate with one starter and one start is what the
    cold (or restore) start just measured: its exit time, and one start over
    its whole cycle. Recorded as the rate case's, without starting again."""
    res.add("rate1_latency_ms", name, done)
    res.set("rate1_per_s", name, 1e3 / cycle)
    log("rate %-20s 1 starter(s) x 1: %.3f starts/s (the start above)" % (name, 1e3 / cycle))


def cold(res, systems, runs, warmup, keep=None, rate_from_one=False):
    """@keep: system name -> (start function, keep function) for systems
    whose last cold start's instance is kept for something else (--quick:
    saved as the warm starts' template) before it is closed.
    @rate_from_one (--quick, one run): a VM's start also gives its start
    rate (processes and containers run the rate case itself: it costs them
    little, and keeps that code running in CI)."""
    keep = keep or {}
    for sy in systems:
        def go(sy=sy):
            for i in range(1 - warmup, runs + 1):  # run 0 (the warm-up) is not counted
                start, k = keep.get(sy.name, (sy.start, None)) if i == runs else (sy.start, None)
                first, ready, done, cycle = one_start(sy.name, start, k)
                log("cold %-20s %2d/%d: first output %8.1f ms, ready %8.1f ms, exit %8.1f ms"
                    % (sy.name, i, runs, first or 0, ready, done))
                if i:
                    res.add("cold_first_ms", sy.name, first)
                    res.add("cold_ready_ms", sy.name, ready)
                    res.add("cold_exit_ms", sy.name, done)
                if i and rate_from_one and sy.kind == "vm":
                    rate_of_one(res, sy.name, done, cycle)
        guarded(res, "cold start", sy.name, go)


# ------------------------------------------------------------------ warm start

def record_warm(res, name, i, runs, ready, done):
    log("warm %-22s %2d/%d: ready %8.1f ms, exit %8.1f ms" % (name, i, runs, ready, done))
    if i:
        res.add("warm_ready_ms", name, ready)
        res.add("warm_exit_ms", name, done)


def warm_restore(res, clone, runs, warmup, rate_from_one=False):
    for i in range(1 - warmup, runs + 1):
        _, ready, done, cycle = one_start(clone.name, clone.start)
        record_warm(res, "libmicrovm-restore", i, runs, ready, done)
        if i and rate_from_one:
            rate_of_one(res, clone.name, done, cycle)


def warm_reset(res, clone, runs, warmup):
    inst = clone.start()
    try:
        for i in range(1 - warmup, runs + 1):
            inst.agent.close()
            inst.agent = None
            t0 = now_ms()
            inst.vm.reset()
            inst.agent = microvm.Agent.connect(inst.vm, timeout=common.READY_TIMEOUT)
            inst.agent.set_io_timeout(common.READY_TIMEOUT)
            ready = now_ms() - t0
            timed_command(inst, ["true"])
            record_warm(res, "libmicrovm-reset", i, runs, ready, now_ms() - t0)
    finally:
        inst.close()


def warm_fork(res, template, runs, warmup):
    import os
    parent = microvm.VM.restore(template, paused=True)
    try:
        for i in range(1 - warmup, runs + 1):
            r, w = os.pipe()
            t0 = now_ms()
            child = parent.fork(console_out=w)  # borrows w until closed
            try:
                agent = microvm.Agent.connect(child, timeout=common.READY_TIMEOUT)
                ready = now_ms() - t0
                agent.set_io_timeout(common.READY_TIMEOUT)
                rc = agent.exec(["true"], timeout=common.CMD_TIMEOUT).exit_code
                done = now_ms() - t0
                agent.close()
                if rc:
                    raise RuntimeError("true in a fork: exit %d" % rc)
            finally:
                child.close()
                os.close(w)
                os.close(r)
            record_warm(res, "libmicrovm-fork", i, runs, ready, done)
    finally:
        parent.close()


def warm_qemu(res, qemu, runs, warmup):
    for i in range(1 - warmup, runs + 1):
        _, ready, done, _ = one_start(qemu.name, qemu.restore)
        record_warm(res, qemu.name + "-restore", i, runs, ready, done)


def warm_runc(res, runc, runs, warmup):
    for i in range(1 - warmup, runs + 1):
        created = runc.create()
        _, ready, done, _ = one_start("runc", lambda: runc.start_created(created))
        record_warm(res, "runc-start", i, runs, ready, done)


# ------------------------------------------------------------------ memory

class HolderFleet:
    """libmicrovm instances: VMs held by one holder.py process."""

    def __init__(self, s, how, cgroup):
        import os
        import sys
        here = os.path.dirname(os.path.abspath(__file__))
        self.how = how
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(here, "holder.py"), s.kernel, s.image, s.template],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=cgroup.enter)
        if self.readline(60) != "up":
            raise RuntimeError("holder did not start")
        self.base = pss_kib(self.proc.pid)

    def add(self):
        self.proc.stdin.write(self.how + "\n")
        self.proc.stdin.flush()
        # a start, its agent and `true`: each step has its own limit in the holder
        ans = self.readline(2 * common.READY_TIMEOUT + common.CMD_TIMEOUT + 30)
        if ans != "ok":
            raise RuntimeError(ans or "holder died (exit %s)" % self.proc.poll())

    def readline(self, timeout):
        """The holder's next answer line; "" if none within @timeout s (the
        holder is killed then)."""
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.proc.kill()
            return ""
        return self.proc.stdout.readline().strip()

    def pss(self):
        return pss_kib(self.proc.pid) - self.base

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class InstanceFleet:
    """Instances that are processes of their own (QEMU, runc, process)."""

    def __init__(self, system, cgroup):
        self.system, self.cgroup, self.held = system, cgroup, []

    def add(self):
        inst = retried("start of " + self.system.name,
                       lambda: self.system.start(cgroup=self.cgroup))
        self.held.append(inst)
        timed_command(inst, ["true"])

    def pss(self):
        return sum(pss_of(i) for i in self.held)

    def close(self):
        for i in self.held:
            i.close()


def memory(res, env, s, systems, n_mem, budget_mib, cap):
    """Per system: add idle instances (each started, agent ready, `true`
    run) one by one inside a memory cgroup limited to @budget_mib (no
    swap) until one fails (start error or an OOM kill in the cgroup) or
    @cap are up. At @n_mem instances: Pss of all of them / n and the
    cgroup's charge / n."""
    for sy in systems:
        def go(sy=sy):
            cg = env.cgroup("cmp-mem-" + sy.name, budget_mib)
            fleet = None
            count, why = 0, "cap"
            try:
                fleet = (HolderFleet(s, "restore" if "restore" in sy.name else "boot", cg)
                         if sy.name.startswith("libmicrovm") else InstanceFleet(sy, cg))
                while count < cap:
                    try:
                        fleet.add()
                    except Exception as e:
                        why = "start failed: %s" % str(e)[:300]
                        break
                    if cg.failed():
                        why = "OOM kill in the cgroup"
                        break
                    count += 1
                    if count <= n_mem:
                        res.set("mem_pss_kib", sy.name, fleet.pss() / count)
                        res.set("mem_cgroup_kib", sy.name, cg.current_kib() / count)
                        res.set("mem_n", sy.name, count)
                    log("memory %-20s %3d instances up, cgroup %6.1f MiB"
                        % (sy.name, count, cg.current_kib() / 1024))
            finally:
                if fleet:
                    fleet.close()
                cg.remove()
            res.set("fit_count", sy.name, count)
            res.set("fit_capped", sy.name, why == "cap")
            res.set("fit_stop", sy.name, why)
            log("memory %-20s: %d fit in %d MiB (%s)" % (sy.name, count, budget_mib,
                                                        why[:120]))
        guarded(res, "memory", sy.name, go)


# ------------------------------------------------------------------ start rate

def rate(res, systems, starters, per_starter):
    for sy in systems:
        def go(sy=sy):
            errs = []

            def worker():
                try:
                    for _ in range(per_starter):
                        _, _, done, _ = one_start(sy.name, sy.start)
                        res.add("rate%d_latency_ms" % starters, sy.name, done)
                except Exception as e:
                    errs.append(e)
            t0 = now_ms()
            th = [threading.Thread(target=worker) for _ in range(starters)]
            for t in th:
                t.start()
            for t in th:
                t.join()
            if errs:
                raise errs[0]
            wall = now_ms() - t0
            r = starters * per_starter / (wall / 1e3)
            res.set("rate%d_per_s" % starters, sy.name, r)
            log("rate %-20s %d starter(s) x %d: %.3f starts/s" % (sy.name, starters,
                                                                  per_starter, r))
        guarded(res, "start rate x%d" % starters, sy.name, go)


# ------------------------------------------------------------------ workloads

FIO_PATTERNS = (("randread", "4k"), ("randwrite", "4k"), ("read", "1m"), ("write", "1m"))
PCTS = "1:5:10:25:50:75:90:95:99:99.9"


def cpu(res, inst, name, reps, mib):
    """The compute kernel: sha256sum of @mib MiB from /dev/zero. Timed by
    the host around the whole command (cpu_ms: includes starting the command
    in the instance) and inside with the instance's clock (cpu_inside_ms:
    a guest clock, which under nested emulation may run off true time)."""
    script = ('t0=$(date +%%s%%N); head -c %dM /dev/zero | sha256sum >/dev/null; '
              't1=$(date +%%s%%N); echo $(( (t1 - t0) / 1000 ))' % mib)
    for i in range(reps):
        ms, out = timed_command(inst, ["sh", "-c", script], timeout=10 * common.CMD_TIMEOUT)
        inside = int(out.strip()) / 1e3
        res.add("cpu_ms", name, ms)
        res.add("cpu_inside_ms", name, inside)
        log("cpu  %-20s %d/%d: sha256 of %d MiB: %.1f ms (inside: %.1f ms)"
            % (name, i + 1, reps, mib, ms, inside))


def fio(res, inst, name, runtime, ramp, size_mib, direct, serial=True):
    """The four FIO_PATTERNS in one fio command (one start of fio per
    instance): one after the other (stonewall), or with @serial false all
    at once (--quick: each fio job costs a start-up of its own, seconds in
    the emulator; the numbers then disturb each other)."""
    path = inst.data_path()
    if inst.kind == "vm":
        # fio links libceph-common, whose zero-fill mapping is larger than a
        # 128 MiB guest's RAM: the default overcommit heuristic refuses it.
        timed_command(inst, ["sh", "-c", "echo 1 > /proc/sys/vm/overcommit_memory"])
    argv = ["fio", "--filename=" + path, "--direct=%d" % direct, "--ioengine=psync",
            "--iodepth=1", "--size=%dM" % size_mib, "--runtime=%dms" % (runtime * 1000),
            "--time_based", "--ramp_time=%dms" % (ramp * 1000), "--percentile_list=" + PCTS, "--output-format=json"]
    for rw, bs in FIO_PATTERNS:
        argv += ["--name=%s-%s" % (rw, bs), "--rw=" + rw, "--bs=" + bs]
        if serial:
            argv.append("--stonewall")
    limit = len(FIO_PATTERNS) * (runtime + ramp) + common.CMD_TIMEOUT
    _, out = timed_command(inst, argv, timeout=limit)
    jobs = {j["jobname"]: j for j in json.loads(out[out.index("{"):])["jobs"]}
    for rw, bs in FIO_PATTERNS:
        d = jobs["%s-%s" % (rw, bs)]["read" if "read" in rw else "write"]
        key = "fio_%s_%s" % (rw, bs)
        pct = {k: v / 1e3 for k, v in d["clat_ns"].get("percentile", {}).items()}
        res.set(key + "_iops", name, d["iops"])
        res.set(key + "_mibs", name, d["bw"] / 1024)
        res.set(key + "_clat_us", name, pct)
        log("fio  %-20s %-9s %-2s: %9.0f IOPS %8.1f MiB/s, clat p50 %.0f us p99 %.0f us"
            % (name, rw, bs, d["iops"], d["bw"] / 1024, pct.get("50.000000", 0),
               pct.get("99.000000", 0)))
    res.set("fio_direct", name, direct)


def net(res, inst, name, server, seconds, pings):
    for key, extra in (("net_up_mbits", []), ("net_down_mbits", ["-R"])):
        _, out = timed_command(inst, ["iperf3", "-c", server, "-t", str(seconds), "-J"] + extra,
                               timeout=seconds + common.CMD_TIMEOUT)
        j = json.loads(out)
        total = j["end"]["sum_received"]["bits_per_second"] / 1e6
        res.set(key, name, total)
        for iv in j["intervals"]:
            res.add(key + "_intervals", name, iv["sum"]["bits_per_second"] / 1e6)
        log("net  %-20s %-15s %9.1f Mbit/s" % (name, key, total))
    _, out = timed_command(inst, ["ping", "-n", "-c", str(pings), "-i", "0.01", "-W", "2",
                                  server], timeout=pings * 0.01 + 2 + common.CMD_TIMEOUT)
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]
    if len(rtts) < pings * 0.9:
        raise RuntimeError("ping: %d of %d answers" % (len(rtts), pings))
    for v in rtts:
        res.add("ping_rtt_ms", name, v)
    rtts.sort()
    log("net  %-20s ping: %d answers, median %.3f ms" % (name, len(rtts), rtts[len(rtts) // 2]))


def workloads(res, systems, env, s, netdesc, data):
    """One instance per system with the data disk and the network: the
    compute kernel, fio, iperf3 and ping in it."""
    host_direct = 1 if env.direct_io_ok(data) else 0
    for sy in systems:
        def go(sy=sy):
            def attempt():
                if sy.kind == "vm":
                    env.fresh_tap()
                return sy.start(data=data, net=netdesc[sy.kind])
            inst = retried("start of " + sy.name, attempt)
            try:
                cpu(res, inst, sy.name, s.cpu_reps, s.cpu_mib)
                fio(res, inst, sy.name, s.fio_seconds, s.fio_ramp, s.data_mib,
                    1 if sy.kind == "vm" else host_direct, s.fio_serial)
                net(res, inst, sy.name, netdesc[sy.kind]["server"], s.net_seconds, s.pings)
            finally:
                inst.close()
        guarded(res, "workloads", sy.name, go)
