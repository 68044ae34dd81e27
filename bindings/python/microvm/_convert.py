"""Checking and converting Python arguments before they reach C: wrong
types raise TypeError, wrong values ValueError, so C never sees them."""

import math
import os

from ._lib import INT_MAX


def integer(name, value, lo=None, hi=None):
    """@value as an int in lo..hi (bool is not a number here)."""
    if isinstance(value, bool):
        raise TypeError("%s must be an int, not bool" % name)
    if not isinstance(value, int):
        try:
            value = value.__index__()
        except AttributeError:
            raise TypeError("%s must be an int, not %s" % (name, type(value).__name__)) from None
    if lo is not None and value < lo:
        raise ValueError("%s must be >= %d, got %d" % (name, lo, value))
    if hi is not None and value > hi:
        raise ValueError("%s must be <= %d, got %d" % (name, hi, value))
    return value


def flag(name, value):
    """A bool (or 0/1) for an on/off setting."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError("%s must be a bool, not %s" % (name, type(value).__name__))


def cbytes(name, value, max_len=None, allow_empty=True):
    """A str/bytes for a C string (str is encoded as UTF-8)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value)
    else:
        raise TypeError("%s must be str or bytes, not %s" % (name, type(value).__name__))
    if b"\0" in value:
        raise ValueError("%s must not contain NUL characters" % name)
    if not allow_empty and not value:
        raise ValueError("%s must not be empty" % name)
    if max_len is not None and len(value) > max_len:
        raise ValueError("%s is %d bytes, at most %d allowed" % (name, len(value), max_len))
    return value


def path(name, value, max_len=None):
    """A filesystem path (str, bytes or os.PathLike) as bytes."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        value = os.fsencode(value)
    else:
        raise TypeError("%s must be a path (str, bytes or os.PathLike), not %s"
                        % (name, type(value).__name__))
    if not value:
        raise ValueError("%s must not be empty" % name)
    if b"\0" in value:
        raise ValueError("%s must not contain NUL characters" % name)
    if max_len is not None and len(value) > max_len:
        raise ValueError("%s is %d bytes, at most %d allowed" % (name, len(value), max_len))
    return value


def fd(name, value):
    """None (-1), an fd number, or an object with fileno(): returns the fd."""
    if value is None:
        return -1
    if isinstance(value, bool):
        raise TypeError("%s must be a file object, an fd or None, not bool" % name)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("%s must be a file descriptor >= 0 (or None), got %d" % (name, value))
        return value
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        raise TypeError("%s must be a file object, an fd or None, not %s"
                        % (name, type(value).__name__))
    return fileno()


def timeout_ms(value, name="timeout"):
    """Seconds (int/float; None = no limit) as C milliseconds (-1 = no
    limit), rounded up, at most INT_MAX."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds or None, not %s"
                        % (name, type(value).__name__))
    if math.isnan(value) or value < 0:
        raise ValueError("%s must be >= 0 seconds (or None for no limit), got %r" % (name, value))
    if math.isinf(value):
        return -1
    return min(INT_MAX, math.ceil(value * 1000))
