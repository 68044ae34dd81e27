"""Loading libmicrovm and the ctypes declarations of its whole C API.

Everything here mirrors include/microvm.h and include/microvm_agent.h one
to one: the structs (with their leading ``size`` field), the constants and
every function's argtypes/restype. The rest of the package only calls
through a :class:`Library` object, never through a bare ``ctypes.CDLL``.

Where the library comes from, in this order:

1. an explicit path given to :func:`load` (``microvm.load_library(path)``);
2. the ``MICROVM_LIBRARY`` environment variable (a path);
3. the build tree, when this package is used from a libmicrovm checkout
   (``<checkout>/build/libmicrovm.so.<major>``);
4. the installed system library (``libmicrovm.so.<major>`` through the
   dynamic linker, then ``ctypes.util.find_library("microvm")``).

The library is loaded with ``ctypes.CDLL`` (not ``PyDLL``), so every call
into it releases the GIL: a blocking call (wait, start, vsock connect,
agent exec) does not stop other Python threads.
"""

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

from ._version import __version__

# The major version (SONAME libmicrovm.so.<major>) and the oldest minor
# version whose API these declarations describe (0.4 added reset, fork and
# networking, 0.5 the MAC address, 0.6 the process-wide runtime, 0.7 the embedder-driven loop,
# 0.8 microvm_describe, 0.9 microvm_set_pit and the boot-image cache).
LIB_MAJOR = 0
LIB_MIN_MINOR = 9
# Later additions the package uses only when the loaded library has them
# (see Library.has). A 0.3 library takes the 0.4 structs as long as the
# fields it does not know are zero ("Structs that may grow" in microvm.h).
LIB_EXEC_USER_MINOR = 4     # microvm_exec_config.user, exec_result resource use
IMAGE_CACHE_OFF = 0xFFFFFFFF
SONAME = "libmicrovm.so.%d" % LIB_MAJOR

# ------------------------------------------------------------ constants

LOG_ERROR = 1
LOG_WARN = 2
LOG_INFO = 3
LOG_DEBUG = 4

MAX_VCPUS = 254
MIN_MEMORY_MIB = 2
MAX_CMDLINE = 4096

CONSOLE_SERIAL = 0
CONSOLE_VIRTIO = 1

DISK_READ_ONLY = 0x1
DISK_BACKEND_SYNC = 0x2
DISK_SERIAL_MAX = 20

VSOCK_UDS_PATH_MAX = 96
AGENT_PORT = 1024

DEFAULT_KICK_SIGNAL_OFFSET = 6

EXIT_NONE = 0
EXIT_RESET = 1
EXIT_POWEROFF = 2
EXIT_CRASH = 3
EXIT_INTERNAL_ERROR = 4
EXIT_STOPPED = 5
EXIT_MESSAGE_MAX = 256

STATE_CONFIGURED = 0
STATE_RUNNING = 1
STATE_PAUSED = 2
STATE_STOPPED = 3

SNAPSHOT_DIFF = 0x1

RESTORE_PAUSED = 0x1
RESTORE_VERIFY_MEMORY = 0x2
RESTORE_PREFAULT = 0x4
RESTORE_TRACK_DIRTY = 0x8
RESTORE_KEEP_MAC = 0x10
RESTORE_EMBEDDER_LOOP = 0x20
RESTORE_MAX_DISKS = 16
RESET_PAUSED = 0x1
SECCOMP_OFF = 0
SECCOMP_ON = 1
SECCOMP_KILL_PROCESS = 2
SECCOMP_LOG = 3
FORK_PAUSED = 0x1
FORK_KEEP_MAC = 0x2
FORK_EMBEDDER_LOOP = 0x4
LOOP_SHARED = 0
LOOP_EMBEDDER = 1

# <microvm_agent.h>
RESTORE_MAX_NETS = 16

NET_BACKEND_TAP_NAME = 1
NET_BACKEND_TAP_FD = 2
NET_BACKEND_STREAM_FD = 3
NET_BACKEND_USER = 4
NET_MAC_SET = 0x1
NET_LINK_DOWN = 0x2
NET_TCP = 0
NET_UDP = 1
NET_MAX_PORTS = 64

AGENT_PROTOCOL_VERSION = 0x00010002
AGENT_DEFAULT_IO_TIMEOUT_MS = 30000
EXEC_MERGE_ENV = 0x1
EXEC_OUTPUT_MAX = 64 * 1024 * 1024
EXEC_STDOUT = 1
EXEC_STDERR = 2
EXEC_TIMED_OUT = 0x1
EXEC_CANCELLED = 0x2
EXEC_OUT_TRUNCATED = 0x4
EXEC_ERR_TRUNCATED = 0x8
EXEC_CORE_DUMPED = 0x10
EXEC_MAX_ARGS = 4096
EXEC_USER_MAX = 256         # microvm_exec_config.user: "at most 256 bytes"
AGENT_FILE_MAX = 256 * 1024 * 1024
AGENT_RESEED_MAX = 4096

INT_MAX = 2**31 - 1

# --------------------------------------------------------------- types


class microvm(ctypes.Structure):
    """Opaque ``struct microvm``."""


class microvm_agent(ctypes.Structure):
    """Opaque ``struct microvm_agent``."""


VM_P = ctypes.POINTER(microvm)
AGENT_P = ctypes.POINTER(microvm_agent)

# void (*microvm_log_fn)(void *opaque, int level, const char *msg)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

# int (*on_output)(void *opaque, int stream, const void *data, size_t len)
OUTPUT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                             ctypes.c_void_p, ctypes.c_size_t)


class _Sized(ctypes.Structure):
    """A struct whose first field is ``uint32_t size``, preset to sizeof
    (what the C _INIT macros do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.size = ctypes.sizeof(self)


class DiskConfig(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("path", ctypes.c_char_p),
        ("serial", ctypes.c_char_p),
    ]


class VsockConfig(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_cid", ctypes.c_uint64),
        ("uds_path", ctypes.c_char_p),
    ]


class Exit(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("error", ctypes.c_int32),
        ("vcpu", ctypes.c_uint32),
        ("message", ctypes.c_char * EXIT_MESSAGE_MAX),
    ]


# The fields microvm_restore_config and microvm_fork_config share (their
# 0.2/0.3 layout); each adds its own after them.
_CLONE_FIELDS = [
    ("size", ctypes.c_uint32),
    ("flags", ctypes.c_uint32),
    ("console_in", ctypes.c_int),
    ("console_out", ctypes.c_int),
    ("n_disks", ctypes.c_uint32),
    ("disk_paths", ctypes.POINTER(ctypes.c_char_p)),
    ("vsock_cid", ctypes.c_uint64),
    ("vsock_uds_path", ctypes.c_char_p),
    ("log_fn", LOG_FN),
    ("log_opaque", ctypes.c_void_p),
    ("log_level", ctypes.c_int32),
    ("kick_signal", ctypes.c_int32),
]


class _CloneConfig(_Sized):
    """Consoles default to -1 (none)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if "console_in" not in kwargs:
            self.console_in = -1
        if "console_out" not in kwargs:
            self.console_out = -1


class RestoreConfig(_CloneConfig):
    _fields_ = _CLONE_FIELDS + [
        ("n_net_fds", ctypes.c_uint32),             # 0.4
        ("reserved", ctypes.c_uint32),
        ("net_fds", ctypes.POINTER(ctypes.c_int32)),
        ("seccomp", ctypes.c_uint32),               # 0.4
        ("reserved2", ctypes.c_uint32),
    ]


class ForkConfig(_CloneConfig):
    _fields_ = list(_CLONE_FIELDS)


class NetPort(ctypes.Structure):
    _fields_ = [
        ("protocol", ctypes.c_uint32),
        ("host_port", ctypes.c_uint16),
        ("guest_port", ctypes.c_uint16),
    ]


class NetConfig(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("backend", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("mac", ctypes.c_uint8 * 6),
        ("reserved", ctypes.c_uint8 * 2),
        ("tap_name", ctypes.c_char_p),
        ("passt_path", ctypes.c_char_p),
        ("ports", ctypes.POINTER(NetPort)),
        ("n_ports", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if "fd" not in kwargs:
            self.fd = -1


class NetCounters(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("link_up", ctypes.c_uint32),
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("rx_dropped", ctypes.c_uint64),
        ("tx_packets", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
        ("tx_dropped", ctypes.c_uint64),
        ("tx_malformed", ctypes.c_uint64),
    ]


class RuntimeConfig(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("event_threads", ctypes.c_uint32),
        ("teardown_threads", ctypes.c_uint32),
        ("teardown_backlog", ctypes.c_uint32),
        ("image_cache_mib", ctypes.c_uint32),      # 0.9
    ]


class RuntimeCounters(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("event_threads", ctypes.c_uint32),
        ("teardown_threads", ctypes.c_uint32),
        ("teardown_pending", ctypes.c_uint32),
        ("image_cache_files", ctypes.c_uint32),    # 0.9
        ("image_cache_kib", ctypes.c_uint32),      # 0.9
    ]


class ExecConfig(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("envp", ctypes.POINTER(ctypes.c_char_p)),
        ("cwd", ctypes.c_char_p),
        ("stdin_data", ctypes.c_void_p),
        ("stdin_len", ctypes.c_size_t),
        ("stdin_fd", ctypes.c_int),
        ("timeout_ms", ctypes.c_int),
        ("on_output", OUTPUT_FN),
        ("opaque", ctypes.c_void_p),
        ("output_limit", ctypes.c_size_t),
        ("user", ctypes.c_char_p),                  # 0.4
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if "stdin_fd" not in kwargs:
            self.stdin_fd = -1


class ExecResult(_Sized):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("exit_code", ctypes.c_int32),
        ("signal", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        # char *, but output may contain NULs: read with string_at(out, out_len)
        ("out", ctypes.c_void_p),
        ("out_len", ctypes.c_size_t),
        ("err", ctypes.c_void_p),
        ("err_len", ctypes.c_size_t),
        # 0.4; a 0.3 library zeroes them (the tail of a larger result)
        ("max_rss_kib", ctypes.c_uint64),
        ("user_us", ctypes.c_uint64),
        ("sys_us", ctypes.c_uint64),
    ]


def cstr_array(items):
    """A NULL-terminated ``const char *[]`` of byte strings (the array keeps
    the byte strings alive as long as it lives)."""
    arr = (ctypes.c_char_p * (len(items) + 1))(*items, None)
    return arr


# ------------------------------------------------------- the prototypes

_I = ctypes.c_int
_U32 = ctypes.c_uint32
_U64 = ctypes.c_uint64
_S = ctypes.c_char_p
_SZ = ctypes.c_size_t
_VP = ctypes.c_void_p

# name: (restype, [argtypes]) for every function of the two headers.
PROTOTYPES = {
    # <microvm.h>
    "microvm_version": (_S, []),
    "microvm_strerror": (_S, [_I]),
    "microvm_last_error": (_S, [VM_P]),
    "microvm_set_log": (_I, [VM_P, LOG_FN, _VP, _I]),
    "microvm_create": (_I, [ctypes.POINTER(VM_P)]),
    "microvm_set_vcpus": (_I, [VM_P, _U32]),
    "microvm_set_memory": (_I, [VM_P, _U64]),
    "microvm_set_kernel": (_I, [VM_P, _S, _S]),
    "microvm_set_initrd": (_I, [VM_P, _S]),
    "microvm_set_console": (_I, [VM_P, _I, _I]),
    "microvm_set_console_type": (_I, [VM_P, _U32]),
    "microvm_set_rng": (_I, [VM_P, _I]),
    "microvm_set_pit": (_I, [VM_P, _I]),
    "microvm_add_disk": (_I, [VM_P, ctypes.POINTER(DiskConfig)]),
    "microvm_disk_backend": (_S, [VM_P, _U32]),
    "microvm_add_net": (_I, [VM_P, ctypes.POINTER(NetConfig)]),
    "microvm_net_set_link": (_I, [VM_P, _U32, _I]),
    "microvm_net_stats": (_I, [VM_P, _U32, ctypes.POINTER(NetCounters)]),
    "microvm_net_mac": (_I, [VM_P, _U32, ctypes.POINTER(ctypes.c_uint8 * 6)]),
    "microvm_describe": (_I, [VM_P, ctypes.c_char_p, ctypes.c_size_t]),
    "microvm_runtime_configure": (_I, [ctypes.POINTER(RuntimeConfig)]),
    "microvm_runtime_stats": (_I, [ctypes.POINTER(RuntimeCounters)]),
    "microvm_teardown_wait": (_I, [_I]),
    "microvm_set_vsock": (_I, [VM_P, ctypes.POINTER(VsockConfig)]),
    "microvm_vsock_connect": (_I, [VM_P, _U32, _I]),
    "microvm_set_acpi": (_I, [VM_P, _I]),
    "microvm_set_kick_signal": (_I, [VM_P, _I]),
    "microvm_start": (_I, [VM_P]),
    "microvm_pause": (_I, [VM_P]),
    "microvm_resume": (_I, [VM_P]),
    "microvm_stop": (_I, [VM_P]),
    "microvm_wait": (_I, [VM_P, _I, ctypes.POINTER(Exit)]),
    "microvm_event_fd": (_I, [VM_P]),
    "microvm_set_event_loop": (_I, [VM_P, _U32]),
    "microvm_loop_fd": (_I, [VM_P]),
    "microvm_loop_run": (_I, [VM_P, _I]),
    "microvm_state": (_I, [VM_P]),
    "microvm_snapshot": (_I, [VM_P, _S, _U32]),
    "microvm_restore": (_I, [ctypes.POINTER(VM_P), _S, ctypes.POINTER(RestoreConfig),
                             ctypes.c_char_p, _SZ]),
    "microvm_destroy": (None, [VM_P]),
    "microvm_reset": (_I, [VM_P, _U32]),
    "microvm_set_seccomp": (_I, [VM_P, _U32]),
    "microvm_seccomp_allow": (_I, [VM_P, ctypes.c_int32]),
    "microvm_fork": (_I, [VM_P, ctypes.POINTER(VM_P), ctypes.POINTER(ForkConfig)]),
    # <microvm_agent.h>
    "microvm_agent_connect": (_I, [VM_P, _I, ctypes.POINTER(AGENT_P)]),
    "microvm_agent_open_fd": (_I, [_I, _I, ctypes.POINTER(AGENT_P)]),
    "microvm_agent_close": (None, [AGENT_P]),
    "microvm_agent_last_error": (_S, [AGENT_P]),
    "microvm_agent_protocol": (_U32, [AGENT_P]),
    "microvm_agent_version": (_S, [AGENT_P]),
    "microvm_agent_set_io_timeout": (_I, [AGENT_P, _I]),
    "microvm_agent_ping": (_I, [AGENT_P]),
    "microvm_agent_exec": (_I, [AGENT_P, ctypes.POINTER(ExecConfig),
                                ctypes.POINTER(ExecResult)]),
    "microvm_agent_kill": (_I, [AGENT_P, _I]),
    "microvm_exec_result_free": (None, [ctypes.POINTER(ExecResult)]),
    "microvm_agent_run": (_I, [VM_P, ctypes.POINTER(_S), _I, ctypes.POINTER(ExecResult)]),
    "microvm_agent_put_file": (_I, [AGENT_P, _S, _VP, _SZ, _U32, _U32]),
    "microvm_agent_get_file": (_I, [AGENT_P, _S, _SZ, ctypes.POINTER(_VP),
                                    ctypes.POINTER(_SZ)]),
    "microvm_agent_reseed": (_I, [AGENT_P, _VP, _SZ]),
}


class LibraryError(ImportError):
    """libmicrovm could not be loaded, or it is a version these bindings
    cannot use. The message says what was tried and what is wrong."""


class LibraryNotFoundError(LibraryError):
    """No libmicrovm anywhere in the search order."""


def parse_version(text):
    """"0.3.0" -> (0, 3, 0); ValueError for anything else."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError("not a version: %r" % text)
    return tuple(int(p) for p in parts)


class Library:
    """A loaded, version-checked libmicrovm with every prototype declared.

    Attributes are the C functions (``lib.microvm_start(vm)``); ``path`` is
    where it was loaded from, ``version`` its version string and
    ``version_info`` the (major, minor, patch) tuple.
    """

    def __init__(self, path):
        self.path = str(path)
        try:
            cdll = ctypes.CDLL(self.path)
        except OSError as e:
            raise LibraryError("cannot load libmicrovm from %s: %s" % (self.path, e)) from None
        try:
            getver = cdll.microvm_version
        except AttributeError:
            raise LibraryError("%s is not libmicrovm (it has no microvm_version)"
                               % self.path) from None
        getver.restype = ctypes.c_char_p
        getver.argtypes = []
        self.version = getver().decode("ascii", "replace")
        try:
            self.version_info = parse_version(self.version)
        except ValueError:
            raise LibraryError("%s reports an unreadable version %r" % (self.path, self.version)) from None
        major, minor = self.version_info[:2]
        if major != LIB_MAJOR or minor < LIB_MIN_MINOR:
            raise LibraryError(
                "%s is libmicrovm %s, but the microvm Python package %s needs libmicrovm "
                "%d.x with x >= %d (ABI %s): install a matching libmicrovm, or point "
                "MICROVM_LIBRARY at one" % (self.path, self.version, __version__, LIB_MAJOR,
                                            LIB_MIN_MINOR, SONAME))
        missing = []
        for name, (restype, argtypes) in PROTOTYPES.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        if missing:
            raise LibraryError("%s (libmicrovm %s) lacks %s" % (self.path, self.version,
                                                                 ", ".join(missing)))
        self._cdll = cdll

    def has(self, minor):
        """Whether this library is at least 0.@minor (e.g. LIB_EXEC_USER_MINOR)."""
        return self.version_info[:2] >= (LIB_MAJOR, minor)

    def strerror(self, err):
        return self.microvm_strerror(err).decode("utf-8", "replace")

    def __repr__(self):
        return "<libmicrovm %s at %s>" % (self.version, self.path)


def _source_tree_library():
    """<checkout>/build/libmicrovm.so.<major> when this package sits in a
    libmicrovm checkout (bindings/python/microvm), else None."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "include" / "microvm.h").is_file():
        return None
    cand = root / "build" / SONAME
    return cand if cand.exists() else None


def _system_library():
    """The system's libmicrovm.so.<major>: what the dynamic linker finds
    (ld.so.cache, LD_LIBRARY_PATH), else ctypes.util.find_library."""
    try:
        ctypes.CDLL(SONAME)
        return SONAME
    except OSError:
        pass
    name = ctypes.util.find_library("microvm")
    if name is None:
        return None
    if name != SONAME and not name.startswith(SONAME + "."):
        raise LibraryError("the installed libmicrovm is %s, but the microvm Python package %s "
                           "needs %s" % (name, __version__, SONAME))
    return name


def find(path=None):
    """Load libmicrovm from the first place of the search order that has
    one (see the module doc). Raises LibraryError if none does or if the one
    found is unusable (a broken MICROVM_LIBRARY is an error, not skipped)."""
    if path is not None:
        return Library(os.fsdecode(path))
    env = os.environ.get("MICROVM_LIBRARY")
    if env:
        try:
            return Library(env)
        except LibraryError as e:
            raise LibraryError("MICROVM_LIBRARY: %s" % e) from None
    tree = _source_tree_library()
    if tree is not None:
        return Library(tree)
    name = _system_library()
    if name is not None:
        return Library(name)
    raise LibraryNotFoundError(
        "libmicrovm (%s) not found: MICROVM_LIBRARY is not set, there is no build tree "
        "(build/%s next to these bindings) and the dynamic linker knows no %s. Build or "
        "install libmicrovm, set MICROVM_LIBRARY=/path/to/%s, or call "
        "microvm.load_library(path)" % (SONAME, SONAME, SONAME, SONAME))


_lock = threading.Lock()
_current = None


def load(path=None):
    """Load libmicrovm (from @path if given, else the search order) and make
    it the one new VMs use. Returns the Library. VMs created earlier keep
    the library they were created with."""
    global _current
    lib = find(path)
    with _lock:
        _current = lib
    return lib


def get():
    """The current Library, searched for again if none is loaded yet;
    raises LibraryError (LibraryNotFoundError) when that fails."""
    with _lock:
        if _current is not None:
            return _current
    return load()


def load_at_import():
    """Called by microvm/__init__: a library that is found but wrong (bad
    version, broken MICROVM_LIBRARY) fails the import with its reason; no
    library at all lets the import succeed so that load_library(path) can
    still be called, and every use says what was searched."""
    try:
        load()
    except LibraryNotFoundError:
        pass
