"""Host memory stays bounded while the guest takes nothing (tests/linux/net):
run in the test's network namespace as
  flooddriver.py KERNEL IMAGE SECONDS CONSOLE
Boots the Debian image with a user-mode interface forwarding UDP port 5000,
takes eth0 down in the guest (its driver stops taking frames: the receive
queue fills), floods 127.0.0.1:5000 from the host for SECONDS, and prints
the resident memory (KiB) of this process (the VMM) and of passt after a
third of the flood and at its end, the counters, and whether the guest
still answers: "key value..." lines. The guest's console goes to the file
CONSOLE; if the driver fails, its tail is on stderr (guestwatch.py).
"""
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "bindings", "python"))
sys.path.insert(0, HERE)
import microvm  # noqa: E402
from guestwatch import reported  # noqa: E402

CMDLINE = ("console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable root=/dev/vda ro "
           "rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs ip=dhcp")


def rss_kib(pid):
    with open("/proc/%s/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def passt_pid():
    for p in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        if "(passt" in st and int(st.rsplit(")", 1)[1].split()[1]) == os.getpid():
            return p
    raise RuntimeError("no passt child")


def flood(until, sent):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    blk = b"f" * 1400
    while time.monotonic() < until:
        try:
            s.sendto(blk, ("127.0.0.1", 5000))
            sent[0] += 1
        except BlockingIOError:
            time.sleep(0.0005)


def main(kernel, image, seconds, console):
    seconds = float(seconds)
    out = open(console, "wb")
    vm = microvm.VM(memory_mib=512, kernel=kernel, cmdline=CMDLINE, rng=True, vsock_cid=3,
                    disks=[{"path": image, "read_only": True}], console_out=out,
                    nets=[{"backend": "user", "ports": ["5000:5000/udp"]}])
    with vm, reported("the flooded guest", console, vm):
        vm.start()
        sbx = microvm.Sandbox(vm, lambda: microvm.Agent.connect(vm, timeout=300), owns_vm=False)
        try:
            sbx.commands.run("ip link set eth0 down", timeout=120)
            pp, sent, t0 = passt_pid(), [0], time.monotonic()
            th = threading.Thread(target=flood, args=(t0 + seconds, sent))
            th.start()
            time.sleep(seconds / 3)
            print("early", rss_kib("self"), rss_kib(pp), flush=True)
            th.join(seconds + 60)
            print("late", rss_kib("self"), rss_kib(pp))
            s = vm.net_stats(0)
            print("sent", sent[0])
            print("stats", s.rx_packets, s.rx_dropped)
            print("alive", sbx.commands.run("echo yes", timeout=120).stdout.strip())
        finally:
            sbx.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
