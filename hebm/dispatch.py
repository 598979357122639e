"""The fused entry points: :func:`langevin_fused` and :func:`reverse_diffusion`.

Both take the arguments of their reference (:func:`hebm.langevin_ref`,
:func:`hebm.reverse_diffusion_ref`, whose module states the update rule) and return the same
result to float rounding, run by a backend of :mod:`hebm.backends`: ``"cpu"`` (C++),
``"triton"``, ``"cuda"``, ``"graph"`` (CUDA-graph replay) or ``"ref"``; ``"auto"`` picks the
fastest one available for the tensors' device and network, falling back to the reference with
one warning.  This module only dispatches and names no backend: it checks the arguments once
(:mod:`hebm.args`), asks the registry (:mod:`hebm.backends`) which backend runs, calls that
backend's one entry through it, and reports what ran.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from . import backends
from .backends import BackendUnavailable
from .args import Latents, check_langevin_args, check_options, check_result, check_reverse_args, finish, level_args
from .prior import HierarchicalPrior
from .reference import (finish_reverse, langevin_ref, langevin_z_ref, precision_of, reverse_diffusion_ref,
                        reverse_loop, run_chain)


def langevin_fused(prior: HierarchicalPrior, u: Latents, *, return_info: bool = False, backend: str = "auto",
                   precision: str = "auto", **arguments):
    """Drop-in for :func:`hebm.langevin_ref`: the same ``arguments`` (its keywords, checked by
    :func:`hebm.args.check_langevin_args`, where the list lives), the same result to float
    rounding, run by the backend ``backend``.  ``precision``: ``"auto"`` follows
    ``torch.get_float32_matmul_precision()`` ("highest" → exact fp32, else TF32), or
    ``"fp32"``/``"tf32"``/``"bf16"`` explicitly; ``return_info`` adds ``{"backend",
    "precision", "log_density"}`` — the backend and precision that actually ran (the CPU, for
    one, computes exactly in the tensors' dtype whatever is asked).
    """
    check_options(backend, precision)
    a = check_langevin_args(prior, u, **arguments, defer=True)
    prec = backends.resolve_precision(precision, a.u)
    try:
        name = backends.choose(prior, a, backend, prec)
    except BackendUnavailable:
        a.apply_deferred_checks(prior)  # a bad argument is named before an unavailable backend
        raise
    if not backends.proves_prior(name):
        a.apply_deferred_checks(prior)  # else the backend does (hebm.backends: "proves_prior")
    ran = None

    def run(args):
        nonlocal ran
        out, logs, ran, stats = backends.run(name, prior, args, precision=prec, trace=return_info)
        return out, logs, stats

    out, logs, extra = run_chain(run, a, trace=return_info)
    check_result(a, out, "langevin_fused")
    return finish(prior, a, out, {"backend": name, "precision": ran, "log_density": logs, **extra}, return_info)


def reverse_diffusion(prior: HierarchicalPrior, schedule, u_T: Optional[Latents] = None, *, return_levels: bool = False,
                      backend: str = "ref", precision: str = "auto", return_info: bool = False, **arguments):
    """:func:`hebm.reverse_diffusion_ref` (paper 2's sampler: ũ_T ~ N(0, I), then levels
    t = T−1 … 0, K steps each) run by ``backend``: backends that fuse the whole diffusion into
    one launch do so, the others run it level by level through :func:`langevin_fused`'s backend.
    Same arguments (checked by :func:`hebm.args.check_reverse_args`) and result as the
    reference; ``return_info`` adds ``{"backend", "precision"}``
    and, with ``metropolis``, ``"accepted"`` (``[T, B]``, level T−1 first).  Metropolis-adjusted
    levels run one by one (no backend fuses the whole adjusted diffusion yet).
    """
    check_options(backend, precision)
    r = check_reverse_args(prior, schedule, u_T, **arguments)
    prec = backends.resolve_precision(precision, r.u)
    name = backends.choose(prior, level_args(r, schedule, 0, r.u), backend, prec)
    fused = None if r.metropolis else backends.run_reverse(name, prior, schedule, r, precision=prec,
                                                           return_levels=return_levels)
    accepted = []
    if fused is not None:
        levels, ran = fused
    else:
        ran = precision_of(r.u)

        def level(p, a):
            nonlocal ran
            out, logs, ran, stats = backends.run(name, p, a, precision=prec, trace=False)
            return out, logs, stats

        levels = reverse_loop(prior, schedule, r, run=level, accepted=accepted)
    res = finish_reverse(prior, schedule, r, levels, return_levels, "reverse_diffusion")
    info = {"backend": name, "precision": ran}
    if r.metropolis:
        info["accepted"] = torch.stack(accepted)
    return (res, info) if return_info else res


# help() and IDEs show the reference's keywords (one list) and the two of the dispatch
langevin_fused.__signature__ = inspect.signature(langevin_ref).replace(parameters=[
    *inspect.signature(langevin_ref).parameters.values(),
    *(p for n, p in inspect.signature(langevin_fused).parameters.items() if n in ("backend", "precision"))])

reverse_diffusion.__signature__ = inspect.signature(reverse_diffusion_ref).replace(parameters=[
    *inspect.signature(reverse_diffusion_ref).parameters.values(),
    *(p for n, p in inspect.signature(reverse_diffusion).parameters.items()
      if n in ("backend", "precision", "return_info"))])

__all__ = ["langevin_fused", "langevin_ref", "langevin_z_ref", "reverse_diffusion", "reverse_diffusion_ref"]
