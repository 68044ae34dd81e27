"""bench/net.sh's measurement, run as root inside a network namespace made
for it (ip netns exec): the same guest (the project's kernel and Debian
image) as a libmicrovm VM (microvm-sandbox) and as a QEMU/KVM VM (-M
microvm, virtio-net-device, the agent reached over vhost-vsock), on two
backends:
 - user mode: the same passt (ip=dhcp; QEMU: -netdev stream to passt's Unix
   socket), servers on the namespace's loopback (passt's gateway mapping);
 - TAP: one TAP made for the run (10.0.3.1/24 on the host side, the guest
   sets 10.0.3.2 itself; QEMU: -netdev tap, vhost off, as ours has no
   vhost), servers on 10.0.3.1; offloads (IFF_VNET_HDR) on both.
The guest measures: TCP download and upload of MIB MiB, and ROUNDS 1-byte
request/response round trips.

  net.py TOOL KERNEL IMAGE MIB ROUNDS
"""
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bindings",
                                "python"))
import microvm  # noqa: E402

GW = "10.0.2.2"
TAP, TAP_HOST, TAP_GUEST = "mbtap0", "10.0.3.1", "10.0.3.2"
# The guest on the TAP: no DHCP there, it sets its own address.
TAP_SETUP = "ip addr add %s/24 dev eth0 && ip link set eth0 up && " % TAP_GUEST
SOURCE, SINK, ECHO = 9091, 9090, 9092
CMDLINE = ("console=ttyS0 reboot=k panic=-1 quiet tsc=reliable root=/dev/vda ro "
           "rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs ip=dhcp")
CLIENT = r"""
import socket, statistics, sys, time
gw, mib, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def conn(port):
    s = socket.create_connection((gw, port), timeout=300)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
s, got, t = conn(%d), 0, time.monotonic()
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    got += len(b)
down = got / (time.monotonic() - t) / 2**20
assert got == mib << 20, got
s, blk, t = conn(%d), b"\0" * (1 << 20), time.monotonic()
for _ in range(mib):
    s.sendall(blk)
s.shutdown(socket.SHUT_WR)
assert s.recv(64) == b"ok"
up = (mib << 20) / (time.monotonic() - t) / 2**20
s, lat = conn(%d), []
for _ in range(rounds):
    t = time.perf_counter()
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    lat.append((time.perf_counter() - t) * 1e6)
lat.sort()
print("%%.1f %%.1f %%.0f %%.0f" %% (down, up, lat[len(lat) // 2], lat[int(len(lat) * 0.9)]))
""" % (SOURCE, SINK, ECHO)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(addr, port, handle, mib):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handle(self.request, mib)
    srv = Server((addr, port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def source(s, mib):
    blk = b"\0" * (1 << 20)
    for _ in range(mib):
        s.sendall(blk)


def sink(s, mib):
    while s.recv(1 << 20):
        pass
    s.sendall(b"ok")


def echo(s, mib):
    while True:
        b = s.recv(64)
        if not b:
            return
        s.sendall(b)


def run_microvm(tool, kernel, image, args, tap=False):
    net, cmd = ("tap:" + TAP, ["sh", "-c", TAP_SETUP + 'exec python3 -c "$0" "$@"', CLIENT,
                               TAP_HOST]) if tap else ("user", ["python3", "-c", CLIENT, GW])
    r = subprocess.run([tool, "run", "--net", net, "--kernel", kernel, "--image", image,
                        "--", *cmd, *args], capture_output=True, timeout=1800, check=False)
    if r.returncode:
        raise RuntimeError("microvm-sandbox: exit %d: %s" % (r.returncode, r.stderr.decode()))
    return r.stdout.decode().split()


def start_qemu(kernel, image, sock, log, cid):
    """QEMU on passt's socket @sock, or on the TAP if @sock is None."""
    netdev = ("stream,id=n0,server=off,addr.type=unix,addr.path=" + sock if sock else
              "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off" % TAP)
    cmdline = CMDLINE if sock else CMDLINE.replace(" ip=dhcp", "")
    return subprocess.Popen([
        "qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host", "-smp", "1",
        "-m", "512", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "file:" + log, "-kernel", kernel, "-append", cmdline,
        "-drive", "id=d0,file=%s,format=raw,if=none,readonly=on" % image,
        "-device", "virtio-blk-device,drive=d0",
        "-netdev", netdev,
        "-device", "virtio-net-device,netdev=n0",
        "-device", "vhost-vsock-device,guest-cid=%d" % cid], stdin=subprocess.DEVNULL)


def agent_over_vsock(cid, deadline, qemu, log):
    while True:
        if qemu.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError("qemu exited (%d); its console:\n%s"
                                   % (qemu.returncode, f.read()[-3000:]))
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            s.connect((cid, microvm.AGENT_PORT))
            s.settimeout(None)
            return microvm.Agent.open_fd(s, timeout=60)
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                with open(log, errors="replace") as f:
                    print(f.read()[-3000:], file=sys.stderr)
                raise
            time.sleep(0.5)


def start_passt(d):
    """passt on a Unix socket in @d, once it listens: (process, socket path)."""
    sock = os.path.join(d, "passt.sock")
    plog = open(os.path.join(d, "passt.log"), "w")
    passt = subprocess.Popen(["passt", "-f", "-s", sock], stdin=subprocess.DEVNULL,
                             stdout=plog, stderr=plog)
    for _ in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    else:
        passt.kill()
        passt.wait()
        raise RuntimeError("passt made no socket %s" % sock)
    time.sleep(0.5)  # from bind() to listen(): QEMU 7.2 does not retry a connection
    return passt, sock


def run_qemu(kernel, image, args, tap=False):
    d = "/tmp/bench-net-qemu"
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o1777)  # passt run as root becomes nobody before making its socket
    cid, log = 7, os.path.join(d, "console.log")
    passt, sock = (None, None) if tap else start_passt(d)
    qemu = None
    try:
        qemu = start_qemu(kernel, image, sock, log, cid)
        cmd = (["sh", "-c", TAP_SETUP + 'exec python3 -c "$0" "$@"', CLIENT, TAP_HOST] if tap
               else ["python3", "-c", CLIENT, GW])
        with agent_over_vsock(cid, time.monotonic() + 600, qemu, log) as a:
            r = a.exec(cmd + list(args), timeout=1800)
            if r.exit_code:
                dbg = a.exec(["sh", "-c", "ip addr; ip route; cat /proc/net/pnp; dmesg | tail -40"],
                             timeout=60)
                raise RuntimeError("qemu guest: exit %d: %s\n%s" % (
                    r.exit_code, r.stderr.decode(), dbg.stdout.decode()))
        return r.stdout.decode().split()
    finally:
        for p in (qemu, passt):
            if p:
                p.kill()
                p.wait()


def make_tap():
    for c in (["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"],
              ["ip", "addr", "add", TAP_HOST + "/24", "dev", TAP],
              ["ip", "link", "set", TAP, "up"]):
        subprocess.run(c, check=True)


def ratio(a, b):
    return "%.2f" % (float(a) / float(b)) if float(b) else "-"


def main(tool, kernel, image, mib, rounds):
    make_tap()
    for addr in ("127.0.0.1", TAP_HOST):
        for port, fn in ((SOURCE, source), (SINK, sink), (ECHO, echo)):
            serve(addr, port, fn, int(mib))
    only = os.environ.get("MICROVM_BENCH_NET_ONLY", "")  # e.g. "microvm", "qemu", "tap"
    print("%d MiB each way, %d round trips of 1 byte; 1 vCPU, 512 MiB" % (int(mib), int(rounds)))
    print("%-20s %12s %12s %10s %10s" % ("", "guest<-host", "guest->host", "rr p50", "rr p90"),
          flush=True)
    a = (mib, rounds)
    rows = {}
    for name, fn in (("libmicrovm + passt", lambda: run_microvm(tool, kernel, image, a)),
                     ("QEMU 7.2 + passt", lambda: run_qemu(kernel, image, a)),
                     ("libmicrovm + TAP", lambda: run_microvm(tool, kernel, image, a, True)),
                     ("QEMU 7.2 + TAP", lambda: run_qemu(kernel, image, a, True))):
        if only and only not in name.lower():
            continue
        rows[name] = down, up, p50, p90 = fn()
        print("%-20s %6s MiB/s %6s MiB/s %7s us %7s us" % (name, down, up, p50, p90), flush=True)
    for be in ("passt", "TAP"):
        ours, theirs = rows.get("libmicrovm + " + be), rows.get("QEMU 7.2 + " + be)
        if ours and theirs:
            print("%-20s %12s %12s %10s %10s" % (
                "ours/QEMU, " + be, *(ratio(x, y) for x, y in zip(ours, theirs))))
    print("(throughput: higher is better; round trip: lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
