"""The boundary to the compiled kernels: the op schema, its fake (meta) kernels, and the one
wrapper that calls ``torch.ops.hebm.*``.

Two ops, defined here once (``torch.library``); the C++ CPU extension (``csrc/ops.cpp``) and
the CUDA extension (``csrc/cuda/langevin_cuda.cpp``) only register implementations of them
(``TORCH_LIBRARY_IMPL(hebm, CPU|CUDA)``), so either extension loads on its own:

* ``hebm::langevin`` — K steps of the update rule of :mod:`hebm.reference` for checked
  :class:`hebm.args.LangevinArgs`, Metropolis-adjusted with ``metropolis`` (then its third
  output is the accept stats ``[2, B]``: accepted proposals, Σ min(1, α));
* ``hebm::reverse_diffusion`` — every level of a reverse diffusion (levels ``t = T−1 … 0``,
  K steps each), the per-level scalars from :meth:`hebm.DiffusionSchedule.level_params`.

The networks travel as the flat buffers of :mod:`hebm.backends.pack` (``params``, ``dims``,
``layout``, ``mlps``, ``act_params``), with the pack's ``token``: a pack never changes, so a
kernel may keep what it derives from it (the CPU kernel's panel-packed weights) under that
token, which is never reused; 0 means "derive afresh".  The same schema is defined under ``hebm_cuda_emu`` for
the CUDA extension's host emulator of its block code (CPU tests of the GPU code).

Long CPU runs are cut into chunks of about :data:`CHUNK_SECONDS` (exact: the seeded noise is
counter-based, and explicit noise is sliced), so Ctrl-C reaches Python between chunks.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..args import LangevinArgs, ReverseArgs
from ..philox import seed_to_key
from .pack import PackedPrior

NETWORK = ("Tensor params, int[] dims, int[] layout, int[] mlps, float[] act_params, bool has_energy, "
           "int n_levels, float sigma_min, float sigma_clamp, int pack_token")
LANGEVIN_SCHEMA = (
    f"langevin(Tensor u, {NETWORK}, Tensor step_size, Tensor noise_scale, Tensor energy_scale, Tensor? t, "
    "Tensor? u_next, Tensor? alpha, Tensor? sigma, Tensor? noise, int key0, int key1, Tensor chain_ids, "
    "int n_steps, int step_offset, bool trace, bool metropolis, Tensor? uniforms, str precision) "
    "-> (Tensor, Tensor, Tensor)")
REVERSE_SCHEMA = (
    f"reverse_diffusion(Tensor u_T, {NETWORK}, int[] level_t, float[] level_step, float[] level_energy_scale, "
    "float[] level_alpha, float[] level_sigma, Tensor noise_scale, Tensor? noise, int key0, int key1, "
    "Tensor chain_ids, int n_steps, bool return_levels, str precision) -> Tensor")

#: namespaces that carry the schema: the real ops, and the CUDA block-code emulator (tests)
NAMESPACES = ("hebm", "hebm_cuda_emu")

_LIBS = []


def _langevin_fake(u, params, dims, layout, mlps, act_params, has_energy, n_levels, sigma_min, sigma_clamp, pack_token,
                   step_size,
                   noise_scale, energy_scale, t, u_next, alpha, sigma, noise, key0, key1, chain_ids, n_steps,
                   step_offset, trace, metropolis, uniforms, precision):
    torch._check(u.dim() == 2, lambda: "hebm: u must be [B, D]")
    return (u.new_empty(u.shape), (u.new_empty((n_steps, u.shape[0])) if trace else u.new_empty((0,))),
            (u.new_empty((2, u.shape[0])) if metropolis else u.new_empty((0,))))


def _reverse_fake(u_T, params, dims, layout, mlps, act_params, has_energy, n_levels, sigma_min, sigma_clamp, pack_token,
                  level_t,
                  level_step,
                  level_energy_scale, level_alpha, level_sigma, noise_scale, noise, key0, key1, chain_ids, n_steps,
                  return_levels, precision):
    torch._check(u_T.dim() == 2, lambda: "hebm: u_T must be [B, D]")
    if return_levels:
        return u_T.new_empty((len(level_t) + 1, *u_T.shape))
    return u_T.new_empty(u_T.shape)


def _define() -> None:
    for ns in NAMESPACES:
        if hasattr(torch.ops, ns) and hasattr(getattr(torch.ops, ns), "langevin"):
            continue  # defined already (this module re-imported)
        lib = torch.library.Library(ns, "DEF")
        lib.define(LANGEVIN_SCHEMA)
        lib.define(REVERSE_SCHEMA)
        torch.library.register_fake(f"{ns}::langevin", _langevin_fake, lib=lib)
        torch.library.register_fake(f"{ns}::reverse_diffusion", _reverse_fake, lib=lib)
        _LIBS.append(lib)


_define()


def op(name: str, namespace: str = "hebm"):
    """The op handle ``torch.ops.<namespace>.<name>`` (for ``torch.library.opcheck`` in tests)."""
    return getattr(getattr(torch.ops, namespace), name)


# ------------------------------------------------------------------------------ chunking
#: wall time one CPU call of the kernel is allowed before Python gets control back (Ctrl-C)
CHUNK_SECONDS = 0.25
#: a pessimistic CPU kernel rate for that estimate (2 loaded cores do ≥ 20 GFLOP/s; docs/design.md §5)
_CPU_FLOPS_PER_S = 2e10


def steps_per_chunk(packed: PackedPrior, B: int, device: torch.device) -> int:
    """How many steps one call may take: all of them on GPUs (asynchronous anyway), on the CPU
    about :data:`CHUNK_SECONDS` of work by the 4·B·params FLOP model."""
    if device.type != "cpu":
        return 2**31 - 1
    per_step = 4.0 * B * max(packed.n_params(), 1) / _CPU_FLOPS_PER_S
    return max(1, int(CHUNK_SECONDS / per_step))


def _keys(seed: Optional[int]) -> tuple[int, int]:
    return seed_to_key(seed) if seed is not None else (0, 0)


def _langevin_call(packed: PackedPrior, a: LangevinArgs, precision: str, trace: bool, namespace: str):
    st = packed.op_structure()
    k0, k1 = _keys(a.seed)
    return op("langevin", namespace)(
        a.u, st["params"], st["dims"], st["layout"], st["mlps"], st["act_params"], st["has_energy"], st["n_levels"],
        st["sigma_min"], st["sigma_clamp"], st["token"], a.step_size, a.noise_scale, a.energy_scale, a.t, a.u_next,
        a.alpha, a.sigma, a.noise, k0, k1, a.chain_ids, a.n_steps, a.step_offset, trace, a.metropolis, a.uniforms,
        precision)


def langevin(packed: PackedPrior, a: LangevinArgs, *, precision: str, trace: bool, namespace: str = "hebm"):
    """``hebm::langevin`` on checked arguments: ``(u_K [B, D], log π trace [K, B] or None,
    accept stats [2, B] or None)``.  Runs in chunks of :func:`steps_per_chunk` steps (results
    identical to one call; a Metropolis chunk evaluates its first state afresh)."""
    chunk = steps_per_chunk(packed, a.B, a.u.device)
    if a.n_steps <= chunk:
        out, logd, stats = _langevin_call(packed, a, precision, trace, namespace)
        return out, (logd if trace else None), (stats if a.metropolis else None)
    u, logs, total = a.u, [], None
    for k0 in range(0, a.n_steps, chunk):
        part = a.steps(k0, min(a.n_steps, k0 + chunk))
        part.u = u
        u, logd, stats = _langevin_call(packed, part, precision, trace, namespace)
        if trace:
            logs.append(logd)
        if a.metropolis:
            total = stats if total is None else total + stats
    return u, (torch.cat(logs) if trace else None), total


def fits_one_reverse_call(packed: PackedPrior, r: ReverseArgs) -> bool:
    """Whether a whole reverse diffusion fits one chunk (else the levels run one by one)."""
    return r.levels * r.n_steps <= steps_per_chunk(packed, r.B, r.u.device)


def reverse_diffusion(packed: PackedPrior, schedule, r: ReverseArgs, *, precision: str, return_levels: bool,
                      namespace: str = "hebm"):
    """``hebm::reverse_diffusion`` on checked arguments: ``[ũ_T, …, ũ_0]`` with ``return_levels``,
    else ``[ũ_T, ũ_0]``."""
    st = packed.op_structure()
    lv = [schedule.level_params(t) for t in range(schedule.T - 1, -1, -1)]
    k0, k1 = _keys(r.seed)
    res = op("reverse_diffusion", namespace)(
        r.u, st["params"], st["dims"], st["layout"], st["mlps"], st["act_params"], st["has_energy"],
        st["n_levels"], st["sigma_min"], st["sigma_clamp"], st["token"], [p["t"] for p in lv], [p["step_size"] for p in lv],
        [p["energy_scale"] for p in lv], [p["alpha"] for p in lv], [p["sigma"] for p in lv],
        r.noise_scale, r.noise, k0, k1, r.chain_ids, r.n_steps, return_levels, precision)
    return list(res.unbind(0)) if return_levels else [r.u, res]


__all__ = ["LANGEVIN_SCHEMA", "REVERSE_SCHEMA", "NAMESPACES", "CHUNK_SECONDS", "fits_one_reverse_call", "langevin",
           "op", "reverse_diffusion", "steps_per_chunk"]

