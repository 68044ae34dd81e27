"""Python bindings for libmicrovm, an embeddable KVM microVM library.

Pure Python over ctypes. ``microvm.VM`` is the C API one to one
(<microvm.h>), ``microvm.Agent`` the guest agent client
(<microvm_agent.h>) and ``microvm.Sandbox`` a guest driven through it;
errors are ``microvm.Error`` (an OSError) and its subclasses. See README.md in bindings/python for examples.
"""

from . import _lib
from ._lib import Library, LibraryError, LibraryNotFoundError
from ._version import __version__
from .errors import (AccessDeniedError, BrokenPipe, BusyError, ChecksumError,
                     CommandExitError, ConnectionRefused, ConnectionReset, Error,
                     ExecFormatError, FileTooBigError, InvalidError, NoDeviceError,
                     NoProcessError, NotConnectedError, NotFoundError, NotSupportedError,
                     OutOfMemoryError,
                     ProtocolError, TimedOutError, TooManyFilesError, TryAgainError)
from .vm import VM, ConsoleType, ExitReason, ExitResult, LogLevel, NetStats, State
from .agent import Agent, CommandResult
from .sandbox import CommandHandle, Sandbox
from .guest import GuestNotFoundError
from .aio import AsyncCommandHandle, AsyncSandbox
from .runtime import RuntimeStats
from .runtime import configure as runtime_configure
from .runtime import stats as runtime_stats
from .runtime import teardown_wait

AGENT_PORT = _lib.AGENT_PORT


def load_library(path=None):
    """Load libmicrovm from @path (or search again: MICROVM_LIBRARY, the
    build tree, the system) and use it for VMs created from now on.
    Returns the Library; raises LibraryError with the reason."""
    return _lib.load(path)


def library():
    """The Library in use (loaded at import); LibraryNotFoundError if none."""
    return _lib.get()


def library_version():
    """The loaded libmicrovm's version string, e.g. "0.3.0"."""
    return _lib.get().version


_lib.load_at_import()

__all__ = [
    "AGENT_PORT", "AccessDeniedError", "BrokenPipe", "BusyError", "ChecksumError",
    "CommandExitError", "ConnectionRefused", "ConnectionReset", "ConsoleType", "Error",
    "ExecFormatError", "ExitReason", "ExitResult", "FileTooBigError", "InvalidError", "Library",
    "LibraryError", "LibraryNotFoundError", "LogLevel", "NoDeviceError", "NoProcessError",
    "NetStats", "NotConnectedError", "Agent", "AsyncCommandHandle", "AsyncSandbox", "CommandHandle",
    "CommandResult", "GuestNotFoundError",
    "Sandbox",
    "NotFoundError", "NotSupportedError", "OutOfMemoryError", "ProtocolError", "State",
    "TimedOutError",
    "TooManyFilesError", "TryAgainError", "VM", "__version__", "library", "library_version",
    "load_library",
]
