"""Two clones of one snapshot on user-mode networking, at once, through the
Python bindings (tests/linux/net): run in the test's network namespace as
  clonedriver.py KERNEL IMAGE URL PING_ADDR SNAPSHOT_DIR
Boots the Debian image with a user-mode interface, fetches URL, snapshots
it, restores two clones in this process (each with a new MAC address and
its own passt) and, in both at once: waits (bounded) until the guest's
eth0 has the clone's new MAC address (the agent re-probes the device after
the restore's link flap), pings PING_ADDR and fetches URL. Prints one
"key value..." line per VM; for a clone that failed, the last lines of its
console (SNAPSHOT_DIR-clone<i>.console) on stderr, and "GUEST-STUCK" there
when its kernel reported a stalled vCPU while every vCPU thread was in
KVM_RUN (see tests/linux/linux_test.h).
"""
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "bindings", "python"))
sys.path.insert(0, HERE)
import microvm  # noqa: E402
from guestnet import PING  # noqa: E402
from guestwatch import report_failed  # noqa: E402

CMDLINE = ("console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable root=/dev/vda ro "
           "rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs ip=dhcp")
FETCH = ("import sys, urllib.request as u; "
         "print(len(u.urlopen(sys.argv[1], timeout=60).read()))")
# $0 = the MAC address to wait for (at most 60 s), then ping and fetch.
PROBE = ('for i in $(seq 600); do [ "$(cat /sys/class/net/eth0/address 2>/dev/null)" = "$0" ] '
         '&& break; sleep 0.1; done; echo mac=$(cat /sys/class/net/eth0/address); '
         'python3 -c "$1" "$2"; python3 -c "$3" "$4" && echo fetch=ok || echo fetch=failed')


def probe(vm, mac, url, ping_addr):
    sbx = microvm.Sandbox(vm, lambda: microvm.Agent.connect(vm, timeout=300), owns_vm=False)
    try:
        return sbx.commands.run(["sh", "-c", PROBE, mac, PING, ping_addr, FETCH, url],
                                timeout=300).stdout.split()
    finally:
        sbx.kill()


def main(kernel, image, url, ping_addr, snap):
    vm = microvm.VM(memory_mib=512, kernel=kernel, cmdline=CMDLINE, rng=True, vsock_cid=3,
                    disks=[{"path": image, "read_only": True}], nets=["user"])
    with vm:
        vm.start()
        print("parent", vm.net_mac(0), *probe(vm, vm.net_mac(0), url, ping_addr), flush=True)
        vm.pause()
        vm.snapshot(snap)
    consoles = ["%s-clone%d.console" % (snap, i) for i in range(2)]
    files = [open(c, "wb") for c in consoles]
    clones = [microvm.VM.restore(snap, console_out=f) for f in files]
    out = [None, None]

    def serve(i):
        try:
            out[i] = [clones[i].net_mac(0)] + probe(clones[i], clones[i].net_mac(0), url,
                                                    ping_addr)
        except Exception as e:  # reported below, the test fails on it
            out[i] = ["error", repr(e)]
    threads = [threading.Thread(target=serve, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for i, c in enumerate(clones):
        print("clone%d" % i, *(out[i] or ["timeout"]), flush=True)
        if not out[i] or out[i][0] == "error":
            report_failed("clone%d" % i, consoles[i], c)
        c.close()
        files[i].close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
