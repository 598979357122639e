"""``backend="cpu"``: the fused C++ sampler (csrc/cpu, op ``torch.ops.hebm.langevin``).

The whole K-step loop — T_β forward, energies forward and backward, backward through T_β, the
Gaussian and kernel terms, the noise and the update — runs in one C++ call, parallel over row
chunks of chains (the extension's own std::thread split: ATen's parallel_for ran serially in
this build, benchmarks/NOTES.md), weights packed once per call.  A whole reverse
diffusion (all levels) is one call too.  The extension is built by ``setup.py`` or compiled on
first use (:mod:`hebm.backends._build`); when that fails, ``unavailable()`` says why and how to
fix it, and ``backend="auto"`` falls back to the reference.
"""
from __future__ import annotations

import threading
import weakref
from typing import Optional

import torch

from . import _build
from .pack import PackedPrior, pack_prior, supported_network

NAME = "cpu"

_PACK_LOCK = threading.Lock()
_PACK_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _ops():
    mod, why = _build.load_cpu_ops()
    if mod is None:
        return None, why
    return torch.ops.hebm, None


def set_num_threads(n: Optional[int]) -> None:
    """Threads of the C++ kernel.  ``None`` or 0: follow ``torch.get_num_threads()`` (the
    default).  A training loop that keeps torch's intra-op pool at one thread (its small eager
    ops run faster that way) can still give the kernel every core — ``hebm.train`` does."""
    n = 0 if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    mod, why = _build.load_cpu_ops()
    if mod is None:
        from . import BackendUnavailable

        raise BackendUnavailable(f"the C++ CPU extension is unavailable: {why}")
    mod.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the C++ kernel uses now (1 when the extension is unavailable)."""
    mod, _ = _build.load_cpu_ops()
    return int(mod.get_num_threads()) if mod is not None else 1


def unavailable() -> Optional[str]:
    """None when the C++ extension loads (compiling it on first use), else why + the fix."""
    _, why = _ops()
    if why is None:
        return None
    return f"the C++ CPU extension is unavailable: {why}"


def unsupported(prior, args) -> Optional[str]:
    why = supported_network(prior)
    if why is not None:
        return why
    u = args.u
    if u.device.type != "cpu":
        return f"backend 'cpu' runs on CPU tensors, got u on {u.device}; use backend='auto' or move the tensors"
    if u.dtype not in (torch.float32, torch.float64):
        return f"backend 'cpu' takes float32 or float64, got {u.dtype}"
    for p in list(prior.parameters()) + list(prior.buffers()):
        if p.device.type != "cpu":
            return f"backend 'cpu' needs the prior on the CPU, found a tensor on {p.device}"
    return None


def _version_key(prior) -> tuple:
    ts = list(prior.parameters()) + list(prior.buffers())
    return tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in ts)


def packed(prior, dtype: torch.dtype) -> PackedPrior:
    """``pack_prior(prior, dtype)``, cached while no parameter or buffer changed (in-place
    updates bump ``_version``; new tensors change ``data_ptr``)."""
    key = (_version_key(prior), dtype)
    with _PACK_LOCK:
        hit = _PACK_CACHE.get(prior)
        if hit is not None and hit[0] == key:
            return hit[1]
    pk = pack_prior(prior, dtype=dtype, device="cpu")
    with _PACK_LOCK:
        _PACK_CACHE[prior] = (key, pk)
    return pk


def _struct(pk: PackedPrior) -> dict:
    return dict(
        params=pk.params,
        dims=list(pk.dims),
        layout=pk.layout.reshape(-1).tolist(),
        mlps=pk.mlps.reshape(-1).tolist(),
        act_params=[float(x) for x in pk.act_params.tolist()],
        has_energy=pk.has_energy,
        n_levels=int(pk.n_levels),
        sigma_min=float(pk.sigma_min),
    )


def _keys(seed: Optional[int]) -> tuple:
    if seed is None:
        return 0, 0
    seed = int(seed)
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF


def _check_prec(precision: str) -> str:
    return precision if precision in ("fp32", "tf32", "bf16", "fp64") else "fp32"


def run(prior, args, *, precision: str, trace: bool):
    """K steps for the checked ``args`` (:class:`hebm.sampling.LangevinArgs`).  The CPU computes
    exactly in the tensors' dtype whatever ``precision`` says."""
    ops, why = _ops()
    if ops is None:
        from . import BackendUnavailable

        raise BackendUnavailable(f"the C++ CPU extension is unavailable: {why}")
    u = args.u.contiguous()
    pk = packed(prior, u.dtype)
    k0, k1 = _keys(args.seed)
    out, logd = ops.langevin(
        u, **_struct(pk),
        step_size=args.step_size.contiguous(), noise_scale=args.noise_scale.contiguous(),
        energy_scale=args.energy_scale.contiguous(),
        t=None if args.t is None else args.t.contiguous(),
        u_next=None if args.u_next is None else args.u_next.contiguous(),
        alpha=None if args.alpha is None else args.alpha.contiguous(),
        sigma=None if args.sigma is None else args.sigma.contiguous(),
        noise=None if args.noise is None else args.noise.contiguous(),
        key0=k0, key1=k1, chain_ids=args.chain_ids.contiguous(), n_steps=int(args.n_steps),
        step_offset=int(args.step_offset), trace=bool(trace), precision=_check_prec(precision),
    )
    return out, (logd if trace else None)


def level_params(schedule, prior, u_T: torch.Tensor) -> dict:
    """Per-level scalars of the reverse diffusion (levels t = T−1 … 0), computed exactly as
    :meth:`hebm.DiffusionSchedule.langevin_kwargs` does (then rounded to u's dtype)."""
    lt, step, lam, alpha, sigma = [], [], [], [], []
    probe = u_T[:1]
    for t in range(schedule.T - 1, -1, -1):
        kw = schedule.langevin_kwargs(t, probe)
        lt.append(t)
        step.append(float(kw["step_size"][0]))
        lam.append(float(kw["energy_scale"][0]))
        if "u_next" in kw:
            alpha.append(float(kw["alpha"][0]))
            sigma.append(float(kw["sigma"][0]))
        else:
            alpha.append(0.0)
            sigma.append(1.0)
    return dict(level_t=lt, level_step=step, level_energy_scale=lam, level_alpha=alpha, level_sigma=sigma)


def run_reverse_diffusion(prior, schedule, u_T, *, n_steps, seed, chain_ids, noise, noise_scale, precision,
                          return_levels):
    """The whole reverse diffusion (levels T−1 … 0, K steps each) in one C++ call; returns what
    :func:`hebm.reverse_diffusion` returns (``u_0`` or ``(u_0, [u_T, …, u_0])``)."""
    from ..sampling import check_langevin_args

    ops, why = _ops()
    if ops is None:
        from . import BackendUnavailable

        raise BackendUnavailable(f"the C++ CPU extension is unavailable: {why}")
    if (noise is None) == (seed is None):
        raise ValueError("pass exactly one of noise (a [T*K, B, D] tensor) or seed (an int in [0, 2**64))")
    K = int(n_steps)
    # the reference checks every level's arguments; check them once here the same way
    probe = check_langevin_args(prior, u_T, n_steps=schedule.T * K, step_size=1.0, noise_scale=noise_scale,
                                t=0, seed=seed, chain_ids=chain_ids, noise=noise)
    u = probe.u
    out = ops.reverse_diffusion(
        u, **_struct(packed(prior, u.dtype)), **level_params(schedule, prior, u),
        noise_scale=probe.noise_scale, noise=probe.noise, key0=_keys(seed)[0], key1=_keys(seed)[1],
        chain_ids=probe.chain_ids, n_steps=K, return_levels=bool(return_levels), precision=_check_prec(precision),
    )
    if return_levels:
        levels = list(out.unbind(0))
        return levels[-1], levels
    return out
