"""python3 -m microvm --version: the package's and the library's versions."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m microvm",
                                     description="Python bindings for libmicrovm")
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
