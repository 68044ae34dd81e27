"""microvm.VM: the low level, one to one with <microvm.h>."""

import atexit
import ctypes
import enum
import errno
import logging
import os
import signal
import socket
import threading
import time
import weakref
from typing import NamedTuple

from . import _convert as cv
from . import _lib as L
from .errors import make_error


class _Enum(enum.IntEnum):
    """An IntEnum printed as its name (State.RUNNING), on every Python."""
    __str__ = enum.Enum.__str__


class State(_Enum):
    CONFIGURED = L.STATE_CONFIGURED
    RUNNING = L.STATE_RUNNING
    PAUSED = L.STATE_PAUSED
    STOPPED = L.STATE_STOPPED


class ExitReason(_Enum):
    NONE = L.EXIT_NONE
    RESET = L.EXIT_RESET
    POWEROFF = L.EXIT_POWEROFF
    CRASH = L.EXIT_CRASH
    INTERNAL_ERROR = L.EXIT_INTERNAL_ERROR
    STOPPED = L.EXIT_STOPPED


class LogLevel(_Enum):
    ERROR = L.LOG_ERROR
    WARN = L.LOG_WARN
    INFO = L.LOG_INFO
    DEBUG = L.LOG_DEBUG


class ConsoleType(_Enum):
    SERIAL = L.CONSOLE_SERIAL
    VIRTIO = L.CONSOLE_VIRTIO


class ExitResult(NamedTuple):
    """Why a VM stopped (struct microvm_exit)."""
    reason: ExitReason
    error: int      # negative errno for INTERNAL_ERROR, else 0
    vcpu: int       # the vCPU that stopped the VM
    message: str    # human-readable detail


class NetStats(NamedTuple):
    """Counters of a network interface (struct microvm_net_counters)."""
    link_up: bool
    rx_packets: int     # frames given to the guest
    rx_bytes: int
    rx_dropped: int     # frames from the backend the guest did not get
    tx_packets: int     # frames the guest sent that the backend took
    tx_bytes: int
    tx_dropped: int
    tx_malformed: int


_NET_BACKENDS = {"user": L.NET_BACKEND_USER, "tap": L.NET_BACKEND_TAP_NAME,
                 "tap-fd": L.NET_BACKEND_TAP_FD, "stream": L.NET_BACKEND_STREAM_FD}


def _net_port(spec):
    """A port forward: "HOST:GUEST" (TCP), "HOST:GUEST/udp", or a tuple
    (host, guest) / (host, guest, "tcp"|"udp")."""
    if isinstance(spec, str):
        ports, _, proto = spec.partition("/")
        host, sep, guest = ports.partition(":")
        if not sep:
            raise ValueError("port forward %r: want HOSTPORT:GUESTPORT" % spec)
        try:
            spec = (int(host), int(guest), proto or "tcp")
        except ValueError:
            raise ValueError("port forward %r: ports must be numbers" % spec) from None
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise TypeError("a port forward is \"HOST:GUEST\" or (host, guest[, proto]), not %r"
                        % (spec,))
    proto = spec[2] if len(spec) == 3 else "tcp"
    if proto not in ("tcp", "udp"):
        raise ValueError("port forward protocol must be 'tcp' or 'udp', not %r" % (proto,))
    return L.NetPort(L.NET_UDP if proto == "udp" else L.NET_TCP,
                     cv.integer("host port", spec[0], 1, 65535),
                     cv.integer("guest port", spec[1], 1, 65535))


def _net_mac(mac):
    """"52:54:00:12:34:56" or 6 bytes, unicast."""
    if isinstance(mac, str):
        try:
            mac = bytes(int(x, 16) for x in mac.split(":"))
        except ValueError:
            raise ValueError("mac %r: want six hex bytes like 52:54:00:12:34:56" % mac) from None
    if not isinstance(mac, (bytes, bytearray)) or len(mac) != 6:
        raise ValueError("mac must be 6 bytes or \"xx:xx:xx:xx:xx:xx\", got %r" % (mac,))
    if mac[0] & 1:
        raise ValueError("mac %s is a multicast address" % bytes(mac).hex(":"))
    return bytes(mac)


_PY_LEVEL = {L.LOG_ERROR: logging.ERROR, L.LOG_WARN: logging.WARNING,
             L.LOG_INFO: logging.INFO, L.LOG_DEBUG: logging.DEBUG}

# A long wait is made of waits this long, so that Ctrl-C and close() from
# another thread are noticed (the wait itself returns as soon as the VM
# stops).
_WAIT_SLICE_MS = 250


def _log_level(value, default=LogLevel.WARN):
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return LogLevel[value.upper()]
        except KeyError:
            raise ValueError("log level must be one of error, warn, info, debug, got %r"
                             % value) from None
    return LogLevel(cv.integer("log level", value, L.LOG_ERROR, L.LOG_DEBUG))


# Which VM's log callback this thread is running (a VM's _token), so that
# calls back into that VM fail at once instead of deadlocking in C.
_tls = threading.local()


def _log_trampoline(target, token):
    """A C log callback (LOG_FN) calling @target: a callable (level, message)
    or a logging.Logger, for the VM whose _token is @token. The caller keeps
    the returned object alive as long as C may call it."""
    if isinstance(target, logging.Logger):
        logger = target

        def target(level, message):
            logger.log(_PY_LEVEL.get(level, logging.DEBUG), "%s", message)
    elif not callable(target):
        raise TypeError("log must be a callable (level, message) or a logging.Logger, not %s"
                        % type(target).__name__)

    def call(opaque, level, msg):
        try:
            lvl = LogLevel(level)
        except ValueError:
            lvl = level
        outer = getattr(_tls, "token", None)
        _tls.token = token
        try:
            target(lvl, msg.decode("utf-8", "replace") if msg is not None else "")
        finally:
            _tls.token = outer

    return L.LOG_FN(call)


def _console_type(value):
    if isinstance(value, str):
        try:
            return ConsoleType[value.upper()]
        except KeyError:
            raise ValueError("console type must be 'serial' or 'virtio', got %r" % value) from None
    return ConsoleType(cv.integer("console type", value, L.CONSOLE_SERIAL, L.CONSOLE_VIRTIO))


def _kick_signal(value):
    return cv.integer("kick signal", value, signal.SIGRTMIN, signal.SIGRTMAX)


def _library(library):
    if library is None:
        return L.get()
    if isinstance(library, L.Library):
        return library
    return L.Library(os.fsdecode(library))


_live = weakref.WeakSet()


@atexit.register
def _close_all():
    # Destroy VMs still open at interpreter exit while Python can still run
    # their log callbacks (a vCPU thread calling into a finalized
    # interpreter would hang).
    for vm in list(_live):
        try:
            vm.close()
        except Exception:
            pass


class VM:
    """A microVM (struct microvm). Create it, configure it with keyword
    arguments, setter methods or properties, then start() it; use it as a
    context manager (or call close()) to release everything.

    Every configuration keyword argument matches a setter:
    vcpus, memory_mib, kernel (+ cmdline), initrd, console_in/console_out
    (file objects with fileno(), fds, or None; borrowed: keep them open
    while the VM lives; the VM keeps the objects referenced), console_type
    ('serial'/'virtio'), rng, acpi, pit, kick_signal, log (+ log_level),
    disks (paths, or dicts of add_disk's arguments), nets (backend names
    like "user", or dicts of add_net's arguments), vsock_cid (+
    vsock_uds_path), event_loop ("shared" or "embedder", see
    set_event_loop). ``library`` chooses the libmicrovm (a path or a
    Library) instead of the one loaded at import.

    Safe to use from several threads: calls on one VM are serialised by the
    library; close() makes blocking calls (wait, vsock_connect) of other
    threads return, waits for them and only then destroys the VM. Every
    call into C releases the GIL.
    """

    def __init__(self, *, vcpus=None, memory_mib=None, kernel=None, cmdline=None, initrd=None,
                 console_in=None, console_out=None, console_type=None, rng=None, acpi=None,
                 pit=None, kick_signal=None, log=None, log_level=None, disks=(), nets=(),
                 vsock_cid=None, vsock_uds_path=None, event_loop=None, library=None):
        self._init_state(_library(library))
        ptr = L.VM_P()
        rc = self._lib.microvm_create(ctypes.byref(ptr))
        if rc < 0:
            raise make_error(self._lib, rc, "microvm_create")
        self._ptr = ptr
        _live.add(self)
        try:
            if log is not None:
                self.set_log(log, log_level)
            elif log_level is not None:
                raise ValueError("log_level needs log")
            if vcpus is not None:
                self.vcpus = vcpus
            if memory_mib is not None:
                self.memory_mib = memory_mib
            if kernel is not None:
                self.set_kernel(kernel, cmdline)
            elif cmdline is not None:
                raise ValueError("cmdline needs kernel")
            if initrd is not None:
                self.initrd = initrd
            if console_in is not None or console_out is not None:
                self.set_console(console_in, console_out)
            if console_type is not None:
                self.console_type = console_type
            if rng is not None:
                self.rng = rng
            if acpi is not None:
                self.acpi = acpi
            if pit is not None:
                self.pit = pit
            if kick_signal is not None:
                self.kick_signal = kick_signal
            if isinstance(disks, (str, bytes)) or hasattr(disks, "__fspath__"):
                raise TypeError("disks must be a list of disks, not a single path")
            for d in disks:
                if isinstance(d, dict):
                    self.add_disk(**d)
                else:
                    self.add_disk(d)
            if isinstance(nets, (str, bytes, dict)):
                raise TypeError("nets must be a list of interfaces, not a single one")
            for n in nets:
                if isinstance(n, dict):
                    self.add_net(**n)
                else:
                    self.add_net(n)
            if vsock_cid is not None:
                self.set_vsock(vsock_cid, vsock_uds_path)
            elif vsock_uds_path is not None:
                raise ValueError("vsock_uds_path needs vsock_cid")
            if event_loop is not None:
                self.set_event_loop(event_loop)
        except BaseException:
            self.close()
            raise

    def _init_state(self, lib):
        self._lib = lib
        self._ptr = None
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closing = False
        self._token = object()
        # Objects C borrows: kept referenced until the VM is destroyed.
        self._keep = {}
        self._config = {"vcpus": 1, "memory_mib": 128, "kernel": None, "cmdline": None,
                        "initrd": None, "console_type": ConsoleType.SERIAL, "rng": False,
                        "acpi": True, "pit": True, "kick_signal": None}

    # ------------------------------------------------------------ plumbing

    def _in_own_callback(self):
        if getattr(_tls, "token", None) is self._token:
            raise RuntimeError("a VM's log callback must not call that VM (the library "
                               "would wait for the thread running the callback)")

    def _enter(self):
        self._in_own_callback()
        with self._cond:
            if self._ptr is None or self._closing:
                raise ValueError("the VM is closed")
            self._inflight += 1
            return self._ptr

    def _leave(self):
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def _call(self, name, *args):
        """Call C function @name with the VM and @args; a negative return
        raises the matching Error with microvm_last_error's detail."""
        fn = getattr(self._lib, name)
        ptr = self._enter()
        try:
            rc = fn(ptr, *args)
            if rc < 0:
                raise make_error(self._lib, rc, name, self._lib.microvm_last_error(ptr))
            return rc
        finally:
            self._leave()

    # ------------------------------------------------------------ lifetime

    def close(self):
        """Destroy the VM (stopping it if needed) and release everything it
        borrowed. Idempotent. Blocking calls of other threads on this VM
        return first (wait raises ValueError, vsock_connect an Error)."""
        self._in_own_callback()
        with self._cond:
            if self._ptr is None or self._closing:
                while self._ptr is not None:
                    self._cond.wait()
                return
            self._closing = True
            ptr = self._ptr
            busy = self._inflight > 0
        try:
            if busy:
                # Wake calls blocked in C; stop may race them, destroy not.
                self._lib.microvm_stop(ptr)
            with self._cond:
                while self._inflight:
                    self._cond.wait()
        finally:
            self._lib.microvm_destroy(ptr)
            with self._cond:
                self._ptr = None
                self._keep.clear()
                self._cond.notify_all()
            _live.discard(self)

    destroy = close

    @property
    def closed(self):
        return self._ptr is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_ptr", None) is None:
                return
            if isinstance(threading.current_thread(), threading._DummyThread):
                # Finalized on a thread Python did not start: possibly one
                # of this VM's own vCPU or event threads, inside a log
                # callback (the garbage collector runs wherever it is
                # triggered); destroying the VM there would wait for that
                # very thread. Destroy it from a new thread instead.
                threading.Thread(target=self.close, name="microvm-close").start()
                return
            self.close()
        except Exception:
            pass

    def __repr__(self):
        if self._ptr is None:
            return "<microvm.VM closed>"
        try:
            st = self.state.name.lower()
        except Exception:
            st = "?"
        return "<microvm.VM %s vcpus=%s memory_mib=%s kernel=%r>" % (
            st, self._config["vcpus"], self._config["memory_mib"], self._config["kernel"])

    @property
    def library(self):
        """The Library this VM was created with."""
        return self._lib

    @property
    def last_error(self):
        """microvm_last_error(): detail of the last failed call ("" if none)."""
        ptr = self._enter()
        try:
            return self._lib.microvm_last_error(ptr).decode("utf-8", "replace")
        finally:
            self._leave()

    # ------------------------------------------------------------- setters

    def set_log(self, log, level=None):
        """Route library messages of @level (LogLevel or 'error'...'debug';
        default WARN) and more severe to @log: a callable (level, message),
        called from library threads too, or a logging.Logger. None turns
        logging off. The VM keeps the callback referenced. Like the C
        callback, it must not call this VM's methods."""
        level = _log_level(level)
        if log is None:
            self._call("microvm_set_log", L.LOG_FN(), None, int(level))
            self._keep.pop("log", None)
            return
        cb = _log_trampoline(log, self._token)
        self._call("microvm_set_log", cb, None, int(level))
        self._keep["log"] = cb

    def set_vcpus(self, count):
        count = cv.integer("vcpus", count, 1, L.MAX_VCPUS)
        self._call("microvm_set_vcpus", count)
        self._config["vcpus"] = count

    def set_memory(self, mib):
        mib = cv.integer("memory_mib", mib, L.MIN_MEMORY_MIB, 2**64 - 1)
        self._call("microvm_set_memory", mib)
        self._config["memory_mib"] = mib

    def set_kernel(self, path, cmdline=None):
        """Kernel image (an ELF64 x86_64 executable) and its command line."""
        p = cv.path("kernel", path)
        c = None if cmdline is None else cv.cbytes("cmdline", cmdline, L.MAX_CMDLINE - 1)
        self._call("microvm_set_kernel", p, c)
        self._config["kernel"] = os.fsdecode(p)
        self._config["cmdline"] = None if c is None else c.decode("utf-8", "replace")

    def set_initrd(self, path):
        """Initial ramdisk; None removes it."""
        p = None if path is None else cv.path("initrd", path)
        self._call("microvm_set_initrd", p)
        self._config["initrd"] = None if p is None else os.fsdecode(p)

    def set_console(self, console_in=None, console_out=None):
        """Console input and output: file objects (anything with fileno()),
        fds or None. Borrowed: keep them open while the VM lives (the VM
        keeps the objects referenced, which does not keep a closed file
        open)."""
        fin = cv.fd("console_in", console_in)
        fout = cv.fd("console_out", console_out)
        self._call("microvm_set_console", fin, fout)
        self._keep["console"] = (console_in, console_out)

    def set_console_type(self, kind):
        """'serial' (the 16550 UART, default) or 'virtio' (virtio-console)."""
        kind = _console_type(kind)
        self._call("microvm_set_console_type", int(kind))
        self._config["console_type"] = kind

    def set_rng(self, enabled=True):
        enabled = cv.flag("rng", enabled)
        self._call("microvm_set_rng", int(enabled))
        self._config["rng"] = enabled

    _SECCOMP_MODES = {"off": L.SECCOMP_OFF, "on": L.SECCOMP_ON,
                      "kill-process": L.SECCOMP_KILL_PROCESS, "log": L.SECCOMP_LOG}

    def set_seccomp(self, mode="on", allow=()):
        """A seccomp filter on the VM's own threads (vCPUs, event loop), see
        microvm_set_seccomp(): "on" (a forbidden system call stops the VM
        with a message naming it), "kill-process", "log" or "off"; @allow:
        extra system call numbers to admit. Before start()."""
        if mode not in self._SECCOMP_MODES:
            raise ValueError("seccomp mode must be one of %s, not %r"
                             % (", ".join(self._SECCOMP_MODES), mode))
        for nr in allow:
            self._call("microvm_seccomp_allow", cv.integer("system call number", nr, 0, 4095))
        self._call("microvm_set_seccomp", self._SECCOMP_MODES[mode])

    _LOOP_MODES = {"shared": L.LOOP_SHARED, "embedder": L.LOOP_EMBEDDER}

    def set_event_loop(self, mode):
        """Where the VM's device work (console input, queue notifications,
        disk completions, sockets) runs, see microvm_set_event_loop():
        "shared" (default: the library's event threads) or "embedder":
        only inside loop_run(), on the thread calling it; poll loop_fd
        from your own loop, e.g. with asyncio
        ``loop.add_reader(vm.loop_fd, vm.loop_run)``. Calls that wait for
        the guest (vsock_connect, agent calls) then need loop_run going on
        in another thread. Before start()."""
        if mode not in self._LOOP_MODES:
            raise ValueError("event_loop must be one of %s, not %r"
                             % (", ".join(self._LOOP_MODES), mode))
        self._call("microvm_set_event_loop", self._LOOP_MODES[mode])

    @property
    def loop_fd(self):
        """With event_loop="embedder", once started: an fd that polls
        readable while device work is ready. Owned by the VM (do not close
        or read it); valid until close()."""
        return self._call("microvm_loop_fd")

    def loop_run(self, timeout=0):
        """Run the VM's ready device work on this thread (event_loop=
        "embedder"), first waiting up to @timeout seconds for some (0: do
        not wait; None: until there is some). Returns how many ready
        events it took. close() from another thread makes a waiting call
        raise ValueError, as wait() does."""
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError("timeout must be None or seconds >= 0, got %r" % (timeout,))
        if timeout is not None:
            return self._call("microvm_loop_run", int(timeout * 1000))
        # Without a limit: in slices, so that a close() (which waits for
        # this call to return) is seen within one.
        while True:
            n = self._call("microvm_loop_run", 200)
            if n:
                return n

    def set_acpi(self, enabled=True):
        enabled = cv.flag("acpi", enabled)
        self._call("microvm_set_acpi", int(enabled))
        self._config["acpi"] = enabled

    def set_pit(self, enabled=True):
        """The i8254 PIT (default on). Off: no KVM PIT worker thread per VM,
        cheaper create and teardown; the guest gets the TSC-deadline LAPIC
        timer instead (Linux with kvmclock needs no PIT)."""
        enabled = cv.flag("pit", enabled)
        self._call("microvm_set_pit", int(enabled))
        self._config["pit"] = enabled

    def set_kick_signal(self, signo):
        signo = _kick_signal(signo)
        self._call("microvm_set_kick_signal", signo)
        self._config["kick_signal"] = signo

    def _prop(name, setter, doc):
        return property(lambda self: self._config[name],
                        lambda self, v: getattr(self, setter)(v), doc=doc)

    vcpus = _prop("vcpus", "set_vcpus", "Number of vCPUs (1..254).")
    memory_mib = _prop("memory_mib", "set_memory", "Guest RAM in MiB (>= 2).")
    kernel = _prop("kernel", "set_kernel", "Kernel path (set_kernel also takes a cmdline).")
    initrd = _prop("initrd", "set_initrd", "Initrd path or None.")
    console_type = _prop("console_type", "set_console_type", "ConsoleType.SERIAL or VIRTIO.")
    rng = _prop("rng", "set_rng", "virtio-rng on/off.")
    acpi = _prop("acpi", "set_acpi", "ACPI tables on/off.")
    pit = _prop("pit", "set_pit", "i8254 PIT on/off.")
    kick_signal = _prop("kick_signal", "set_kick_signal", "Signal kicking vCPU threads.")
    del _prop

    @property
    def cmdline(self):
        return self._config["cmdline"]

    @cmdline.setter
    def cmdline(self, value):
        if self._config["kernel"] is None:
            raise ValueError("set the kernel before its cmdline")
        self.set_kernel(self._config["kernel"], value)

    # --------------------------------------------------------------- disks

    def add_disk(self, path, *, read_only=False, sync=False, serial=None):
        """Attach a raw image as a virtio-blk disk; returns its index.
        @sync selects the synchronous backend instead of io_uring; @serial is
        the device serial (at most 20 bytes)."""
        cfg = L.DiskConfig()
        cfg.path = cv.path("disk path", path)
        cfg.flags = ((L.DISK_READ_ONLY if cv.flag("read_only", read_only) else 0)
                     | (L.DISK_BACKEND_SYNC if cv.flag("sync", sync) else 0))
        if serial is not None:
            cfg.serial = cv.cbytes("serial", serial, L.DISK_SERIAL_MAX)
        return self._call("microvm_add_disk", ctypes.byref(cfg))

    def disk_backend(self, index):
        """"io_uring" or "sync": the I/O backend of disk @index."""
        index = cv.integer("disk index", index, 0, 2**32 - 1)
        ptr = self._enter()
        try:
            name = self._lib.microvm_disk_backend(ptr, index)
        finally:
            self._leave()
        if name is None:
            raise IndexError("no disk %d" % index)
        return name.decode()

    # ---------------------------------------------------------- networking

    def add_net(self, backend="user", *, tap=None, fd=None, ports=(), mac=None,
                link_up=True, passt=None):
        """Add a virtio-net interface (the guest sees eth0, eth1... in the
        order added); returns its index. @backend: "user" (user-mode
        networking: the library runs passt, which gives the guest DHCP, DNS
        and NAT, and forwards @ports: "HOST:GUEST", "HOST:GUEST/udp" or
        (host, guest[, "tcp"|"udp"]) tuples; @passt its path or name),
        "tap" (an existing TAP interface named @tap), "tap-fd" (a TAP @fd)
        or "stream" (@fd a connected stream socket carrying length-prefixed
        Ethernet frames, QEMU's stream netdev framing). An @fd (int or
        object with fileno()) is duplicated. @mac: the unicast MAC
        (default random); @link_up False starts with the link down."""
        if backend not in _NET_BACKENDS:
            raise ValueError("backend must be one of %s, not %r" % (", ".join(_NET_BACKENDS),
                                                                      backend))
        cfg = L.NetConfig()
        cfg.backend = _NET_BACKENDS[backend]
        if (tap is not None) != (backend == "tap"):
            raise ValueError("tap (the interface name) goes with backend 'tap' only")
        if (fd is not None) != (backend in ("tap-fd", "stream")):
            raise ValueError("fd goes with backends 'tap-fd' and 'stream' only")
        if (ports or passt is not None) and backend != "user":
            raise ValueError("ports and passt go with backend 'user' only")
        if tap is not None:
            cfg.tap_name = cv.cbytes("tap", tap, 15, allow_empty=False)
        if fd is not None:
            cfg.fd = cv.fd("fd", fd)
        if passt is not None:
            cfg.passt_path = cv.path("passt", passt)
        if isinstance(ports, (str, bytes)):
            raise TypeError("ports must be a list of port forwards, not a single string")
        fwd = [_net_port(p) for p in ports]
        if len(fwd) > L.NET_MAX_PORTS:
            raise ValueError("at most %d port forwards, got %d" % (L.NET_MAX_PORTS, len(fwd)))
        arr = (L.NetPort * max(1, len(fwd)))(*fwd)
        cfg.ports, cfg.n_ports = ctypes.cast(arr, ctypes.POINTER(L.NetPort)), len(fwd)
        if mac is not None:
            cfg.mac[:] = _net_mac(mac)
            cfg.flags |= L.NET_MAC_SET
        if not cv.flag("link_up", link_up):
            cfg.flags |= L.NET_LINK_DOWN
        return self._call("microvm_add_net", ctypes.byref(cfg))

    def set_net_link(self, index, up):
        """Take the link of interface @index up or down (running, paused or
        configured VM; the guest sees the change)."""
        index = cv.integer("interface index", index, 0, 2**32 - 1)
        self._call("microvm_net_set_link", index, 1 if cv.flag("up", up) else 0)

    def net_stats(self, index):
        """NetStats of interface @index since the VM started (zeros before)."""
        index = cv.integer("interface index", index, 0, 2**32 - 1)
        c = L.NetCounters()
        self._call("microvm_net_stats", index, ctypes.byref(c))
        return NetStats(bool(c.link_up), c.rx_packets, c.rx_bytes, c.rx_dropped,
                        c.tx_packets, c.tx_bytes, c.tx_dropped, c.tx_malformed)

    def net_mac(self, index):
        """The MAC address of interface @index, as "52:54:..." (a restored or
        forked clone gets a new one unless keep_mac=True)."""
        index = cv.integer("interface index", index, 0, 2**32 - 1)
        mac = (ctypes.c_uint8 * 6)()
        self._call("microvm_net_mac", index, ctypes.byref(mac))
        return ":".join("%02x" % b for b in mac)

    # --------------------------------------------------------------- vsock

    def set_vsock(self, cid, uds_path=None):
        """Give the guest a virtio-vsock device with guest CID @cid (3 ..
        2**32 - 2) and, optionally, the Unix socket bridge at @uds_path."""
        cfg = L.VsockConfig()
        cfg.guest_cid = cv.integer("vsock cid", cid, 3, 2**32 - 2)
        if uds_path is not None:
            cfg.uds_path = cv.path("vsock uds_path", uds_path, L.VSOCK_UDS_PATH_MAX)
        self._call("microvm_set_vsock", ctypes.byref(cfg))

    def vsock_connect(self, port, timeout=None):
        """A connected stream socket (socket.socket, owned by the caller) to
        port @port of the guest; @timeout in seconds (None = no limit)."""
        port = cv.integer("port", port, 0, 2**32 - 2)
        ms = cv.timeout_ms(timeout)
        fd = self._call("microvm_vsock_connect", port, ms)
        return socket.socket(fileno=fd)

    # ----------------------------------------------------------- lifecycle

    def start(self):
        """Build the VM and start running it (returns once it runs)."""
        self._call("microvm_start")

    def pause(self):
        self._call("microvm_pause")

    def resume(self):
        self._call("microvm_resume")

    def stop(self):
        self._call("microvm_stop")

    def describe(self):
        """A report on the paused or stopped VM, for a person chasing a hang
        or a crash: each vCPU's run state, registers, pending events and
        interrupt controller, each virtio device's status and queue indices
        (microvm_describe; the format may change). BusyError while it runs:
        pause it first."""
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._call("microvm_describe", buf, size)
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def _wait_once(self, ms):
        ex = L.Exit()
        ptr = self._enter()
        try:
            rc = self._lib.microvm_wait(ptr, ms, ctypes.byref(ex))
            if rc < 0:
                err = make_error(self._lib, rc, "microvm_wait", self._lib.microvm_last_error(ptr))
        finally:
            self._leave()
        if rc < 0:
            return err
        try:
            reason = ExitReason(ex.reason)
        except ValueError:
            reason = ex.reason
        return ExitResult(reason, ex.error, ex.vcpu, ex.message.decode("utf-8", "replace"))

    def wait(self, timeout=None):
        """Wait until the VM stops, at most @timeout seconds (None = no
        limit, 0 = poll). Returns an ExitResult; raises TimedOutError (a
        TimeoutError) if it is still running."""
        ms = cv.timeout_ms(timeout)
        deadline = None if ms < 0 else time.monotonic() + ms / 1000.0
        while True:
            if deadline is None:
                slice_ms = _WAIT_SLICE_MS
            else:
                left = max(0, int((deadline - time.monotonic()) * 1000))
                slice_ms = min(_WAIT_SLICE_MS, left)
            r = self._wait_once(slice_ms)
            if isinstance(r, ExitResult):
                return r
            if r.errno != errno.ETIMEDOUT or (deadline is not None and time.monotonic() >= deadline):
                raise r

    async def wait_async(self, timeout=None):
        """wait() for asyncio: awaits the event fd (add_reader) instead of
        blocking. It reads (clears) the event fd, which other watchers of
        the fd then miss. Raises TimedOutError after @timeout seconds."""
        import asyncio
        ms = cv.timeout_ms(timeout)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fd = self.event_fd

        def ready():
            self.clear_event()
            try:
                res = self.poll()
            except BaseException as e:          # noqa: B902 - handed to the awaiter
                if not fut.done():
                    fut.set_exception(e)
                return
            if res is not None and not fut.done():
                fut.set_result(res)

        loop.add_reader(fd, ready)
        try:
            ready()                             # it may have stopped already
            try:
                return await asyncio.wait_for(fut, None if ms < 0 else ms / 1000.0)
            except asyncio.TimeoutError:
                raise make_error(self._lib, -errno.ETIMEDOUT, "wait_async",
                                 "still running after %s s" % timeout) from None
        finally:
            loop.remove_reader(fd)

    def poll(self):
        """The ExitResult if the VM has stopped, else None."""
        r = self._wait_once(0)
        if isinstance(r, ExitResult):
            return r
        if r.errno == errno.ETIMEDOUT:
            return None
        raise r

    @property
    def state(self):
        ptr = self._enter()
        try:
            return State(self._lib.microvm_state(ptr))
        finally:
            self._leave()

    @property
    def event_fd(self):
        """The VM's eventfd: readable whenever the state changes. Owned by
        the VM (do not close it); clear_event() reads it."""
        return self._call("microvm_event_fd")

    def fileno(self):
        """event_fd, so a VM can be given to select/selectors/asyncio."""
        return self.event_fd

    def clear_event(self):
        """Read (and so clear) the event fd: the number of state changes
        since the last read, 0 if none."""
        try:
            return int.from_bytes(os.read(self.event_fd, 8), "little")
        except BlockingIOError:
            return 0

    # ------------------------------------------------- snapshot and restore

    def snapshot(self, path, *, diff=False):
        """Write a snapshot of this PAUSED VM to directory @path (created;
        atomic). @diff writes only the pages changed since the base."""
        p = cv.path("snapshot path", path)
        flags = L.SNAPSHOT_DIFF if cv.flag("diff", diff) else 0
        self._call("microvm_snapshot", p, flags)

    @classmethod
    def restore(cls, path, *, paused=False, verify_memory=False, prefault=False,
                track_dirty=False, console_in=None, console_out=None, disk_paths=None,
                vsock_cid=None, vsock_uds_path=None, log=None, log_level=None,
                kick_signal=None, net_fds=None, keep_mac=False, event_loop="shared",
                library=None):
        """A new VM from the snapshot in directory @path, running (or paused
        with paused=True). disk_paths: a list (index = disk index) of paths
        replacing the saved ones, None entries keep the saved path.
        net_fds: a list (index = interface index) of fds (or objects with
        fileno()) for the interfaces whose backend was an fd ("tap-fd",
        "stream"), None for the others (reopened as saved: a new passt).
        Each interface gets a new random MAC address unless keep_mac=True.
        event_loop: "shared" or "embedder" (see set_event_loop)."""
        lib = _library(library)
        p = cv.path("snapshot path", path)
        cfg = L.RestoreConfig()
        cfg.flags = ((L.RESTORE_PAUSED if cv.flag("paused", paused) else 0)
                     | (L.RESTORE_VERIFY_MEMORY if cv.flag("verify_memory", verify_memory) else 0)
                     | (L.RESTORE_PREFAULT if cv.flag("prefault", prefault) else 0)
                     | (L.RESTORE_TRACK_DIRTY if cv.flag("track_dirty", track_dirty) else 0)
                     | (L.RESTORE_KEEP_MAC if cv.flag("keep_mac", keep_mac) else 0)
                     | (L.RESTORE_EMBEDDER_LOOP if _embedder(event_loop) else 0))
        self = cls.__new__(cls)
        self._init_state(lib)
        keep = _clone_config(self, cfg, console_in, console_out, disk_paths, vsock_cid,
                             vsock_uds_path, log, log_level, kick_signal)
        if net_fds is not None:
            if len(net_fds) > L.RESTORE_MAX_NETS:
                raise ValueError("at most %d net fds, got %d" % (L.RESTORE_MAX_NETS, len(net_fds)))
            fds = (ctypes.c_int32 * max(1, len(net_fds)))(*[cv.fd("net fd", f) for f in net_fds])
            cfg.n_net_fds, cfg.net_fds = len(net_fds), fds
            keep["net_fds"] = (fds, net_fds)
        ptr = L.VM_P()
        errbuf = ctypes.create_string_buffer(1024)
        rc = lib.microvm_restore(ctypes.byref(ptr), p, ctypes.byref(cfg), errbuf,
                                 ctypes.sizeof(errbuf))
        if rc < 0:
            raise make_error(lib, rc, "microvm_restore", errbuf.value)
        self._ptr = ptr
        self._keep = keep
        _live.add(self)
        return self

    def reset(self, *, paused=False):
        """Return this VM, in place, to the snapshot it was restored from
        (or last took): vCPUs, devices and memory as they were then; only
        the pages written since are dropped. Running or paused; afterwards
        running, or paused with paused=True. Disks are not touched."""
        flags = L.RESET_PAUSED if cv.flag("paused", paused) else 0
        self._call("microvm_reset", flags)

    def fork(self, *, paused=False, console_in=None, console_out=None, disk_paths=None,
             vsock_cid=None, vsock_uds_path=None, log=None, log_level=None, kick_signal=None,
             keep_mac=False, event_loop="shared"):
        """A copy-on-write child of this PAUSED VM, running (or paused with
        paused=True); nothing is written to disk. The options are
        VM.restore()'s; a child of a VM with a vsock socket path needs its own
        vsock_uds_path."""
        cfg = L.ForkConfig()
        cfg.flags = ((L.FORK_PAUSED if cv.flag("paused", paused) else 0)
                     | (L.FORK_KEEP_MAC if cv.flag("keep_mac", keep_mac) else 0)
                     | (L.FORK_EMBEDDER_LOOP if _embedder(event_loop) else 0))
        child = type(self).__new__(type(self))
        child._init_state(self._lib)
        keep = _clone_config(child, cfg, console_in, console_out, disk_paths, vsock_cid,
                             vsock_uds_path, log, log_level, kick_signal)
        ptr = L.VM_P()
        self._call("microvm_fork", ctypes.byref(ptr), ctypes.byref(cfg))
        child._ptr = ptr
        child._keep = keep
        _live.add(child)
        return child


def _embedder(event_loop):
    """A clone's event_loop= argument: True for "embedder"."""
    if event_loop not in VM._LOOP_MODES:
        raise ValueError("event_loop must be one of %s, not %r"
                         % (", ".join(VM._LOOP_MODES), event_loop))
    return event_loop == "embedder"


def _clone_config(vm, cfg, console_in, console_out, disk_paths, vsock_cid, vsock_uds_path,
                  log, log_level, kick_signal):
    """Fill the fields restore and fork configs share (RestoreConfig or
    ForkConfig) for the new VM object @vm; returns what must stay alive."""
    cfg.console_in = cv.fd("console_in", console_in)
    cfg.console_out = cv.fd("console_out", console_out)
    keep = {"console": (console_in, console_out)}
    if disk_paths is not None:
        if isinstance(disk_paths, (str, bytes)) or hasattr(disk_paths, "__fspath__"):
            raise TypeError("disk_paths must be a list of paths, not a single path")
        paths = [None if d is None else cv.path("disk path", d) for d in disk_paths]
        if len(paths) > L.RESTORE_MAX_DISKS:
            raise ValueError("at most %d disk paths, got %d" % (L.RESTORE_MAX_DISKS, len(paths)))
        arr = (ctypes.c_char_p * max(1, len(paths)))(*paths)
        cfg.n_disks = len(paths)
        cfg.disk_paths = arr
        keep["disk_paths"] = arr
    if vsock_cid is not None:
        cfg.vsock_cid = cv.integer("vsock cid", vsock_cid, 3, 2**32 - 2)
    if vsock_uds_path is not None:
        cfg.vsock_uds_path = cv.path("vsock uds_path", vsock_uds_path, L.VSOCK_UDS_PATH_MAX)
    if log is not None:
        cb = _log_trampoline(log, vm._token)
        cfg.log_fn = cb
        cfg.log_level = int(_log_level(log_level))
        keep["log"] = cb
    elif log_level is not None:
        raise ValueError("log_level needs log")
    if kick_signal is not None:
        cfg.kick_signal = _kick_signal(kick_signal)

    vm._config = dict.fromkeys(vm._config)
    if kick_signal is not None:
        vm._config["kick_signal"] = cfg.kick_signal
    return keep
