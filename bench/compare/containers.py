"""The systems without a guest kernel:

  Runc     a container (Debian's runc) whose root is the VMs' own Debian
           image, mounted read-only (loop), as an OCI bundle; its own
           namespaces (net: empty, or a veth for the network case) and
           cgroup
  Process  a plain process on the host: the floor
An instance is started with `sh -c 'echo ready; exec sleep infinity'`:
first_ms = ready_ms = the "ready" line read; commands run in it with
`runc exec` (or as plain child processes)."""
import copy
import json
import os
import subprocess
import time

import itertools

import common
from common import Console, log, now_ms, run

INIT = ["sh", "-c", "echo ready; exec sleep infinity"]
# The fio file inside the container (on its /tmp tmpfs: the root is read-only).
DATA = "/tmp/fio.img"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerInstance:
    kind = "container"
    system = "runc"

    def __init__(self, owner, cid, proc, console, t0, data):
        self.owner, self.id, self.proc, self.console, self.data = owner, cid, proc, console, data
        self.ready_ms = console.wait_for(b"ready", common.READY_TIMEOUT)
        self.first_ms = console.first_ms

    def run(self, argv, timeout):
        r = subprocess.run(["runc", "exec", self.id] + list(argv), capture_output=True,
                           timeout=timeout, check=False)  # TimeoutExpired: the case fails
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def data_path(self):
        return DATA

    def pids(self):
        path = os.path.join(self.owner.cgroup_root, self.owner.cgroup_of[self.id].lstrip("/"),
                            "cgroup.procs")
        try:
            with open(path) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def close(self):
        subprocess.run(["runc", "delete", "--force", self.id], capture_output=True, check=False,
                       timeout=60)
        if self.proc.poll() is None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                log("runc %s: `runc run` not gone 60 s after the delete; killed" % self.id)
        self.console.close()


class Runc:
    name, label, kind = "runc", "container (runc)", "container"

    def __init__(self, s, rootfs, workdir, cgroup_root):
        self.s, self.rootfs, self.cgroup_root = s, rootfs, cgroup_root
        self.dir = os.path.join(workdir, "runc")
        os.makedirs(self.dir, exist_ok=True)
        base = os.path.join(self.dir, "spec")
        os.makedirs(base, exist_ok=True)
        if not os.path.exists(os.path.join(base, "config.json")):
            run(["runc", "spec"], cwd=base)
        with open(os.path.join(base, "config.json")) as f:
            self.spec = json.load(f)
        self.ids = itertools.count(1)  # starters in threads share it
        self.cgroup_of = {}

    def config(self, cid, init, data=None, net=None, cgroup=None):
        c = copy.deepcopy(self.spec)
        c["process"].update(terminal=False, args=list(init), env=[PATH_ENV, "HOME=/root"])
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k] = sorted(set(c["process"]["capabilities"][k]) |
                                                     {"CAP_NET_RAW"})
        c["root"] = {"path": self.rootfs, "readonly": True}
        c["hostname"] = cid
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "mode=1777"]})
        if data:
            c["mounts"].append({"destination": DATA, "type": "bind", "source": data,
                                "options": ["rbind", "rw"]})
        if net:
            for ns in c["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = net["netns"]
        path = (cgroup.path_for_child(cid) if cgroup else "/cmp-runc/" + cid)
        c["linux"]["cgroupsPath"] = path
        self.cgroup_of[cid] = path
        return c

    def bundle(self, cid, init, **kw):
        b = os.path.join(self.dir, cid)
        os.makedirs(b, exist_ok=True)
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(self.config(cid, init, **kw), f)
        return b

    def new_id(self):
        return "cmp%d-%d" % (os.getpid(), next(self.ids))

    def start(self, data=None, net=None, cgroup=None):
        cid = self.new_id()
        b = self.bundle(cid, INIT, data=data, net=net, cgroup=cgroup)
        r, w = os.pipe()
        t0 = now_ms()
        proc = subprocess.Popen(["runc", "run", "-d", "--bundle", b, cid],
                                stdin=subprocess.DEVNULL, stdout=w, stderr=w)
        os.close(w)
        console = Console(r, t0)
        try:
            return ContainerInstance(self, cid, proc, console, t0, data)
        except BaseException:
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False,
                           timeout=60)
            raise

    # ---- warm start: a container created ahead (runc create), then started
    def create(self):
        cid = self.new_id()
        b = self.bundle(cid, INIT)
        r, w = os.pipe()
        proc = subprocess.Popen(["runc", "create", "--bundle", b, cid],
                                stdin=subprocess.DEVNULL, stdout=w, stderr=w)
        os.close(w)
        try:
            proc.wait(common.READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            os.close(r)
            raise RuntimeError("runc create: not done in %d s" % common.READY_TIMEOUT)
        if proc.returncode:
            os.close(r)
            raise RuntimeError("runc create: exit %d" % proc.returncode)
        return cid, proc, r

    def start_created(self, created):
        cid, proc, r = created
        t0 = now_ms()
        console = Console(r, t0)
        run(["runc", "start", cid])
        return ContainerInstance(self, cid, proc, console, t0, None)


class ProcessInstance:
    kind = "process"
    system = "process"

    def __init__(self, proc, console, data):
        self.proc, self.console, self.data = proc, console, data
        self.ready_ms = console.wait_for(b"ready", common.READY_TIMEOUT)
        self.first_ms = console.first_ms

    def run(self, argv, timeout):
        r = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def data_path(self):
        return self.data

    def pids(self):
        return [self.proc.pid]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(60)
        self.console.close()


class Process:
    name, label, kind = "process", "process (floor)", "process"

    def __init__(self, s):
        self.s = s

    def start(self, data=None, net=None, cgroup=None):
        proc, console, _ = common.launch(INIT, cgroup)
        return ProcessInstance(proc, console, data)


def wait_gone(pids, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(os.path.exists("/proc/%d" % p) for p in pids):
        time.sleep(0.05)
