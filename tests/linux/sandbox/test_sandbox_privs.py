"""microvm-sandbox run least-privileged (docs/security.md, "Running the
sandbox least-privileged"): as a non-root user in the kvm group; as root,
with every capability dropped, or becoming another user (--host-user); and
inside its second wall (--jail: namespaces and an empty root). Each run
holds its command until the test has looked at the VMM process from
outside (/proc/PID/status, /proc/PID/root, /proc/PID/ns). Run by
tests/linux/run.sh with the other sandbox tests (the environment of
test_sandbox_tool.py, plus MICROVM_TEST_AGENT_ROOTFS: a small busybox +
agent image in the build tree, which the user can read). Needs root to make
the kvm-group user (kvmuser.py); never skips.
"""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvmuser import NAME, KvmUser  # noqa: E402

TOOL = os.environ.get("MICROVM_SANDBOX", "")
KERNEL = os.environ.get("MICROVM_KERNEL", "")
ROOTFS = os.path.realpath(os.environ.get("MICROVM_TEST_AGENT_ROOTFS", "/nonexistent"))
LONG = 600
# The command waits for the test's "go" on stdin, then exits 7.
HOLD = ["sh", "-c", "echo ready; read line; echo got $line; exit 7"]
# (cgroup namespaces too, on kernels with cgroups: the emulated machine's has none)
NAMESPACES = tuple(ns for ns in ("pid", "mnt", "net", "ipc", "uts", "cgroup")
                   if os.path.exists("/proc/self/ns/" + ns))


def setup_module():
    for name, path in (("MICROVM_SANDBOX", TOOL), ("MICROVM_KERNEL", KERNEL),
                       ("MICROVM_TEST_AGENT_ROOTFS", ROOTFS)):
        assert path and os.path.exists(path), "%s is not set to an existing path" % name
    assert os.geteuid() == 0, "these tests make a kvm-group user: they need root"


@pytest.fixture(scope="module")
def user():
    with KvmUser(KERNEL) as u:
        yield u


def status(pid, task=None):
    path = "/proc/%d/task/%d/status" % (pid, task) if task else "/proc/%d/status" % pid
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def all_tasks(pid):
    return [status(pid, int(t)) for t in os.listdir("/proc/%d/task" % pid)]


def children(pid):
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if status(int(p)).get("PPid") == str(pid):
                out.append(int(p))
        except OSError:
            pass
    return out


def files_under_root(pid):
    """Everything but directories in the process's root, as paths in it."""
    root = "/proc/%d/root" % pid
    found = set()
    for d, _, names in os.walk(root):
        found.update(os.path.join(d, n)[len(root):] for n in names)
    return found


def assert_no_privilege(pid):
    for st in all_tasks(pid):
        assert (st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"]) == ("0" * 16,) * 4, st
        assert st["NoNewPrivs"] == "1", st
    with open("/proc/%d/limits" % pid) as f:
        core = [line for line in f if line.startswith("Max core file size")][0]
    assert core.split()[4:6] == ["0", "0"], core


class Held:
    """A tool run whose command waits for the test (see HOLD)."""

    def __init__(self, cmd, **kw):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, **kw)
        line = self.p.stdout.readline()
        if line != b"ready\n":
            self.p.kill()
            _, err = self.p.communicate(timeout=LONG)
            pytest.fail("no ready line (%r): %s" % (line, err.decode(errors="replace")))
        self.pid = self.p.pid

    def finish(self):
        out, err = self.p.communicate(b"go\n", timeout=LONG)
        assert (self.p.returncode, out) == (7, b"got go\n"), err.decode(errors="replace")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=LONG, **kw)


def test_kvm_group_user_runs_a_command(user):
    """The tool as a plain user whose only privilege is the kvm group."""
    h = Held(user.as_user([TOOL, "run", "--kernel", user.kernel, "--image", ROOTFS, "--",
                           *HOLD]), env=user.env())
    st = status(h.pid)
    assert st["Uid"].split()[0] == str(user.uid)
    assert str(user.gid) in st["Groups"].split()
    assert_no_privilege(h.pid)
    h.finish()


def test_kvm_group_user_template_and_its_jailed_clone(user):
    tpl = os.path.join(user.mkdir("tpl"), "t")
    r = run(user.as_user([TOOL, "prepare", "--snapshot", tpl, "--kernel", user.kernel,
                          "--image", ROOTFS, "--mem", "256"]), env=user.env())
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(tpl, "sandbox.host")) as f:
        assert f.read() == "image=%s\nnet=none\n" % ROOTFS
    r = run(user.as_user([TOOL, "run", "--from", tpl, "--", "sh", "-c", "exit 3"]),
            env=user.env())
    assert r.returncode == 3, r.stderr.decode()
    h = Held(user.as_user([TOOL, "run", "--jail", "--from", tpl, "--", *HOLD]), env=user.env())
    (vmm,) = children(h.pid)
    assert files_under_root(vmm) == {"/dev/kvm", ROOTFS} | {
        os.path.join(tpl, n) for n in os.listdir(tpl)}
    assert_no_privilege(vmm)
    h.finish()


def test_root_keeps_no_capability_nor_inherited_fd():
    """Root without --host-user: still uid 0, but without any capability
    (every thread, bounding set too), and without the fds it inherited."""
    rd, wr = os.pipe()
    h = Held([TOOL, "run", "--kernel", KERNEL, "--image", ROOTFS, "--", *HOLD], pass_fds=(wr,))
    os.close(wr)
    pipe = os.readlink("/proc/self/fd/%d" % rd)
    fds = [os.readlink("/proc/%d/fd/%s" % (h.pid, n)) for n in os.listdir("/proc/%d/fd" % h.pid)]
    assert pipe not in fds, fds
    assert status(h.pid)["Uid"].split() == ["0"] * 4
    assert_no_privilege(h.pid)
    for st in all_tasks(h.pid):
        assert st["CapBnd"] == "0" * 16, st
    h.finish()
    os.close(rd)


@pytest.mark.parametrize("jail", [False, True], ids=["", "jail"])
def test_host_user(user, jail):
    """Root becomes the user first; with --jail, the user then makes the
    namespaces as any user does (a user namespace)."""
    h = Held([TOOL, "run", "--host-user", NAME, *(["--jail"] if jail else []), "--kernel",
              user.kernel, "--image", ROOTFS, "--", *HOLD])
    if jail:
        assert status(h.pid)["Uid"].split() == [str(user.uid)] * 4  # the waiting parent
        (h.pid,) = children(h.pid)
        assert os.readlink("/proc/%d/ns/user" % h.pid) != os.readlink("/proc/self/ns/user")
    st = status(h.pid)
    assert st["Uid"].split() == [str(user.uid)] * 4 and st["Gid"].split() == [str(user.uid)] * 4
    assert str(user.gid) in st["Groups"].split()
    assert_no_privilege(h.pid)
    h.finish()
    # root's cached kernel is in root's home (0700): the user cannot read it.
    r = run([TOOL, "run", "--host-user", NAME, "--kernel", KERNEL, "--image", ROOTFS, "--",
             "true"])
    assert r.returncode == 2 and b"cannot read" in r.stderr, r.stderr


def test_jail_as_kvm_group_user(user):
    """--jail unprivileged: the VMM process (the tool's child, PID 1 of its
    own PID namespace) sees only /dev/kvm, the kernel and the image, in new
    user, PID, mount, network, IPC, UTS and cgroup namespaces, with no
    capability even there; the command still runs and its status passes."""
    h = Held(user.as_user([TOOL, "run", "--jail", "--kernel", user.kernel, "--image", ROOTFS,
                           "--", *HOLD]), env=user.env())
    (vmm,) = children(h.pid)
    assert files_under_root(vmm) == {"/dev/kvm", user.kernel, ROOTFS}
    assert not os.path.exists("/proc/%d/root/etc" % vmm)
    for ns in NAMESPACES + ("user",):
        assert os.readlink("/proc/%d/ns/%s" % (vmm, ns)) != os.readlink("/proc/self/ns/" + ns), ns
    assert status(vmm)["NSpid"].split()[1:] == ["1"]
    with open("/proc/%d/stat" % vmm) as f:  # its own session: no controlling tty
        assert f.read().rsplit(")", 1)[1].split()[3] == str(vmm)
    assert_no_privilege(vmm)
    for st in all_tasks(vmm):
        assert st["CapBnd"] == "0" * 16, st
    assert_no_privilege(h.pid)  # the parent, which only waits
    # The parent's fds: stdin, stdout, stderr and the pipe that tells the
    # child the parent is alive.
    extra = set(os.listdir("/proc/%d/fd" % h.pid)) - {"0", "1", "2"}
    assert len(extra) == 1, extra
    assert os.readlink("/proc/%d/fd/%s" % (h.pid, extra.pop())).startswith("pipe:")
    h.finish()
    # Status 0 too: the parent passes it on and stops (it does not go on as
    # a VMM of its own).
    r = run(user.as_user([TOOL, "run", "--jail", "--kernel", user.kernel, "--image", ROOTFS,
                          "--", "echo", "ok"]), env=user.env())
    assert (r.returncode, r.stdout, r.stderr) == (0, b"ok\n", b"")


def test_jail_as_root_from_template(tmp_path):
    tpl = str(tmp_path / "t")
    r = run([TOOL, "prepare", "--snapshot", tpl, "--kernel", KERNEL, "--image", ROOTFS,
             "--mem", "256"])
    assert r.returncode == 0, r.stderr.decode()
    h = Held([TOOL, "run", "--jail", "--from", tpl, "--", *HOLD])
    (vmm,) = children(h.pid)
    assert files_under_root(vmm) == {"/dev/kvm", ROOTFS} | {
        os.path.join(tpl, n) for n in os.listdir(tpl)}
    for ns in NAMESPACES:
        assert os.readlink("/proc/%d/ns/%s" % (vmm, ns)) != os.readlink("/proc/self/ns/" + ns), ns
    assert_no_privilege(vmm)
    h.finish()


def fake_template(d, host):
    os.makedirs(d)
    open(os.path.join(d, "state.dtb"), "w").close()
    if host is not None:
        with open(os.path.join(d, "sandbox.host"), "w") as f:
            f.write(host)
    return d


def test_refusals(user, tmp_path):
    """What --jail and --host-user cannot do: a clear message, exit 2."""
    old = fake_template(str(tmp_path / "old"), None)
    net = fake_template(str(tmp_path / "net"), "image=%s\nnet=user\n" % ROOTFS)
    cases = [
        ([TOOL, "prepare", "--jail", "--snapshot", str(tmp_path / "x")], b"no --jail"),
        ([TOOL, "run", "--jail", "--from", old, "--", "true"], b"predates --jail"),
        ([TOOL, "run", "--jail", "--from", net, "--", "true"], b"has a network"),
        (user.as_user([TOOL, "run", "--host-user", NAME, "--", "true"]), b"needs root"),
        ([TOOL, "run", "--host-user", "no-such-user-xyz", "--", "true"], b"no such user"),
        ([TOOL, "run", "--host-user", "root", "--", "true"], b"other than root"),
        ([TOOL, "run", "--host-user", "nobody", "--kernel", user.kernel, "--image", ROOTFS,
          "--", "true"], b"cannot open /dev/kvm"),
    ]
    for cmd, why in cases:
        r = run(cmd, env=user.env())
        assert r.returncode == 2 and why in r.stderr and b"--help" in r.stderr, (cmd, r.stderr)


def test_jail_without_user_namespaces(user):
    """A host that forbids unprivileged user namespaces: --jail says so."""
    key = "/proc/sys/user/max_user_namespaces"
    with open(key) as f:
        saved = f.read()
    try:
        with open(key, "w") as f:
            f.write("0")
        r = run(user.as_user([TOOL, "run", "--jail", "--kernel", user.kernel, "--image", ROOTFS,
                              "--", "true"]), env=user.env())
    finally:
        with open(key, "w") as f:
            f.write(saved)
    assert r.returncode == 125 and b"user namespaces are disabled" in r.stderr, r.stderr
