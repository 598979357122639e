"""``backend="ref"``: the reference loop (:func:`hebm.sampler.reference.langevin_loop`) behind the same
entry as the fused backends, so a :class:`hebm.Sampler` dispatches without naming any backend.
Runs anywhere torch runs, in the tensors' dtype, on the prior module itself (``RUNS_MODULE``: it
needs no packed values, and sees the weights as they are at each call); ``"auto"`` falls back to it."""
from __future__ import annotations

from ..reference import langevin_loop, precision_of

NAME = "ref"
RUNS_MODULE = True


def unavailable():
    return None


def unsupported(network, *, device, dtype, precision: str = "fp32", metropolis: bool = False):
    return None


def run(pack, args, *, precision: str, trace: bool):
    """K steps for the checked ``args``: ``(u_out, log π trace or None, precision that ran,
    accept stats [2, B] with metropolis else None)``."""
    out, logs, stats = langevin_loop(pack.prior, args, trace=trace)
    return out, logs, precision_of(out), stats


__all__ = ["NAME", "run", "unavailable", "unsupported"]
