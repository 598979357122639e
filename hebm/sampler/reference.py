"""The reference samplers: hebm's update rule, stated once, and the plain loops that run it.

The update rule (every backend implements exactly this; docs/design.md §2)::

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,        ε ~ N(0, I),   K = n_steps times,

    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

with δ = ``step_size``, c = ``noise_scale``, λ = ``energy_scale``, a = ``alpha``, σ = ``sigma``
(each a scalar or a per-chain ``[B]`` tensor; ``t`` an int or ``[B]`` integer levels),
``F = Σ_i f_i`` the joint energy and ``z̃ = T_β(ũ)`` the whitening map of the prior.  Paper 2
writes the step in variance form ``u + (s/2)∇ + √s ξ``: pass ``step_size = √s``.  The gradient
is exact reverse-mode autograd through ``T_β`` and the energies.

ε is the explicit ``noise[k]`` (``[K, B, D]``) or, given ``seed``, the counter-based
Philox4x32-10 stream of :mod:`hebm.prior.philox` at step ``step_offset + k`` for chain
``chain_ids[b]`` — so a chain's trajectory depends neither on its batch nor on the backend.

With ``metropolis=True`` (MALA, docs/design.md §2b) that step is a proposal (c = 1), kept or
refused by the Metropolis–Hastings test::

    u' = u + (δ²/2) · ∇log π(u) + δ · ε
    accept  ⇔  log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u),
               log q(a | b) = −‖a − b − (δ²/2)·∇log π(b)‖² / (2δ²)        (0 where δ = 0)

U the explicit ``uniforms[k]`` (``[K, B]``) or stream 2 of the same Philox generator
(:func:`hebm.prior.philox.philox_accept_uniform`); on a refusal the chain stays and the step counter
still advances; a NaN test refuses.  The chain then leaves π invariant exactly, at any δ.
``adapt_steps`` N > 0: during steps 0 … N−1 each chain's log δ moves toward the acceptance
``target_accept`` (:func:`adapt_step_size`), frozen after them (so steps N … K−1 are a valid
Markov chain for π); the adapted δ is returned in ``info["step_size"]``.

Three samplers, each one argument check and then its loop:

* :func:`langevin_ref` — K steps on the target above (both papers' prior chains);
* :func:`reverse_diffusion_ref` — paper 2's sampler: ũ_T ~ N(0, I), then for t = T−1 … 0,
  K steps on ``p̃(u_t | u_{t+1})`` started at ``u_{t+1}`` (docs/papers.md B §3.5);
* :func:`langevin_z_ref` — the authors' z-space sampler of paper 1, for comparison.

The fused backends (:func:`hebm.langevin_fused`) are tested against these.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import torch

from ..prior.hierarchical import HierarchicalPrior
from ..prior.philox import philox_accept_uniform, philox_normal
from .checks import check_langevin_args, check_reverse_args, level_args
from .record import LANGEVIN, REVERSE, Latents, LangevinArgs, ReverseArgs, describe, signature
from .results import check_result, finish


# ------------------------------------------------------------------------------ the pieces of a step
def target(prior: HierarchicalPrior, a: LangevinArgs) -> Callable[[torch.Tensor], torch.Tensor]:
    """``u ↦ log π(u)`` (``[B]``) of the call ``a``: λ·F(T_β(u); t) − ½‖u‖² − [u_next] ‖a·u − u_next‖²/(2σ²)
    (:meth:`hebm.HierarchicalPrior.log_density`), the function the update rule ascends."""
    return lambda x: prior.log_density(x, energy_scale=a.energy_scale, t=a.t, u_next=a.u_next, alpha=a.alpha,
                                       sigma=a.sigma)


def step_coefficients(a: LangevinArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ²/2, c·δ)`` as ``[B, 1]`` columns: the per-chain factors of the update rule."""
    return (0.5 * a.step_size * a.step_size)[:, None], (a.noise_scale * a.step_size)[:, None]


def step_noise(a: LangevinArgs, k: int) -> torch.Tensor:
    """ε of step k (``[B, D]``, u's dtype): ``noise[k]``, or stream 0 of the seed at step
    ``step_offset + k`` for each chain id."""
    if a.noise is not None:
        return a.noise[k]
    return philox_normal(a.seed, a.chain_ids, a.step_offset + k, a.D, device=a.u.device).to(a.u.dtype)


def step_uniform(a: LangevinArgs, k: int) -> torch.Tensor:
    """U of step k's Metropolis test (``[B]``, in (0, 1)): ``uniforms[k]``, or stream 2."""
    if a.uniforms is not None:
        return a.uniforms[k]
    return philox_accept_uniform(a.seed, a.chain_ids, a.step_offset + k, device=a.u.device).to(a.u.dtype)


def ref_step(target: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, eps: torch.Tensor,
             half_d2: torch.Tensor, noise_amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the update rule, eager autograd: ``(u + (δ²/2)·∇log π(u) + c·δ·ε, log π(u))``.

    ``target`` maps ``[B, D]`` states to ``log π`` ``[B]``; ``half_d2``, ``noise_amp`` are the
    ``[B, 1]`` columns of :func:`step_coefficients`.  The single statement of
    the step: every reference loop below, the CUDA-graph backend (which captures it) and the
    ``compile`` benchmark provider call this.  No host synchronisation (CUDA-graph safe as long
    as ``target`` is).
    """
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = target(x)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return u + half_d2 * grad + noise_amp * eps, logp.detach()


def value_and_grad(target: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor):
    """``(log π(u), ∇log π(u))`` by eager autograd."""
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = target(x)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return logp.detach(), grad


def log_q(a: torch.Tensor, b: torch.Tensor, grad_b: torch.Tensor, half_d2: torch.Tensor,
          inv_2d2: torch.Tensor) -> torch.Tensor:
    """``log q(a | b) = −‖a − b − (δ²/2)∇log π(b)‖² / (2δ²)`` (``[B]``, without its constant);
    ``inv_2d2`` is ``1/(2δ²)``, 0 where δ = 0 (the proposal is then the state itself)."""
    return -(a - b - half_d2 * grad_b).pow(2).sum(1) * inv_2d2[:, 0]


def mala_step(target, u, logp, grad, eps, U, half_d2, delta, inv_2d2):
    """One Metropolis-adjusted step (the rule in the module docstring), eager autograd:
    ``(u, log π(u), ∇log π(u), accepted [B] bool, min(1, α) [B])`` after the step, given the
    state's own log π and gradient (a chain evaluates each state once)."""
    prop = u + half_d2 * grad + delta * eps
    logp_p, grad_p = value_and_grad(target, prop)
    log_alpha = logp_p - logp + log_q(u, prop, grad_p, half_d2, inv_2d2) - log_q(prop, u, grad, half_d2, inv_2d2)
    acc = torch.log(U) < log_alpha  # NaN refuses
    keep = acc[:, None]
    prob = torch.exp(torch.clamp(log_alpha, max=0.0)).nan_to_num(0.0)
    return (torch.where(keep, prop, u), torch.where(acc, logp_p, logp), torch.where(keep, grad_p, grad), acc, prob)


def _outside_inference_mode(a):
    """``a`` with its tensors made ordinary where they are inference tensors (a sampler called
    inside ``torch.inference_mode()``; autograd refuses inference tensors)."""
    repl = {f.name: v.clone() for f in dataclasses.fields(a)
            if isinstance(v := getattr(a, f.name), torch.Tensor) and v.is_inference()}
    return dataclasses.replace(a, **repl) if repl else a


def langevin_loop(prior: HierarchicalPrior, a: LangevinArgs, *, trace: bool = False):
    """The K-step loop of :func:`langevin_ref` on checked arguments (no step adaptation:
    :func:`adapt_step_size` drives this loop for that): ``(u_K, log π trace [K, B] or None,
    accept stats)``, the stats ``[2, B]`` (accepted proposals, Σ min(1, α)) with ``metropolis``,
    else None."""
    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        log_pi = target(prior, a)
        half_d2, noise_amp = step_coefficients(a)
        u, logs, stats = a.u.clone(), [], None
        if a.metropolis:
            delta = a.step_size[:, None]
            inv_2d2 = torch.where(delta > 0, 0.5 / (delta * delta), torch.zeros_like(delta))
            stats = a.u.new_zeros(2, a.B)
            if a.n_steps:
                logp, grad = value_and_grad(log_pi, u)
            for k in range(a.n_steps):
                if trace:
                    logs.append(logp)
                u, logp, grad, acc, prob = mala_step(log_pi, u, logp, grad, step_noise(a, k), step_uniform(a, k),
                                                     half_d2, delta, inv_2d2)
                stats[0] += acc
                stats[1] += prob
        else:
            for k in range(a.n_steps):
                u, logp = ref_step(log_pi, u, step_noise(a, k), half_d2, noise_amp)
                if trace:
                    logs.append(logp)
        # K = 0 gives an empty [0, B] trace (torch.stack refuses an empty list)
        log_density = (torch.stack(logs) if logs else a.u.new_zeros(0, a.B)) if trace else None
    return u.detach(), log_density, stats


def adapt_step_size(run, a: LangevinArgs, *, trace: bool = False):
    """Steps 0 … N−1 (N = ``a.adapt_steps``) one at a time, each chain's log δ moved after each
    toward ``a.target_accept`` by its acceptance probability min(1, α); then steps N … K−1 in
    one run at the frozen δ.  ``run(args) -> (u, log π trace or None, accept stats [2, B])`` is
    any backend's (the reference loop or a kernel), so every backend adapts by this one rule.

    ``a.adapt``:

    * ``"robbins_monro"`` (the default): ``log δ ← log δ + m^−0.6 · (α_m − ρ*)``; the frozen δ
      is the last;
    * ``"dual_averaging"`` (Nesterov's, as in Hoffman & Gelman's NUTS, per chain):
      ``H ← (1 − 1/(m + t₀))·H + (ρ* − α_m)/(m + t₀)``, ``log δ_m = μ − √m/γ · H``,
      ``log δ̄ ← m^−κ log δ_m + (1 − m^−κ) log δ̄``; μ = log(10·δ₀), γ = 0.05, t₀ = 10,
      κ = 0.75; the frozen δ is δ̄ (the average).

    Measured (RESULTS.md §8; 200 warm-up steps, the default digits priors and N(0, I)): both are
    equally reproducible across sampling seeds; dual averaging's δ̄ varies less across chains
    (3.5–6 % vs 5–7 %) but lands at 0.62–0.65 acceptance instead of 0.574 (the average lags
    behind the iterate after a short warm-up), Robbins–Monro at 0.568–0.574 — hence the default.

    Returns ``(u_K, log π trace [K, B] or None, accept stats of steps N … K−1, adapted δ [B])``."""
    N, rho = a.adapt_steps, a.target_accept
    log_d = torch.log(a.step_size.clamp_min(torch.finfo(a.u.dtype).tiny))
    mu, H, log_bar = log_d + math.log(10.0), torch.zeros_like(log_d), log_d.clone()
    u, logs = a.u, []
    for m in range(1, N + 1):
        part = a.steps(m - 1, m)
        part.u, part.step_size = u, torch.exp(log_d)
        u, logd, stats = run(part)
        alpha = stats[1]  # one step: min(1, α) itself
        if a.adapt == "dual_averaging":
            w = 1.0 / (m + 10.0)
            H = (1.0 - w) * H + w * (rho - alpha)
            log_d = mu - math.sqrt(m) / 0.05 * H
            eta = m ** -0.75
            log_bar = eta * log_d + (1.0 - eta) * log_bar
        else:
            log_d = log_d + m ** -0.6 * (alpha - rho)
            log_bar = log_d
        if trace:
            logs.append(logd)
    step = torch.exp(log_bar) if N else a.step_size
    rest = a.steps(N, a.n_steps)
    rest.u, rest.step_size, rest.adapt_steps = u, step, 0
    u, logd, stats = run(rest)
    if trace:
        logs.append(logd)
    return u, (torch.cat(logs) if trace else None), stats, step


def precision_of(x: torch.Tensor) -> str:
    return "fp64" if x.dtype == torch.float64 else "fp32"


def langevin_ref(prior: HierarchicalPrior, u: Latents, *, return_info: bool = False, **arguments):
    """K steps of ũ-space Langevin, eager PyTorch autograd (the reference every backend matches):

        u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
        log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

    ``arguments``: the keywords of the call record (:data:`hebm.sampler.record.LANGEVIN`, listed below),
    checked by :func:`hebm.sampler.checks.check_langevin_args`.  ``return_info`` also returns
    ``{"backend", "precision", "log_density" [K, B]}`` (the target at the state entering each
    step) and, with ``metropolis``, ``"accepted"`` (``[B]`` int64, accepted proposals after the
    warm-up), ``"accept_rate"`` (``[B]``; NaN when no step follows the warm-up) and, when
    adapting, ``"step_size"`` (the adapted δ ``[B]``).

    Keywords:
    """
    a = check_langevin_args(prior, u, where="langevin_ref", **arguments)
    out, logs, extra, stats = run_chain(lambda p: langevin_loop(prior, p, trace=return_info), a, trace=return_info)
    check_result(a, out, "langevin_ref", stats)
    info = {"backend": "ref", "precision": precision_of(out), "log_density": logs, **extra}
    return finish(prior, a, out, info, return_info)


langevin_ref.__signature__ = signature(LANGEVIN, ("prior",), (("return_info", False),))
langevin_ref.__doc__ += describe(LANGEVIN)


def run_chain(run, a: LangevinArgs, *, trace: bool):
    """The whole call on checked ``a`` by ``run(args) -> (u, log π trace or None, accept stats
    or None)`` (the reference loop or a backend's): with step adaptation through
    :func:`adapt_step_size`.  Returns ``(u_K, trace, info entries, accept stats)``: MALA's
    ``"accepted"``, ``"accept_rate"`` (after the warm-up: NaN when no step follows it — the rate of
    no proposals is undefined, not 0) and, when adapting, ``"step_size"``; the stats ``[2, B]`` of
    the steps after the warm-up (None without ``metropolis``)."""
    if a.adapt_steps:
        out, logs, stats, step = adapt_step_size(run, a, trace=trace)
    else:
        (out, logs, stats), step = run(a), None
    extra = {}
    if a.metropolis:
        kept = a.n_steps - a.adapt_steps
        rate = stats[0] / kept if kept else torch.full_like(stats[0], math.nan)
        extra = {"accepted": stats[0].round().long(), "accept_rate": rate}
        if step is not None:
            extra["step_size"] = step
    return out, logs, extra, stats


def reverse_loop(prior: HierarchicalPrior, schedule, r: ReverseArgs, *, run=langevin_loop, accepted=None):
    """The level loop of :func:`reverse_diffusion_ref` on checked arguments: ``[ũ_T, …, ũ_0]``.
    ``run(prior, level_args)`` runs one level's K steps (the reference loop, or a backend's:
    ``(u, trace, accept stats or None)``); ``accepted``: a list that gets each level's accepted
    proposals ``[B]`` with ``r.metropolis``."""
    u, levels = r.u, [r.u]
    for j in range(schedule.T):  # level t = T−1−j
        u, _, stats = run(prior, level_args(r, schedule, j, u))
        if accepted is not None and stats is not None:
            accepted.append(stats[0].round().long())
        levels.append(u)
    return levels


def reverse_diffusion_ref(prior: HierarchicalPrior, schedule, u_T: Optional[Latents] = None, *,
                          return_levels: bool = False, **arguments):
    """Paper 2's sampler in ũ-space (docs/papers.md B §3.5): ũ_T ~ N(0, I), then for
    t = T−1 … 0, K steps of the update rule on

        log p̃(u_t | u_{t+1}) = F(T_β(u_t), t)/s_t − ½‖u_t‖² − [t < T−1] ‖a_{t+1} u_t − u_{t+1}‖² / (2σ_{t+1}²)

    started at ``u_{t+1}``, i.e. ``step_size = √s_t``, ``energy_scale = 1/s_t``,
    ``alpha = a_{t+1}``, ``sigma = σ_{t+1}`` (:meth:`hebm.DiffusionSchedule.level_params`).

    ``arguments``: the keywords of :data:`hebm.sampler.record.REVERSE` (below).  The seeded stream's step
    counter runs across levels: level j = T−1−t uses steps ``j·K … j·K+K−1``; ũ_T, when not given,
    is ``batch`` chains of stream 1 of the same seed.  Returns ``ũ_0``, and with ``return_levels``
    also the list ``[ũ_T, …, ũ_0]``, in the structure of ``u_T`` (a tensor or a list of layers).
    ``metropolis``: every level's steps Metropolis-adjusted (:func:`langevin_ref`; ``uniforms``
    ``[T·K, B]`` with explicit noise, else stream 2 at the same step counter).

    Keywords:
    """
    r = check_reverse_args(prior, schedule, u_T, where="reverse_diffusion_ref", **arguments)
    levels = reverse_loop(prior, schedule, r)
    return finish_reverse(prior, schedule, r, levels, return_levels, "reverse_diffusion")


reverse_diffusion_ref.__signature__ = signature(REVERSE, ("prior", "schedule"), (("return_levels", False),))
reverse_diffusion_ref.__doc__ += describe(REVERSE)


def finish_reverse(prior: HierarchicalPrior, schedule, r: ReverseArgs, levels: list, return_levels: bool, what: str):
    """``ũ_0`` (and the levels) in the caller's structure, with the divergence check of the last level."""
    check_result(level_args(r, schedule, schedule.T - 1, levels[-2]), levels[-1], what)
    levels = [x.detach() for x in levels]
    as_layers = (lambda x: prior.split(x)) if r.as_list else (lambda x: x)
    out = as_layers(levels[-1])
    return (out, [as_layers(x) for x in levels]) if return_levels else out


def langevin_z_ref(
    prior: HierarchicalPrior,
    z: Latents,
    *,
    n_steps: int,
    step_size,
    noise_scale=1.0,
    x: Optional[torch.Tensor] = None,
    decoder=None,
    sigma_x: float = 0.3,
    seed: Optional[int] = None,
    noise: Optional[torch.Tensor] = None,
    return_info: bool = False,
    check: str = "warn",
):
    """The authors' z-space sampler of paper 1 (docs/papers.md B §2.3), for comparison: the same
    update rule on

        prior target      log p̃(z) = Σ_i f_i(z_i) + log p_β(z)
        posterior target  log p̃(z | x) = prior target − ‖x − g(z̃)‖² / (2 σ_x²)

    (posterior when ``x`` and ``decoder`` (the flat latents z̃ ``[B, D]`` → x) are given).  Same noise conventions as
    :func:`langevin_ref` (seeded Philox on z's flat layout, or explicit ``[K, B, D]``).
    """
    a = check_langevin_args(prior, z, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale,
                            seed=seed, noise=noise, check=check)
    if (x is None) != (decoder is None):
        raise ValueError("the posterior target needs both x and decoder")
    if x is not None and (not isinstance(x, torch.Tensor) or x.shape[0] != a.B):
        raise ValueError(f"x must be a tensor with one row per chain ({a.B}), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def log_pi(zz):
        logp = prior.energy(zz) + prior.log_p_beta(zz)
        if x is not None:
            logp = logp - (x - decoder(zz)).flatten(1).pow(2).sum(1) / (2 * sigma_x**2)
        return logp

    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        half_d2, noise_amp = step_coefficients(a)
        zc, logs = a.u.clone(), []
        for k in range(a.n_steps):
            zc, logp = ref_step(log_pi, zc, step_noise(a, k), half_d2, noise_amp)
            logs.append(logp)
    check_result(a, zc, "langevin_z_ref")
    info = {"backend": "ref", "precision": precision_of(zc), "log_density": torch.stack(logs) if logs else None}
    return finish(prior, a, zc, info, return_info)


__all__ = ["adapt_step_size", "langevin_loop", "langevin_ref", "mala_step", "run_chain", "step_coefficients",
           "step_noise", "step_uniform", "target", "langevin_z_ref", "ref_step", "reverse_diffusion_ref", "reverse_loop"]
