"""bench/net.sh's measurement, run as root inside a network namespace made
for it (ip netns exec): the same guest (the project's kernel and Debian
image, ip=dhcp) on the same passt, once as a libmicrovm VM
(microvm-sandbox --net user) and once as a QEMU/KVM VM (-M microvm,
virtio-net-device on -netdev stream to passt's Unix socket, the agent
reached over vhost-vsock). The guest measures: TCP download and upload of
MIB MiB from/to servers on the namespace's loopback (through passt's
gateway mapping), and ROUNDS 1-byte request/response round trips.

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


def serve(port, handle, mib):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handle(self.request, mib)
    srv = Server(("127.0.0.1", port), H)
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


def run_microvm(tool, kernel, image, args):
    r = subprocess.run([tool, "run", "--net", "user", "--kernel", kernel, "--image", image,
                        "--", "python3", "-c", CLIENT, GW, *args],
                       capture_output=True, timeout=1800, check=False)
    if r.returncode:
        raise RuntimeError("microvm-sandbox: exit %d: %s" % (r.returncode, r.stderr.decode()))
    return r.stdout.decode().split()


def start_qemu(kernel, image, sock, log, cid):
    return subprocess.Popen([
        "qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host", "-smp", "1",
        "-m", "512", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "file:" + log, "-kernel", kernel, "-append", CMDLINE,
        "-drive", "id=d0,file=%s,format=raw,if=none,readonly=on" % image,
        "-device", "virtio-blk-device,drive=d0",
        "-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=" + sock,
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


def run_qemu(kernel, image, args):
    d = "/tmp/bench-net-qemu"
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o1777)  # passt run as root becomes nobody before making its socket
    sock, cid = os.path.join(d, "passt.sock"), 7
    plog = open(os.path.join(d, "passt.log"), "w")
    passt = subprocess.Popen(["passt", "-f", "-s", sock], stdin=subprocess.DEVNULL,
                             stdout=plog, stderr=plog)
    qemu = None
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("passt made no socket %s" % sock)
        time.sleep(0.5)  # from bind() to listen(): QEMU 7.2 does not retry a connection
        log = os.path.join(d, "console.log")
        qemu = start_qemu(kernel, image, sock, log, cid)
        with agent_over_vsock(cid, time.monotonic() + 600, qemu, log) as a:
            r = a.exec(["python3", "-c", CLIENT, GW, *args], timeout=1800)
            if r.exit_code:
                dbg = a.exec(["sh", "-c", "ip addr; ip route; cat /proc/net/pnp; dmesg | tail -40"],
                             timeout=60)
                with open(os.path.join(d, "passt.log"), errors="replace") as f:
                    plog_text = f.read()[-3000:]
                raise RuntimeError("qemu guest: exit %d: %s\n%s\npasst:\n%s" % (
                    r.exit_code, r.stderr.decode(), dbg.stdout.decode(), plog_text))
        return r.stdout.decode().split()
    finally:
        for p in (qemu, passt):
            if p:
                p.kill()
                p.wait()


def main(tool, kernel, image, mib, rounds):
    for port, fn in ((SOURCE, source), (SINK, sink), (ECHO, echo)):
        serve(port, fn, int(mib))
    only = os.environ.get("MICROVM_BENCH_NET_ONLY", "")  # "microvm" or "qemu": one of them
    print("%d MiB each way, %d round trips of 1 byte; 1 vCPU, 512 MiB" % (int(mib), int(rounds)))
    print("%-20s %12s %12s %10s %10s" % ("", "guest<-host", "guest->host", "rr p50", "rr p90"),
          flush=True)
    for name, fn in (("libmicrovm + passt", lambda: run_microvm(tool, kernel, image,
                                                                 (mib, rounds))),
                     ("QEMU 7.2 + passt", lambda: run_qemu(kernel, image, (mib, rounds)))):
        if only and only not in name.lower():
            continue
        down, up, p50, p90 = fn()
        print("%-20s %6s MiB/s %6s MiB/s %7s us %7s us" % (name, down, up, p50, p90), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
