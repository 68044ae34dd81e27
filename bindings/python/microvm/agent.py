"""microvm.Agent: a connection to the guest agent, one to one with
<microvm_agent.h> (the host side of guest/agent/PROTOCOL.md)."""

import ctypes
import dataclasses
import errno
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Union

from . import _convert as cv
from . import _lib as L
from .errors import NotSupportedError, make_error

_libc = ctypes.CDLL(None, use_errno=True)
_free = _libc.free
_free.argtypes = [ctypes.c_void_p]
_free.restype = None


@dataclass(frozen=True)
class CommandResult:
    """What a command in the guest did (struct microvm_exec_result)."""
    exit_code: int                 # 0..255, or -1 if killed by a signal
    signal: int                    # the signal that killed it, else 0
    stdout: Union[bytes, str]
    stderr: Union[bytes, str]
    flags: int = 0                 # MICROVM_EXEC_* result flags
    # Resource use as the guest kernel counted it (wait4, descendants it
    # waited for included); 0 when unknown (libmicrovm < 0.4, agent < 1.1,
    # a command that did not run to its end).
    max_rss_kib: int = 0           # peak resident set of its largest process, KiB
    user_us: int = 0               # CPU time in user mode, microseconds
    sys_us: int = 0                # CPU time in kernel mode, microseconds

    timed_out = property(lambda self: bool(self.flags & L.EXEC_TIMED_OUT))
    cancelled = property(lambda self: bool(self.flags & L.EXEC_CANCELLED))
    stdout_truncated = property(lambda self: bool(self.flags & L.EXEC_OUT_TRUNCATED))
    stderr_truncated = property(lambda self: bool(self.flags & L.EXEC_ERR_TRUNCATED))
    core_dumped = property(lambda self: bool(self.flags & L.EXEC_CORE_DUMPED))

    @property
    def ok(self):
        """Exited with code 0 (not killed, not timed out)."""
        return self.exit_code == 0 and self.signal == 0 and not self.timed_out

    def decoded(self, encoding="utf-8", errors="replace"):
        """This result with stdout and stderr as str."""
        dec = (lambda b: b.decode(encoding, errors) if isinstance(b, bytes) else b)
        return dataclasses.replace(self, stdout=dec(self.stdout), stderr=dec(self.stderr))


def argv_bytes(argv):
    """A command as a list of byte strings (a str is refused: say which
    program to run, or use Sandbox.commands.run for a shell line)."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a single string "
                        "(Sandbox.commands.run takes shell command lines)")
    try:
        items = list(argv)
    except TypeError:
        raise TypeError("argv must be a list of str or bytes, not %s"
                        % type(argv).__name__) from None
    if not items:
        raise ValueError("argv must not be empty")
    if len(items) >= L.EXEC_MAX_ARGS:
        raise ValueError("argv has %d entries, at most %d allowed"
                         % (len(items), L.EXEC_MAX_ARGS - 1))
    out = [cv.cbytes("argv[%d]" % i, a) for i, a in enumerate(items)]
    if not out[0]:
        raise ValueError("argv[0] must not be empty")
    return out


def env_bytes(env):
    """A dict {name: value} or a list of "NAME=value" as byte strings."""
    if isinstance(env, dict):
        out = []
        for k, v in env.items():
            kb = cv.cbytes("environment name", k, allow_empty=False)
            if b"=" in kb:
                raise ValueError("environment name %r contains '='" % (k,))
            out.append(kb + b"=" + cv.cbytes("environment value of %s" % k, v))
        return out
    if isinstance(env, (str, bytes)):
        raise TypeError("env must be a dict or a list of 'NAME=value' strings")
    out = []
    for e in env:
        b = cv.cbytes("environment entry", e)
        if b"=" not in b[1:]:
            raise ValueError("environment entry %r is not NAME=value" % (e,))
        out.append(b)
    return out


def guest_path(path):
    p = cv.path("guest path", path)
    if not p.startswith(b"/"):
        raise ValueError("guest path must be absolute, got %r" % (os.fsdecode(p),))
    return p


def user_bytes(lib, user):
    """@user (str/bytes) for microvm_exec_config.user, refused before any
    call if @lib (a Library) is older than 0.4: a 0.3 library would take
    the field for unknown non-zero bytes (EINVAL)."""
    u = cv.cbytes("user", user, max_len=L.EXEC_USER_MAX, allow_empty=False)
    if not lib.has(L.LIB_EXEC_USER_MINOR):
        # os.strerror: microvm_strerror's text for this errno speaks of KVM
        raise NotSupportedError(
            errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP),
            "user= needs libmicrovm 0.%d or later, but %s is libmicrovm %s"
            % (L.LIB_EXEC_USER_MINOR, lib.path, lib.version), "microvm_agent_exec")
    return u


def _stdin_into(cfg, stdin, keep):
    if isinstance(stdin, (str, bytes, bytearray, memoryview)):
        data = stdin.encode("utf-8") if isinstance(stdin, str) else bytes(stdin)
        buf = ctypes.create_string_buffer(data, len(data))
        keep.append(buf)
        cfg.stdin_data = ctypes.cast(buf, ctypes.c_void_p)
        cfg.stdin_len = len(data)
    else:
        cfg.stdin_fd = cv.fd("stdin", stdin)


def exec_config(lib, argv, *, env=None, merge_env=False, cwd=None, stdin=None, timeout=None,
                output_limit=None, user=None):
    """A checked ExecConfig and the list of objects it points into (keep
    it alive for the call)."""
    cfg = L.ExecConfig()
    keep = [L.cstr_array(argv_bytes(argv))]
    cfg.argv = keep[0]
    if env is not None:
        keep.append(L.cstr_array(env_bytes(env)))
        cfg.envp = keep[-1]
    if cv.flag("merge_env", merge_env):
        cfg.flags |= L.EXEC_MERGE_ENV
    if cwd is not None:
        cfg.cwd = guest_path(cwd)
    if user is not None:
        cfg.user = user_bytes(lib, user)
    if stdin is not None:
        _stdin_into(cfg, stdin, keep)
    ms = cv.timeout_ms(timeout)
    cfg.timeout_ms = 0 if ms < 0 else ms
    if output_limit is not None:
        cfg.output_limit = cv.integer("output_limit", output_limit, 1, 2**63 - 1)
    return cfg, keep


def _output_trampoline(on_output, failure):
    """An OUTPUT_FN calling on_output(stream, data); an exception it raises
    is appended to @failure and cancels the command."""
    if not callable(on_output):
        raise TypeError("on_output must be callable (stream, data)")

    def tramp(opaque, stream, data, length):
        try:
            return 1 if on_output(stream, ctypes.string_at(data, length)) else 0
        except BaseException as e:      # noqa: B902 - re-raised by the caller
            failure.append(e)
            return 1
    return L.OUTPUT_FN(tramp)


def take_result(lib, res):
    """The CommandResult of a filled ExecResult, whose buffers are freed."""
    try:
        out = ctypes.string_at(res.out, res.out_len) if res.out else b""
        err = ctypes.string_at(res.err, res.err_len) if res.err else b""
        return CommandResult(res.exit_code, res.signal, out, err, res.flags,
                             res.max_rss_kib, res.user_us, res.sys_us)
    finally:
        lib.microvm_exec_result_free(ctypes.byref(res))


class Agent:
    """One connection to a guest agent (struct microvm_agent).

    Open it with Agent.connect(vm) (over the VM's vsock, retrying while the
    guest boots) or Agent.open_fd(sock) (a connected stream socket, e.g. to
    `microvm-agent --listen unix:PATH`). One request at a time: calls from
    several threads are serialised, except kill(), which interrupts a
    running exec(). Close it (or use ``with``) to free it; a command still
    running in the guest is then killed by the agent.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("use Agent.connect(vm) or Agent.open_fd(sock)")

    @classmethod
    def _wrap(cls, lib, ptr):
        self = object.__new__(cls)
        self._lib = lib
        self._ptr = ptr
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closing = False
        self._request = threading.Lock()
        return self

    @classmethod
    def connect(cls, vm, timeout=None):
        """Connect to the agent of running VM @vm (which needs a vsock
        device); waits up to @timeout seconds (None = no limit) for it."""
        ms = cv.timeout_ms(timeout)
        ptr = L.AGENT_P()
        vmp = vm._enter()
        try:
            rc = vm._lib.microvm_agent_connect(vmp, ms, ctypes.byref(ptr))
            if rc < 0:
                raise make_error(vm._lib, rc, "microvm_agent_connect",
                                 vm._lib.microvm_last_error(vmp))
        finally:
            vm._leave()
        return cls._wrap(vm._lib, ptr)

    @classmethod
    def open_fd(cls, sock, timeout=None, library=None):
        """Adopt @sock (a socket object, detached here, or an fd number; it
        is closed on failure too) connected to an agent, and wait up to
        @timeout seconds for its HELLO."""
        from .vm import _library
        lib = _library(library)
        ms = cv.timeout_ms(timeout)
        if isinstance(sock, socket.socket):
            fd = sock.detach()
        else:
            fd = cv.fd("sock", sock)
            if fd < 0:
                raise ValueError("sock must be a socket or an fd")
        ptr = L.AGENT_P()
        rc = lib.microvm_agent_open_fd(fd, ms, ctypes.byref(ptr))
        if rc < 0:
            raise make_error(lib, rc, "microvm_agent_open_fd")
        return cls._wrap(lib, ptr)

    # ------------------------------------------------------------ plumbing

    def _enter(self):
        with self._cond:
            if self._ptr is None or self._closing:
                raise ValueError("the agent connection is closed")
            self._inflight += 1
            return self._ptr

    def _leave(self):
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def _call(self, name, *args):
        fn = getattr(self._lib, name)
        with self._request:
            ptr = self._enter()
            try:
                rc = fn(ptr, *args)
                if rc < 0:
                    raise make_error(self._lib, rc, name, self._lib.microvm_agent_last_error(ptr))
                return rc
            finally:
                self._leave()

    def close(self):
        """Close the connection; an exec() running in another thread is
        killed and returns first."""
        with self._cond:
            if self._ptr is None or self._closing:
                while self._ptr is not None:
                    self._cond.wait()
                return
            self._closing = True
            ptr = self._ptr
        try:
            with self._cond:
                while self._inflight:
                    # An exec() may not have started its command yet when
                    # the first kill comes (ESRCH): repeat until it returns.
                    self._lib.microvm_agent_kill(ptr, 9)
                    self._cond.wait(0.05)
        finally:
            self._lib.microvm_agent_close(ptr)
            with self._cond:
                self._ptr = None
                self._cond.notify_all()

    @property
    def closed(self):
        return self._ptr is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_ptr", None) is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self):
        if self._ptr is None:
            return "<microvm.Agent closed>"
        return "<microvm.Agent %s protocol %#x>" % (self.version, self.protocol)

    # ------------------------------------------------------------- queries

    @property
    def last_error(self):
        ptr = self._enter()
        try:
            return self._lib.microvm_agent_last_error(ptr).decode("utf-8", "replace")
        finally:
            self._leave()

    @property
    def protocol(self):
        """The agent's protocol version, major << 16 | minor."""
        ptr = self._enter()
        try:
            return self._lib.microvm_agent_protocol(ptr)
        finally:
            self._leave()

    @property
    def version(self):
        """The agent's version string (from its HELLO)."""
        ptr = self._enter()
        try:
            v = self._lib.microvm_agent_version(ptr)
            return v.decode("utf-8", "replace") if v is not None else ""
        finally:
            self._leave()

    def set_io_timeout(self, timeout):
        """Longest wait without progress of non-exec requests (seconds,
        None = no limit)."""
        self._call("microvm_agent_set_io_timeout", cv.timeout_ms(timeout))

    def ping(self):
        self._call("microvm_agent_ping")

    # ---------------------------------------------------------------- exec

    def exec(self, argv, *, env=None, merge_env=False, cwd=None, stdin=None, timeout=None,
             on_output=None, output_limit=None, user=None) -> CommandResult:
        """Run @argv in the guest and wait for it. @env: dict or list of
        "NAME=value" replacing the default environment (added to it with
        merge_env=True); @cwd; @stdin: bytes/str, a file object or an fd
        (read to its end; borrowed); @timeout seconds (None = no limit: the
        command is killed after it and the result says timed_out);
        @on_output(stream, data) gets the output instead of the result
        (stream 1 = stdout, 2 = stderr; a true return value kills the
        command); @output_limit caps collected output per stream (bytes);
        @user runs it as "name", "uid", "name:group" or "uid:gid" (resolved
        in the guest; None = root).
        Returns a CommandResult with bytes output and the command's
        resource use, also for commands that failed; raises Error if the
        command could not run (NotFoundError for a missing program or cwd
        or an unknown user; NotSupportedError for user= with libmicrovm
        older than 0.4 or an agent older than protocol 1.1)."""
        cfg, keep = exec_config(self._lib, argv, env=env, merge_env=merge_env, cwd=cwd,
                                stdin=stdin, timeout=timeout, output_limit=output_limit,
                                user=user)
        failure = []
        if on_output is not None:
            cfg.on_output = _output_trampoline(on_output, failure)
            keep.append(cfg.on_output)
        res = L.ExecResult()
        self._call("microvm_agent_exec", ctypes.byref(cfg), ctypes.byref(res))
        result = take_result(self._lib, res)
        if failure:
            raise failure[0]
        return result

    def kill(self, signo=9):
        """Send @signo to the process group of the command exec() runs on
        this connection (from any thread). NoProcessError (a
        ProcessLookupError) if none runs."""
        signo = cv.integer("signal", signo, 1, 64)
        ptr = self._enter()
        try:
            rc = self._lib.microvm_agent_kill(ptr, signo)
            if rc < 0:
                raise make_error(self._lib, rc, "microvm_agent_kill",
                                 self._lib.microvm_agent_last_error(ptr))
        finally:
            self._leave()

    # --------------------------------------------------------------- files

    def put_file(self, path, data, mode=0o644):
        """Write @data (bytes or str) to the guest file @path (absolute),
        created or truncated, with permission bits @mode."""
        p = guest_path(path)
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes):
            raise TypeError("data must be bytes or str, not %s" % type(data).__name__)
        mode = cv.integer("mode", mode, 0, 0o7777)
        self._call("microvm_agent_put_file", p, data, len(data), mode, 0)

    def get_file(self, path, max_size=None) -> bytes:
        """The contents of the guest file @path (absolute). @max_size caps
        it (FileTooBigError beyond; None = 256 MiB)."""
        p = guest_path(path)
        cap = 0 if max_size is None else cv.integer("max_size", max_size, 1, 2**63 - 1)
        data = ctypes.c_void_p()
        n = ctypes.c_size_t()
        self._call("microvm_agent_get_file", p, cap, ctypes.byref(data), ctypes.byref(n))
        try:
            return ctypes.string_at(data, n.value) if data else b""
        finally:
            _free(data)

    def reseed(self, seed=None):
        """Mix @seed (1..4096 bytes; default 64 from os.urandom) into the
        guest's entropy pool: do it after restoring a snapshot."""
        if seed is None:
            seed = os.urandom(64)
        if not isinstance(seed, (bytes, bytearray, memoryview)):
            raise TypeError("seed must be bytes, not %s" % type(seed).__name__)
        seed = bytes(seed)
        if not 1 <= len(seed) <= L.AGENT_RESEED_MAX:
            raise ValueError("seed must be 1..%d bytes, got %d" % (L.AGENT_RESEED_MAX, len(seed)))
        self._call("microvm_agent_reseed", seed, len(seed))


def run(vm, argv, timeout=None, user=None) -> CommandResult:
    """microvm_agent_run(): connect to @vm's agent, run @argv with the
    default environment, collect the output, close. @timeout (seconds)
    bounds the whole call; a command still running then is killed and the
    result says timed_out. @user as for Agent.exec (microvm_agent_run has
    none: then it is Agent.connect and exec within the same timeout)."""
    if user is not None:
        return _run_as(vm, argv, timeout, user)
    arr = L.cstr_array(argv_bytes(argv))
    ms = cv.timeout_ms(timeout)
    res = L.ExecResult()
    vmp = vm._enter()
    try:
        rc = vm._lib.microvm_agent_run(vmp, arr, 0 if ms < 0 else ms, ctypes.byref(res))
        if rc < 0:
            raise make_error(vm._lib, rc, "microvm_agent_run", vm._lib.microvm_last_error(vmp))
    finally:
        vm._leave()
    return take_result(vm._lib, res)


def _run_as(vm, argv, timeout, user):
    argv_bytes(argv)
    user_bytes(vm._lib, user)
    ms = cv.timeout_ms(timeout)
    end = None if ms < 0 else time.monotonic() + ms / 1000.0
    with Agent.connect(vm, timeout=None if end is None else ms / 1000.0) as agent:
        left = None if end is None else max(0.001, end - time.monotonic())
        return agent.exec(argv, timeout=left, user=user)
