"""``backend="cuda"``: the launcher of the hand-written CUDA Langevin kernel (``csrc/cuda/``).

One launch runs all K steps (and, for :func:`run_reverse_diffusion`, all T levels) of

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [cond] ‖a·u − u_next‖² / (2σ²)

as the CUDA implementation of the ``torch.ops.hebm.langevin`` / ``reverse_diffusion`` ops (schema:
``csrc/ops.cpp``, the CPU extension, loaded first).  A thread block owns 8 or 16 chains; their
state, z, gradients and MLP activations stay in shared memory (a global scratch slice when they
do not fit); weights are staged in shared memory when they fit, else read through L1/L2; products
are exact-fp32 FMA register tiles.  ``precision="tf32"``/``"bf16"`` run the same exact path (no
tensor-core path yet: the result is more accurate than asked, not faster).  float64 runs too.

Build: JIT on first use through :mod:`hebm.backends._build` (``HEBM_SKIP_CUDA_BUILD=1`` turns it
off).  Architectures: ``HEBM_CUDA_ARCH`` (e.g. ``"90"`` or ``"80;90"``; PTX of the highest is
always added), default the visible GPU's own, or ``80;90`` without a GPU.  Tuning switches read
by the launcher: ``HEBM_CUDA_ROWS=8|16``, ``HEBM_CUDA_WS=global``, ``HEBM_CUDA_STAGE=0``,
``HEBM_CUDA_STORE=0|1`` (see ``csrc/cuda/langevin_cuda.cpp``).
"""
from __future__ import annotations

import os
import weakref
from typing import Optional

import torch

from . import _build
from .pack import pack_prior, supported_network
from ..philox import seed_to_key

NAME = "cuda"

MAX_LAYERS = 16  # latent layers (csrc/cuda/hebm_cuda.h kMaxL)
MAX_LINEAR = 64  # Linear layers over all MLPs (kMaxLayers)
MAX_LEVELS = 16  # levels of a fused reverse diffusion (kMaxLevels)


def sources() -> list:
    root = _build.csrc_dir() / "cuda"
    return [str(root / "langevin_cuda.cpp"), str(root / "langevin_kernel.cu")]


arch_list = _build.cuda_arch_list
cuda_cflags = _build.cuda_cflags


def _load():
    return _build.load_extension(_build.CUDA_EXTENSION, sources(), cuda=True, extra_cflags=_build.CUDA_DEFINES,
                                 extra_cuda_cflags=cuda_cflags())


def load_emulator():
    """The extension (built for CUDA, loadable without a GPU) with ``torch.ops.hebm_cuda_emu``:
    the kernel's block code run on host threads, for CPU tests.  ``(module, None)`` or ``(None, why)``."""
    return _load()


def unavailable() -> Optional[str]:
    if not torch.cuda.is_available():
        return ("no CUDA device is visible (torch.cuda.is_available() is False); the CUDA backend needs an NVIDIA "
                "GPU and a CUDA build of torch — use backend='cpu', 'triton' or 'ref'")
    mod, why = _load()
    return None if mod is not None else why


def unsupported(prior, args) -> Optional[str]:
    why = supported_network(prior)
    if why is not None:
        return why
    u = args.u
    if u.device.type != "cuda":
        return f"u is on {u.device}: the CUDA backend needs CUDA tensors"
    if u.dtype not in (torch.float32, torch.float64):
        return f"the CUDA backend runs float32/float64, got {u.dtype}"
    L = prior.L
    if L > MAX_LAYERS:
        return f"the CUDA kernel takes at most {MAX_LAYERS} latent layers, got {L}"
    n_lin = sum(len(m.layers) for m in list(prior.conditionals) + list(prior.energies or []))
    if n_lin > MAX_LINEAR:
        return f"the CUDA kernel takes at most {MAX_LINEAR} Linear layers in all, got {n_lin}"
    return None


# ---------------------------------------------------------------------------------- packing cache
_pack_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _packed(prior, dtype, device):
    tensors = list(prior.parameters()) + list(prior.buffers())
    key = (str(device), dtype) + tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
    hit = _pack_cache.get(prior)
    if hit is not None and hit[0] == key:
        return hit[1]
    p = pack_prior(prior, dtype=dtype, device=device)
    struct = (p.params, [int(d) for d in p.dims], [int(x) for x in p.layout.reshape(-1).tolist()],
              [int(x) for x in p.mlps.reshape(-1).tolist()], [float(x) for x in p.act_params.tolist()],
              bool(p.has_energy), int(p.n_levels), float(p.sigma_min))
    try:
        _pack_cache[prior] = (key, struct)
    except TypeError:  # pragma: no cover - unhashable module
        pass
    return struct


def langevin_op_args(prior, args, *, precision: str, trace: bool) -> tuple:
    """The positional arguments of ``hebm::langevin`` for checked :class:`LangevinArgs`."""
    struct = _packed(prior, args.u.dtype, args.u.device)
    key0, key1 = seed_to_key(args.seed) if args.seed is not None else (0, 0)
    return (args.u, *struct, args.step_size, args.noise_scale, args.energy_scale, args.t, args.u_next, args.alpha,
            args.sigma, args.noise, int(key0), int(key1), args.chain_ids, int(args.n_steps), int(args.step_offset),
            bool(trace), str(precision))


def run(prior, args, *, precision, trace):
    mod, why = _load()
    if mod is None:  # pragma: no cover - unavailable() said so first
        raise RuntimeError(why)
    out, logd = torch.ops.hebm.langevin(*langevin_op_args(prior, args, precision=precision, trace=trace))
    return out, (logd if trace else None)


def reverse_op_args(prior, schedule, u_T, *, n_steps, seed, chain_ids, noise, noise_scale, precision,
                    return_levels) -> tuple:
    """The positional arguments of ``hebm::reverse_diffusion``: level j = T−1−t gets δ = √s_t,
    λ = 1/s_t, a = a_{t+1}·is_recovery[t+1] (0 at the top level: no kernel term), σ = σ_{t+1}
    (the reference's ``schedule.langevin_kwargs``), in float64 as the reference computes them."""
    from ..sampling import check_langevin_args

    T, K = schedule.T, int(n_steps)
    if T > MAX_LEVELS:
        raise ValueError(f"the CUDA kernel fuses at most {MAX_LEVELS} levels, got T = {T}")
    probe = check_langevin_args(prior, u_T, n_steps=K, step_size=1.0, noise_scale=noise_scale, t=0,
                                seed=None if noise is not None else seed,
                                chain_ids=chain_ids if noise is None else None,
                                noise=None if noise is None else noise[:K])
    u = probe.u
    s = schedule.step_variance()  # float64 [T]
    lv_t, lv_step, lv_lam, lv_alpha, lv_sigma = [], [], [], [], []
    for t in range(T - 1, -1, -1):
        st = s[t]
        lv_t.append(t)
        lv_step.append(float(torch.sqrt(st)))
        lv_lam.append(float(1.0 / st))
        lv_alpha.append(float(schedule.a[t + 1] * schedule.is_recovery[t + 1]))
        lv_sigma.append(float(schedule.sigma[t + 1]))
    nz = None
    if noise is not None:
        nz = noise.to(device=u.device, dtype=u.dtype).contiguous()
    struct = _packed(prior, u.dtype, u.device)
    key0, key1 = seed_to_key(seed) if noise is None else (0, 0)
    return (u, *struct, lv_t, lv_step, lv_lam, lv_alpha, lv_sigma, probe.noise_scale, nz, int(key0), int(key1),
            probe.chain_ids, K, bool(return_levels), str(precision))


def finish_reverse(prior, u_T, res, return_levels):
    as_list = not isinstance(u_T, torch.Tensor)
    if return_levels:
        levels = list(res.unbind(0))
        out = levels[-1]
        if as_list:
            return prior.split(out), [prior.split(x) for x in levels]
        return out, levels
    return prior.split(res) if as_list else res


def run_reverse_diffusion(prior, schedule, u_T, *, n_steps, seed, chain_ids, noise, noise_scale, precision,
                          return_levels):
    """The whole reverse diffusion (levels t = T−1 … 0, K steps each) in one launch; the same
    result as ``hebm.reverse_diffusion(..., backend="ref")`` (seeded step counter j·K + k)."""
    mod, why = _load()
    if mod is None:  # pragma: no cover
        raise RuntimeError(why)
    a = reverse_op_args(prior, schedule, u_T, n_steps=n_steps, seed=seed, chain_ids=chain_ids, noise=noise,
                        noise_scale=noise_scale, precision=precision, return_levels=return_levels)
    res = torch.ops.hebm.reverse_diffusion(*a)
    return finish_reverse(prior, u_T, res, return_levels)


__all__ = ["NAME", "arch_list", "cuda_cflags", "load_emulator", "run", "run_reverse_diffusion", "sources",
           "unavailable", "unsupported"]
