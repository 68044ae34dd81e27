"""Network interfaces without a guest: VM.add_net with a stream socket (one
end of a socketpair) and the other backends' argument checks; counters and
link state readable on a configured VM; Sandbox.create's net/publish."""

import errno
import socket

import pytest

import microvm
from microvm import sandbox as sbx
from microvm.vm import _net_port


@pytest.fixture
def vm():
    v = microvm.VM()
    yield v
    v.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_stream_backend_accepted_and_counters(vm, pair):
    assert vm.add_net("stream", fd=pair[0]) == 0
    assert vm.add_net("stream", fd=pair[0].fileno(), mac="52:54:00:12:34:56",
                      link_up=False) == 1
    s = vm.net_stats(0)
    assert isinstance(s, microvm.NetStats)
    assert s == microvm.NetStats(True, 0, 0, 0, 0, 0, 0, 0)
    assert vm.net_stats(1).link_up is False
    vm.set_net_link(1, True)
    assert vm.net_stats(1).link_up is True
    vm.set_net_link(0, False)
    assert vm.net_stats(0).link_up is False


def test_net_mac(vm, pair):
    vm.add_net("stream", fd=pair[0], mac="52:54:00:12:34:56")
    vm.add_net("stream", fd=pair[0])
    assert vm.net_mac(0) == "52:54:00:12:34:56"
    mac = vm.net_mac(1)  # random: unicast, locally administered
    assert len(mac) == 17 and int(mac[:2], 16) & 3 == 2
    with pytest.raises(microvm.NoDeviceError):
        vm.net_mac(2)
    with pytest.raises(ValueError):
        vm.net_mac(-1)


def test_the_fd_is_duplicated(vm, pair):
    vm.add_net("stream", fd=pair[0])
    pair[0].close()  # the VM has its own copy: the peer sees no end of file
    pair[1].setblocking(False)
    with pytest.raises(BlockingIOError):
        pair[1].recv(1)


def test_nets_keyword(pair):
    with microvm.VM(nets=[{"backend": "stream", "fd": pair[0]}]) as v:
        assert v.net_stats(0).link_up


def test_no_such_interface(vm):
    with pytest.raises(microvm.NoDeviceError):
        vm.net_stats(0)
    with pytest.raises(microvm.NoDeviceError):
        vm.set_net_link(3, True)


def test_library_refusals(vm, pair):
    with pytest.raises(microvm.InvalidError):
        vm.add_net("stream", fd=9999)  # not open
    with pytest.raises(microvm.NotFoundError) as e:
        vm.add_net("user", passt="/nonexistent/passt")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(microvm.NoDeviceError):
        vm.add_net("tap", tap="microvmnotap0")
    assert vm.add_net("stream", fd=pair[0]) == 0  # nothing left behind


@pytest.mark.parametrize("kwargs, exc", [
    ({"backend": "slirp"}, ValueError),
    ({"backend": "tap"}, ValueError),                       # no name
    ({"backend": "tap", "tap": "x" * 16}, ValueError),
    ({"backend": "stream"}, ValueError),                    # no fd
    ({"backend": "user", "fd": 3}, ValueError),
    ({"backend": "stream", "fd": -1}, ValueError),
    ({"backend": "stream", "fd": 3, "ports": ["80:80"]}, ValueError),
    ({"backend": "user", "ports": "80:80"}, TypeError),
    ({"backend": "user", "ports": ["80"]}, ValueError),
    ({"backend": "user", "ports": ["0:80"]}, ValueError),
    ({"backend": "user", "ports": [(80, 70000)]}, ValueError),
    ({"backend": "user", "ports": ["80:80/sctp"]}, ValueError),
    ({"backend": "user", "ports": [80]}, TypeError),
    ({"backend": "user", "ports": ["%d:1" % (i + 1) for i in range(65)]}, ValueError),
    ({"backend": "user", "mac": "01:00:00:00:00:01"}, ValueError),  # multicast
    ({"backend": "user", "mac": "52:54:00"}, ValueError),
    ({"backend": "user", "link_up": "yes"}, TypeError),
])
def test_bad_arguments_never_reach_c(vm, kwargs, exc):
    with pytest.raises(exc):
        vm.add_net(**kwargs)
    with pytest.raises(microvm.NoDeviceError):
        vm.net_stats(0)


def test_port_forward_forms():
    for spec, want in (("8080:80", (0, 8080, 80)), ("53:53/udp", (1, 53, 53)),
                       ((1, 2), (0, 1, 2)), ((1, 2, "udp"), (1, 1, 2))):
        p = _net_port(spec)
        assert (p.protocol, p.host_port, p.guest_port) == want


def test_sandbox_net_and_publish():
    assert sbx._sandbox_nets(None, ()) == []
    assert sbx._sandbox_nets("none", ()) == []
    assert sbx._sandbox_nets("user", ["8080:80"]) == [{"backend": "user", "ports": ["8080:80"]}]
    assert sbx._sandbox_nets("tap:tap0", ()) == [{"backend": "tap", "tap": "tap0"}]
    for net, publish, exc in ((None, ["80:80"], ValueError), ("tap:t", ["80:80"], ValueError),
                              ("slirp", (), ValueError), ("user", "80:80", TypeError)):
        with pytest.raises(exc):
            sbx._sandbox_nets(net, publish)
    with pytest.raises(ValueError):
        microvm.Sandbox.create(template="/nonexistent", net="user")


def test_restore_net_fds_checked():
    with pytest.raises(ValueError):
        microvm.VM.restore("/nonexistent", net_fds=[None] * 17)
    with pytest.raises(TypeError):
        microvm.VM.restore("/nonexistent", net_fds=["x"])
