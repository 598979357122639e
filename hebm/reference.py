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
Philox4x32-10 stream of :mod:`hebm.philox` at step ``step_offset + k`` for chain
``chain_ids[b]`` — so a chain's trajectory depends neither on its batch nor on the backend.

Three samplers, each one argument check and then its loop:

* :func:`langevin_ref` — K steps on the target above (both papers' prior chains);
* :func:`reverse_diffusion_ref` — paper 2's sampler: ũ_T ~ N(0, I), then for t = T−1 … 0,
  K steps on ``p̃(u_t | u_{t+1})`` started at ``u_{t+1}`` (docs/papers.md B §3.5);
* :func:`langevin_z_ref` — the authors' z-space sampler of paper 1, for comparison.

The fused backends (:func:`hebm.langevin_fused`) are tested against these.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from .args import (Latents, LangevinArgs, ReverseArgs, check_langevin_args, check_result, check_reverse_args, finish,
                   level_args)
from .prior import HierarchicalPrior


def ref_step(target: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, eps: torch.Tensor,
             half_d2: torch.Tensor, noise_amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the update rule, eager autograd: ``(u + (δ²/2)·∇log π(u) + c·δ·ε, log π(u))``.

    ``target`` maps ``[B, D]`` states to ``log π`` ``[B]``; ``half_d2``, ``noise_amp`` are the
    ``[B, 1]`` columns of :meth:`hebm.args.LangevinArgs.step_coefficients`.  The single statement of
    the step: every reference loop below, the CUDA-graph backend (which captures it) and the
    ``compile`` benchmark provider call this.  No host synchronisation (CUDA-graph safe as long
    as ``target`` is).
    """
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = target(x)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return u + half_d2 * grad + noise_amp * eps, logp.detach()


def _outside_inference_mode(a):
    """``a`` with its tensors made ordinary where they are inference tensors (a sampler called
    inside ``torch.inference_mode()``; autograd refuses inference tensors)."""
    repl = {f.name: v.clone() for f in dataclasses.fields(a)
            if isinstance(v := getattr(a, f.name), torch.Tensor) and v.is_inference()}
    return dataclasses.replace(a, **repl) if repl else a


def langevin_loop(prior: HierarchicalPrior, a: LangevinArgs, *, trace: bool = False):
    """The K-step loop of :func:`langevin_ref` on checked arguments: ``(u_K, log π trace [K, B] or None)``."""
    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        target = a.target(prior)
        half_d2, noise_amp = a.step_coefficients()
        u, logs = a.u.clone(), []
        for k in range(a.n_steps):
            u, logp = ref_step(target, u, a.step_noise(k), half_d2, noise_amp)
            if trace:
                logs.append(logp)
        # K = 0 gives an empty [0, B] trace (torch.stack refuses an empty list)
        log_density = (torch.stack(logs) if logs else a.u.new_zeros(0, a.B)) if trace else None
    return u.detach(), log_density


def precision_of(x: torch.Tensor) -> str:
    return "fp64" if x.dtype == torch.float64 else "fp32"


def langevin_ref(
    prior: HierarchicalPrior,
    u: Latents,
    *,
    n_steps: int,
    step_size,
    noise_scale=1.0,
    energy_scale=1.0,
    t=None,
    u_next=None,
    alpha=None,
    sigma=None,
    seed: Optional[int] = None,
    chain_ids=None,
    noise: Optional[torch.Tensor] = None,
    step_offset: int = 0,
    return_info: bool = False,
    check: str = "warn",
):
    """K steps of ũ-space Langevin, eager PyTorch autograd (the reference every backend matches):

        u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
        log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

    Args:
        prior: a :class:`hebm.HierarchicalPrior`.
        u: initial state, ``[B, D]`` (layers bottom-up) or a list of ``[B, d_i]``; returned in
            the same structure, detached.  Not modified.
        n_steps: K.
        step_size: δ (scalar or ``[B]``); variance form ``s`` ↦ ``δ = √s``.
        noise_scale: c (1 for Langevin, 0 for gradient ascent).
        energy_scale: λ (1 for paper 1, ``1/s_t`` for paper 2).
        t: level of a level-conditioned prior (int or ``[B]``).
        u_next, alpha, sigma: the recovery-kernel term; on when ``u_next`` is given.
        seed, chain_ids, step_offset: seeded Philox noise (see :mod:`hebm.philox`);
            ``step_offset + n_steps`` ≤ 2³² (a 32-bit step counter).
        noise: explicit ε, ``[K, B, D]`` (instead of ``seed``).
        return_info: also return ``{"backend", "precision", "log_density" [K, B]}``, the target
            at the state entering each step.
        check: chains that end at NaN/Inf give a warning naming the knob (``"warn"``), a
            :class:`hebm.DivergenceError` (``"raise"``), or nothing (``"off"``).
    """
    a = check_langevin_args(
        prior, u, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale, energy_scale=energy_scale,
        t=t, u_next=u_next, alpha=alpha, sigma=sigma, seed=seed, chain_ids=chain_ids, noise=noise,
        step_offset=step_offset, check=check,
    )
    out, logs = langevin_loop(prior, a, trace=return_info)
    check_result(a, out, "langevin_ref")
    return finish(prior, a, out, {"backend": "ref", "precision": precision_of(out), "log_density": logs}, return_info)


def reverse_loop(prior: HierarchicalPrior, schedule, r: ReverseArgs, *, run=langevin_loop):
    """The level loop of :func:`reverse_diffusion_ref` on checked arguments: ``[ũ_T, …, ũ_0]``.
    ``run(prior, level_args)`` runs one level's K steps (the reference loop, or a backend's)."""
    u, levels = r.u, [r.u]
    for j in range(schedule.T):  # level t = T−1−j
        u, _ = run(prior, level_args(r, schedule, j, u))
        levels.append(u)
    return levels


def reverse_diffusion_ref(
    prior: HierarchicalPrior,
    schedule,
    u_T: Optional[Latents] = None,
    *,
    n_steps: int,
    batch: Optional[int] = None,
    seed: Optional[int] = None,
    chain_ids=None,
    noise: Optional[torch.Tensor] = None,
    noise_scale=1.0,
    return_levels: bool = False,
    check: str = "warn",
):
    """Paper 2's sampler in ũ-space (docs/papers.md B §3.5): ũ_T ~ N(0, I), then for
    t = T−1 … 0, K steps of the update rule on

        log p̃(u_t | u_{t+1}) = F(T_β(u_t), t)/s_t − ½‖u_t‖² − [t < T−1] ‖a_{t+1} u_t − u_{t+1}‖² / (2σ_{t+1}²)

    started at ``u_{t+1}``, i.e. ``step_size = √s_t``, ``energy_scale = 1/s_t``,
    ``alpha = a_{t+1}``, ``sigma = σ_{t+1}`` (:meth:`hebm.DiffusionSchedule.level_params`).

    Noise: ``noise`` ``[T·K, B, D]`` (level T−1 first) or ``seed`` (the step counter runs across
    levels: level j = T−1−t uses steps ``j·K … j·K+K−1``; ũ_T, when not given, is ``batch``
    chains of stream 1 of the same seed).  Returns ``ũ_0``, and with ``return_levels`` also the
    list ``[ũ_T, …, ũ_0]``, in the structure of ``u_T`` (a tensor or a list of layers).
    """
    r = check_reverse_args(prior, schedule, u_T, n_steps=n_steps, batch=batch, seed=seed, chain_ids=chain_ids,
                           noise=noise, noise_scale=noise_scale, check=check)
    levels = reverse_loop(prior, schedule, r)
    return finish_reverse(prior, schedule, r, levels, return_levels, "reverse_diffusion")


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
        posterior target  log p̃(z | x) = prior target − ‖x − g(z_1)‖² / (2 σ_x²)

    (posterior when ``x`` and ``decoder`` (z_1 → x) are given).  Same noise conventions as
    :func:`langevin_ref` (seeded Philox on z's flat layout, or explicit ``[K, B, D]``).
    """
    a = check_langevin_args(prior, z, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale,
                            seed=seed, noise=noise, check=check)
    if (x is None) != (decoder is None):
        raise ValueError("the posterior target needs both x and decoder")
    if x is not None and (not isinstance(x, torch.Tensor) or x.shape[0] != a.B):
        raise ValueError(f"x must be a tensor with one row per chain ({a.B}), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def target(zz):
        logp = prior.energy(zz) + prior.log_p_beta(zz)
        if x is not None:
            logp = logp - (x - decoder(zz[:, : prior.dims[0]])).flatten(1).pow(2).sum(1) / (2 * sigma_x**2)
        return logp

    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        half_d2, noise_amp = a.step_coefficients()
        zc, logs = a.u.clone(), []
        for k in range(a.n_steps):
            zc, logp = ref_step(target, zc, a.step_noise(k), half_d2, noise_amp)
            logs.append(logp)
    check_result(a, zc, "langevin_z_ref")
    info = {"backend": "ref", "precision": precision_of(zc), "log_density": torch.stack(logs) if logs else None}
    return finish(prior, a, zc, info, return_info)


__all__ = ["langevin_loop", "langevin_ref", "langevin_z_ref", "ref_step", "reverse_diffusion_ref", "reverse_loop"]
