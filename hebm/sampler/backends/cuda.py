"""``backend="cuda"``: the launcher of the hand-written CUDA Langevin kernel (``csrc/cuda/``).

One launch runs all K steps (and, for :func:`run_reverse_diffusion`, all T levels) of

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [cond] ‖a·u − u_next‖² / (2σ²)

as the CUDA implementation of the ``hebm::langevin`` / ``reverse_diffusion`` ops (schema:
:mod:`hebm.sampler.backends.ops`).  A thread block owns 8 or 16 chains; their
state, z, gradients and MLP activations stay in shared memory (a global scratch slice when they
do not fit); weights are staged in shared memory when they fit, else read through L1/L2; products
are exact-fp32 FMA register tiles.  ``precision="tf32"``/``"bf16"`` run the same exact path (no
tensor-core path yet: the result is more accurate than asked, not faster, and ``info["precision"]``
says ``"fp32"``).  float64 runs too.

Build: JIT on first use through :mod:`hebm.sampler.backends._build` (``HEBM_SKIP_CUDA_BUILD=1`` turns it
off).  Architectures: ``HEBM_CUDA_ARCH`` (e.g. ``"90"`` or ``"80;90"``; PTX of the highest is
always added), default the visible GPU's own, or ``80;90`` without a GPU.  Tuning switches read
by the launcher: ``HEBM_CUDA_ROWS=8|16``, ``HEBM_CUDA_WS=global``, ``HEBM_CUDA_STAGE=0``,
``HEBM_CUDA_STORE=0|1`` (see ``csrc/cuda/langevin_cuda.cpp``).

``trace_every`` (draws inside the call) is recorded by the kernel: a block stores its rows of the
state after every m-th step (and, MALA, the chain's own log π; ULA, the log π the next step's
sweep computes — one more evaluation when the last step is a draw), as the cpu kernel does.

``temperatures`` (replica exchange, :func:`run_replica`): a block holds whole ladder groups (its
rows rounded down to a multiple of R, so R ≤ :data:`MAX_LADDER` = 16); after a step whose counter
``swap_every`` divides, the block evaluates F at its chains' states, one thread per group makes the
group's swap decisions (E = λ·F, stream 3 or the explicit ``swap_uniforms``) and writes the swap
record, and the accepted pairs exchange their rows.  ULA seeds the energy backward with the
untempered λ (its slot's β applied in the step), so a state's ∂(λF)/∂u and F move with it and the
next step needs no evaluation of its own; MALA keeps the F of the state it holds, and after a
round evaluates log π and its gradient afresh at the chains' own β, as the reference does.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _build, ops

NAME = "cuda"

MAX_LAYERS = 16  # latent layers (csrc/cuda/hebm_cuda.h kMaxL)
MAX_LINEAR = 64  # Linear layers over all MLPs (kMaxLayers)
MAX_LEVELS = 16  # levels of a fused reverse diffusion (kMaxLevels)
MAX_LADDER = 16  # temperatures of a ladder group: the group lives in one block of at most 16 rows


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


def unsupported(network, *, device, dtype, precision: str = "fp32", metropolis: bool = False) -> Optional[str]:
    if device.type != "cuda":
        return f"u is on {device}: the CUDA backend needs CUDA tensors"
    if dtype not in (torch.float32, torch.float64):
        return f"the CUDA backend runs float32/float64, got {dtype}"
    if network.reason is not None:
        return network.reason
    if network.L > MAX_LAYERS:
        return f"the CUDA kernel takes at most {MAX_LAYERS} latent layers, got {network.L}"
    n_lin = sum(m.n_layers for m in network.all_mlps())
    if n_lin > MAX_LINEAR:
        return f"the CUDA kernel takes at most {MAX_LINEAR} Linear layers in all, got {n_lin}"
    return None


def ran(dtype: torch.dtype) -> str:
    """The CUDA kernel is exact in the tensors' dtype (no tensor-core path yet)."""
    return "fp64" if dtype == torch.float64 else "fp32"


def run(pack, args, *, precision, trace, namespace: str = "hebm"):
    out, logd, stats, _ = ops.langevin(pack, args, precision=ran(args.u.dtype), trace=trace, namespace=namespace)
    return out, logd, ran(args.u.dtype), stats


def max_ladder(device) -> int:
    """The longest ladder a launch runs (the registry refuses a longer one by name: "auto" moves on)."""
    return MAX_LADDER


def run_replica(pack, args, *, precision, trace, namespace: str = "hebm"):
    """A call with ``temperatures``: the swap rounds inside the launch.  :func:`run`'s tuple plus
    the swap record ``[n_rounds, 2, B]`` (:func:`hebm.sampler.reference.swap_record_info`)."""
    R = args.temperatures.shape[0]
    if R > MAX_LADDER:
        raise ValueError(f"temperatures has R = {R} inverse temperatures; backend 'cuda' runs ladders of at most "
                         f"{MAX_LADDER} (a ladder group lives in one thread block): use backend='graph' for this ladder")
    out, logd, stats, record = ops.langevin(pack, args, precision=ran(args.u.dtype), trace=trace, namespace=namespace)
    return out, logd, ran(args.u.dtype), stats, record


def run_reverse(pack, schedule, r, *, precision, return_levels, namespace: str = "hebm"):
    """The whole reverse diffusion (levels t = T−1 … 0, K steps each) in one launch; the same
    result as ``hebm.reverse_diffusion_ref`` (seeded step counter j·K + k)."""
    if schedule.T > MAX_LEVELS:
        return None  # the levels run one by one
    return ops.reverse_diffusion(pack, schedule, r, precision=ran(r.u.dtype), return_levels=return_levels,
                                 namespace=namespace), ran(r.u.dtype)


__all__ = ["MAX_LADDER", "NAME", "arch_list", "cuda_cflags", "load_emulator", "max_ladder", "run", "run_replica", "run_reverse", "sources", "unavailable",
           "unsupported"]
