"""Link down/up through the Python bindings (tests/linux/net): run in the
test's network namespace as
  linkdriver.py KERNEL IMAGE URL CONSOLE
Boots the Debian image with a user-mode interface (Sandbox over a VM built
here, as Sandbox.create does for initramfs guests), fetches URL, takes the
link down (the guest sees no carrier, a fetch fails), up again (a fetch
works), and prints what it saw and the counters, one "key value" a line. The
guest's console goes to the file CONSOLE; if the driver fails, its tail is
on stderr (guestwatch.py).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "bindings", "python"))
sys.path.insert(0, HERE)
import microvm  # noqa: E402
from guestwatch import reported  # noqa: E402

CMDLINE = ("console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable root=/dev/vda ro "
           "rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs ip=dhcp")
FETCH = ("import sys, urllib.request as u; "
         "print(len(u.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read()))")
# Wait (bounded) until eth0's carrier is @0, then try a fetch.
PROBE = ('for i in $(seq 100); do [ "$(cat /sys/class/net/eth0/carrier)" = "$0" ] && break; '
         'sleep 0.1; done; echo carrier=$(cat /sys/class/net/eth0/carrier); '
         'python3 -c "$1" "$2" 20 && echo fetch=ok || echo fetch=failed')


def main(kernel, image, url, console):
    out = open(console, "wb")
    vm = microvm.VM(memory_mib=512, kernel=kernel, cmdline=CMDLINE, rng=True, vsock_cid=3,
                    disks=[{"path": image, "read_only": True}], nets=["user"], console_out=out)
    with vm, reported("the guest", console, vm):
        vm.start()
        sbx = microvm.Sandbox(vm, lambda: microvm.Agent.connect(vm, timeout=300), owns_vm=False)
        try:
            run = lambda up: sbx.commands.run(["sh", "-c", PROBE, up, FETCH, url],  # noqa: E731
                                              timeout=300).stdout.split()
            print("up1", *run("1"))
            vm.set_net_link(0, False)
            print("down", *run("0"))
            print("stats_down", vm.net_stats(0).link_up)
            vm.set_net_link(0, True)
            print("up2", *run("1"))
            s = vm.net_stats(0)
            print("stats", s.link_up, s.rx_packets, s.tx_packets, s.rx_dropped, s.tx_dropped)
        finally:
            sbx.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
