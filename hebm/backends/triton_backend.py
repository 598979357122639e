"""``backend="triton"``: the launcher of the persistent Triton Langevin kernel (``kernels/``).

One launch runs all K steps (and, for :func:`run_reverse_diffusion`, all T levels) of

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [cond] ‖a·u − u_next‖² / (2σ²)

with each program holding ``BLOCK_B`` chains on chip.  The kernel source is generated per network
structure by :mod:`kernels.codegen` (widths, offsets, activations and flags are literals) and
cached; this module packs the prior (:mod:`hebm.backends.pack`, cached on the parameters'
versions), materialises the per-chain parameters and launches.  On CUDA the block size and warp
count are autotuned per batch size (``HEBM_TRITON_BLOCK_B`` / ``HEBM_TRITON_WARPS`` pin one
config); under ``TRITON_INTERPRET=1`` (CPU tensors, tests) one small fixed config runs.

Precision: ``"fp32"`` → ``tl.dot(..., input_precision="ieee")`` (exact fp32, slow on tensor
cores), ``"tf32"`` → TF32 tensor-core dots, ``"bf16"`` → bf16 dot operands with fp32
accumulation (never tested in the interpreter, whose bf16 dot is broken).  Float64 is not
supported (use ``"ref"`` or ``"cpu"``).
"""
from __future__ import annotations

import os
import weakref
from typing import Optional

import torch

from .pack import network_support, packed_prior

NAME = "triton"

#: Kernel-shape knobs: ``tile`` = chunk width of tiled (scratch-streamed) layers; ``reg_limit`` =
#: padded weight elements above which an MLP's layers are tiled instead of register-resident
#: (0 tiles every MLP with a hidden layer; tests use that to cover the tiled path at small sizes).
TUNING = {
    "tile": int(os.environ.get("HEBM_TRITON_TILE", "64")),
    "reg_limit": int(os.environ.get("HEBM_TRITON_REG_LIMIT", str(128 * 128))),
}

_PRECISIONS = {"fp32": "ieee", "tf32": "tf32", "bf16": "bf16"}
_INTERP_BLOCK_B = 16


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"triton is not importable ({type(e).__name__}: {e}); install it with `pip install triton` (3.6-3.8)"
    if _interpret() or torch.cuda.is_available():
        return None
    return ("no CUDA device: the Triton backend needs an NVIDIA GPU (or TRITON_INTERPRET=1, set before the first "
            "kernel is built, to run it very slowly on CPU tensors for testing)")


def unsupported(prior, args) -> Optional[str]:
    why = network_support(prior)
    if why is not None:
        return why
    u = args.u
    if u.dtype != torch.float32:
        return f"the Triton backend runs float32 only, got {u.dtype}; use backend='ref' or 'cpu' for float64"
    if u.device.type == "cpu" and not _interpret():
        return "u is on the CPU: the Triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for slow CPU testing)"
    if u.device.type not in ("cpu", "cuda"):
        return f"the Triton backend runs on CUDA devices, got {u.device}"
    return None


# ---------------------------------------------------------------------------------- packing
def _packed(prior, device):
    """The cached fp32 pack (:func:`hebm.backends.pack.packed_prior`) and its kernel spec parts."""
    packed = packed_prior(prior, torch.float32, device)
    parts = packed.derived.get("triton")
    if parts is None:
        parts = packed.derived["triton"] = _structure(packed)
    return packed, parts


def _structure(packed):
    from ..kernels import MLPSpec

    layout = packed.layout.tolist()
    mlps = []
    for (first, n, code), ap in zip(packed.mlps.tolist(), packed.act_params.tolist()):
        layers = tuple(tuple(int(v) for v in layout[first + r]) for r in range(n))
        mlps.append(MLPSpec(layers=layers, act=int(code), act_param=float(ap)))
    L = packed.L
    return tuple(mlps[: L - 1]), tuple(mlps[L - 1:])


# ---------------------------------------------------------------------------------- launch
_autotuned: dict = {}


def _configs():
    import triton

    bb = os.environ.get("HEBM_TRITON_BLOCK_B")
    nw = os.environ.get("HEBM_TRITON_WARPS")
    blocks = [int(bb)] if bb else [16, 32, 64]
    warps = [int(nw)] if nw else [1, 2, 4]
    return [triton.Config({"BLOCK_B": b}, num_warps=w) for b in blocks for w in warps]


def _launch(packed, parts, *, u, K, nlev, delta, c, lam, t, alpha, sigma, unext, unext_from_state, noise, seed,
            chain_ids, step_offset, trace, store_levels, precision):
    from ..kernels import LangevinSpec, build_kernel

    if precision not in _PRECISIONS:
        raise ValueError(f"the Triton backend supports precision fp32, tf32 or bf16, got {precision!r}")
    conds, energies = parts
    spec = LangevinSpec(
        dims=tuple(packed.dims), sigma_min=float(packed.sigma_min), conds=conds, energies=energies,
        has_kernel=alpha is not None, unext_from_state=unext_from_state, seeded=seed is not None, trace=trace,
        store_levels=store_levels, precision=_PRECISIONS[precision], tile=TUNING["tile"], reg_limit=TUNING["reg_limit"],
    )
    kern, scr_w = build_kernel(spec)
    B, D = u.shape
    dev = u.device
    out = torch.empty_like(u)
    tr = torch.empty((nlev * K, B), dtype=u.dtype, device=dev) if trace else u
    lv = torch.empty((nlev, B, D), dtype=u.dtype, device=dev) if store_levels else u
    scratch = torch.empty(((B + 64) * scr_w,), dtype=torch.float32, device=dev) if scr_w else u
    if seed is not None:
        key = torch.tensor([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=torch.int64, device=dev)
        ids = chain_ids
        nz = u
    else:
        key, ids, nz = u, u, noise
    args = (u, out, lv, nz, key, ids, delta, c, lam, t if t is not None else delta,
            alpha if alpha is not None else delta, sigma if sigma is not None else delta,
            unext if unext is not None else u, tr, packed.params, scratch, B, K, nlev, int(step_offset))
    if _interpret() or dev.type != "cuda":
        kern[(triton_cdiv(B, _INTERP_BLOCK_B),)](*args, BLOCK_B=_INTERP_BLOCK_B, num_warps=1)
    else:
        tuned = _autotuned.get(kern)
        if tuned is None:
            import triton

            tuned = _autotuned[kern] = triton.autotune(configs=_configs(), key=["B"])(kern)
        with torch.cuda.device(dev):
            tuned[lambda meta: (triton_cdiv(B, meta["BLOCK_B"]),)](*args)
    return out, (tr if trace else None), (lv if store_levels else None)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, -1).contiguous()


def ran(precision: str) -> str:
    """What the dots compute: the interpreter runs plain fp32 numpy dots whatever is asked."""
    return "fp32" if _interpret() else precision


def run(prior, args, *, precision: str, trace: bool):
    """K Langevin steps in one launch: ``(u_out [B, D], log π trace [K, B] or None, precision ran)``."""
    u = args.u
    if args.n_steps == 0:
        return u.clone(), (u.new_zeros((0, args.B)) if trace else None), ran(precision)
    packed, parts = _packed(prior, u.device)
    if not packed.has_energy:
        parts = (parts[0], ())
    out, tr, _ = _launch(
        packed, parts, u=u, K=args.n_steps, nlev=1, delta=_rows(args.step_size), c=_rows(args.noise_scale),
        lam=_rows(args.energy_scale), t=None if args.t is None else _rows(args.t),
        alpha=None if args.alpha is None else _rows(args.alpha), sigma=None if args.sigma is None else _rows(args.sigma),
        unext=args.u_next, unext_from_state=False, noise=args.noise, seed=args.seed, chain_ids=args.chain_ids,
        step_offset=args.step_offset, trace=trace, store_levels=False, precision=precision,
    )
    return out, tr, ran(precision)


def run_reverse(prior, schedule, r, *, precision: str, return_levels: bool):
    """The whole reverse diffusion (levels t = T−1 … 0, K steps each) in one launch: per-level
    δ, λ, a, σ, t from :meth:`hebm.DiffusionSchedule.level_params` as ``[T, B]`` rows, u_next =
    the state entering the level, step counter j·K + k of the seeded stream (or ``noise[j·K + k]``).
    Same result as :func:`hebm.reverse_diffusion_ref`."""
    u, T, K, B = r.u, schedule.T, r.n_steps, r.B
    if K == 0:
        return [u] * (T + 1) if return_levels else [u, u], ran(precision)
    lv = [schedule.level_params(t) for t in range(T - 1, -1, -1)]

    def rows(key, dtype=u.dtype):
        return torch.tensor([[p[key]] * B for p in lv], dtype=dtype, device=u.device)

    packed, parts = _packed(prior, u.device)
    out, _, levels = _launch(
        packed, parts, u=u, K=K, nlev=T, delta=rows("step_size"), c=r.noise_scale.reshape(1, B).repeat(T, 1).contiguous(),
        lam=rows("energy_scale"), t=rows("t", torch.long), alpha=rows("alpha") if T > 1 else None,
        sigma=rows("sigma") if T > 1 else None, unext=None, unext_from_state=True,
        noise=r.noise, seed=r.seed, chain_ids=r.chain_ids, step_offset=0, trace=False,
        store_levels=return_levels, precision=precision,
    )
    return ([u] + list(levels.unbind(0)) if return_levels else [u, out]), ran(precision)


__all__ = ["NAME", "TUNING", "run", "run_reverse", "unavailable", "unsupported"]
