"""What the runner sets up on the host (the emulated machine's L1, or the
real host in the network namespace bench/compare/linux.sh made):

  - the container's root: the guests' Debian image mounted read-only (loop)
  - the block I/O file every system's fio works on
  - the network: a TAP for the VMs (10.77.1.1 host, .2 guest), a veth into
    a network namespace for the container (10.77.2.1 / .2), loopback for
    the plain process; an iperf3 server on all of them
  - memory cgroups (v2, or v1's memory controller) for the budget case
Everything is undone by close()."""
import os
import shutil
import subprocess
import time

from common import log, run

TAP, TAP_HOST, TAP_GUEST = "cmptap0", "10.77.1.1", "10.77.1.2"
VETH, VETH_HOST, VETH_CTR = "cmpveth0", "10.77.2.1", "10.77.2.2"
NETNS = "cmp-ctr"


class HostEnv:
    def __init__(self, s):
        self.s = s
        self.undo = []
        self.work = s.workdir
        os.makedirs(self.work, exist_ok=True)

    def close(self):
        for fn in reversed(self.undo):
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                log("cleanup: %s" % e)
        self.undo = []

    # ---------------------------------------------------------------- rootfs
    def mount_rootfs(self):
        mnt = os.path.join(self.work, "rootfs")
        os.makedirs(mnt, exist_ok=True)
        run(["mount", "-o", "loop,ro", self.s.image, mnt])
        self.undo.append(lambda: run(["umount", "-d", mnt], check=False))
        return mnt

    # ---------------------------------------------------------------- data
    def data_file(self, mib):
        """The fio file: @mib MiB written once (zeros), so every system reads
        allocated blocks."""
        path = os.path.join(self.work, "fio.img")
        log("writing the %d MiB block I/O file %s" % (mib, path))
        run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % mib, "status=none"])
        self.undo.append(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def direct_io_ok(self, path):
        """Whether the file system under @path takes O_DIRECT (tmpfs of
        Linux < 6.6 does not)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            os.close(fd)
            return True
        except OSError:
            return False

    # ---------------------------------------------------------------- network
    def network(self):
        """Returns the per-kind network descriptions the systems take."""
        run(["ip", "link", "set", "lo", "up"])
        self.fresh_tap()
        self.undo.append(lambda: run(["ip", "link", "del", TAP], check=False))
        run(["ip", "netns", "add", NETNS])
        self.undo.append(lambda: run(["ip", "netns", "del", NETNS], check=False))
        peer = VETH + "p"
        for c in (["ip", "link", "add", VETH, "type", "veth", "peer", "name", peer,
                   "netns", NETNS],
                  ["ip", "addr", "add", VETH_HOST + "/24", "dev", VETH],
                  ["ip", "link", "set", VETH, "up"],
                  ["ip", "-n", NETNS, "addr", "add", VETH_CTR + "/24", "dev", peer],
                  ["ip", "-n", NETNS, "link", "set", peer, "up"],
                  ["ip", "-n", NETNS, "link", "set", "lo", "up"]):
            run(c)
        srv = subprocess.Popen(["iperf3", "-s"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.undo.append(lambda: (srv.kill(), srv.wait()))
        time.sleep(0.5)
        return {
            "vm": {"tap": TAP, "host_ip": TAP_HOST, "guest_ip": TAP_GUEST, "server": TAP_HOST},
            "container": {"netns": "/run/netns/" + NETNS, "server": VETH_HOST},
            "process": {"server": "127.0.0.1"},
        }

    def fresh_tap(self):
        """(Re)create the VMs' TAP: each VM instance gets a new one, as it
        would in a deployment."""
        run(["ip", "link", "del", TAP], check=False)
        for c in (["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"],
                  ["ip", "addr", "add", TAP_HOST + "/24", "dev", TAP],
                  ["ip", "link", "set", TAP, "up"]):
            run(c)

    # ---------------------------------------------------------------- cgroups
    def cgroup_root(self):
        """The cgroup file system holding the memory controller."""
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            return "/sys/fs/cgroup"
        if os.path.isdir("/sys/fs/cgroup/memory"):
            return "/sys/fs/cgroup/memory"
        if not os.listdir("/sys/fs/cgroup"):  # the emulated machine: nothing mounted yet
            run(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"])
            self.undo.append(lambda: run(["umount", "/sys/fs/cgroup"], check=False))
            return "/sys/fs/cgroup"
        raise RuntimeError("no cgroup v2 and no cgroup v1 memory controller")

    def cgroup(self, name, limit_mib):
        return Cgroup(self.cgroup_root(), name, limit_mib)


class Cgroup:
    """A memory cgroup with a hard limit and no swap."""

    def __init__(self, root, name, limit_mib):
        self.root, self.name = root, name
        self.v2 = os.path.exists(os.path.join(root, "cgroup.controllers"))
        self.path = os.path.join(root, name)
        if self.v2:
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")
        os.makedirs(self.path, exist_ok=True)
        if self.v2:
            self._write("memory.max", str(limit_mib << 20))
            if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                self._write("memory.swap.max", "0")
        else:
            self._write("memory.limit_in_bytes", str(limit_mib << 20))
        self.oom0 = self.oom_kills()

    def _write(self, f, v):
        with open(os.path.join(self.path, f), "w") as fh:
            fh.write(v)

    def enter(self):
        """Put the calling process in this cgroup (a preexec_fn)."""
        self._write("cgroup.procs" if self.v2 else "tasks", str(os.getpid()))

    def path_for_child(self, child):
        """cgroupsPath of a container below this cgroup; v2 allows processes
        in leaves only, so a cgroup that holds containers holds nothing else."""
        if self.v2:
            with open(os.path.join(self.path, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")
        return "/%s/%s" % (self.name, child)

    def oom_kills(self):
        if self.v2:
            with open(os.path.join(self.path, "memory.events")) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            return 0
        with open(os.path.join(self.path, "memory.oom_control")) as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def current_kib(self):
        f = "memory.current" if self.v2 else "memory.usage_in_bytes"
        with open(os.path.join(self.path, f)) as fh:
            return int(fh.read()) // 1024

    def failed(self):
        return self.oom_kills() > self.oom0

    def remove(self):
        for d, _, _ in sorted(os.walk(self.path), key=lambda t: -len(t[0])):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.05)
        shutil.rmtree(self.path, ignore_errors=True)
