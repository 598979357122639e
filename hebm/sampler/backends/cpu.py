"""``backend="cpu"``: the fused C++ sampler (``csrc/cpu``), the CPU implementation of the ops of
:mod:`hebm.sampler.backends.ops`.

The whole K-step loop — T_β forward, energies forward and backward, backward through T_β, the
Gaussian and kernel terms, the noise and the update — runs in one C++ call, parallel over row
chunks of chains (the extension's own std::thread split: ATen's parallel_for ran serially in
this build, benchmarks/NOTES.md).  A whole reverse diffusion (all levels) is one call too.  The
extension is built by ``setup.py`` or compiled on first use (:mod:`hebm.sampler.backends._build`); when
that fails, ``unavailable()`` says why and how to fix it, and ``backend="auto"`` falls back to
the reference.  The CPU computes exactly in the tensors' dtype whatever ``precision`` asks
(``info["precision"]`` says so).  Replica exchange (``temperatures``) runs inside the kernel
(:func:`run_replica`).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import BackendUnavailable, _build, ops

NAME = "cpu"


def _extension():
    mod, why = _build.load_cpu_ops()
    if mod is None:
        raise BackendUnavailable(f"the C++ CPU extension is unavailable: {why}")
    return mod


def set_num_threads(n: Optional[int]) -> None:
    """Threads of the C++ kernel.  ``None`` or 0: follow ``torch.get_num_threads()`` (the
    default).  A training loop that keeps torch's intra-op pool at one thread (its small eager
    ops run faster that way) can still give the kernel every core — ``hebm.train`` does."""
    n = 0 if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    _extension().set_num_threads(n)


def get_num_threads() -> int:
    """Threads the C++ kernel uses now (1 when the extension is unavailable)."""
    mod, _ = _build.load_cpu_ops()
    return int(mod.get_num_threads()) if mod is not None else 1


def unavailable() -> Optional[str]:
    """None when the C++ extension loads (compiling it on first use), else why + the fix."""
    _, why = _build.load_cpu_ops()
    return None if why is None else f"the C++ CPU extension is unavailable: {why}"


def unsupported(network, *, device, dtype, precision: str = "fp32", metropolis: bool = False) -> Optional[str]:
    if device.type != "cpu":
        return f"backend 'cpu' runs on CPU tensors, got u on {device}; use backend='auto' or move the tensors"
    if dtype not in (torch.float32, torch.float64):
        return f"backend 'cpu' takes float32 or float64, got {dtype}"
    return network.reason


def ran(precision: str, dtype: torch.dtype) -> str:
    return "fp64" if dtype == torch.float64 else "fp32"


def run(pack, args, *, precision: str, trace: bool):
    """K steps for the checked ``args``: ``(u_out, log π trace or None, precision that ran,
    accept stats [2, B] with metropolis else None)``."""
    p = ran(precision, args.u.dtype)
    out, logd, stats, _ = ops.langevin(pack, args, precision=p, trace=trace)
    return out, logd, p, stats


def run_replica(pack, args, *, precision: str, trace: bool):
    """A call with ``temperatures``: the swap rounds run inside the kernel's step loop (a chunk of
    rows holds whole ladder groups).  :func:`run`'s tuple plus the swap record ``[n_rounds, 2, B]``
    (:func:`hebm.sampler.reference.swap_record_info` turns it into the reference's ``info``)."""
    p = ran(precision, args.u.dtype)
    out, logd, stats, record = ops.langevin(pack, args, precision=p, trace=trace)
    return out, logd, p, stats, record


def run_reverse(pack, schedule, r, *, precision: str, return_levels: bool):
    """The whole reverse diffusion (levels T−1 … 0, K steps each) in one C++ call, when it is
    short enough for one call (:func:`hebm.sampler.backends.ops.fits_one_reverse_call`), else None."""
    if not ops.fits_one_reverse_call(pack, r):
        return None
    p = ran(precision, r.u.dtype)
    return ops.reverse_diffusion(pack, schedule, r, precision=p, return_levels=return_levels), p


__all__ = ["NAME", "get_num_threads", "run", "run_replica", "run_reverse", "set_num_threads", "unavailable", "unsupported"]
