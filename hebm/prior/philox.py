"""hebm's seeded noise stream, reference implementation in plain PyTorch (docs/design.md §2).

Every backend draws exactly these normals, so a chain's trajectory depends neither on the
batch it runs in nor on the backend:

* generator: Philox4x32-10 (Salmon et al., Random123);
* key ``(seed mod 2³², ⌊seed / 2³²⌋ mod 2³²)`` for a seed in [0, 2⁶⁴);
* counter ``(j, c, k, s)``: j = element block (elements 4j … 4j+3 of the chain's D), c = chain id,
  k = step (counted across levels in a fused reverse diffusion), s = stream
  (:data:`STREAM_LANGEVIN` = 0, :data:`STREAM_INIT` = 1, :data:`STREAM_ACCEPT` = 2: the
  Metropolis uniforms, :func:`philox_accept_uniform`; :data:`STREAM_SWAP` = 3: the replica-exchange
  swap uniforms, :func:`philox_swap_uniforms`);
* the four outputs x₀…x₃ → uniforms ``((x >> 9) + 0.5) · 2⁻²³`` (exact in fp32, in (0, 1)) →
  Box–Muller in **float64**: ``r₁ = √(−2 ln u₀)``; elements 4j, 4j+1 = ``r₁ cos 2πu₁, r₁ sin 2πu₁``;
  ``r₂ = √(−2 ln u₂)``; elements 4j+2, 4j+3 = ``r₂ cos 2πu₃, r₂ sin 2πu₃`` (2π the double
  6.283185307179586, each product rounded in double), each normal rounded once to float32;
  elements ≥ D dropped.

Why float64: the fp32 transcendentals of different math libraries (glibc's, Sleef's in torch,
which picks AVX2 or AVX-512 code by CPU, libdevice's) differ in the last bits, so fp32
Box–Muller gave different normals on different machines (79–95 % bit-identical).  The float64
ones are within ~1 ulp of double everywhere, so after the one rounding to float32 two backends
disagree only where a double result lies within an ulp of a float32 rounding boundary
(≈ 10⁻⁸ per normal; none in 10⁷ normals measured, docs/design.md §2) and then by exactly 1 ulp.

The 32-bit words live in int64 tensors; products of two 32-bit words are split in 16-bit halves
so nothing overflows int64.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

STREAM_LANGEVIN = 0
STREAM_INIT = 1
STREAM_ACCEPT = 2
STREAM_SWAP = 3
#: the step counter is one 32-bit word: steps 0 … 2³²−1 (step 2³² would repeat step 0)
MAX_STEP = 2**32 - 1

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product of the constant ``m`` and ``x`` (< 2³²)."""
    p_lo = x * (m & 0xFFFF)  # < 2^48
    p_hi = x * (m >> 16)  # < 2^48
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    lo = mid & _MASK32
    hi = (p_hi >> 16) + (mid >> 32)
    return hi & _MASK32, lo


def _word(x):
    """A 32-bit word: an int, or an int64 tensor (a device-side key or step for CUDA graphs)."""
    return x & _MASK32 if isinstance(x, torch.Tensor) else int(x) & _MASK32


def philox4x32(counter: tuple, key: tuple, rounds: int = 10) -> tuple[torch.Tensor, ...]:
    """Philox4x32-``rounds`` on broadcastable int64 tensors (or ints) holding 32-bit words; the
    key words may be ints or int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & _MASK32 for c in counter)
    k0, k1 = (_word(k) for k in key)
    for r in range(rounds):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        if r < rounds - 1:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


def seed_to_key(seed: int) -> tuple[int, int]:
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    return seed & _MASK32, (seed >> 32) & _MASK32


def uniform_from_bits(x: torch.Tensor) -> torch.Tensor:
    """``((x >> 9) + 0.5) · 2⁻²³`` as float32: exact, strictly inside (0, 1)."""
    return ((x >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def philox_normal(
    seed: int,
    chain_ids: torch.Tensor,
    step: int,
    D: int,
    *,
    stream: int = STREAM_LANGEVIN,
    device=None,
) -> torch.Tensor:
    """The normals ``ε[b, :]`` of step ``step`` for chains ``chain_ids`` (``[B]``): ``[B, D]`` fp32."""
    chain_ids = torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
    return normals_from_key(seed_to_key(seed), chain_ids, int(step), D, stream=stream)


def normals_from_key(key: tuple, chain_ids: torch.Tensor, step, D: int, *, stream: int = STREAM_LANGEVIN) -> torch.Tensor:
    """:func:`philox_normal` for a key ``(k0, k1)`` and a step that may be int64 tensors on the
    chains' device (a CUDA graph replays them with new values; a Python int would be baked in)."""
    device = chain_ids.device
    n_blocks = (int(D) + 3) // 4
    j = torch.arange(n_blocks, dtype=torch.int64, device=device)[None, :]
    c = chain_ids[:, None]
    step = step.reshape(1, 1) if isinstance(step, torch.Tensor) else int(step)
    x0, x1, x2, x3 = philox4x32((j, c, step, int(stream)), key)
    # Box–Muller in float64, rounded once to float32 (module docstring: why)
    u0, u1, u2, u3 = (uniform_from_bits(x).double() for x in (x0, x1, x2, x3))
    two_pi = 2.0 * math.pi
    r1 = torch.sqrt(-2.0 * torch.log(u0))
    r2 = torch.sqrt(-2.0 * torch.log(u2))
    a1, a3 = two_pi * u1, two_pi * u3
    out = torch.stack(
        [r1 * torch.cos(a1), r1 * torch.sin(a1), r2 * torch.cos(a3), r2 * torch.sin(a3)],
        dim=-1,
    ).float()  # [B, n_blocks, 4]
    B = chain_ids.shape[0]
    return out.expand(B, n_blocks, 4).reshape(B, 4 * n_blocks)[:, : int(D)].contiguous()


def philox_accept_uniform(seed: int, chain_ids: torch.Tensor, step: int, *, device=None) -> torch.Tensor:
    """The Metropolis uniform of step ``step`` for chains ``chain_ids`` (``[B]`` fp32, in (0, 1)):
    counter ``(0, c, step, 2)``, the first output word, ``((x₀ >> 9) + 0.5)·2⁻²³``
    (docs/design.md §2)."""
    chain_ids = torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
    return accept_uniforms_from_key(seed_to_key(seed), chain_ids, int(step))


def accept_uniforms_from_key(key: tuple, chain_ids: torch.Tensor, step) -> torch.Tensor:
    """:func:`philox_accept_uniform` for a key ``(k0, k1)`` and a step that may be int64 tensors
    on the chains' device (a CUDA graph replays them with new values)."""
    step = step.reshape(1) if isinstance(step, torch.Tensor) else int(step)
    x0, _, _, _ = philox4x32((0, chain_ids, step, STREAM_ACCEPT), key)
    return uniform_from_bits(x0)


def philox_swap_uniforms(seed: int, chain_ids: torch.Tensor, step: int, R: int, *, device=None) -> torch.Tensor:
    """The replica-exchange uniforms of the swap round after step ``step`` (``[B]`` fp32, in (0, 1)),
    for chains ``chain_ids`` in ladder groups of ``R`` consecutive chains (chain b at slot
    r = b mod R), docs/design.md §2:

    * slot r < R−1 (the lower chain of the pair (r, r+1)): counter ``(r mod 2, c, step, 3)`` — the
      pair's parity, its lower chain's id — the U of that pair's swap test;
    * slot R−1 (the group's cold chain, never a lower chain): counter ``(2, c, step, 3)`` — the
      group's parity coin of the ``"even_odd"`` schedule (even pairs when it is < ½);

    each the first output word x₀ → ``((x₀ >> 9) + 0.5)·2⁻²³``.  The same layout as an explicit
    ``swap_uniforms[n]`` row."""
    chain_ids = torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
    return swap_uniforms_from_key(seed_to_key(seed), chain_ids, int(step), R)


def swap_uniforms_from_key(key: tuple, chain_ids: torch.Tensor, step, R: int) -> torch.Tensor:
    """:func:`philox_swap_uniforms` for a key ``(k0, k1)``."""
    step = step.reshape(1) if isinstance(step, torch.Tensor) else int(step)
    slot = torch.arange(chain_ids.shape[0], dtype=torch.int64, device=chain_ids.device) % int(R)
    j = torch.where(slot == int(R) - 1, torch.full_like(slot, 2), slot % 2)
    x0, _, _, _ = philox4x32((j, chain_ids, step, STREAM_SWAP), key)
    return uniform_from_bits(x0)


def philox_noise(
    seed: int, chain_ids: torch.Tensor, n_steps: int, D: int, *, step_offset: int = 0, device=None
) -> torch.Tensor:
    """All Langevin normals of ``n_steps`` steps, ``[K, B, D]`` fp32 (small problems and tests)."""
    return torch.stack(
        [philox_normal(seed, chain_ids, step_offset + k, D, device=device) for k in range(n_steps)]
    )


def initial_noise(seed: int, batch: int, D: int, *, chain_ids=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Initial states ``N(0, I)`` from the seeded stream (stream 1, step 0), chain by chain: ũ_T
    of a reverse diffusion, the start of a prior chain."""
    ids = default_chain_ids(batch, chain_ids, device)
    return philox_normal(seed, ids, 0, D, stream=STREAM_INIT, device=device).to(dtype)


_ARANGE: dict = {}


def default_chain_ids(batch: int, chain_ids: Optional[torch.Tensor], device) -> torch.Tensor:
    """``chain_ids`` as int64 on ``device``, by default 0 … batch−1 (one cached tensor per batch
    size and device, read-only for its users: the samplers only read chain ids)."""
    if chain_ids is None:
        key = (batch, device)
        ids = _ARANGE.get(key)
        if ids is None:
            if len(_ARANGE) > 64:
                _ARANGE.clear()
            ids = _ARANGE[key] = torch.arange(batch, dtype=torch.int64, device=device)
        return ids
    return torch.as_tensor(chain_ids, dtype=torch.int64, device=device)
