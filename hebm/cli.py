"""What the command-line entry points share: a parser whose errors are one line, the flags
generated from the typed configs (:func:`add_arguments`: one flag per field of
:mod:`hebm.config`, typed and range-checked), and the rule that a user's mistake prints one line
and exits 2 — never a traceback.

``HEBM_DEBUG=1`` shows the traceback of such an error as well (for reporting bugs).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable, Optional

from .checkpoint import CheckpointError
from .config import PRIOR_DEFAULTS, ModelConfig, TrainConfig, value_problem
from .errors import UserError
from .sampler.backends import BackendUnavailable
from .sampler.results import DivergenceError

USER_ERRORS = (UserError, CheckpointError, BackendUnavailable, DivergenceError, FileNotFoundError, ImportError,
               ValueError, TypeError, PermissionError, IsADirectoryError)


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
    except USER_ERRORS as e:
        if os.environ.get("HEBM_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"[{prog}] error: {msg}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------- flags from the configs
def _ranged(name: str, meta: dict, cast):
    def parse(s: str):
        try:
            v = cast(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if cast is int else 'a number'}, got {s!r}") from None
        why = value_problem(v, meta)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return v

    return parse


def _listed(name: str, meta: dict, cast):
    one = _ranged(name, meta, cast)

    def parse(s: str):
        parts = [p for p in s.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated values like 16,8,4, got {s!r}")
        return [one(p.strip()) for p in parts]

    return parse


def _add_flag(parser, f, default, help_, *, suppress: bool) -> None:
    """The flag of field ``f``: ``--field-name``, typed and range-checked.  ``suppress``: no
    default on the parser (hebm.train: only the given flags appear), else ``default``."""
    m = f.metadata
    flag = "--" + f.name.replace("_", "-")
    kw = dict(dest=f.name, help=help_.replace("%", "%%").replace("%%%%", "%%"))
    if not suppress:
        kw["default"] = default
    if m.get("required"):
        kw["required"] = True
    if m.get("metavar"):
        kw["metavar"] = m["metavar"]
    if str(f.type) == "bool":
        # --x / --no-x: a prior type's default may be on (spectral norm for the ebm)
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif m.get("repeat"):
        parser.add_argument(flag, action="append", **{**kw, "default": [] if not suppress else argparse.SUPPRESS})
    elif m.get("list_of") is not None:
        parser.add_argument(flag, type=_listed(f.name, m, m["list_of"]), **{"metavar": "A,B,…", **kw})
    elif m.get("choices"):
        parser.add_argument(flag, choices=m["choices"], **kw)
    else:
        cast = {"int": int, "float": float, "Optional[int]": int, "Optional[float]": float}.get(str(f.type), str)
        if cast is str:
            parser.add_argument(flag, **kw)
        else:
            parser.add_argument(flag, type=_ranged(f.name, m, cast), **kw)


def _field_default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def add_arguments(parser: argparse.ArgumentParser, classes=(ModelConfig, TrainConfig), shown: Optional[dict] = None,
                  *, only=None, defaults: Optional[dict] = None):
    """One flag per CLI field of ``classes``: ``--field-name``, typed and range-checked.

    Without ``defaults`` the parser gets no defaults (it should use
    ``argument_default=argparse.SUPPRESS``, so only the given flags appear: hebm.train, whose
    defaults depend on the prior); ``shown`` overrides the defaults the help names.  With
    ``defaults`` (a dict, possibly empty) every flag gets its field's default, or the dict's
    value for it (hebm.sample, hebm.evaluate) — a value ``(default, note)`` adds the note to the
    help.  ``only``: these field names only, in this order (the flags an entry point shares with
    training: the same types and ranges)."""
    shown = shown or {}
    fields = [f for cls in classes for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    if only is not None:
        by = {f.name: f for f in fields}
        fields = [by[n] for n in only]
    for f in fields:
        note = ""
        if defaults is None:
            default = shown.get(f.name, _field_default(f))
        else:
            default = defaults.get(f.name, _field_default(f))
            if isinstance(default, tuple):
                default, note = default
        per_prior = "".join(f"; {k}: {d[f.name]}" for k, d in PRIOR_DEFAULTS.items() if f.name in d) \
            if defaults is None else ""
        help_ = f.metadata["help"] + (f" (default {default}{per_prior})"
                                      if default not in (None, False, []) or per_prior else "")
        help_ += note
        _add_flag(parser, f, default, help_, suppress=defaults is None)
    return parser


__all__ = ["Parser", "USER_ERRORS", "add_arguments", "float_range", "int_range", "run"]
