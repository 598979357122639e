"""``backend="ref"``: the reference loop (:func:`hebm.reference.langevin_loop`) behind the same
entry as the fused backends, so :func:`hebm.langevin_fused` dispatches without naming any
backend.  Runs anywhere torch runs, in the tensors' dtype; ``"auto"`` falls back to it."""
from __future__ import annotations

from ..reference import langevin_loop, precision_of

NAME = "ref"
FEATURES = ("sigma_clamp", "metropolis")


def unavailable():
    return None


def unsupported(prior, args, precision: str = "fp32"):
    return None


def run(prior, args, *, precision: str, trace: bool):
    """K steps for the checked ``args``: ``(u_out, log π trace or None, precision that ran,
    accept stats [2, B] with metropolis else None)``."""
    out, logs, stats = langevin_loop(prior, args, trace=trace)
    return out, logs, precision_of(out), stats


__all__ = ["NAME", "run", "unavailable", "unsupported"]
