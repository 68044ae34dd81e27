"""bench/compare.sh's report: one Markdown file with the table (metric, each
system, ratio to ours, how measured), the host facts and the run counts,
PNG plots of the distributions next to it, and the raw samples as JSON.

  report.py --facts F --tiny T --linux L --out RESULTS.md --command CMD
"""
import argparse
import json
import math
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Columns of the table: (key in the results, heading). "ours" is the first.
COLS = (("libmicrovm", "libmicrovm"), ("qemu-microvm", "QEMU -M microvm"),
        ("qemu-q35", "QEMU -M q35 + SeaBIOS"), ("runc", "container (runc)"),
        ("process", "process (floor)"))
WARM = {"libmicrovm": "libmicrovm-restore", "qemu-microvm": "qemu-microvm-restore",
        "qemu-q35": "qemu-q35-restore", "runc": "runc-start"}
COLORS = {"libmicrovm": "#1f77b4", "libmicrovm-restore": "#17becf", "libmicrovm-reset": "#2ca02c",
          "libmicrovm-fork": "#bcbd22", "qemu-microvm": "#ff7f0e", "qemu-microvm-restore": "#ffbb78",
          "qemu-q35": "#d62728", "qemu-q35-restore": "#ff9896", "runc": "#9467bd",
          "runc-start": "#c5b0d5", "process": "#7f7f7f"}


def p99(v):
    """Nearest-rank 99th percentile (the maximum when there are < 100)."""
    s = sorted(v)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def fmt(x):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    a = abs(x)
    return ("%.0f" % x if a >= 100 else "%.1f" % x if a >= 10 else "%.2f" % x if a >= 1
            else "%.3f" % x)


class Table:
    def __init__(self):
        self.rows = []

    def row(self, metric, cells, how, ours_key="libmicrovm"):
        """@cells: system -> (main value, extra text) or None."""
        ours = cells.get(ours_key)
        out = []
        for key, _ in COLS:
            c = cells.get(key)
            if c is None:
                out.append("—")
                continue
            v, extra = c
            txt = fmt(v) + (" " + extra if extra else "")
            if key != ours_key and ours and ours[0] and v is not None:
                txt += " (%s×)" % fmt(v / ours[0])
            out.append(txt)
        self.rows.append("| %s | %s | %s |" % (metric, " | ".join(out), how))

    def markdown(self):
        head = "| metric | " + " | ".join(h for _, h in COLS) + " | how measured |"
        sep = "|---|" + "---:|" * len(COLS) + "---|"
        return "\n".join([head, sep] + self.rows)


def dist(samples, key):
    v = samples.get(key)
    if not v:
        return None
    return statistics.median(v), "/ p99 %s" % fmt(p99(v))


# ------------------------------------------------------------------ plots

def boxplot(ax, data, title, ylabel, log=True):
    names = [k for k in data if data[k]]
    if not names:
        ax.set_visible(False)
        return
    ax.boxplot([data[k] for k in names], whis=(1, 99), showfliers=True)
    for i, k in enumerate(names, 1):
        ax.scatter([i + (j % 7 - 3) * 0.03 for j in range(len(data[k]))], data[k], s=8,
                   alpha=0.6, color=COLORS.get(k, "k"), zorder=3)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def cdf(ax, data, title, xlabel, log=True):
    for k, v in data.items():
        if not v:
            continue
        s = sorted(v)
        ax.plot(s, [(i + 1) / len(s) for i in range(len(s))], label="%s (n=%d)" % (k, len(s)),
                color=COLORS.get(k))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs")
    if log:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def save(fig, path, where):
    fig.suptitle(where, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.basename(path)


def plots(base, L, T, where):
    sm = L["samples"]
    pics = []
    pick = (lambda metric: {k: v for k, v in sm.get(metric, {}).items()})
    fig, axs = plt.subplots(1, 3, figsize=(14, 4.5))
    for ax, (m, t) in zip(axs, (("cold_first_ms", "cold: launch -> first output"),
                                ("cold_ready_ms", "cold: launch -> ready"),
                                ("cold_exit_ms", "cold: launch -> `true` exited"))):
        boxplot(ax, pick(m), t, "ms")
    pics.append(("Cold start", save(fig, base + "-cold.png", where)))

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.5))
    boxplot(axs[0], pick("warm_ready_ms"), "warm: start -> ready", "ms")
    boxplot(axs[1], pick("warm_exit_ms"), "warm: start -> `true` exited", "ms")
    pics.append(("Warm start", save(fig, base + "-warm.png", where)))

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, st in zip(axs, (1, 2)):
        boxplot(ax, pick("rate%d_latency_ms" % st), "%d starter(s): start -> exit of each" % st,
                "ms")
    pics.append(("Start rate (latency of each start)", save(fig, base + "-rate.png", where)))

    v = L["values"]
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, m, t in ((axs[0], "mem_pss_kib", "Pss per idle instance (MiB)"),
                     (axs[1], "fit_count", "instances that fit in the budget")):
        d = v.get(m, {})
        names = list(d)
        vals = [d[k] / 1024 if m == "mem_pss_kib" else d[k] for k in names]
        ax.bar(range(len(names)), vals, color=[COLORS.get(k, "k") for k in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        ax.set_title(t, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    pics.append(("Memory", save(fig, base + "-memory.png", where)))

    fig, axs = plt.subplots(1, 4, figsize=(16, 4.2))
    for ax, (rw, bs) in zip(axs, (("randread", "4k"), ("randwrite", "4k"), ("read", "1m"),
                                  ("write", "1m"))):
        d = v.get("fio_%s_%s_clat_us" % (rw, bs), {})
        for k, pct in d.items():
            xs = sorted(pct, key=float)
            ax.plot([float(x) for x in xs], [pct[x] for x in xs], marker="o", ms=3, label=k,
                    color=COLORS.get(k))
        ax.set_yscale("log")
        ax.set_title("fio %s %s: completion latency" % (rw, bs), fontsize=10)
        ax.set_xlabel("percentile")
        ax.set_ylabel("us")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    pics.append(("Block I/O latency distribution", save(fig, base + "-fio.png", where)))

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.2))
    boxplot(axs[0], pick("net_up_mbits_intervals"), "iperf3 guest -> host, per second",
            "Mbit/s")
    boxplot(axs[1], pick("net_down_mbits_intervals"), "iperf3 host -> guest, per second",
            "Mbit/s")
    cdf(axs[2], pick("ping_rtt_ms"), "ping round trip", "ms")
    pics.append(("Network", save(fig, base + "-net.png", where)))

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    boxplot(axs[0], pick("cpu_ms"), "sha256 of the same bytes, host clock", "ms", log=False)
    boxplot(axs[1], pick("cpu_inside_ms"), "the same, instance's clock", "ms", log=False)
    pics.append(("Compute kernel", save(fig, base + "-cpu.png", where)))

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    cdf(axs[0], {"libmicrovm": T["boot_first_ms"], "process": T["process"]["start_ms"]},
        "tiny guest: create -> first output (native)", "ms")
    th = sorted(T["throughput"], key=int)
    x = range(len(th))
    axs[1].bar([i - 0.2 for i in x], [T["throughput"][t]["floor"] for t in th], 0.4,
               label="floor (raw KVM)", color="#7f7f7f")
    axs[1].bar([i + 0.2 for i in x], [T["throughput"][t]["libmicrovm"] for t in th], 0.4,
               label="libmicrovm", color=COLORS["libmicrovm"])
    axs[1].set_xticks(list(x))
    axs[1].set_xticklabels(["%s thread(s)" % t for t in th])
    axs[1].set_title("create + start + exit + destroy, VMs/s (bench-density)", fontsize=10)
    axs[1].grid(axis="y", alpha=0.3)
    axs[1].legend(fontsize=7)
    pics.append(("Tiny guests, native", save(fig, base + "-tiny.png", "native KVM, this host")))
    return pics


# ------------------------------------------------------------------ table

def table(L, T, S):
    sm, v = L["samples"], L["values"]
    t = Table()
    emu = "" if S.get("native") else " (emulator)"
    n, wu = S["runs"], S["warmup"]
    for m, title, how in (
            ("cold_first_ms", "cold start → first output, ms",
             "median / p99 of %d runs (+%d warm-up not counted); launch → first console byte "
             "(VMs: the kernel's first line, `Linux version`; runc/process: the `ready` line "
             "of `sh -c 'echo ready; exec sleep infinity'`)" % (n, wu)),
            ("cold_ready_ms", "cold start → agent/command ready, ms",
             "same runs: launch → the guest agent answered over vsock (runc/process: "
             "`ready` read)"),
            ("cold_exit_ms", "cold start → a command's exit, ms",
             "same runs: launch → `true` run in the instance returned (agent exec; "
             "`runc exec`; a child process)")):
        t.row(title + emu, {k: dist(sm.get(m, {}), k) for k, _ in COLS}, how)
    w = "%d (+%d warm-up)" % (S["warm_runs"], wu)
    for m, title in (("warm_ready_ms", "warm start → ready, ms"),
                     ("warm_exit_ms", "warm start → a command's exit, ms")):
        t.row(title + emu, {k: dist(sm.get(m, {}), WARM[k]) for k in WARM},
              "median / p99 of %s; libmicrovm: restore of a snapshot of a booted guest; "
              "QEMU: a new QEMU loading a migration stream saved to a file (-incoming); "
              "runc: `runc start` of a container made ahead with `runc create`" % w)
    for kind in ("reset", "fork"):
        t.row("warm start → a command's exit, %s, ms%s" % (kind, emu),
              {"libmicrovm": dist(sm.get("warm_exit_ms", {}), "libmicrovm-" + kind)},
              "median / p99 of %s; microvm_%s() of a restored clone, agent reconnect, `true`"
              % (w, kind))
    mem = v.get("mem_pss_kib", {})
    cg = v.get("mem_cgroup_kib", {})
    mn = v.get("mem_n", {})

    def memcell(d, k):
        return (d[k] / 1024, "(n=%d)" % mn.get(k, 0)) if k in d else None
    t.row("memory per idle instance, Pss, MiB" + emu,
          {k: memcell(mem, k) for k, _ in COLS},
          "Pss of n idle instances (agent ready, `true` run) ÷ n; libmicrovm: one process "
          "holding n VMs, minus that process before its first VM; runc/process: `sleep` as "
          "the idle workload (no guest kernel to pay for)")
    t.row("memory per idle instance, Pss, restored clones, MiB" + emu,
          {"libmicrovm": memcell(mem, "libmicrovm-restore")},
          "as above, n clones restored from one snapshot (copy-on-write, shared pages)")
    t.row("memory per idle instance, memory cgroup charge, MiB" + emu,
          {k: memcell(cg, k) for k, _ in COLS},
          "memory.current of the instances' cgroup ÷ n: adds kernel memory (page tables, "
          "KVM) that Pss does not see")
    fit, cap = v.get("fit_count", {}), v.get("fit_capped", {})

    def fitcell(k):
        return (fit[k], "(cap)" if cap.get(k) else "") if k in fit else None
    t.row("128 MiB guests that fit in %d MiB" % S["budget_mib"] + emu,
          {k: fitcell(k) for k, _ in COLS},
          "instances started one by one in a memory cgroup limited to %d MiB without swap "
          "until a start fails or the cgroup OOM-kills; at most %d (cap)"
          % (S["budget_mib"], S["fit_cap"]))
    t.row("… restored clones" + emu, {"libmicrovm": fitcell("libmicrovm-restore")},
          "as above, libmicrovm clones of one snapshot")
    for st in S["rate_starters"]:
        r = v.get("rate%d_per_s" % st, {})
        t.row("start rate, %d starter%s, starts/s" % (st, "s" if st > 1 else "") + emu,
              {k: (r[k], "") for k, _ in COLS if k in r},
              "%d starter thread(s) × %d starts each: start → ready → `true` → close, "
              "starts ÷ wall time (higher is better)" % (st, S["rate_starts"]))
        t.row("… libmicrovm restore" + emu,
              {"libmicrovm": (r["libmicrovm-restore"], "") if "libmicrovm-restore" in r
               else None}, "as above, restores of one snapshot")
    for rw, bs, unit in (("randread", "4k", "iops"), ("randwrite", "4k", "iops"),
                         ("read", "1m", "mibs"), ("write", "1m", "mibs")):
        d = v.get("fio_%s_%s_%s" % (rw, bs, unit), {})
        c = v.get("fio_%s_%s_clat_us" % (rw, bs), {})
        cells = {k: (d[k], "(p50 %s / p99 %s us)" % (fmt(c[k].get("50.000000", 0)),
                                                     fmt(c[k].get("99.000000", 0))))
                 for k in d}
        t.row("fio %s %s, %s" % (rw, bs, "IOPS" if unit == "iops" else "MiB/s") + emu, cells,
              "fio psync, queue depth 1, %s s + %s s ramp over the same %d MiB file (the "
              "four patterns %s in one fio command): the "
              "guests' virtio-blk disk (O_DIRECT in the guest), runc bind-mounts it, the "
              "process opens it%s; completion latency percentiles in brackets"
              % (fmt(S["fio_seconds"]), fmt(S.get("fio_ramp", 1)), S["data_mib"],
                 "one after the other" if S.get("fio_serial", 1) else
                 "at the same time (--quick)",
                 "" if v.get("fio_direct", {}).get("process") else
                 " (buffered: the file system under it has no O_DIRECT)"))
    for m, title in (("net_up_mbits", "iperf3 guest → host, Mbit/s"),
                     ("net_down_mbits", "iperf3 host → guest, Mbit/s")):
        d = v.get(m, {})
        t.row(title + emu, {k: (d[k], "") for k in d},
              "iperf3 -t %d (TCP) to a server on the host: VMs over a TAP (virtio-net, no "
              "vhost), runc over a veth pair, the process over loopback"
              % S["net_seconds"])
    t.row("ping round trip, ms" + emu, {k: dist(sm.get("ping_rtt_ms", {}), k) for k, _ in COLS},
          "median / p99 of %d ICMP echoes 10 ms apart to the same server address"
          % S["pings"])
    t.row("compute kernel, ms" + emu, {k: dist(sm.get("cpu_ms", {}), k) for k, _ in COLS},
          "median / p99 of %d: `sh -c` of sha256sum over %d MiB from /dev/zero, timed by the "
          "host around the command (includes starting it in the instance)"
          % (S["cpu_reps"], S["cpu_mib"]))
    t.row("… timed inside the instance, ms" + emu,
          {k: dist(sm.get("cpu_inside_ms", {}), k) for k, _ in COLS},
          "the same runs timed with the instance's own clock (date +%s%N before and after)")

    st, pr = T["start"], T["process"]
    t.row("tiny guest: create → first output, ms (native)",
          {"libmicrovm": (statistics.median(T["boot_first_ms"]),
                          "/ p99 %s" % fmt(p99(T["boot_first_ms"]))),
           "qemu-microvm": ((st["qemu_first"]["median_ms"], "/ p90 %s"
                             % fmt(st["qemu_first"]["p90_ms"])) if "qemu_first" in st else None),
           "process": (statistics.median(pr["start_ms"]), "/ p99 %s" % fmt(p99(pr["start_ms"])))},
          "median / p99 of %d: bench-boot (create, configure, start → the tiny guest's first "
          "console byte); QEMU: bench-density's QEMU -M microvm with a 16-byte BIOS, exec → "
          "its first serial byte (a process start); process: `busybox echo` started from "
          "Python → its first byte" % T["runs"])
    t.row("tiny guest: create → first output, against the floor, ms (native)",
          {"libmicrovm": (st["libmicrovm"]["median_ms"], "/ p90 %s"
                          % fmt(st["libmicrovm"]["p90_ms"])),
           "process": (st["floor"]["median_ms"], "(floor: raw KVM) / p90 %s"
                       % fmt(st["floor"]["p90_ms"]))},
          "bench-density, interleaved in one run: libmicrovm create + start → first byte vs "
          "the floor (the raw KVM calls a VMM cannot avoid, bench/floor.h; shown in the "
          "process column)")
    for th in sorted(T["throughput"], key=int):
        tp = T["throughput"][th]
        t.row("tiny guest: create/start/exit/destroy, %s thread%s, /s (native)"
              % (th, "s" if int(th) > 1 else ""),
              {"libmicrovm": (tp["libmicrovm"], ""),
               "process": (pr["rate_per_s"][str(th)] if str(th) in pr["rate_per_s"]
                           else pr["rate_per_s"][int(th)], "(floor %s VMs/s)" % fmt(tp["floor"]))},
              "bench-density: create + start + run to the guest's exit + destroy, teardown "
              "included; the floor (raw KVM, its VM teardown queued to 16 threads as the "
              "library's) in brackets; process: `busybox true` run to its exit from Python "
              "threads (higher is better)")
    for lv in T["live"]:
        t.row("tiny guest: start with %d idle VMs alive, ms (native)" % lv["alive"],
              {"libmicrovm": (lv["start_ms"], "(destroy %s us)" % fmt(lv["destroy_us"])),
               "process": (lv["floor_start_ms"], "(floor: raw KVM)")},
              "bench-density: median start (to microvm_start's return) and destroy call of "
              "100 VMs (16 MiB) with that many idle VMs in the process; the floor's start in "
              "the process column")
    mem = T["memory"]
    t.row("tiny guest: host memory per idle VM, KiB (native)",
          {"libmicrovm": (mem["libmicrovm_kib"], ""), "process": (mem["process_kib"], "")},
          "Pss added by %d idle tiny VMs (the `idle` payload, 128 MiB, 1 vCPU, halted until "
          "console input) in one process ÷ %d; process: busybox sleep" % (mem["n"], mem["n"]))
    return t.markdown()


def main():
    ap = argparse.ArgumentParser()
    for a in ("facts", "tiny", "linux", "out", "command"):
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args()
    F, T, L = (json.load(open(p)) for p in (a.facts, a.tiny, a.linux))
    S = L["settings"]
    S["native"] = F["kvm_hw_virt"]
    where = ("native KVM" if S["native"] else
             "emulator numbers: all systems inside QEMU TCG with nested SVM, side by side")
    base = os.path.splitext(a.out)[0]
    pics = plots(base, L, T, where)
    with open(base + ".json", "w") as f:
        json.dump({"facts": F, "tiny": T, "linux": L}, f)
    md = ["# libmicrovm vs QEMU microvm, QEMU q35, runc and a process — %s" % F["date"], "",
          "Command: `%s` (%s; %.0f s in the Linux-guest runner)." % (
              a.command, "quick: proves the suite runs, the numbers mean nothing; all "
              "Linux-guest phases in one machine, the last cold start of each VM saved as "
              "its warm starts' template, the VMs' start rate (1 starter, 1 start) taken "
              "from their cold and restore starts"
              if S["quick"] else "full run", L["runner_seconds"]), "",
          "## Host", "",
          "| fact | value |", "|---|---|"]
    for k, lab in (("host", "host"), ("cpu", "CPU"), ("cores", "cores"),
                   ("memory_gib", "memory, GiB"), ("kernel", "kernel"),
                   ("kvm_hw_virt", "KVM with VT-x/AMD-V"), ("kvm_modules", "KVM modules"),
                   ("load_avg", "load average at the start"), ("qemu", "QEMU"),
                   ("seabios", "SeaBIOS"), ("runc", "runc"), ("fio", "fio"),
                   ("iperf3", "iperf3"), ("commit", "libmicrovm commit")):
        val = F[k]
        md.append("| %s | %s |" % (lab, " ".join(val) if isinstance(val, list) else val))
    md.append("| where the Linux-guest rows ran | %s |" % (
        "natively, on this host's KVM" if S["native"] else
        "inside the emulated machine (QEMU TCG, -cpu EPYC,+svm, 2 vCPUs, 4 GiB; "
        "tests/harness/run-nested.sh): **emulator numbers**, only ratios within one row "
        "mean anything"))
    md.append("| tiny-guest rows | natively on this host's /dev/kvm |")
    md += ["", "## Results", "",
           "Each cell: median (or the value) / p99 where there are samples, and in brackets "
           "the ratio to libmicrovm's value in the same row (lower is better for times and "
           "memory, higher for rates, throughput and counts). p99 is nearest-rank: with "
           "fewer than 100 samples it is the maximum. Every VM is 1 vCPU, 128 MiB, the "
           "project's guest kernel (q35: the same configuration plus virtio-pci) and the "
           "same read-only Debian image with the guest agent as init.", "",
           table(L, T, S), ""]
    if L.get("errors"):
        md += ["## Failures", ""] + ["- %s: %s" % (k, e.replace("\n", " ")[:400])
                                     for k, e in L["errors"].items()] + [""]
    if L.get("retries"):
        md += ["## Retried starts", "",
               "Under the emulator an L2 guest now and then stalls at boot; such a start was "
               "tried once more (its time is the second attempt's):", ""]
        md += ["- " + (lambda t: t if len(t) <= 700 else t[:300] + " […] " + t[-400:])(
            r.replace("\n", " ")) for r in L["retries"]] + [""]
    md += ["## Plots", ""]
    for title, png in pics:
        md += ["### " + title, "", "![%s](%s)" % (title, png), ""]
    md += ["Raw samples: `%s`." % os.path.basename(base + ".json"), ""]
    with open(a.out, "w") as f:
        f.write("\n".join(md))
    print(a.out)


if __name__ == "__main__":
    main()
