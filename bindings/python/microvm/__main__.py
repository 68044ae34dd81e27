"""python3 -m microvm: the package's command line.

    python3 -m microvm --version
    python3 -m microvm run [--cpus N] [--mem MIB] [--kernel K] [--initrd I]
                           [--timeout S] [--template DIR] [--env NAME=VALUE]
                           [--cwd DIR] [--user USER] [-i] [-v] -- CMD [ARGS...]

``run`` runs one command in a throw-away sandbox, like examples/sandbox.c's
microvm-sandbox: the command's stdout and stderr stream to ours as they
come; the exit status is the command's, 128+N if signal N killed it, 124 if
--timeout ran out, 125 if the sandbox itself failed (no guest, boot or agent
failure, a program that cannot be started, bad arguments).
"""

import argparse
import os
import sys

EXIT_TIMEOUT = 124
EXIT_SANDBOX = 125


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _count(what, low):
    def conv(s):
        try:
            v = int(s, 10)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be an integer, got %r" % (what, s))
        if v < low:
            raise argparse.ArgumentTypeError("%s must be >= %d, got %d" % (what, low, v))
        return v
    return conv


def _seconds(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("timeout must be a number of seconds, got %r" % s)
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError("timeout must be > 0 seconds, got %r" % s)
    return v


def _env(s):
    name, eq, _ = s.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError("--env takes NAME=VALUE, got %r" % s)
    return s


def run_parser():
    p = _Parser(prog="python3 -m microvm run",
                description="Run one command in a throw-away microVM sandbox and pass its "
                            "output and exit status through (128+N if killed by signal N, "
                            "124 on --timeout, 125 if the sandbox failed).")
    p.add_argument("--cpus", type=_count("cpus", 1), default=1, metavar="N",
                   help="vCPUs (default 1)")
    p.add_argument("--mem", type=_count("mem", 2), default=256, metavar="MIB",
                   help="guest RAM in MiB (default 256)")
    p.add_argument("--kernel", metavar="K",
                   help="guest kernel (default: $MICROVM_KERNEL or the default guest)")
    p.add_argument("--initrd", metavar="I",
                   help="agent initramfs (default: $MICROVM_INITRD or the default guest)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="kill the command after S seconds (exit 124)")
    p.add_argument("--template", metavar="DIR",
                   help="start from the snapshot in DIR (made there on first use; "
                        "--cpus/--mem/--kernel/--initrd then only apply to that first boot)")
    p.add_argument("--env", type=_env, action="append", default=[], metavar="NAME=VALUE",
                   help="add to the command's environment (repeatable)")
    p.add_argument("--cwd", metavar="DIR", help="working directory in the guest")
    p.add_argument("--user", metavar="USER",
                   help="run as USER: name, uid, name:group or uid:gid in the guest "
                        "(needs libmicrovm 0.4)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="pass our stdin to the command")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the guest console on stderr")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return p


def parse_run_args(argv):
    """The options of ``run`` (argparse.Namespace); raises _UsageError."""
    args = run_parser().parse_args(argv)
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise _UsageError("no command given: python3 -m microvm run [options] -- CMD [ARGS...]")
    args.command = cmd
    return args


def _fail(what, detail):
    print("microvm: %s: %s" % (what, detail), file=sys.stderr)
    return EXIT_SANDBOX


def _write(stream):
    def out(data):
        f = getattr(stream, "buffer", stream)
        f.write(data)
        f.flush()
    return out


def _sandbox(args, microvm, console):
    """Boot (or restore --template) the sandbox; a --template DIR without a
    snapshot yet gets one of the ready sandbox."""
    common = dict(console_out=console)
    tmpl = args.template
    if tmpl is not None and os.path.exists(os.path.join(tmpl, "state.dtb")):
        return microvm.Sandbox.create(template=tmpl, **common)
    sbx = microvm.Sandbox.create(cpus=args.cpus, memory_mib=args.mem, kernel=args.kernel,
                                 initrd=args.initrd, **common)
    if tmpl is not None:
        try:
            sbx._pool.drop_idle()            # agent connections are not part of a snapshot
            sbx.snapshot(tmpl)
        except Exception as e:
            print("microvm: warning: no snapshot saved in %s: %s" % (tmpl, e), file=sys.stderr)
    return sbx


def run(argv, create=None):
    """``python3 -m microvm run ARGS``; returns the exit status. @create(args)
    makes the sandbox (tests use a host-side agent)."""
    try:
        args = parse_run_args(argv)
    except _UsageError as e:
        run_parser().print_usage(sys.stderr)
        return _fail("run", e)
    try:
        import microvm
    except ImportError as e:
        return _fail("library", e)
    console = None
    if create is None:
        if args.verbose:
            console = os.dup(sys.stderr.fileno())
        create = lambda a: _sandbox(a, microvm, console)   # noqa: E731
    try:
        try:
            sbx = create(args)
        except microvm.GuestNotFoundError as e:
            return _fail("guest", e)
        except (OSError, ValueError, TypeError) as e:
            return _fail("sandbox", e)
        with sbx:
            env = dict(e.split("=", 1) for e in args.env) or None
            try:
                r = sbx.commands.run(args.command, timeout=args.timeout, env=env, cwd=args.cwd,
                                     user=args.user,
                                     stdin=sys.stdin.fileno() if args.interactive else None,
                                     check=False, text=False,
                                     on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr))
            except (OSError, ValueError, TypeError) as e:
                return _fail(args.command[0], e)
    finally:
        if console is not None:
            os.close(console)
    if r.timed_out:
        return EXIT_TIMEOUT
    if r.signal:
        return 128 + r.signal
    return r.exit_code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "run":
        try:
            return run(argv[1:])
        except SystemExit as e:              # --help
            return e.code
    parser = argparse.ArgumentParser(prog="python3 -m microvm",
                                     description="Python bindings for libmicrovm. "
                                                 "Commands: run (see run --help).")
    parser.add_argument("--version", action="store_true",
                        help="print the package's and the loaded library's versions")
    args = parser.parse_args(argv)
    try:
        import microvm
    except ImportError as e:  # LibraryError: a library found but unusable
        print("microvm: %s" % e, file=sys.stderr)
        return 1
    if not args.version:
        parser.print_help()
        return 0
    print("microvm (Python package) %s" % microvm.__version__)
    try:
        lib = microvm.library()
    except microvm.LibraryError as e:
        print("libmicrovm: not loaded: %s" % e, file=sys.stderr)
        return 1
    print("libmicrovm %s (%s)" % (lib.version, lib.path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
