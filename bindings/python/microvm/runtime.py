"""The process-wide runtime of libmicrovm ("Process-wide runtime" in
<microvm.h>): the event threads that serve all VMs' devices and the
teardown threads that release destroyed VMs' kernel state, and the cache of
boot images (kernel and initrd files mapped copy-on-write into guest RAM)."""

import collections
import ctypes
import errno

from . import _lib as L
from . import _convert as cv
from .errors import make_error

RuntimeStats = collections.namedtuple(
    "RuntimeStats", "event_threads teardown_threads teardown_pending "
    "image_cache_files image_cache_kib")


def configure(event_threads=None, teardown_threads=None, teardown_backlog=None,
              image_cache_mib=None):
    """Set the runtime's limits (None leaves one as it is): event threads
    per seccomp setting (1..1024; default: online CPUs, at most 8),
    teardown threads (1..64, default 16), VMs waiting for teardown before
    destroy does its own (1..1048576, default 256), the boot-image cache's
    size in MiB (0: off, cached files dropped; 1..1048576; default 256).
    Applies to what starts afterwards."""
    lib = L.get()
    c = L.RuntimeConfig()
    c.event_threads = cv.integer("event_threads", event_threads or 0, 0, 1024)
    c.teardown_threads = cv.integer("teardown_threads", teardown_threads or 0, 0, 64)
    c.teardown_backlog = cv.integer("teardown_backlog", teardown_backlog or 0, 0, 1 << 20)
    if image_cache_mib is not None:
        mib = cv.integer("image_cache_mib", image_cache_mib, 0, 1 << 20)
        c.image_cache_mib = mib if mib else L.IMAGE_CACHE_OFF
    rc = lib.microvm_runtime_configure(ctypes.byref(c))
    if rc < 0:
        raise make_error(lib, rc, "microvm_runtime_configure")


def stats():
    """RuntimeStats: event and teardown threads running now, destroyed VMs
    whose teardown is not done yet, and the boot-image cache's files (one fd
    each) and KiB."""
    lib = L.get()
    c = L.RuntimeCounters()
    rc = lib.microvm_runtime_stats(ctypes.byref(c))
    if rc < 0:
        raise make_error(lib, rc, "microvm_runtime_stats")
    return RuntimeStats(c.event_threads, c.teardown_threads, c.teardown_pending,
                        c.image_cache_files, c.image_cache_kib)


def teardown_wait(timeout=None):
    """Wait until every closed VM's kernel teardown is done (at most
    @timeout seconds; None: no limit). True if done, False on timeout."""
    lib = L.get()
    ms = -1 if timeout is None else max(0, int(timeout * 1000))
    rc = lib.microvm_teardown_wait(ms)
    if rc == -errno.ETIMEDOUT:
        return False
    if rc < 0:
        raise make_error(lib, rc, "microvm_teardown_wait")
    return True
