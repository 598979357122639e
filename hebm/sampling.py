"""Langevin samplers: the eager reference, the fused drop-in, whole reverse diffusions.

The one update rule of hebm (every backend implements exactly this):

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,        ε ~ N(0, I),   K = n_steps times,

    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

with δ = ``step_size``, c = ``noise_scale``, λ = ``energy_scale``, a = ``alpha``, σ = ``sigma``
(each a scalar or a per-chain ``[B]`` tensor; ``t`` an int or ``[B]`` integer levels).  Paper 2
writes the step in variance form ``u + (s/2)∇ + √s ξ``: pass ``step_size = √s``.

ε is the explicit ``noise[k]`` (``[K, B, D]``) or, given ``seed``, the counter-based
Philox4x32-10 stream of :mod:`hebm.philox` at step ``step_offset + k`` for chain
``chain_ids[b]`` — so a chain's trajectory depends neither on its batch nor on the backend.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from .philox import STREAM_INIT, default_chain_ids, philox_normal
from .prior import HierarchicalPrior

Latents = Union[torch.Tensor, Sequence[torch.Tensor]]

BACKENDS = ("auto", "ref", "cpu", "triton", "cuda", "graph")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")


@dataclass
class LangevinArgs:
    """Checked, normalised arguments shared by every backend.

    ``u`` is flat ``[B, D]`` and contiguous; every per-chain parameter is a ``[B]`` tensor of
    ``u``'s dtype on ``u``'s device (``t`` int64, ``chain_ids`` int64); ``u_next``/``alpha``/
    ``sigma`` are None when the kernel term is off; exactly one of ``noise``/``seed`` is set.
    """

    u: torch.Tensor
    n_steps: int
    step_size: torch.Tensor
    noise_scale: torch.Tensor
    energy_scale: torch.Tensor
    t: Optional[torch.Tensor]
    u_next: Optional[torch.Tensor]
    alpha: Optional[torch.Tensor]
    sigma: Optional[torch.Tensor]
    seed: Optional[int]
    chain_ids: torch.Tensor
    noise: Optional[torch.Tensor]
    step_offset: int = 0
    as_list: bool = False
    extras: dict = field(default_factory=dict)

    @property
    def B(self) -> int:
        return self.u.shape[0]

    @property
    def D(self) -> int:
        return self.u.shape[1]

    def step_noise(self, k: int) -> torch.Tensor:
        """ε of step k (``[B, D]``, ``u``'s dtype)."""
        if self.noise is not None:
            return self.noise[k]
        eps = philox_normal(self.seed, self.chain_ids, self.step_offset + k, self.D, device=self.u.device)
        return eps.to(self.u.dtype)


def _fmt(x) -> str:
    return f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else repr(x)


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; expected finite values")


def _as_int(name: str, x, what: str) -> int:
    """An integer argument: Python/NumPy ints and one-element integer tensors; floats (which
    would silently truncate) and bools are refused."""
    if isinstance(x, bool) or (isinstance(x, torch.Tensor) and (x.numel() != 1 or x.dtype.is_floating_point
                                                                 or x.dtype == torch.bool)):
        raise TypeError(f"{name} must be {what}, got {x!r}")
    try:
        return int(operator.index(x.reshape(()) if isinstance(x, torch.Tensor) else x))
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {x!r}") from None


def _per_chain(name: str, x, u: torch.Tensor, *, positive: bool = False, allow_zero: bool = True) -> torch.Tensor:
    B = u.shape[0]
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {_fmt(x)}")
        if x.device != u.device:
            raise ValueError(f"{name} is on {x.device} but u is on {u.device}; put them on one device")
        if x.dim() == 1 and x.shape[0] == B:
            out = x.to(u.dtype)
        elif x.numel() == 1 and x.dim() <= 1:
            out = x.reshape(()).to(u.dtype).expand(B)
        else:
            raise ValueError(f"{name} must be a scalar or a per-chain tensor of shape [{B}], got {_fmt(x)}")
    else:
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {x!r}") from None
        out = torch.full((B,), v, dtype=u.dtype, device=u.device)
    _check_finite(name, out)
    if positive:
        bad = (out < 0) if allow_zero else (out <= 0)
        if bool(bad.any()):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got min {float(out.min()):g}")
    return out.contiguous()


def check_langevin_args(
    prior: HierarchicalPrior,
    u: Latents,
    *,
    n_steps,
    step_size,
    noise_scale=1.0,
    energy_scale=1.0,
    t=None,
    u_next=None,
    alpha=None,
    sigma=None,
    seed=None,
    chain_ids=None,
    noise=None,
    step_offset: int = 0,
) -> LangevinArgs:
    """Validate the sampler arguments once, with errors that name the argument."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    as_list = not isinstance(u, torch.Tensor)
    if as_list:
        if not isinstance(u, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in u):
            raise TypeError("u must be a tensor [B, D] or a list of per-layer tensors [B, d_i]")
        parts = prior.split(u)
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"the per-layer tensors of u have different batch sizes: {[p.shape[0] for p in parts]}")
        if len({(p.dtype, p.device) for p in parts}) != 1:
            raise ValueError("the per-layer tensors of u must share one dtype and device")
        u = torch.cat(parts, 1)
    if u.dim() != 2 or u.shape[1] != prior.D:
        raise ValueError(f"u must have shape [B, D] with D = {prior.D} (layers {prior.dims}), got {_fmt(u)}")
    if u.shape[0] < 1:
        raise ValueError("u has no chains (B = 0)")
    if u.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"u must be float32 or float64, got {u.dtype}")
    p0 = next(prior.parameters(), None)
    if p0 is not None:
        if p0.dtype != u.dtype:
            raise TypeError(f"u is {u.dtype} but the prior's parameters are {p0.dtype}; convert one (e.g. prior.to({u.dtype}))")
        if p0.device != u.device:
            raise ValueError(f"u is on {u.device} but the prior is on {p0.device}; move one of them")
    _check_finite("u", u)
    n_steps = _as_int("n_steps", n_steps, "an int >= 0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    step_offset = _as_int("step_offset", step_offset, "an int >= 0")
    if step_offset < 0:
        raise ValueError(f"step_offset must be >= 0, got {step_offset}")

    step = _per_chain("step_size", step_size, u, positive=True, allow_zero=True)
    c = _per_chain("noise_scale", noise_scale, u, positive=True, allow_zero=True)
    lam = _per_chain("energy_scale", energy_scale, u)

    if prior.n_levels is None:
        if t is not None:
            raise ValueError("t was given but the prior's energies are not level-conditioned (n_levels=None)")
        tt = None
    else:
        if t is None:
            raise ValueError(f"the prior's energies are level-conditioned: pass t (an int in [0, {prior.n_levels - 1}] or an integer tensor [B])")
        if isinstance(t, torch.Tensor):
            if t.dtype.is_floating_point or t.dtype == torch.bool:
                raise TypeError(f"t must be an integer level or an integer tensor [B], got {_fmt(t)}")
            if t.device != u.device:
                raise ValueError(f"t is on {t.device} but u is on {u.device}")
            if t.dim() == 1 and t.shape[0] == u.shape[0]:
                tt = t.long()
            elif t.numel() == 1:
                tt = t.reshape(()).long().expand(u.shape[0])
            else:
                raise ValueError(f"t must be an int or an integer tensor of shape [{u.shape[0]}], got {_fmt(t)}")
        else:
            if isinstance(t, float) and not t.is_integer():
                raise TypeError(f"t must be an integer level, got {t}")
            tt = torch.full((u.shape[0],), int(t), dtype=torch.long, device=u.device)
        if int(tt.min()) < 0 or int(tt.max()) >= prior.n_levels:
            raise ValueError(f"t must lie in [0, {prior.n_levels - 1}], got values in [{int(tt.min())}, {int(tt.max())}]")
        tt = tt.contiguous()

    if u_next is not None:
        if not isinstance(u_next, torch.Tensor):
            u_next = torch.cat(prior.split(u_next), 1)
        if u_next.shape != u.shape:
            raise ValueError(f"u_next must have the shape of u, {tuple(u.shape)}, got {_fmt(u_next)}")
        if u_next.dtype != u.dtype or u_next.device != u.device:
            raise TypeError(f"u_next must match u's dtype and device ({u.dtype}, {u.device}), got {_fmt(u_next)}")
        _check_finite("u_next", u_next)
        if alpha is None or sigma is None:
            raise ValueError("u_next was given: the kernel term also needs alpha and sigma")
        a = _per_chain("alpha", alpha, u)
        s = _per_chain("sigma", sigma, u, positive=True, allow_zero=False)
        u_next = u_next.contiguous()
    else:
        if alpha is not None or sigma is not None:
            raise ValueError("alpha/sigma were given without u_next: pass u_next to switch the kernel term on")
        a = s = None

    if (noise is None) == (seed is None):
        raise ValueError("pass exactly one of noise (a [K, B, D] tensor) or seed (an int in [0, 2**64))")
    if noise is not None:
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"noise must be a tensor [K, B, D], got {type(noise).__name__}")
        if noise.shape != (n_steps, *u.shape):
            raise ValueError(f"noise must have shape [K, B, D] = [{n_steps}, {u.shape[0]}, {u.shape[1]}], got {_fmt(noise)}")
        if noise.device != u.device:
            raise ValueError(f"noise is on {noise.device} but u is on {u.device}")
        if not noise.dtype.is_floating_point:
            raise TypeError(f"noise must be a floating tensor, got {noise.dtype}")
        noise = noise.to(u.dtype).contiguous()
        _check_finite("noise", noise)
        if chain_ids is not None:
            raise ValueError("chain_ids select seeded noise; they mean nothing with an explicit noise tensor")
        ids = default_chain_ids(u.shape[0], None, u.device)
    else:
        seed = _as_int("seed", seed, "an int in [0, 2**64)")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if chain_ids is not None:
            if not isinstance(chain_ids, torch.Tensor):
                chain_ids = torch.as_tensor(chain_ids)
            if chain_ids.dtype.is_floating_point or chain_ids.dtype == torch.bool or chain_ids.is_complex() \
                    or chain_ids.shape != (u.shape[0],):
                raise ValueError(f"chain_ids must be an integer tensor of shape [{u.shape[0]}], got {_fmt(chain_ids)}")
            if int(chain_ids.min()) < 0 or int(chain_ids.max()) >= 2**32:
                raise ValueError("chain_ids must lie in [0, 2**32)")
            chain_ids = chain_ids.to(u.device)
        ids = default_chain_ids(u.shape[0], chain_ids, u.device).contiguous()
    return LangevinArgs(
        u=u.contiguous(), n_steps=n_steps, step_size=step, noise_scale=c, energy_scale=lam, t=tt,
        u_next=u_next, alpha=a, sigma=s, seed=seed, chain_ids=ids, noise=noise,
        step_offset=step_offset, as_list=as_list,
    )


def _finish(prior: HierarchicalPrior, args: LangevinArgs, u: torch.Tensor, info: dict, return_info: bool):
    out = prior.split(u) if args.as_list else u
    return (out, info) if return_info else out


# ---------------------------------------------------------------------------------- reference
def ref_step_coefficients(a: LangevinArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ²/2, c·δ)`` as ``[B, 1]`` columns: the per-chain factors of :func:`ref_step`."""
    return (0.5 * a.step_size * a.step_size)[:, None], (a.noise_scale * a.step_size)[:, None]


def ref_step(prior: HierarchicalPrior, a: LangevinArgs, u: torch.Tensor, eps: torch.Tensor,
             half_d2: torch.Tensor, noise_amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the update rule, eager autograd: ``(u + (δ²/2)·∇log π(u) + c·δ·ε, log π(u))``.

    The single statement of the step: the reference loop, the CUDA-graph backend (which captures
    it) and the ``compile`` benchmark provider all call this.  ``a`` supplies the target's
    per-chain parameters (``energy_scale, t, u_next, alpha, sigma``); ``half_d2, noise_amp``
    come from :func:`ref_step_coefficients`.  No host synchronisation (CUDA-graph safe as long
    as the prior's ``log_density`` is).
    """
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = prior.log_density(x, energy_scale=a.energy_scale, t=a.t, u_next=a.u_next, alpha=a.alpha, sigma=a.sigma)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return u + half_d2 * grad + noise_amp * eps, logp.detach()


def _ref_loop(prior: HierarchicalPrior, a: LangevinArgs, trace: bool):
    """The update rule, eager autograd: one source of truth for every backend's parity test."""
    u = a.u.detach().clone()
    half_d2, noise_amp = ref_step_coefficients(a)
    logs = []
    for k in range(a.n_steps):
        u, logp = ref_step(prior, a, u, a.step_noise(k), half_d2, noise_amp)
        if trace:
            logs.append(logp)
    log_density = None
    if trace:  # [K, B]; K = 0 gives an empty [0, B] (torch.stack refuses an empty list)
        log_density = torch.stack(logs) if logs else a.u.new_zeros(0, a.B)
    return u.detach(), log_density


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
):
    """K steps of ũ-space Langevin, eager PyTorch autograd (the reference every backend matches).

        u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε

        log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

    Args:
        prior: a :class:`hebm.HierarchicalPrior`.
        u: initial state, ``[B, D]`` (layers bottom-up) or a list of ``[B, d_i]``; returned in
            the same structure.  Not modified.
        n_steps: K.
        step_size: δ (scalar or ``[B]``); variance form ``s`` ↦ ``δ = √s``.
        noise_scale: c (1 for Langevin, 0 for gradient ascent).
        energy_scale: λ (1 for paper 1, ``1/s_t`` for paper 2).
        t: level of a level-conditioned prior (int or ``[B]``).
        u_next, alpha, sigma: the recovery-kernel term; on when ``u_next`` is given.
        seed, chain_ids, step_offset: seeded Philox noise (see :mod:`hebm.philox`).
        noise: explicit ε, ``[K, B, D]`` (instead of ``seed``).
        return_info: also return ``{"backend", "log_density" [K, B]}``, the target at the state
            entering each step.
    """
    a = check_langevin_args(
        prior, u, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale, energy_scale=energy_scale,
        t=t, u_next=u_next, alpha=alpha, sigma=sigma, seed=seed, chain_ids=chain_ids, noise=noise,
        step_offset=step_offset,
    )
    out, logs = _ref_loop(prior, a, trace=return_info)
    return _finish(prior, a, out, {"backend": "ref", "precision": "fp32" if out.dtype == torch.float32 else "fp64", "log_density": logs}, return_info)


# ---------------------------------------------------------------------------------- fused
def langevin_fused(
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
    backend: str = "auto",
    precision: str = "auto",
):
    """Drop-in for :func:`langevin_ref` (same arguments, same result to float rounding), run by a
    fused backend: ``"cpu"`` (C++), ``"triton"``, ``"cuda"``, ``"graph"`` (CUDA-graph replay) or
    ``"ref"``.  ``"auto"`` picks the fastest available one for the tensors' device and network,
    falling back to the reference with one warning.  ``precision``: ``"auto"`` follows
    ``torch.get_float32_matmul_precision()`` ("highest" → exact fp32, else TF32), or
    ``"fp32"``/``"tf32"``/``"bf16"`` explicitly.  ``return_info["backend"]`` names the backend used.
    """
    from . import backends

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    a = check_langevin_args(
        prior, u, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale, energy_scale=energy_scale,
        t=t, u_next=u_next, alpha=alpha, sigma=sigma, seed=seed, chain_ids=chain_ids, noise=noise,
        step_offset=step_offset,
    )
    name = backends.choose(prior, a, backend)
    prec = backends.resolve_precision(precision, a.u)
    if name == "ref":
        out, logs = _ref_loop(prior, a, trace=return_info)
        prec = "fp32" if out.dtype == torch.float32 else "fp64"
    else:
        out, logs = backends.run(name, prior, a, precision=prec, trace=return_info)
    return _finish(prior, a, out, {"backend": name, "precision": prec, "log_density": logs}, return_info)


# ---------------------------------------------------------------------------------- reverse diffusion
def initial_noise(seed: int, batch: int, D: int, *, chain_ids=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """ũ_T ~ N(0, I) from the seeded stream (stream 1, step 0), chain by chain."""
    ids = default_chain_ids(batch, chain_ids, device)
    return philox_normal(seed, ids, 0, D, stream=STREAM_INIT, device=device).to(dtype)


def reverse_diffusion(
    prior: HierarchicalPrior,
    schedule,
    u_T: Optional[torch.Tensor] = None,
    *,
    n_steps: int,
    batch: Optional[int] = None,
    seed: Optional[int] = None,
    chain_ids=None,
    noise: Optional[torch.Tensor] = None,
    noise_scale=1.0,
    backend: str = "ref",
    precision: str = "auto",
    return_levels: bool = False,
):
    """Sample the ũ-space diffusion of paper 2: ũ_T ~ N(0, I), then levels t = T−1 … 0, each K
    Langevin steps on ``p̃(u_t | u_{t+1})`` initialised at ``u_{t+1}`` (PAPERS.md B §3.5).

    Noise: ``noise`` ``[T·K, B, D]`` (level T−1 first) or ``seed`` (step counter runs across
    levels: level j = T−1−t uses steps ``j·K … j·K+K−1``; ũ_T is stream 1 of the same seed
    when not given).  Returns ``ũ_0`` (and the list ``[ũ_T, …, ũ_0]`` with ``return_levels``).
    Backends that fuse the whole diffusion into one launch do so; the others loop here.
    """
    from . import backends

    if prior.n_levels is None or prior.n_levels < schedule.T:
        raise ValueError(f"the prior must be level-conditioned with n_levels >= T = {schedule.T}, got n_levels={prior.n_levels}")
    p0 = next(prior.parameters())
    if u_T is None:
        if seed is None or batch is None:
            raise ValueError("pass u_T, or batch and seed to draw ũ_T from the seeded stream")
        u_T = initial_noise(seed, batch, prior.D, chain_ids=chain_ids, device=p0.device, dtype=p0.dtype)
    if noise is not None and noise.shape[0] != schedule.T * n_steps:
        raise ValueError(f"noise must have shape [T*K, B, D] = [{schedule.T * n_steps}, ...], got {tuple(noise.shape)}")
    fused = backends.run_reverse_diffusion(prior, schedule, u_T, n_steps=n_steps, seed=seed, chain_ids=chain_ids,
                                           noise=noise, noise_scale=noise_scale, backend=backend,
                                           precision=precision, return_levels=return_levels)
    if fused is not None:
        return fused
    levels = [u_T]
    u = u_T
    for j, t in enumerate(range(schedule.T - 1, -1, -1)):
        kw = schedule.langevin_kwargs(t, u)
        step_noise = None if noise is None else noise[j * n_steps : (j + 1) * n_steps]
        run = langevin_ref if backend == "ref" else langevin_fused
        extra = {} if backend == "ref" else {"backend": backend, "precision": precision}
        u = run(prior, u, n_steps=n_steps, noise_scale=noise_scale, seed=None if noise is not None else seed,
                chain_ids=chain_ids if noise is None else None, noise=step_noise,
                step_offset=0 if noise is not None else j * n_steps, **kw, **extra)
        levels.append(u)
    return (u, levels) if return_levels else u


# ---------------------------------------------------------------------------------- z-space (authors)
def langevin_z_ref(
    prior: HierarchicalPrior,
    z: Latents,
    *,
    n_steps: int,
    step_size: float,
    noise_scale: float = 1.0,
    x: Optional[torch.Tensor] = None,
    decoder=None,
    sigma_x: float = 0.3,
    seed: Optional[int] = None,
    noise: Optional[torch.Tensor] = None,
    return_info: bool = False,
):
    """The authors' z-space sampler of paper 1 (PAPERS.md B §2.3), for comparison:

        z ← z + (δ²/2) ∇_z log p̃(z) + c·δ·ε,
        prior target      log p̃(z) = Σ_i f_i(z_i) + log p_β(z)
        posterior target  log p̃(z | x) = prior target − ‖x − g(z_1)‖² / (2 σ_x²)

    (posterior when ``x`` and ``decoder`` (z_1 → x) are given).  Same noise conventions as
    :func:`langevin_ref` (seeded Philox on z's flat layout, or explicit ``[K, B, D]``).
    """
    as_list = not isinstance(z, torch.Tensor)
    flat = torch.cat(prior.split(z), 1) if as_list else z
    a = check_langevin_args(prior, flat, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale,
                            seed=seed, noise=noise)
    if (x is None) != (decoder is None):
        raise ValueError("the posterior target needs both x and decoder")
    if x is not None and x.shape[0] != a.B:
        raise ValueError(f"x has {x.shape[0]} rows but z has {a.B}")
    zc = a.u.clone()
    half_d2 = (0.5 * a.step_size**2)[:, None]
    amp = (a.noise_scale * a.step_size)[:, None]
    logs = []
    for k in range(a.n_steps):
        with torch.enable_grad():
            zz = zc.detach().requires_grad_(True)
            logp = prior.energy(zz) + prior.log_p_beta(zz)
            if x is not None:
                z1 = zz[:, : prior.dims[0]]
                logp = logp - (x - decoder(z1)).flatten(1).pow(2).sum(1) / (2 * sigma_x**2)
            (g,) = torch.autograd.grad(logp.sum(), zz)
        logs.append(logp.detach())
        zc = zc + half_d2 * g + amp * a.step_noise(k)
    out = prior.split(zc) if as_list else zc
    return (out, {"backend": "ref", "log_density": torch.stack(logs) if logs else None}) if return_info else out

