"""What the command-line entry points share: a parser whose errors are one line, range-checked
flag types, and the rule that a user's mistake prints one line and exits 2 — never a traceback.

``HEBM_DEBUG=1`` shows the traceback of such an error as well (for reporting bugs).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .args import DivergenceError
from .backends import BackendUnavailable
from .checkpoint import CheckpointError

USER_ERRORS = (CheckpointError, BackendUnavailable, DivergenceError, FileNotFoundError, ImportError, ValueError,
               TypeError, PermissionError, IsADirectoryError)


class UserError(RuntimeError):
    """A mistake in how a command was called (a flag, a file, a directory): one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (no usage dump), exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(cast, what: str, lo=None, hi=None, lo_open=False):
    def parse(s: str):
        try:
            v = cast(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if isinstance(v, float) and v != v:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {s}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi:g}, got {s}")
        return v

    return parse


def int_range(lo=None, hi=None):
    """An argparse type: an integer in [lo, hi]."""
    return _number(int, "an integer", lo, hi)


def float_range(lo=None, hi=None, lo_open=False):
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    return _number(float, "a number", lo, hi, lo_open)


def run(prog: str, main: Callable[[], int]) -> int:
    """``main()`` with user errors turned into one line on stderr and exit status 2."""
    try:
        return int(main() or 0)
    except USER_ERRORS + (UserError,) as e:
        if os.environ.get("HEBM_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"[{prog}] error: {msg}", file=sys.stderr)
        return 2


__all__ = ["Parser", "USER_ERRORS", "UserError", "float_range", "int_range", "run"]
