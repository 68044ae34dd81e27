"""The VM systems of the comparison, all booting the same guest: the
project's kernel (virtio-mmio; q35 gets the same kernel plus virtio-pci)
and the same Debian image (read-only root, the guest agent as init, an
overlay in tmpfs), 1 vCPU, 128 MiB; the host talks to the agent over vsock.

  Libmicrovm      the library in this process (microvm Python bindings)
  LibmicrovmClone restore of a snapshot of a booted, agent-ready guest
  Qemu            QEMU -M microvm (virtio-mmio, qboot) or -M q35 (SeaBIOS,
                  virtio-pci), vhost-vsock, started as a process
Each start() returns an instance that is ready (its agent answered), with
first_ms (launch -> first console byte) and ready_ms (launch -> agent)."""
import json
import os
import socket
import subprocess
import time

import microvm

import common
from common import Console, log, next_cid, now_ms, pss_kib

MEM_MIB = 128
DATA_SERIAL = "cmpdata"
# loglevel=6: the console shows notices and worse, so the kernel's first
# line ("Linux version ...", a notice) is the first output of every VM, and
# the rest of a normal boot stays off the (slow, emulated) serial port.
CMDLINE = ("console=ttyS0 reboot=k panic=-1 loglevel=6 tsc=reliable root=/dev/vda ro "
           "rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs")


def configure_net(inst, net):
    """The guest end of the TAP: its address, set through the agent (as
    bench/net.py does; the kernel's ip= autoconfiguration stalled QEMU
    guests at boot now and then in the emulator)."""
    rc, out, err = inst.run(["sh", "-c", "ip addr add %s/24 dev eth0 && ip link set eth0 up"
                             % net["guest_ip"]], common.CMD_TIMEOUT)
    if rc:
        raise RuntimeError("%s: eth0 setup: %s" % (inst.system, err))


def find_data_disk(inst):
    """The guest's device node of the data disk (found by its serial)."""
    rc, out, err = inst.run(["sh", "-c", "for d in /sys/block/vd*; do "
                             "[ \"$(cat $d/serial 2>/dev/null)\" = %s ] && echo /dev/${d##*/}; "
                             "done; true" % DATA_SERIAL], common.CMD_TIMEOUT)
    dev = out.strip()
    if rc or not dev.startswith("/dev/vd"):
        raise RuntimeError("data disk not found in %s: %r %r" % (inst.system, out, err))
    return dev


class AgentInstance:
    """What every VM instance shares: commands through the guest agent."""
    system = kind = None
    agent = None

    def run(self, argv, timeout):
        r = self.agent.exec(argv, timeout=timeout)
        return (r.exit_code if not r.signal else 128 + r.signal,
                r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))

    def data_path(self):
        return find_data_disk(self)


# ------------------------------------------------------------------ libmicrovm

def connect_agent(vm):
    """The agent of the started @vm, within READY_TIMEOUT; fails at once
    when the VM stops first (a guest kernel that panics at boot, as L2
    guests in the emulator now and then do, resets the VM)."""
    end = time.monotonic() + common.READY_TIMEOUT
    while True:
        left = end - time.monotonic()
        try:
            return microvm.Agent.connect(vm, timeout=max(0.1, min(2.0, left)))
        except Exception as e:
            if time.monotonic() >= end:
                raise
            try:
                ex = vm.wait(0)
            except Exception:  # still running (TimedOutError) or not waitable
                time.sleep(0.01)
                continue
            raise RuntimeError("the VM stopped before its agent answered (%s; %s)" % (ex, e))


class MicrovmInstance(AgentInstance):
    kind = "vm"

    def __init__(self, system, vm, console, t0, console_w):
        # @console_w: the write end of the console pipe, borrowed by the VM:
        # closed only after the VM is destroyed.
        self.system, self.vm, self.console, self.console_w = system, vm, console, console_w
        self.first_ms = None
        try:
            self.agent = connect_agent(vm)
        except Exception as e:
            self.close()
            raise RuntimeError("%s: agent: %s; console: %r" % (system, e, console.tail[-3000:]))
        self.ready_ms = now_ms() - t0
        self.first_ms = console.first_ms
        self.agent.set_io_timeout(common.READY_TIMEOUT)  # 30 s by default: short for an emulator

    def pids(self):
        return []

    def close(self):
        if self.agent:
            self.agent.close()
            self.agent = None
        self.vm.close()
        os.close(self.console_w)  # EOF for the console reader
        self.console.thread.join(10)
        self.console.close()


class Libmicrovm:
    name, label, kind = "libmicrovm", "libmicrovm (boot)", "vm"

    def __init__(self, s):
        self.s = s

    def vm_config(self, data=None, net=None):
        disks = [{"path": self.s.image, "read_only": True}]
        if data:
            disks.append({"path": data, "serial": DATA_SERIAL})
        nets = [{"backend": "tap", "tap": net["tap"]}] if net else []
        cmdline = CMDLINE + " pci=off"
        return dict(vcpus=1, memory_mib=MEM_MIB, kernel=self.s.kernel, cmdline=cmdline,
                    disks=disks, nets=nets, vsock_cid=3)

    def start(self, data=None, net=None):
        r, w = os.pipe()
        t0 = now_ms()
        console = Console(r, t0)
        try:
            vm = microvm.VM(console_out=w, **self.vm_config(data, net))
        except BaseException:
            os.close(w)
            raise
        try:
            vm.start()
        except BaseException:
            vm.close()
            os.close(w)
            raise
        inst = MicrovmInstance(self.name, vm, console, t0, w)
        if net:
            configure_net(inst, net)
        return inst

    def make_template(self, path):
        """Boot, wait for the agent, pause and snapshot into @path."""
        inst = self.start()
        try:
            self.save_template(inst, path)
        finally:
            inst.close()

    def save_template(self, inst, path):
        """Pause the running instance @inst and snapshot it into @path (its
        agent connection closed first)."""
        if inst.agent:
            inst.agent.close()
            inst.agent = None
        inst.vm.pause()
        inst.vm.snapshot(path)


class LibmicrovmClone:
    """Warm starts: restore of the template; reset and fork run in
    cases.warm_libmicrovm (they act on an existing VM)."""
    name, label, kind = "libmicrovm-restore", "libmicrovm (restore)", "vm"

    def __init__(self, s, template):
        self.s, self.template = s, template

    def start(self, data=None, net=None):
        assert not data and not net, "clones get the template's devices"
        r, w = os.pipe()
        t0 = now_ms()
        console = Console(r, t0)
        try:
            vm = microvm.VM.restore(self.template, console_out=w)
        except BaseException:
            os.close(w)
            raise
        return MicrovmInstance(self.name, vm, console, t0, w)


# ------------------------------------------------------------------ QEMU

def vsock_agent(cid, deadline, proc, console):
    """Connect to the agent at vsock @cid with libmicrovm's retry pattern
    (5 ms doubling to 100 ms), once it answers."""
    delay = 0.005
    while True:
        if proc.poll() is not None:
            raise RuntimeError("qemu exited (%d); console: %r" % (proc.returncode,
                                                                 console.tail[-3000:]))
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            s.settimeout(2)
            s.connect((cid, microvm.AGENT_PORT))
            s.settimeout(None)
            return microvm.Agent.open_fd(s, timeout=10)
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise RuntimeError("agent at vsock %d not answering; console: %r"
                                   % (cid, console.tail[-3000:]))
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class QemuInstance(AgentInstance):
    kind = "vm"

    def __init__(self, system, proc, console, cid, t0, qmp=None):
        self.system, self.proc, self.console, self.cid, self.qmp = system, proc, console, cid, qmp
        try:
            self.agent = vsock_agent(cid, time.monotonic() + common.READY_TIMEOUT, proc, console)
        except BaseException:
            self.close()
            raise
        self.ready_ms = now_ms() - t0
        self.first_ms = console.first_ms
        self.agent.set_io_timeout(common.READY_TIMEOUT)

    def pids(self):
        return [self.proc.pid]

    def close(self):
        if self.agent:
            self.agent.close()
            self.agent = None
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            log("%s: qemu (pid %d) not gone 60 s after SIGKILL" % (self.system, self.proc.pid))
        self.console.close()


class Qemu:
    """QEMU -M microvm (machine="microvm") or -M q35 (machine="q35")."""

    def __init__(self, s, machine):
        self.s, self.machine = s, machine
        self.name = "qemu-" + machine
        self.label = "QEMU -M %s" % machine
        self.kind = "vm"
        self.mmio = machine == "microvm"
        self.template = None

    def args(self, cid, data=None, net=None, extra=()):
        dev = (lambda d: d + ("-device" if self.mmio else "-pci"))
        cmdline = CMDLINE + (" pci=off" if self.mmio else "")
        a = ["qemu-system-x86_64", "-M", self.machine, "-accel", "kvm", "-cpu", "host",
             "-smp", "1", "-m", str(MEM_MIB), "-nodefaults", "-no-user-config",
             "-display", "none", "-no-reboot", "-serial", "stdio",
             "-kernel", self.s.kernel if self.mmio else self.s.kernel_pci, "-append", cmdline,
             "-drive", "id=root,file=%s,format=raw,if=none,readonly=on" % self.s.image,
             "-device", dev("virtio-blk") + ",drive=root"]
        if net:
            a += ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off" % net["tap"],
                  "-device", dev("virtio-net") + ",netdev=n0"]
        if data:
            a += ["-drive", "id=data,file=%s,format=raw,if=none" % data,
                  "-device", dev("virtio-blk") + ",drive=data,serial=" + DATA_SERIAL]
        a += ["-device", dev("vhost-vsock") + ",guest-cid=%d" % cid]
        return a + list(extra)

    def start(self, data=None, net=None, cgroup=None, qmp=None):
        """A booted instance; with @qmp (a socket path) also a QMP server, so
        that save_template() can save it."""
        cid = next_cid()
        extra = ["-qmp", "unix:%s,server=on,wait=off" % qmp] if qmp else []
        proc, console, t0 = common.launch(self.args(cid, data, net, extra), cgroup)
        inst = QemuInstance(self.name, proc, console, cid, t0, qmp)
        if net:
            try:
                configure_net(inst, net)
            except BaseException:
                inst.close()
                raise
        return inst

    # ---- snapshot (migration stream to a file) and restore
    def make_template(self, path):
        """Boot to agent-ready, then save the VM into @path (save_template)."""
        inst = self.start(qmp=path + ".qmp")
        try:
            self.save_template(inst, path)
        finally:
            inst.close()

    def save_template(self, inst, path):
        """Save the running instance @inst (started with qmp=) with QMP
        `migrate` into @path (QEMU's snapshot to a file; the root disk is
        read-only); the instance's agent connection is closed first."""
        qmp_path = inst.qmp
        try:
            if inst.agent:
                inst.agent.close()
                inst.agent = None
            q = Qmp(qmp_path)
            try:
                # Not stopped first: the stream then records a running VM, and
                # the QEMU that loads it runs it at once (a stopped source's
                # stream leaves the destination paused until `cont`).
                q.cmd("migrate", uri="exec:cat > " + path)
                end = time.monotonic() + common.READY_TIMEOUT
                while True:
                    st = q.cmd("query-migrate").get("status")
                    if st == "completed":
                        break
                    if st in ("failed", "cancelled"):
                        raise RuntimeError("%s: migrate to file: %s" % (self.name, st))
                    if time.monotonic() > end:
                        raise RuntimeError("%s: migrate to file: still %s after %d s"
                                           % (self.name, st, common.READY_TIMEOUT))
                    time.sleep(0.05)
            finally:
                q.close()
        finally:
            if os.path.exists(qmp_path):
                os.unlink(qmp_path)
        self.template = path

    def restore(self):
        """A new QEMU that loads the template's migration stream (same
        devices, a new vsock CID: the guest learns it from the transport
        reset QEMU sends after loading)."""
        cid = next_cid()
        proc, console, t0 = common.launch(self.args(cid, extra=[
            "-incoming", "exec:cat " + self.template]))
        return QemuInstance(self.name + "-restore", proc, console, cid, t0)


class Qmp:
    """A minimal QMP client (one command at a time)."""

    def __init__(self, path):
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                time.sleep(0.05)
        else:
            raise RuntimeError("no QMP socket at " + path)
        self.sock.settimeout(30)  # a QMP answer that never comes fails the case
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError("QMP %s: %s" % (name, msg["error"]))

    def close(self):
        self.f.close()
        self.sock.close()


def pss_of(inst):
    return sum(pss_kib(p) for p in inst.pids())


__all__ = ["Libmicrovm", "LibmicrovmClone", "Qemu", "pss_of", "log"]
