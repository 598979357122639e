"""Choosing a replica-exchange ladder from the swaps it made: the communication barrier of
Syed, Bouchard-Côté, Deligiannidis & Doucet (2021), "Non-reversible parallel tempering: a scalable
highly parallel MCMC scheme" (JRSS-B), §5.

A neighbour pair (β_i, β_{i+1}) of a ladder rejects a proposed swap with probability r_i.  For
close neighbours r_i ≈ Λ(β_{i+1}) − Λ(β_i), where Λ(β) = ∫₀^β λ(b) db is the *communication
barrier* of the tempered path (λ(b): the local rejection rate per unit of β), so the rejections a
run observed, summed along its ladder, estimate Λ at its rungs.  The ladder whose neighbours split
Λ(1) into equal parts rejects equally often at every pair; under the non-reversible (DEO)
schedule it is the ladder with the most round trips, and Λ(1) also says how many rungs are
worth having (the round-trip rate stops growing once R is a few times Λ(1)).

These functions only read a call's ``info`` (any backend's: the reference and the cpu kernel
return the same swap statistics) and return a new ladder; the caller runs it.  Typical use::

    _, info = hebm.langevin_fused(prior, u, temperatures=ladder, swap_every=1, return_info=True, **kw)
    ladder = equalize_ladder(ladder, swap_rejection(info))        # same R, same end points
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .checks import ladder_values


def swap_rejection(info: dict) -> np.ndarray:
    """Per neighbour pair (r, r+1), the fraction of proposed swaps rejected, over every ladder
    group of the call (``info["swap_attempts"]``, ``info["swap_accepted"]``: ``[G, R−1]``) →
    ``[R−1]`` floats.  A pair that never proposed (a call shorter than two swap rounds under the
    DEO schedule, say) has no rate: ValueError naming it."""
    if "swap_attempts" not in info:
        raise ValueError("info has no swap statistics: pass temperatures=… and return_info=True to the sampler call")
    att = torch.as_tensor(info["swap_attempts"]).sum(0).double()
    acc = torch.as_tensor(info["swap_accepted"]).sum(0).double()
    never = [i for i, n in enumerate(att.tolist()) if n == 0]
    if never:
        raise ValueError(f"the ladder's pairs {never} never proposed a swap in this call: run more swap rounds "
                         f"(more steps, or a smaller swap_every)")
    return (1.0 - acc / att).numpy()


def communication_barrier(temperatures: Sequence[float], rejection: Sequence[float]) -> np.ndarray:
    """Λ at every rung ``[R]``: 0 at β_1, then the running sum of the pairs' rejection rates."""
    beta = np.asarray(ladder_values(temperatures), dtype=np.float64)
    r = np.asarray(rejection, dtype=np.float64)
    if r.shape != (len(beta) - 1,):
        raise ValueError(f"rejection must have one rate per neighbour pair, [R−1] = [{len(beta) - 1}], got shape "
                         f"{tuple(r.shape)}")
    if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > 1):
        raise ValueError(f"rejection rates must lie in [0, 1], got {r.tolist()}")
    return np.concatenate([[0.0], np.cumsum(r)])


def equalize_ladder(temperatures: Sequence[float], rejection: Sequence[float], n: Optional[int] = None) -> list:
    """The ladder of ``n`` rungs (default: as many as ``temperatures``) from β_1 to 1 whose
    neighbours split the communication barrier estimated from ``rejection`` (the rates of
    :func:`swap_rejection`, measured on ``temperatures``) into equal parts: rung k at
    Λ⁻¹(k·Λ(1)/(n−1)), Λ interpolated linearly between the measured rungs.  Where no pair rejected
    anything there is no barrier to split, and the rungs are spread evenly in β."""
    beta = np.asarray(ladder_values(temperatures), dtype=np.float64)
    lam = communication_barrier(beta, rejection)
    n = len(beta) if n is None else int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2 (a ladder with a hot end and the cold chain), got {n}")
    if len(beta) < 2 or lam[-1] <= 0.0:
        return np.linspace(beta[0], 1.0, n).tolist()
    # a pair that rejected nothing is a flat piece of Λ: tilt it by a hair so that Λ⁻¹ is one-valued
    lam = lam + np.arange(len(lam)) * (1e-12 * lam[-1])
    out = np.interp(np.linspace(0.0, lam[-1], n), lam, beta)
    out[0], out[-1] = beta[0], 1.0
    return np.maximum.accumulate(out).tolist()


__all__ = ["communication_barrier", "equalize_ladder", "swap_rejection"]
