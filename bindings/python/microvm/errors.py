"""Exceptions: a negative errno from libmicrovm becomes a microvm.Error.

``Error`` is an ``OSError`` carrying the positive ``errno``, ``strerror``
(microvm_strerror's text), ``message`` (the library's detail of the failed
call: microvm_last_error, microvm_agent_last_error or restore's error
buffer) and ``function`` (the C function that failed). Subclasses for the
errno values that have a natural Python counterpart also derive from it,
so ``except FileNotFoundError`` or ``except TimeoutError`` catch them.

Wrong Python types or values never reach C: they raise TypeError or
ValueError instead.
"""

import errno as _errno

from ._lib import LibraryError, LibraryNotFoundError


class Error(OSError):
    """A libmicrovm call failed with a negative errno."""

    def __init__(self, err, strerror="", message="", function=""):
        super().__init__(err, strerror)
        self.message = message
        self.function = function

    def __str__(self):
        name = _errno.errorcode.get(self.errno, str(self.errno))
        text = "%s: %s (%s)" % (self.function or "microvm", self.strerror, name)
        if self.message:
            text += ": " + self.message
        return text

    def __reduce__(self):
        return (type(self), (self.errno, self.strerror, self.message, self.function))


class NotFoundError(Error, FileNotFoundError):
    """ENOENT: a file, snapshot, /dev/kvm or a command in the guest is missing."""


class AccessDeniedError(Error, PermissionError):
    """EACCES / EPERM."""


class TimedOutError(Error, TimeoutError):
    """ETIMEDOUT: a wait, connection or command ran out of time."""


class BusyError(Error):
    """EBUSY: the call needs a configured VM, but it is running or paused."""


class InvalidError(Error):
    """EINVAL: a value the library refused, or a call that makes no sense in
    the VM's current state (e.g. resume on a VM that is not paused)."""


class ConnectionRefused(Error, ConnectionRefusedError):
    """ECONNREFUSED: nothing listens on that vsock port in the guest."""


class ConnectionReset(Error, ConnectionResetError):
    """ECONNRESET: the guest reset the connection, or the VM stopped."""


class BrokenPipe(Error, BrokenPipeError):
    """EPIPE: the peer (the guest agent) closed the connection."""


class NotConnectedError(Error):
    """ENOTCONN: an agent connection is unusable after an earlier failure."""


class TryAgainError(Error, BlockingIOError):
    """EAGAIN: retry later (e.g. too many vsock streams, interrupted start)."""


class NoDeviceError(Error):
    """ENODEV: the VM has no such device (e.g. no vsock for the agent)."""


class ExecFormatError(Error):
    """ENOEXEC: not a supported kernel image (or, from the agent, a file the
    guest cannot execute)."""


class ChecksumError(Error):
    """EBADMSG: a snapshot's checksum does not match its contents."""


class OutOfMemoryError(Error):
    """ENOMEM."""


class TooManyFilesError(Error):
    """EMFILE / ENFILE: out of file descriptors (see RLIMIT_NOFILE)."""


class ProtocolError(Error):
    """EPROTO / EPROTONOSUPPORT: the guest agent broke or does not speak the
    protocol."""


class NoProcessError(Error, ProcessLookupError):
    """ESRCH: no command is running on that agent connection."""


class FileTooBigError(Error):
    """EFBIG: a guest file exceeds the size cap of the read."""


class NotSupportedError(Error):
    """EOPNOTSUPP: the library or the guest agent is too old for the
    request (e.g. exec as another user needs libmicrovm 0.4 and an agent
    speaking protocol 1.1)."""


_BY_ERRNO = {
    _errno.ENOENT: NotFoundError,
    _errno.EACCES: AccessDeniedError,
    _errno.EPERM: AccessDeniedError,
    _errno.ETIMEDOUT: TimedOutError,
    _errno.EBUSY: BusyError,
    _errno.EINVAL: InvalidError,
    _errno.ECONNREFUSED: ConnectionRefused,
    _errno.ECONNRESET: ConnectionReset,
    _errno.EPIPE: BrokenPipe,
    _errno.ENOTCONN: NotConnectedError,
    _errno.EAGAIN: TryAgainError,
    _errno.ENODEV: NoDeviceError,
    _errno.ENOEXEC: ExecFormatError,
    _errno.EBADMSG: ChecksumError,
    _errno.ENOMEM: OutOfMemoryError,
    _errno.EMFILE: TooManyFilesError,
    _errno.ENFILE: TooManyFilesError,
    _errno.EPROTO: ProtocolError,
    _errno.EPROTONOSUPPORT: ProtocolError,
    _errno.EFBIG: FileTooBigError,
    _errno.ESRCH: NoProcessError,
    _errno.EOPNOTSUPP: NotSupportedError,
}


def error_class(err):
    """The Error subclass for a positive errno value."""
    return _BY_ERRNO.get(err, Error)


def make_error(lib, rc, function, message=""):
    """The exception for a negative return value @rc of C function
    @function, with the library's detail @message (bytes or str)."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    err = -rc
    return error_class(err)(err, lib.strerror(rc), message, function)


class CommandExitError(Exception):
    """A command run in a sandbox exited with a non-zero code or was killed
    (raised unless check=False). ``result`` is its CommandResult; the usual
    fields are also attributes: exit_code, signal, stdout, stderr."""

    def __init__(self, result, argv=None):
        self.result = result
        self.argv = argv
        super().__init__(result)

    exit_code = property(lambda self: self.result.exit_code)
    signal = property(lambda self: self.result.signal)
    stdout = property(lambda self: self.result.stdout)
    stderr = property(lambda self: self.result.stderr)

    def __str__(self):
        r = self.result
        what = "killed by signal %d" % r.signal if r.signal else "exited with code %d" % r.exit_code
        if r.timed_out:
            what = "timed out and was killed"
        cmd = " ".join(self.argv) if self.argv else "command"
        text = "%s %s" % (cmd, what)
        tail = r.stderr[-500:] if isinstance(r.stderr, (bytes, str)) else ""
        if isinstance(tail, bytes):
            tail = tail.decode("utf-8", "replace")
        if tail.strip():
            text += ": " + tail.strip()
        return text


__all__ = [
    "AccessDeniedError", "BrokenPipe", "BusyError", "ChecksumError", "CommandExitError",
    "ConnectionRefused", "ConnectionReset", "Error", "ExecFormatError", "FileTooBigError",
    "InvalidError", "LibraryError", "LibraryNotFoundError", "NoDeviceError", "NoProcessError",
    "NotConnectedError", "NotFoundError", "NotSupportedError", "OutOfMemoryError",
    "ProtocolError", "TimedOutError",
    "TooManyFilesError", "TryAgainError", "error_class", "make_error",
]
