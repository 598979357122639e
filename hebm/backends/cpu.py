"""``backend="cpu"``: the fused C++ sampler (``csrc/cpu``), the CPU implementation of the ops of
:mod:`hebm.backends.ops`.

The whole K-step loop — T_β forward, energies forward and backward, backward through T_β, the
Gaussian and kernel terms, the noise and the update — runs in one C++ call, parallel over row
chunks of chains (the extension's own std::thread split: ATen's parallel_for ran serially in
this build, benchmarks/NOTES.md).  A whole reverse diffusion (all levels) is one call too.  The
extension is built by ``setup.py`` or compiled on first use (:mod:`hebm.backends._build`); when
that fails, ``unavailable()`` says why and how to fix it, and ``backend="auto"`` falls back to
the reference.  The CPU computes exactly in the tensors' dtype whatever ``precision`` asks
(``info["precision"]`` says so).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _MODULES, BackendUnavailable, _build, ops
from ..prior import HierarchicalPrior
from .pack import current_entry, network_support, packed_prior

NAME = "cpu"
# "deferred_checks": the kernel applies hebm.args.ValueChecks' rules (csrc/ops.cpp HEBM_REFUSE),
# the pack cache proves the prior's dtype/device (hebm.backends.pack.packed_prior's `like`)
FEATURES = ("sigma_clamp", "deferred_checks")


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


def unsupported(prior, args) -> Optional[str]:
    u = args.u
    if u.device.type != "cpu":
        return f"backend 'cpu' runs on CPU tensors, got u on {u.device}; use backend='auto' or move the tensors"
    if u.dtype not in (torch.float32, torch.float64):
        return f"backend 'cpu' takes float32 or float64, got {u.dtype}"
    return network_support(prior)


def ran(precision: str, u: torch.Tensor) -> str:
    return "fp64" if u.dtype == torch.float64 else "fp32"


def run(prior, args, *, precision: str, trace: bool):
    """K steps for the checked ``args``: ``(u_out, log π trace or None, precision that ran)``."""
    _extension()
    pk = packed_prior(prior, args.u.dtype, args.u.device, like=args.u if args.pending_prior else None)
    args.pending_prior = False
    try:
        out, logd = ops.langevin(pk, args, precision=ran(precision, args.u), trace=trace)
    except ValueError:
        # the kernel refused a value (csrc/ops.cpp HEBM_REFUSE): the argument's own message
        if args.pending_values is not None:
            args.pending_values.explain()
        raise
    args.pending_values = None
    _remember_plan(prior, pk)
    return out, logd, ran(precision, args.u)


# ------------------------------------------------------------------------------ the fast path
# An eager call whose arguments are already in the form hebm.args would make of them (plain
# tensors of u's dtype on the CPU, Python numbers; csrc/ops.cpp FastPlan states the forms) goes
# from hebm.langevin_fused straight to the kernel: ~100 µs of normalisation, backend choice and
# pack checks in Python were most of a short call (benchmarks/NOTES.md, "CPU backend, session
# 5").  The decisions it skips were made by an earlier general-path call and are still valid:
# the plan exists only after this backend ran the prior (so "auto" chose it, it is available and
# takes the network), lives in the pack cache's entry (dropped when the prior's structure or
# values change: pack.current_entry, and the kernel-side byte comparison with the snapshot), and
# declines every other form, refused value or changed prior — the general path then runs, with
# its errors.
_CPU = torch.device("cpu")


def _remember_plan(prior, pk) -> None:
    """Make the fast path's plan for ``pk`` (after the general path ran it), once per pack."""
    e = current_entry(prior)
    ext = _build.loaded_cpu_ops()
    if e is None or ext is None or e.values is None or e.values.dtype != pk.params.dtype or pk.params.device != _CPU:
        return
    old = e.fast.get(NAME)
    if old is not None and old[2] is pk and old[1] is ext:
        return
    st = pk.op_structure()
    plan = ext.FastPlan(e.tensors, e.values, st["params"], st["dims"], st["layout"], st["mlps"], st["act_params"],
                        st["has_energy"], st["n_levels"], st["sigma_min"], st["sigma_clamp"], st["token"],
                        prior.n_levels or 0)
    e.fast[NAME] = (plan, ext, pk)


def fast_langevin(prior, u, n_steps, step_size, noise_scale, energy_scale, t, u_next, alpha, sigma, seed, chain_ids,
                  noise, step_offset, trace: bool):
    """``(u_K, log π trace or None, all finite)`` for an eager call in the forms the plan takes,
    else None (take the general path).  ``hebm.langevin_fused``'s arguments, checked or not."""
    if not isinstance(prior, HierarchicalPrior):
        return None
    e = current_entry(prior)
    hit = None if e is None else e.fast.get(NAME)
    if hit is None or hit[1] is not _build.loaded_cpu_ops() or not _registered():
        return None
    plan, _, pk = hit
    max_steps = 1  # a call may take all its steps at once only if they fit one chunk (hebm.backends.ops)
    if type(n_steps) is int and n_steps > 1 and u.dim() == 2 and u.shape[0] > 0:
        max_steps = ops.steps_per_chunk(pk, u.shape[0], _CPU)
    return plan.run(u, n_steps, step_size, noise_scale, energy_scale, t, u_next, alpha, sigma, seed, chain_ids, noise,
                    step_offset, max_steps, trace)


def _registered() -> bool:
    """This module is still the registered "cpu" backend (tests swap backends out)."""
    return _MODULES.get(NAME) == __name__


def run_reverse(prior, schedule, r, *, precision: str, return_levels: bool):
    """The whole reverse diffusion (levels T−1 … 0, K steps each) in one C++ call, when it is
    short enough for one call (:func:`hebm.backends.ops.fits_one_reverse_call`), else None."""
    _extension()
    pk = packed_prior(prior, r.u.dtype, r.u.device)
    if not ops.fits_one_reverse_call(pk, r):
        return None
    levels = ops.reverse_diffusion(pk, schedule, r, precision=ran(precision, r.u), return_levels=return_levels)
    return levels, ran(precision, r.u)


__all__ = ["NAME", "fast_langevin", "get_num_threads", "run", "run_reverse", "set_num_threads", "unavailable", "unsupported"]
