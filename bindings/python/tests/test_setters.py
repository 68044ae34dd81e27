"""Every setter: keyword argument, method and property; bad Python types
and values raise TypeError/ValueError before C; the library's refusals
raise the matching microvm.Error with its message."""

import os
import pathlib
import signal

import pytest

from conftest import payload

import microvm


@pytest.fixture
def vm():
    v = microvm.VM()
    yield v
    v.close()


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "disk.img"
    with open(p, "wb") as f:
        f.truncate(1 << 20)
    return p


def test_defaults(vm):
    assert vm.state == microvm.State.CONFIGURED
    assert vm.vcpus == 1 and vm.memory_mib == 128
    assert vm.kernel is None and vm.initrd is None and vm.cmdline is None
    assert vm.console_type == microvm.ConsoleType.SERIAL
    assert vm.last_error == ""


def test_keyword_arguments_set_everything(tmp_path, image):
    logs = []
    with open(tmp_path / "out", "wb") as out, open(image, "rb") as inp:
        with microvm.VM(vcpus=2, memory_mib=32, kernel=payload("hello"), cmdline="a=1",
                        initrd=payload("busy"), console_in=inp, console_out=out,
                        console_type="virtio", rng=True, acpi=False,
                        kick_signal=signal.SIGRTMIN + 3, log=lambda lv, m: logs.append(m),
                        log_level=microvm.LogLevel.DEBUG,
                        disks=[image, {"path": str(image), "read_only": True, "sync": True,
                                       "serial": "ser1"}],
                        vsock_cid=7, vsock_uds_path=str(tmp_path / "v.sock")) as vm:
            assert vm.vcpus == 2 and vm.memory_mib == 32
            assert vm.kernel == payload("hello") and vm.cmdline == "a=1"
            assert vm.initrd == payload("busy")
            assert vm.console_type == microvm.ConsoleType.VIRTIO
            assert vm.rng is True and vm.acpi is False
            assert vm.kick_signal == signal.SIGRTMIN + 3
            assert vm.disk_backend(1) == "sync"
            assert vm.disk_backend(0) in ("io_uring", "sync")
            with pytest.raises(IndexError):
                vm.disk_backend(2)


def test_properties_and_methods(vm, image):
    vm.vcpus = 4
    vm.memory_mib = 64
    vm.kernel = pathlib.Path(payload("hello"))
    vm.cmdline = b"x=1"
    assert (vm.vcpus, vm.memory_mib, vm.cmdline) == (4, 64, "x=1")
    vm.initrd = payload("busy")
    vm.initrd = None
    assert vm.initrd is None
    vm.console_type = microvm.ConsoleType.SERIAL
    vm.rng = 1
    vm.acpi = True
    vm.kick_signal = signal.SIGRTMAX
    vm.set_console(None, 1)
    vm.set_console(0, None)
    vm.set_console()
    vm.set_log(None)
    vm.set_log(print, "error")
    assert vm.add_disk(image) == 0
    assert vm.add_disk(os.fsencode(image), sync=True) == 1
    vm.set_vsock(3)
    vm.set_vsock(2**32 - 2, "/tmp/x.sock")


@pytest.mark.parametrize("name,bad", [
    ("vcpus", "2"), ("vcpus", 2.0), ("vcpus", True), ("vcpus", None),
    ("memory_mib", "16"), ("memory_mib", 1.5),
    ("kernel", 3), ("kernel", None), ("initrd", 3),
    ("console_type", 1.0), ("rng", "yes"), ("rng", None), ("acpi", 2.5),
    ("kick_signal", "SIGRTMIN"),
])
def test_bad_types(vm, name, bad):
    with pytest.raises(TypeError):
        setattr(vm, name, bad)


@pytest.mark.parametrize("name,bad", [
    ("vcpus", 0), ("vcpus", 255), ("vcpus", -1), ("vcpus", 2**32),
    ("memory_mib", 1), ("memory_mib", 0), ("memory_mib", -5), ("memory_mib", 2**64),
    ("kernel", ""), ("kernel", "a\0b"), ("initrd", ""),
    ("console_type", "hdmi"), ("console_type", 2), ("rng", 2),
    ("kick_signal", signal.SIGUSR1), ("kick_signal", signal.SIGRTMAX + 1),
])
def test_bad_values(vm, name, bad):
    with pytest.raises((ValueError, TypeError)) as e:
        setattr(vm, name, bad)
    if name not in ("rng",):
        assert e.type is ValueError


def test_bad_arguments_of_the_other_setters(vm, image):
    with pytest.raises(ValueError):
        vm.set_kernel(payload("hello"), "x" * 4096)
    with pytest.raises(ValueError):
        vm.set_kernel(payload("hello"), "a\0")
    with pytest.raises(TypeError):
        vm.set_kernel(payload("hello"), 5)
    with pytest.raises(ValueError):
        vm.set_console(-1, None)
    with pytest.raises(TypeError):
        vm.set_console("stdin", None)
    with pytest.raises(TypeError):
        vm.set_console(None, True)
    with pytest.raises(TypeError):
        vm.set_log(42)
    with pytest.raises(ValueError):
        vm.set_log(print, 9)
    with pytest.raises(ValueError):
        vm.set_log(print, "loud")
    with pytest.raises(TypeError):
        vm.add_disk(None)
    with pytest.raises(ValueError):
        vm.add_disk(image, serial="s" * 21)
    with pytest.raises(TypeError):
        vm.add_disk(image, read_only="no")
    with pytest.raises(ValueError):
        vm.set_vsock(2)
    with pytest.raises(ValueError):
        vm.set_vsock(2**32 - 1)
    with pytest.raises(TypeError):
        vm.set_vsock("3")
    with pytest.raises(ValueError):
        vm.set_vsock(3, "/" + "x" * 96)
    with pytest.raises(TypeError):
        vm.vsock_connect("1024")
    with pytest.raises(ValueError):
        vm.vsock_connect(2**32 - 1)
    with pytest.raises(ValueError):
        vm.wait(-1)
    with pytest.raises(TypeError):
        vm.wait("1")
    with pytest.raises(TypeError):
        vm.snapshot(None)
    with pytest.raises(TypeError):
        vm.snapshot("/tmp/s", diff="yes")
    with pytest.raises(TypeError):
        microvm.VM(disks=str(image))
    with pytest.raises(ValueError):
        microvm.VM(cmdline="x")
    with pytest.raises(TypeError):
        microvm.VM(bogus=1)
    assert vm.state == microvm.State.CONFIGURED and vm.last_error == ""


def test_library_refusals_map_to_errors(vm, tmp_path):
    with pytest.raises(microvm.NotFoundError) as e:
        vm.set_kernel(tmp_path / "missing")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, microvm.Error)
    assert e.value.errno == 2 and e.value.function == "microvm_set_kernel"
    assert "missing" in e.value.message and e.value.message == vm.last_error
    with pytest.raises(microvm.InvalidError):
        vm.set_kernel(tmp_path)              # a directory
    small = tmp_path / "small.img"
    small.write_bytes(b"x" * 100)
    with pytest.raises(microvm.InvalidError) as e:
        vm.add_disk(small)
    assert e.value.errno == 22 and e.value.message
    with pytest.raises(microvm.NotFoundError):
        vm.add_disk(tmp_path / "nope.img")
    with pytest.raises(microvm.InvalidError):
        vm.start()                           # no kernel
    with pytest.raises(microvm.InvalidError):
        vm.pause()
    with pytest.raises(microvm.InvalidError):
        vm.resume()
    with pytest.raises(microvm.InvalidError):
        vm.stop()
    with pytest.raises(microvm.InvalidError):
        vm.wait(0)
    with pytest.raises(microvm.InvalidError):
        vm.vsock_connect(1024, timeout=0)


def test_errno_classes():
    """Each errno's class, its Python counterpart, and the message."""
    import errno
    lib = microvm.library()
    want = {
        errno.ENOENT: (microvm.NotFoundError, FileNotFoundError),
        errno.EACCES: (microvm.AccessDeniedError, PermissionError),
        errno.EPERM: (microvm.AccessDeniedError, PermissionError),
        errno.ETIMEDOUT: (microvm.TimedOutError, TimeoutError),
        errno.EBUSY: (microvm.BusyError, microvm.Error),
        errno.EINVAL: (microvm.InvalidError, microvm.Error),
        errno.ECONNREFUSED: (microvm.ConnectionRefused, ConnectionRefusedError),
        errno.ECONNRESET: (microvm.ConnectionReset, ConnectionResetError),
        errno.EPIPE: (microvm.BrokenPipe, BrokenPipeError),
        errno.EAGAIN: (microvm.TryAgainError, BlockingIOError),
        errno.ESRCH: (microvm.NoProcessError, ProcessLookupError),
        errno.ENOTCONN: (microvm.NotConnectedError, microvm.Error),
        errno.ENODEV: (microvm.NoDeviceError, microvm.Error),
        errno.ENOEXEC: (microvm.ExecFormatError, microvm.Error),
        errno.EBADMSG: (microvm.ChecksumError, microvm.Error),
        errno.ENOMEM: (microvm.OutOfMemoryError, microvm.Error),
        errno.EMFILE: (microvm.TooManyFilesError, microvm.Error),
        errno.EPROTO: (microvm.ProtocolError, microvm.Error),
        errno.EFBIG: (microvm.FileTooBigError, microvm.Error),
        errno.EIO: (microvm.Error, OSError),
    }
    for err, (cls, py) in want.items():
        e = microvm.errors.make_error(lib, -err, "microvm_x", b"detail")
        assert type(e) is cls and isinstance(e, py) and isinstance(e, OSError), err
        assert e.errno == err and e.message == "detail" and e.function == "microvm_x"
        assert e.strerror == lib.strerror(-err)
        assert str(e) == "microvm_x: %s (%s): detail" % (e.strerror, errno.errorcode[err])
        import pickle
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and str(again) == str(e)


def test_setters_refused_while_running(kvm, tiny_vm):
    vm = tiny_vm("busy", "loops=1000")
    vm.start()
    for call in (lambda: setattr(vm, "vcpus", 2), lambda: setattr(vm, "memory_mib", 32),
                 lambda: vm.set_kernel(payload("hello")), lambda: vm.set_console(None, None),
                 lambda: vm.set_rng(True), lambda: vm.set_log(None), vm.start):
        with pytest.raises(microvm.BusyError) as e:
            call()
        assert e.value.errno == 16
    assert vm.vcpus == 1          # the cached value did not change
    vm.stop()
