"""What becomes of a sampler call's result: divergence reported, never returned silently, and
the chains handed back in the caller's structure."""
from __future__ import annotations

import math
import warnings

import torch

from ..prior.hierarchical import HierarchicalPrior
from .record import LangevinArgs


# ------------------------------------------------------------------------------ results
class DivergenceError(FloatingPointError):
    """Chains of a sampler call diverged to NaN/Inf (raised with ``check="raise"``)."""


_warned: set = set()


def divergence_hint(a: LangevinArgs) -> str:
    """Which knob to turn when chains diverge: the Langevin step is unstable once δ² times the
    target's curvature passes ~4; the Gaussian term contributes 1, the kernel term a²/σ²."""
    d2 = float((a.step_size * a.step_size).max())
    if a.u_next is not None:
        stiff = float((a.step_size * a.step_size * a.alpha * a.alpha / (a.sigma * a.sigma)).max())
        if stiff > 2.0:
            return (f"the recovery-kernel term is too stiff for the step: max δ²·a²/σ² = {stiff:.3g} (unstable above "
                    f"~4); lower step_size or raise sigma")
    return f"lower step_size (max δ = {d2 ** 0.5:.3g}) or the energy's scale (energy_scale)"


def _report(a, msg: str, what: str) -> None:
    if a.check == "raise":
        raise DivergenceError(msg)
    key = (what, msg.split(";")[1][:60])
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def check_result(a: LangevinArgs, out: torch.Tensor, what: str = "langevin", stats=None, summarize=None) -> None:
    """Chains that ended at NaN/Inf are never returned silently: a warning naming the knob
    (once per call site and cause), or :class:`DivergenceError` with ``check="raise"``.
    ``stats`` (Metropolis calls: ``[2, B]`` accepted proposals and Σ min(1, α) of the steps after
    the warm-up): a MALA chain whose every proposal had acceptance probability 0 never moved —
    log π is NaN or −∞ at its state or at every proposal (a NaN weight, a step size far too
    large) — which the state alone would not show (a refused proposal keeps a finite state)."""
    if a.check == "off":
        return
    # every value finite: for CPU tensors the value summary (``summarize``, :class:`ValueChecks`)
    # says so in one C++ call; else the sum is finite when every value is (NaN and ±Inf propagate):
    # one reduction and one host read, where isfinite().all() is a composite of four ops.  A sum
    # can also overflow from finite values, so a non-finite sum is only a suspicion, settled by
    # the count below.
    if summarize is not None and out.device.type == "cpu":
        suspect = not all(map(math.isfinite, summarize([out])))
    else:
        suspect = not math.isfinite(out.sum().item())
    if suspect:
        n_bad = int((~torch.isfinite(out)).any(1).sum())
        if n_bad:
            _report(a, f"hebm.{what}: {n_bad} of {out.shape[0]} chains diverged to NaN/Inf within {a.n_steps} steps; "
                       f"{divergence_hint(a)}.  (check='raise' makes this an error, check='off' silences it)", what)
    if stats is not None and a.n_steps > a.adapt_steps:
        n_stuck = int((stats[1] <= 0).sum())  # (Σ min(1, α) is 0 exactly when every α was 0 or NaN)
        if n_stuck:
            _report(a, f"hebm.{what}: {n_stuck} of {out.shape[0]} chains refused every Metropolis proposal with "
                       f"probability 1 (log π NaN or -Inf at the state or at every proposal: a NaN weight, or a step "
                       f"far too large); check the prior's weights or {divergence_hint(a)}.  (check='raise' makes "
                       f"this an error, check='off' silences it)", what)


def finish(prior: HierarchicalPrior, a, out: torch.Tensor, info: dict, return_info: bool):
    """The result in the caller's structure (a list of layers if ``u`` came as one), detached, and
    ``info`` with its tensors detached too (a kernel's op may hand back its trace, acceptance or
    adapted δ with an autograd history on the prior's weights, as the reference's never has)."""
    if out.requires_grad:  # (a tensor without autograd history is returned as is)
        out = out.detach()
    if info is not None:
        info = {k: v.detach() if isinstance(v, torch.Tensor) and v.requires_grad else v for k, v in info.items()}
    res = prior.split(out) if a.as_list else out
    return (res, info) if return_info else res



__all__ = ["DivergenceError", "check_result", "divergence_hint", "finish"]
