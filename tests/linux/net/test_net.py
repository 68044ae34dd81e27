"""User-mode networking (passt) end to end, through microvm-sandbox and the
project's Debian guest. Run by tests/linux/run.sh as the unit "net" (inside
the emulated machine on hosts without VT-x/AMD-V), with the environment of
tests/linux/sandbox (MICROVM_SANDBOX, MICROVM_KERNEL,
MICROVM_TEST_DEBIAN_IMAGE, MICROVM_TEST_AGENT_ROOTFS).

No traffic leaves the machine: every test runs in a network namespace of its
own (`ip netns`) with only a veth pair in it, 10.0.2.15/24 and a default
route via 10.0.2.2, from which passt derives the guest's address and
gateway; passt maps the gateway address to the namespace's loopback, where
the host-side servers (hostserv.py) listen (and the gateway address itself
answers pings). The TAP test adds a TAP to the namespace. Needs root (to
make the namespace). Every wait is bounded.
"""
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TOOL = os.environ.get("MICROVM_SANDBOX", "")
KERNEL = os.environ.get("MICROVM_KERNEL", "")
IMAGE = os.environ.get("MICROVM_TEST_DEBIAN_IMAGE", "")
AGENT_ROOTFS = os.environ.get("MICROVM_TEST_AGENT_ROOTFS", "")
HERE = os.path.dirname(os.path.abspath(__file__))
HOSTSERV = os.path.join(HERE, "hostserv.py")
LONG = 900  # seconds: generous, the emulated machine is slow
NS = "microvm-net-test-%d" % os.getpid()
GUEST_ADDR, GATEWAY = "10.0.2.15", "10.0.2.2"
HTTP_PORT, SINK_PORT = 8080, 9090
BIG = 64 << 20


def setup_module():
    for name, path in (("MICROVM_SANDBOX", TOOL), ("MICROVM_KERNEL", KERNEL),
                       ("MICROVM_TEST_DEBIAN_IMAGE", IMAGE),
                       ("MICROVM_TEST_AGENT_ROOTFS", AGENT_ROOTFS)):
        assert path and os.path.exists(path), "%s is not set to an existing path" % name
    assert shutil.which("passt"), "passt is not installed"


def in_ns(*cmd):
    return ["ip", "netns", "exec", NS, *cmd]


def sandbox(*args, timeout=LONG, **kw):
    """The tool in the namespace; a `run` also gets -v (the guest's console
    on stderr and, if the guest fails the run, the VM's report) and a
    command timeout below this one, so that a guest that stops answering is
    reported by the tool (exit 125) rather than killed with it."""
    if args[:1] == ("run",):
        args = ("run", "-v", "--timeout", str(timeout - 300)) + args[1:]
    return subprocess.run(in_ns(TOOL, *args), capture_output=True, timeout=timeout, **kw)


def show(what, r):
    """Logged for the report (pytest -rA shows it)."""
    print("--- %s: exit %d\n%s%s" % (what, r.returncode, r.stdout.decode(errors="replace"),
                                     r.stderr.decode(errors="replace")))


def run_driver(what, script, args):
    """Runs the Python driver @script in the namespace with args(attempt);
    when its guest stalled in the emulated machine (GUEST-STUCK, see
    guestwatch.py), once more, loudly. The last run's CompletedProcess."""
    for attempt in (1, 2):
        r = subprocess.run(in_ns(sys.executable, os.path.join(HERE, script), *args(attempt)),
                           capture_output=True, timeout=LONG)
        show("%s, attempt %d" % (what, attempt), r)
        if b"GUEST-STUCK" not in r.stderr or not os.environ.get("MICROVM_NESTED"):
            return r
    return r


@pytest.fixture(scope="module", autouse=True)
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for c in (["ip", "link", "set", "lo", "up"],
                  ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                  ["ip", "addr", "add", GUEST_ADDR + "/24", "dev", "v0"],
                  ["ip", "link", "set", "v0", "up"], ["ip", "link", "set", "v1", "up"],
                  ["ip", "route", "add", "default", "via", GATEWAY, "dev", "v0"],
                  # The guest's pings: passt sends them from ping sockets
                  # (this passt does not map the gateway to loopback for
                  # ICMP), so the gateway address answers in the namespace.
                  ["ip", "addr", "add", GATEWAY + "/32", "dev", "v1"],
                  ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]):
            subprocess.run(in_ns(*c), check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS])


def start_server(*args):
    p = subprocess.Popen(in_ns(sys.executable, HOSTSERV, *args), stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"  # bounded: it binds or exits
    return p


@pytest.fixture(scope="module")
def webroot(tmp_path_factory, netns):
    d = tmp_path_factory.mktemp("www")
    (d / "hello.txt").write_text("hello from the host's loopback\n")
    data = os.urandom(BIG)
    (d / "big.bin").write_bytes(data)
    p = start_server("http", str(d), str(HTTP_PORT))
    yield d, hashlib.sha256(data).hexdigest()
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def sink(netns):
    p = start_server("sink", str(SINK_PORT))
    yield
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def template(tmp_path_factory, netns):
    d = tmp_path_factory.mktemp("tpl") / "net"
    r = sandbox("prepare", "--snapshot", str(d), "--image", IMAGE, "--net", "user")
    assert r.returncode == 0, r.stderr.decode()
    return str(d)


FETCH = ("import urllib.request as u; "
         "print(u.urlopen('http://%s:%d/hello.txt', timeout=60).read().decode(), end='')"
         % (GATEWAY, HTTP_PORT))


def test_dhcp_dns_and_fetch_from_host_loopback(webroot):
    """The issue's must-show: a page from a server on the host's loopback."""
    r = sandbox("run", "--image", IMAGE, "--net", "user", "--", "sh", "-c",
                "ip -4 -o addr show eth0; ip route show default; cat /etc/resolv.conf; "
                'exec python3 -c "$0"', FETCH)
    show("microvm-sandbox run --net user", r)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "inet %s/24" % GUEST_ADDR in out
    assert "default via %s dev eth0" % GATEWAY in out
    assert "nameserver " in out  # from DHCP via /proc/net/pnp
    assert out.endswith("hello from the host's loopback\n")


GUEST_GET = """
import hashlib, sys, time, urllib.request
h, n, t0 = hashlib.sha256(), 0, time.monotonic()
with urllib.request.urlopen(sys.argv[1], timeout=120) as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
print(h.hexdigest(), n, "%.3f" % (time.monotonic() - t0))
"""


def test_64mib_host_to_guest(webroot, template):
    _, digest = webroot
    url = "http://%s:%d/big.bin" % (GATEWAY, HTTP_PORT)
    r = sandbox("run", "--from", template, "--", "python3", "-c", GUEST_GET, url)
    show("64 MiB host -> guest", r)
    assert r.returncode == 0, r.stderr.decode()
    got, n, secs = r.stdout.decode().split()
    assert (got, int(n)) == (digest, BIG)
    print("host -> guest: %.1f MiB/s (emulated machine)" % (64 / float(secs)))


GUEST_PUT = """
import hashlib, random, socket, sys, time
data = random.Random(14).randbytes(%d)
t0 = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
reply = b""
while not reply.endswith(b"\\n"):
    b = s.recv(256)
    if not b:
        break
    reply += b
print(hashlib.sha256(data).hexdigest(), reply.decode().strip(), "%%.3f" %% (time.monotonic() - t0))
""" % BIG


def test_64mib_guest_to_host(sink, template):
    r = sandbox("run", "--from", template, "--", "python3", "-c", GUEST_PUT, GATEWAY,
                str(SINK_PORT))
    show("64 MiB guest -> host", r)
    assert r.returncode == 0, r.stderr.decode()
    mine, theirs, n, _, secs = r.stdout.decode().split()
    assert (theirs, int(n)) == (mine, BIG)
    print("guest -> host: %.1f MiB/s (emulated machine)" % (64 / float(secs)))


SERVE_ONE = """
import http.server, os
os.chdir("/etc")
s = http.server.HTTPServer(("", 8000), http.server.SimpleHTTPRequestHandler)
print("listening", flush=True)
s.handle_request()
"""


@pytest.mark.parametrize("jail", [[], ["--jail"]], ids=["", "jail"])
def test_publish_serves_http_from_the_guest(jail):
    """Also under --jail (root): passt, started before the VMM enters its
    empty root and network namespace, keeps serving the forward."""
    vm = subprocess.Popen(in_ns(TOOL, "run", *jail, "--net", "user", "--publish", "18080:8000",
                                "--image", IMAGE, "--", "python3", "-c", SERVE_ONE),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        get = subprocess.run(in_ns(sys.executable, HOSTSERV, "get",
                                   "http://127.0.0.1:18080/os-release", str(LONG - 60)),
                             capture_output=True, timeout=LONG)
        out, err = vm.communicate(timeout=LONG)
    finally:
        vm.kill()
        vm.wait()
    assert get.returncode == 0, "%s\n--- the tool (exit %s):\n%s\n%s" % (
        get.stderr.decode(), vm.returncode, out.decode(errors="replace")[-2000:],
        err.decode(errors="replace")[-3000:])
    assert b"Debian GNU/Linux" in get.stdout
    assert vm.returncode == 0, err.decode()
    assert out == b"listening\n"


def test_unprivileged_user(webroot, tmp_path_factory):
    """--net user needs no privilege: nobody, given /dev/kvm (chmod'ed here,
    inside the emulated machine) and readable guest files."""
    d = "/tmp/microvm-net-unpriv-%d" % os.getpid()
    os.makedirs(d, mode=0o755)
    try:
        for f in (KERNEL, IMAGE):
            shutil.copy(f, d)
            os.chmod(os.path.join(d, os.path.basename(f)), 0o644)
        os.chmod("/dev/kvm", 0o666)
        r = subprocess.run(in_ns("setpriv", "--reuid", "65534", "--regid", "65534",
                                 "--clear-groups", "--", TOOL, "run", "--net", "user",
                                 "--kernel", os.path.join(d, os.path.basename(KERNEL)),
                                 "--image", os.path.join(d, os.path.basename(IMAGE)),
                                 "--", "python3", "-c", FETCH),
                           capture_output=True, timeout=LONG, env=dict(os.environ, HOME="/"))
        show("as nobody", r)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == b"hello from the host's loopback\n"
    finally:
        shutil.rmtree(d)


def test_jail_as_kvm_group_user(webroot):
    """--jail --net user as a non-root user in the kvm group: passt runs as
    the user, started before the VMM enters its own user, network and mount
    namespaces; the guest (busybox) still reaches the host's loopback."""
    sys.path.insert(0, os.path.join(HERE, "..", "sandbox"))
    from kvmuser import KvmUser
    url = "http://%s:%d/hello.txt" % (GATEWAY, HTTP_PORT)
    with KvmUser(KERNEL) as u:
        r = subprocess.run(in_ns(*u.as_user([TOOL, "run", "--jail", "--net", "user", "--kernel",
                                             u.kernel, "--image", AGENT_ROOTFS, "--", "wget",
                                             "-q", "-O", "-", url])),
                           capture_output=True, timeout=LONG, env=u.env())
    show("--jail --net user as a kvm-group user", r)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"hello from the host's loopback\n"


@pytest.mark.parametrize("args", [
    ["--net", "bogus"],
    ["--net", "tap:"],
    ["--publish", "8080:80"],
    ["--net", "user", "--publish", "8080"],
    ["--net", "user", "--publish", "0:80"],
    ["--net", "user", "--publish", "80:70000"],
    ["--from", "/nonexistent", "--net", "user"],
])
def test_usage_errors(args):
    r = subprocess.run([TOOL, "run", *args, "--", "true"], capture_output=True, timeout=60)
    assert r.returncode == 2, (args, r.stderr)
    assert b"--help" in r.stderr


def test_link_down_up_through_the_python_bindings(webroot, tmp_path):
    assert os.environ.get("MICROVM_LIBRARY"), "MICROVM_LIBRARY is not set"
    url = "http://%s:%d/hello.txt" % (GATEWAY, HTTP_PORT)
    r = run_driver("link down/up (Python bindings)", "linkdriver.py",
                   lambda n: (KERNEL, IMAGE, url, str(tmp_path / ("console%d" % n))))
    assert r.returncode == 0, r.stderr.decode()
    seen = {l.split()[0]: l.split()[1:] for l in r.stdout.decode().splitlines()}
    assert seen["up1"] == ["carrier=1", "31", "fetch=ok"]
    assert seen["down"][0] == "carrier=0" and seen["down"][-1] == "fetch=failed"
    assert seen["stats_down"] == ["False"]
    assert seen["up2"] == ["carrier=1", "31", "fetch=ok"]
    link, rx, tx, _, _ = seen["stats"]
    assert link == "True" and int(rx) > 0 and int(tx) > 0


def test_two_clones_get_new_macs_and_reach_the_host_at_once(webroot, tmp_path):
    """Item 4: clones of one snapshot each get a new MAC address (the guest
    takes it after the restore's link flap) and a passt of their own, and
    both ping the host side and fetch from its loopback at the same time."""
    url = "http://%s:%d/hello.txt" % (GATEWAY, HTTP_PORT)
    r = run_driver("two clones at once (Python bindings)", "clonedriver.py",
                   lambda n: (KERNEL, IMAGE, url, GATEWAY, str(tmp_path / ("snap%d" % n))))
    assert r.returncode == 0, r.stderr.decode()
    seen = {l.split()[0]: l.split()[1:] for l in r.stdout.decode().splitlines()}
    macs = []
    for who in ("parent", "clone0", "clone1"):
        mac, guest_mac, ping, replies, size, fetch = seen[who]
        assert guest_mac == "mac=" + mac, (who, seen[who])
        # replies of 5 echo requests: the first can be lost while passt
        # learns the clone's new address; any reply shows the path works
        assert ping == "ping=ok" and int(replies) >= 1, (who, seen[who])
        assert (size, fetch) == ("31", "fetch=ok"), (who, seen[who])
        macs.append(mac)
    assert len(set(macs)) == 3, macs


TAP, TAP_HOST, TAP_GUEST, TAP_HTTP = "mtap0", "10.0.3.1", "10.0.3.2", 8081


@pytest.fixture(scope="module")
def tap(webroot, netns):
    for c in (["ip", "tuntap", "add", "dev", TAP, "mode", "tap"],
              ["ip", "addr", "add", TAP_HOST + "/24", "dev", TAP],
              ["ip", "link", "set", TAP, "up"]):
        subprocess.run(in_ns(*c), check=True)
    p = start_server("http", str(webroot[0]), str(TAP_HTTP), TAP_HOST)
    yield webroot[1]
    p.kill()
    p.wait()


def test_tap_ping_and_64mib_with_offloads(tap):
    """--net tap:NAME: a TAP the test made in its namespace (checksum and TSO
    offloads through IFF_VNET_HDR); the guest sets its address itself."""
    from guestnet import PING
    url = "http://%s:%d/big.bin" % (TAP_HOST, TAP_HTTP)
    r = sandbox("run", "--image", IMAGE, "--net", "tap:" + TAP, "--", "sh", "-c",
                "ip addr add %s/24 dev eth0 && ip link set eth0 up && "
                "python3 -c \"$0\" %s && python3 -c \"$1\" %s" % (TAP_GUEST, TAP_HOST, url),
                PING, GUEST_GET)
    show("microvm-sandbox run --net tap:" + TAP, r)
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")
    assert lines[0].startswith("ping=ok") and int(lines[0].split()[1]) >= 1, lines
    got, n, secs = lines[1].split()
    assert (got, int(n)) == (tap, BIG)
    print("TAP host -> guest: %.1f MiB/s (emulated machine)" % (64 / float(secs)))


def test_tap_under_jail(tap):
    """--jail --net tap:NAME (root): the TAP is opened before the VMM enters
    its jail (and its own, empty network namespace); the guest still pings
    the host's end."""
    from guestnet import PING
    r = sandbox("run", "--jail", "--image", IMAGE, "--net", "tap:" + TAP, "--", "sh", "-c",
                "ip addr add %s/24 dev eth0 && ip link set eth0 up && python3 -c \"$0\" %s"
                % (TAP_GUEST, TAP_HOST), PING)
    show("microvm-sandbox run --jail --net tap:" + TAP, r)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().startswith("ping=ok"), r.stdout


def test_flood_while_the_guest_takes_nothing_keeps_host_memory_bounded(tmp_path):
    r = run_driver("UDP flood, guest eth0 down (Python bindings)", "flooddriver.py",
                   lambda n: (KERNEL, IMAGE, "30", str(tmp_path / ("console%d" % n))))
    assert r.returncode == 0, r.stderr.decode()
    seen = {l.split()[0]: [int(x) if x.isdigit() else x for x in l.split()[1:]]
            for l in r.stdout.decode().splitlines()}
    (vmm0, passt0), (vmm1, passt1) = seen["early"], seen["late"]
    assert seen["sent"][0] > 10000  # a flood indeed
    # Between a third of the flood and its end: no growth beyond noise.
    assert vmm1 - vmm0 < 16 << 10 and passt1 - passt0 < 16 << 10, seen
    assert seen["alive"] == ["yes"]
