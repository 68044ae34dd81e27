"""The package's version: the libmicrovm release these bindings follow."""
__version__ = "0.9.0"
