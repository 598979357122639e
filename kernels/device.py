"""Triton device functions of hebm's Langevin kernels (``@triton.jit``, inlined into the kernels).

The generated kernels (:mod:`hebm.kernels.codegen`) are only per-network *glue*: the sequence of
calls below with literal widths, offsets and activations.  Everything that computes lives here:

* activations with their derivatives (``activation``: relu 0, leaky_relu 1, tanh 2, silu 3,
  gelu 4, gelu_tanh 5, softplus 6 — hebm's packed codes, ``hebm.prior.nn.ACTIVATION_CODES``);
* hebm's Philox4x32-10 normal stream (docs/design.md §2), one Philox call per block of four
  elements (``noise_tile``);
* weight / bias tiles read from hebm's flat packed buffer (``hebm.sampler.backends.pack``: ``W [out, in]``
  row-major, then the bias table ``[rows, out]``), with masked loads so padding is exact zeros;
* register-form layer pieces (``linear_fwd``, ``linear_bwd``: one chunk product on register
  tiles) and streamed-form layers (``stream_*``: a loop over output chunks with an inner loop over
  input chunks, activations in a per-program scratch buffer).

Conventions.  A *chunk* is a ``[BLOCK_B, n]`` register tile (n a power of two ≥ 16).  A layer's
state columns are addressed in *block-aligned coordinates*: column ``c`` of layer i is element
``base_i + c`` of the chain's D, ``base_i = 4·⌊offset_i / 4⌋``, so every chunk starts on a Philox
block; the layer's own columns are ``SH ≤ c < SH + d`` (``SH = offset_i − base_i``) and the
weight tiles shift their row/column index by ``SH`` (``KSH`` / ``NSH`` below).  Sizes that shape
a tile are ``tl.constexpr``; chunk origins (``k0``, ``n0``) are loop variables or literals.

``tl.dot`` precision: ``PREC`` is ``"ieee"`` (exact fp32), ``"tf32"`` or ``"bf16"`` (bf16 operands,
fp32 accumulation).

This module jits its functions when it is imported, so import it (or let a kernel build import
it) only after ``TRITON_INTERPRET`` has its final value; :func:`hebm.kernels.jit_device` returns
the copy built for the current mode.
"""
import os

import triton
import triton.language as tl

#: the TRITON_INTERPRET mode this copy of the module was jitted in
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

ACT_NAMES = {0: "relu", 1: "leaky_relu", 2: "tanh", 3: "silu", 4: "gelu", 5: "gelu_tanh", 6: "softplus"}


# ---------------------------------------------------------------------------------- activations
@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def act_relu(x, p):
    return tl.maximum(x, 0.0), tl.where(x > 0.0, 1.0, 0.0)


@triton.jit
def act_leaky_relu(x, p):
    # torch: grad = 1 for x > 0, slope otherwise (x = 0 included)
    return tl.where(x > 0.0, x, x * p), tl.where(x > 0.0, 1.0, p)


@triton.jit
def act_tanh(x, p):
    # tanh(x) = 2σ(2x) − 1 (libdevice tanh does not run in the interpreter)
    y = 2.0 * sigmoid(2.0 * x) - 1.0
    return y, 1.0 - y * y


@triton.jit
def act_silu(x, p):
    s = sigmoid(x)
    return x * s, s * (1.0 + x * (1.0 - s))


@triton.jit
def act_gelu(x, p):
    cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
    pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
    return x * cdf, cdf + x * pdf


@triton.jit
def act_gelu_tanh(x, p):
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    th = 2.0 * sigmoid(2.0 * inner) - 1.0
    y = 0.5 * x * (1.0 + th)
    d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    return y, d


@triton.jit
def act_softplus(x, p):
    # torch.nn.functional.softplus, beta 1, threshold 20
    big = x > 20.0
    ex = tl.exp(tl.minimum(x, 20.0))
    y = tl.where(big, x, tl.where(x < -15.0, ex, tl.log(1.0 + ex)))
    return y, tl.where(big, 1.0, ex / (1.0 + ex))


@triton.jit
def activation(x, ACT: tl.constexpr, SLOPE: tl.constexpr):
    """``(act(x), act'(x))`` for hebm activation code ``ACT`` (``SLOPE``: LeakyReLU's)."""
    if ACT == 0:
        y, d = act_relu(x, SLOPE)
    elif ACT == 1:
        y, d = act_leaky_relu(x, SLOPE)
    elif ACT == 2:
        y, d = act_tanh(x, SLOPE)
    elif ACT == 3:
        y, d = act_silu(x, SLOPE)
    elif ACT == 4:
        y, d = act_gelu(x, SLOPE)
    elif ACT == 5:
        y, d = act_gelu_tanh(x, SLOPE)
    else:
        tl.static_assert(ACT == 6, "unknown activation code")
        y, d = act_softplus(x, SLOPE)
    return y, d


# ---------------------------------------------------------------------------------- noise
@triton.jit
def philox_words(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 tensors (Random123 word order, as ``hebm.prior.philox.philox4x32``;
    Triton's ``philox_impl`` multiplies word 0 by 0xD2511F53 and word 2 by 0xCD9E8D57)."""
    return tl.philox_impl(c0, c1, c2, c3, k0, k1, 10)


@triton.jit
def uniform(x):
    """hebm's uniform of a 32-bit word: ``((x >> 9) + 0.5)·2⁻²³``, exact in fp32, inside (0, 1)."""
    return ((x >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit
def sincos_0_2pi(a):
    """``(cos a, sin a)`` of a float64 angle in [0, 2π]: the nearest quadrant n, a two-part
    Cody–Waite reduction ``r = a − n·π/2`` (exact enough for n ≤ 4) and fdlibm's minimax
    polynomials on [−π/4, π/4] (k_sin.c, k_cos.c).  Within 1 ulp of double of the C library's
    cos/sin over every angle 2π·u the noise stream can produce (all 2²³ uniforms checked against
    NumPy; 0 float32 normals differ).  Why not ``tl.cos``/``tl.sin``: libdevice's double versions
    carry a large-argument slow path whose local array made the fused kernel spill registers —
    an angle here is never large."""
    n = tl.floor(a * 0.6366197723675814 + 0.5)
    r = (a - n * 1.57079632673412561417) - n * 6.07710050650619224932e-11
    z = r * r
    s = r + r * z * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03 + z * (
        -1.98412698298579493134e-04 + z * (2.75573137070700676789e-06 + z * (
            -2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))))
    c = 1.0 - (0.5 * z - z * z * (4.16666666666666019037e-02 + z * (-1.38888888888741095749e-03 + z * (
        2.48015872894767294178e-05 + z * (-2.75573143513906633035e-07 + z * (
            2.08757232129817482790e-09 + z * -1.13596475577881948265e-11))))))
    q = n.to(tl.int32) & 3
    cos = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    sin = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    return cos, sin


@triton.jit
def box_muller(xa, xb):
    """The normal pair of two words: ``r·cos 2πu_b``, ``r·sin 2πu_b`` with ``r = √(−2 ln u_a)``,
    computed in float64 and rounded once to float32 (hebm.prior.philox says why: the same bits as the
    reference and the C++/CUDA kernels on every machine)."""
    r = tl.sqrt(-2.0 * tl.log(uniform(xa).to(tl.float64)))  # fp64 sqrt is IEEE-rounded; sqrt_rn takes fp32 only
    cos, sin = sincos_0_2pi(6.283185307179586 * uniform(xb).to(tl.float64))
    return (r * cos).to(tl.float32), (r * sin).to(tl.float32)


@triton.jit
def philox_block(blk, cid, step, stream, k0, k1):
    """The four words of block ``blk`` of chain ``cid``: counter ``(blk, cid, step, stream)``,
    key ``(k0, k1)``.  blk, cid: uint32 tensors that broadcast to each other; step (a step
    ≥ 2³¹ arrives as int64: its low word is kept), stream: scalars."""
    zero = (blk + cid) * 0
    return philox_words(zero + blk, zero + cid, (zero + step).to(tl.uint32), (zero + stream).to(tl.uint32), k0, k1)


@triton.jit
def noise_tile(cid, step, stream, k0, k1, blk0, NB: tl.constexpr):
    """hebm's normals for elements ``4·blk0 … 4·(blk0 + NB) − 1`` of chains ``cid`` (uint32
    ``[BLOCK_B]``) as a ``[BLOCK_B, 4·NB]`` tile: one Philox call per block of four."""
    blk = (blk0 + tl.arange(0, NB)).to(tl.uint32)[None, :]
    x0, x1, x2, x3 = philox_block(blk, cid[:, None], step, stream, k0, k1)
    n0, n1 = box_muller(x0, x1)
    n2, n3 = box_muller(x2, x3)
    # join stacks on a new last axis: [BLOCK_B, NB, q, p] = (n0, n2 | n1, n3)[p][q] → element 2q + p
    quad = tl.join(tl.join(n0, n2), tl.join(n1, n3))
    return tl.reshape(quad, [cid.shape[0], 4 * NB])


@triton.jit
def philox_normal(blk, cid, step, stream, comp, k0, k1):
    """One normal per element (element ``4·blk + comp``; broadcast shapes) — the per-element form,
    four Philox calls per block; the kernels use :func:`noise_tile`."""
    x0, x1, x2, x3 = philox_block(blk, cid, step, stream, k0, k1)
    lo = comp < 2
    c, s = box_muller(tl.where(lo, x0, x2), tl.where(lo, x1, x3))
    return tl.where((comp % 2) == 0, c, s)


# ---------------------------------------------------------------------------------- parameters
# Parameters come from the kernels' own buffer (hebm.kernels.params): each layer's Wᵀ is a
# zero-padded [KP, NP] block at a 16-float-aligned offset, its bias table a [rows, NP] block, so a
# tile is a dense, unmasked, vectorizable load.  ``z`` is a runtime 0 added to the index vectors:
# it makes every address depend on the step (the kernel computes ``z = k * zero``), so the compiler
# cannot hoist the 2-D address tensors of a step's ~50 tile loads out of the step loop and keep
# them all in registers for the whole chain.
@triton.jit
def wt_tile(params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, k0, TK: tl.constexpr, n0, TN: tl.constexpr):
    """``Wᵀ[k0 : k0+TK, n0 : n0+TN]`` of the block ``[·, NP]`` at ``OFF`` (forward operand)."""
    k = (k0 + z) + tl.arange(0, TK)
    n = n0 + tl.arange(0, TN)
    return tl.load(params_ptr + OFF + k[:, None] * NP + n[None, :])


@triton.jit
def w_tile(params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, n0, TN: tl.constexpr, k0, TK: tl.constexpr):
    """``W[n0 : n0+TN, k0 : k0+TK]`` (= the transpose of a ``Wᵀ`` tile: the backward operand)."""
    n = (n0 + z) + tl.arange(0, TN)
    k = k0 + tl.arange(0, TK)
    return tl.load(params_ptr + OFF + n[:, None] + k[None, :] * NP)


@triton.jit
def bias_tile(params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, ROWS: tl.constexpr, n0, TN: tl.constexpr, tlev,
              BLOCK_B: tl.constexpr):
    """``[BLOCK_B, TN]`` bias of output columns ``n0 …`` from the table ``[ROWS, NP]`` at ``OFF``:
    row ``tlev`` (each chain's level) when the table has a row per level, else row 0."""
    n = (n0 + z) + tl.arange(0, TN)
    if ROWS > 1:
        b = tl.load(params_ptr + OFF + ((tlev + z) * NP)[:, None] + n[None, :])
    else:
        b = tl.load(params_ptr + OFF + n)[None, :] + tl.zeros([BLOCK_B, TN], tl.float32)
    return b


@triton.jit
def row_vector(params_ptr, z, OFF: tl.constexpr, n0, TN: tl.constexpr):
    """``[1, TN]`` entries ``n0 …`` of a vector at ``OFF`` (an energy's 1-wide output layer)."""
    return tl.load(params_ptr + OFF + (n0 + z) + tl.arange(0, TN))[None, :]


@triton.jit
def mma(a, b, acc, PREC: tl.constexpr):
    """``acc + a @ b`` in fp32 accumulation; operands as ``PREC`` says."""
    if PREC == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    else:
        out = tl.dot(a, b, acc, input_precision=PREC)
    return out


# ---------------------------------------------------------------------------------- register form
@triton.jit
def linear_fwd(acc, x, params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, k0, n0, PREC: tl.constexpr):
    """``acc + x @ Wᵀ[k0 …, n0 …]``: one chunk product of a layer's forward pass (x ``[B, TK]``
    the input chunk at column k0, acc ``[B, TN]`` the output chunk at column n0)."""
    return mma(x, wt_tile(params_ptr, z, OFF, NP, k0, x.shape[1], n0, acc.shape[1]), acc, PREC)


@triton.jit
def linear_bwd(acc, g, params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, n0, k0, PREC: tl.constexpr):
    """``acc + g @ W[n0 …, k0 …]``: one chunk product of a layer's input gradient (g ``[B, TN]``
    the gradient at output chunk n0, acc ``[B, TK]`` the gradient at input chunk k0)."""
    return mma(g, w_tile(params_ptr, z, OFF, NP, n0, g.shape[1], k0, acc.shape[1]), acc, PREC)


# ---------------------------------------------------------------------------------- the update
@triton.jit
def noise_chunk(cid, step, k0, k1, blk0, NB: tl.constexpr, c0, LO: tl.constexpr, HI: tl.constexpr):
    """The Langevin noise (stream 0) of a layer chunk: ``[BLOCK_B, 4·NB]`` normals of elements
    ``4·blk0 …``, zero outside the layer's columns ``[LO, HI)`` (chunk origin ``c0``)."""
    c = c0 + tl.arange(0, 4 * NB)[None, :]
    return tl.where((c >= LO) & (c < HI), noise_tile(cid, step, 0, k0, k1, blk0, NB), 0.0)


@triton.jit
def langevin_update(u, gu, un, eps, half, amp, alpha, inv2, KERNEL: tl.constexpr):
    """``u + (δ²/2)·∇log π + cδ·ε`` with ``∇log π = gu − u − [KERNEL] a(a·u − u_next)/σ²``
    (``half`` = δ²/2, ``amp`` = cδ, ``inv2`` = 1/σ², per row ``[BLOCK_B, 1]``)."""
    grad = gu - u
    if KERNEL:
        grad = grad - alpha * (alpha * u - un) * inv2
    return u + half * grad + amp * eps


@triton.jit
def full_grad(u, gu, un, alpha, inv2, KERNEL: tl.constexpr):
    """``∇log π = gu − u − [KERNEL] a(a·u − u_next)/σ²`` of a chunk (the Metropolis form keeps the
    gradient: the proposal's serves the next step when it is accepted)."""
    grad = gu - u
    if KERNEL:
        grad = grad - alpha * (alpha * u - un) * inv2
    return grad


@triton.jit
def accept_uniform(cid, step, k0, k1):
    """The Metropolis test's U of chains ``cid`` (``[BLOCK_B]`` uint32) at ``step``: counter
    ``(0, cid, step, 2)``, the first word (docs/design.md §2; hebm.prior.philox.philox_accept_uniform)."""
    x0, _x1, _x2, _x3 = philox_block(0, cid, step, 2, k0, k1)
    return uniform(x0)


@triton.jit
def swap_uniform(slot, NR, cid, step, k0, k1):
    """The replica-exchange U of chains ``cid`` (``[BLOCK_B]`` uint32) at ladder slot ``slot`` of
    ``NR`` for the swap round after ``step``: counter ``(slot mod 2, cid, step, 3)`` (a pair's U at
    its lower chain), ``(2, cid, step, 3)`` at the group's last slot (the "even_odd" coin); the
    first word (hebm.prior.philox.philox_swap_uniforms)."""
    j = tl.where(slot == NR - 1, 2, slot % 2).to(tl.uint32)
    x0, _x1, _x2, _x3 = philox_block(j, cid, step, 3, k0, k1)
    return uniform(x0)


@triton.jit
def gauss_terms(u, un, alpha, inv2, KERNEL: tl.constexpr):
    """Per row: ``−½‖u‖² − [KERNEL] ‖a·u − u_next‖²/(2σ²)`` of a chunk (the trace's non-energy
    part)."""
    t = -0.5 * tl.sum(u * u, axis=1)
    if KERNEL:
        kr = alpha * u - un
        t = t - 0.5 * tl.sum(kr * kr * inv2, axis=1)
    return t


@triton.jit
def sigma_exp(lg, CLAMP: tl.constexpr):
    """``e^{s(ℓ)}``, ``s(ℓ) = c·tanh(ℓ/c)`` (``CLAMP`` = c > 0) or ``ℓ``: σ − σ_min (docs/design.md §2)."""
    if CLAMP > 0:
        lg = CLAMP * (2.0 * sigmoid(2.0 * lg / CLAMP) - 1.0)  # tanh, as act_tanh (no libdevice tanh)
    return tl.exp(lg)


@triton.jit
def cond_grads(G, u, ex, SIGMA_MIN: tl.constexpr, CLAMP: tl.constexpr):
    """Back through ``z = μ + (e^{s(ℓ)} + σ_min)·u``: ``(∂u, ∂ℓ) = (G·σ, G·u·e^{s(ℓ)}·s'(ℓ))`` (∂μ is G
    itself); with the clamp ``s'(ℓ) = 1 − tanh²(ℓ/c) = 1 − (log(e^{s(ℓ)})/c)²``."""
    de = ex
    if CLAMP > 0:
        th = tl.log(ex) / CLAMP
        de = ex * (1.0 - th * th)
    return G * (ex + SIGMA_MIN), G * u * de


@triton.jit
def state_tile(ptr, rows64, rmask, z, D: tl.constexpr, BASE: tl.constexpr, P: tl.constexpr, LO: tl.constexpr,
               HI: tl.constexpr):
    """Pointers and mask of a latent layer's ``[BLOCK_B, P]`` tile in a ``[B, D]`` state-shaped
    tensor (columns ``BASE + c``, valid ``LO ≤ c < HI``).  ``z`` (a runtime 0: ``zero``, or the
    step's ``zk``) keeps the compiler from merging these addresses with an identical computation
    elsewhere and holding them in registers in between."""
    c = tl.arange(0, P) + z
    return ptr + rows64[:, None] * D + BASE + c[None, :], rmask[:, None] & ((c >= LO) & (c < HI))[None, :]


@triton.jit
def load_state(ptr, rows64, rmask, z, D: tl.constexpr, BASE: tl.constexpr, P: tl.constexpr, LO: tl.constexpr,
               HI: tl.constexpr):
    p, m = state_tile(ptr, rows64, rmask, z, D, BASE, P, LO, HI)
    return tl.load(p, mask=m, other=0.0)


@triton.jit
def store_state(ptr, x, rows64, rmask, z, D: tl.constexpr, BASE: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr):
    p, m = state_tile(ptr, rows64, rmask, z, D, BASE, x.shape[1], LO, HI)
    tl.store(p, x, mask=m)


# ---------------------------------------------------------------------------------- streamed form
# Rows: ``src`` / ``dst`` are ``[BLOCK_B, 1]`` pointer tensors (a row's start in the scratch buffer
# or in the state), ``rmask`` the ``[BLOCK_B, 1]`` valid-row mask; column c of a region is at
# ``ptr + c``.  Every loop is a runtime loop (compact code); the caller separates phases with
# ``tl.debug_barrier()`` because a region written by one thread is read by others.
@triton.jit
def load_cols(ptr, c0, N: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr, rmask):
    """Columns ``c0 … c0 + N − 1`` of a region (zero outside ``[LO, HI)`` and on masked rows)."""
    c = c0 + tl.arange(0, N)[None, :]
    if LO == 0 and HI < 0:  # a scratch region: every column is valid
        x = tl.load(ptr + c, mask=rmask, other=0.0)
    else:
        x = tl.load(ptr + c, mask=rmask & (c >= LO) & (c < HI), other=0.0)
    return x


@triton.jit
def store_cols(ptr, c0, x, LO: tl.constexpr, HI: tl.constexpr, rmask):
    c = c0 + tl.arange(0, x.shape[1])[None, :]
    if LO == 0 and HI < 0:
        tl.store(ptr + c, x, mask=rmask)
    else:
        tl.store(ptr + c, x, mask=rmask & (c >= LO) & (c < HI))


@triton.jit
def stream_product(acc, src, rmask, KP: tl.constexpr, TK: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                   params_ptr, z, OFF: tl.constexpr, NP: tl.constexpr, n0, PREC: tl.constexpr):
    """``acc + src[:, 0:KP] @ Wᵀ[:, n0 …]`` over input chunks of ``TK`` (a forward product)."""
    for k0 in range(0, KP, TK):
        x = load_cols(src, k0, TK, LO, HI, rmask)
        acc = mma(x, wt_tile(params_ptr, z, OFF, NP, k0, TK, n0, acc.shape[1]), acc, PREC)
    return acc


@triton.jit
def stream_product_t(acc, src, rmask, GP: tl.constexpr, TN: tl.constexpr, params_ptr, z, OFF: tl.constexpr,
                     NP: tl.constexpr, N0: tl.constexpr, k0, PREC: tl.constexpr):
    """``acc + src[:, 0:GP] @ W[N0 …, k0 …]`` over gradient chunks of ``TN`` (a backward product;
    ``N0``: the output block the gradient belongs to, e.g. ``P`` for a conditional's ℓ)."""
    for n0 in range(0, GP, TN):
        g = load_cols(src, n0, TN, 0, -1, rmask)
        acc = mma(g, w_tile(params_ptr, z, OFF, NP, N0 + n0, TN, k0, acc.shape[1]), acc, PREC)
    return acc


@triton.jit
def stream_hidden_fwd(src, rmask, KP: tl.constexpr, TK: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                      params_ptr, z, W_OFF: tl.constexpr, NP: tl.constexpr, B_OFF: tl.constexpr, ROWS: tl.constexpr,
                      tlev, dst_h, dst_d, TN: tl.constexpr, ACT: tl.constexpr, SLOPE: tl.constexpr,
                      STORE_D: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """A hidden layer: ``h = act(src @ Wᵀ + b)`` chunk by chunk into ``dst_h`` (and ``act'`` into
    ``dst_d`` when ``STORE_D``)."""
    for n0 in range(0, NP, TN):
        acc = bias_tile(params_ptr, z, B_OFF, NP, ROWS, n0, TN, tlev, BLOCK_B)
        acc = stream_product(acc, src, rmask, KP, TK, LO, HI, params_ptr, z, W_OFF, NP, n0, PREC)
        h, d = activation(acc, ACT, SLOPE)
        store_cols(dst_h, n0, h, 0, -1, rmask)
        if STORE_D:
            store_cols(dst_d, n0, d, 0, -1, rmask)


@triton.jit
def stream_energy_top(src, rmask, KP: tl.constexpr, TK: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                      params_ptr, z, W_OFF: tl.constexpr, NP: tl.constexpr, B_OFF: tl.constexpr, ROWS: tl.constexpr,
                      tlev, WL_OFF: tl.constexpr, lam, dst_ga, TN: tl.constexpr, ACT: tl.constexpr,
                      SLOPE: tl.constexpr, TRACE: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """An energy's last hidden layer fused with its 1-wide output ``w``: writes the backward seed
    ``λ·w·act'`` to ``dst_ga`` and returns ``Σ h·w`` per row (the energy less its output bias;
    computed only when ``TRACE``)."""
    f = tl.zeros([BLOCK_B], tl.float32)
    for n0 in range(0, NP, TN):
        acc = bias_tile(params_ptr, z, B_OFF, NP, ROWS, n0, TN, tlev, BLOCK_B)
        acc = stream_product(acc, src, rmask, KP, TK, LO, HI, params_ptr, z, W_OFF, NP, n0, PREC)
        h, d = activation(acc, ACT, SLOPE)
        wl = row_vector(params_ptr, z, WL_OFF, n0, TN)
        store_cols(dst_ga, n0, lam[:, None] * wl * d, 0, -1, rmask)
        if TRACE:
            f += tl.sum(h * wl, axis=1)
    return f


@triton.jit
def stream_hidden_bwd(src_g, rmask, NP: tl.constexpr, TN: tl.constexpr, params_ptr, z, W_OFF: tl.constexpr, src_d,
                      dst_g, KP: tl.constexpr, TK: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """Back through a hidden → hidden layer (``Wᵀ [KP, NP]``): ``dst_g = (src_g @ W) ⊙ act'``
    (``src_d``: the derivative of the layer's input activation)."""
    for k0 in range(0, KP, TK):
        acc = tl.zeros([BLOCK_B, TK], tl.float32)
        acc = stream_product_t(acc, src_g, rmask, NP, TN, params_ptr, z, W_OFF, NP, 0, k0, PREC)
        store_cols(dst_g, k0, acc * load_cols(src_d, k0, TK, 0, -1, rmask), 0, -1, rmask)


@triton.jit
def stream_input_grad(src_g, rmask, NP: tl.constexpr, TN: tl.constexpr, params_ptr, z, W_OFF: tl.constexpr, dst,
                      KP: tl.constexpr, TK: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """Back through an MLP's first layer (``Wᵀ [KP, NP]``) to its latent input: ``dst = src_g @ W``."""
    for k0 in range(0, KP, TK):
        acc = tl.zeros([BLOCK_B, TK], tl.float32)
        acc = stream_product_t(acc, src_g, rmask, NP, TN, params_ptr, z, W_OFF, NP, 0, k0, PREC)
        store_cols(dst, k0, acc, 0, -1, rmask)


@triton.jit
def stream_energy_linear(src, rmask, KP: tl.constexpr, TK: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                         params_ptr, z, W_OFF: tl.constexpr, lam, dst_e, TRACE: tl.constexpr,
                         BLOCK_B: tl.constexpr):
    """A linear (no hidden layer) energy ``f = w·z + b``: ``∇ = λ·w`` into ``dst_e``; returns
    ``w·z`` per row (when ``TRACE``)."""
    f = tl.zeros([BLOCK_B], tl.float32)
    for k0 in range(0, KP, TK):
        w = row_vector(params_ptr, z, W_OFF, k0, TK)
        store_cols(dst_e, k0, lam[:, None] * w, 0, -1, rmask)
        if TRACE:
            f += tl.sum(load_cols(src, k0, TK, LO, HI, rmask) * w, axis=1)
    return f


@triton.jit
def stream_cond_out(src, rmask, KP: tl.constexpr, TK: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
                    params_ptr, z, W_OFF: tl.constexpr, B_OFF: tl.constexpr, P: tl.constexpr, u_row,
                    ULO: tl.constexpr, UHI: tl.constexpr, dst_z, dst_ex, TN: tl.constexpr, SIGMA_MIN: tl.constexpr,
                    CLAMP: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """A conditional's output layer (``Wᵀ [KP, 2P]``: μ then ℓ, each in the latent layer's tile
    coordinates) and the whitening step of that layer: ``z = μ + (e^ℓ + σ_min)·u`` into
    ``dst_z``, ``e^ℓ`` into ``dst_ex`` (``u``: columns ``[ULO, UHI)`` of ``u_row``)."""
    for n0 in range(0, P, TN):
        mu = bias_tile(params_ptr, z, B_OFF, 2 * P, 1, n0, TN, 0, BLOCK_B)
        lg = bias_tile(params_ptr, z, B_OFF, 2 * P, 1, P + n0, TN, 0, BLOCK_B)
        for k0 in range(0, KP, TK):
            x = load_cols(src, k0, TK, LO, HI, rmask)
            mu = mma(x, wt_tile(params_ptr, z, W_OFF, 2 * P, k0, TK, n0, TN), mu, PREC)
            lg = mma(x, wt_tile(params_ptr, z, W_OFF, 2 * P, k0, TK, P + n0, TN), lg, PREC)
        ex = sigma_exp(lg, CLAMP)
        u = load_cols(u_row, n0, TN, ULO, UHI, rmask)
        store_cols(dst_z, n0, mu + (ex + SIGMA_MIN) * u, 0, -1, rmask)
        store_cols(dst_ex, n0, ex, 0, -1, rmask)


@triton.jit
def stream_cond_out_bwd(src_mu, src_l, rmask, P: tl.constexpr, TN: tl.constexpr, params_ptr, z, W_OFF: tl.constexpr,
                        src_d, dst_g, KP: tl.constexpr, TK: tl.constexpr, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """Back through a conditional's output layer into its last hidden layer:
    ``dst_g = (∂μ @ W_μ + ∂ℓ @ W_ℓ) ⊙ act'``."""
    for k0 in range(0, KP, TK):
        acc = tl.zeros([BLOCK_B, TK], tl.float32)
        acc = stream_product_t(acc, src_mu, rmask, P, TN, params_ptr, z, W_OFF, 2 * P, 0, k0, PREC)
        acc = stream_product_t(acc, src_l, rmask, P, TN, params_ptr, z, W_OFF, 2 * P, P, k0, PREC)
        store_cols(dst_g, k0, acc * load_cols(src_d, k0, TK, 0, -1, rmask), 0, -1, rmask)


@triton.jit
def stream_update(u_row, LO: tl.constexpr, HI: tl.constexpr, NP: tl.constexpr, TN: tl.constexpr,
                  HAS_E: tl.constexpr, src_e, GZ: tl.constexpr, src_g, src_g2, GP: tl.constexpr, GT: tl.constexpr,
                  params_ptr, z, GW_OFF: tl.constexpr, GW_NP: tl.constexpr,
                  HAS_EX: tl.constexpr, src_ex, SIGMA_MIN: tl.constexpr, CLAMP: tl.constexpr, dst_mu, dst_l,
                  KERNEL: tl.constexpr, un_row, half, amp, alpha, inv2,
                  SEEDED: tl.constexpr, cid, step, k0, k1, BLK0: tl.constexpr, noise_row,
                  TRACE: tl.constexpr, rmask, PREC: tl.constexpr, BLOCK_B: tl.constexpr):
    """The bottom-up pass at one latent layer, chunk by chunk, and its Langevin update in place.

    ``G`` (the gradient arriving at z) = ``E`` (the layer's energy gradient ``src_e``, when
    ``HAS_E``) + the input gradient of the conditional below (``Wᵀ [NP, GW_NP]`` at ``GW_OFF``):
    ``GZ`` = 1 — ``src_g @ W`` (its first hidden layer's gradient through its first layer);
    2 — ``src_g @ W_μ + src_g2 @ W_ℓ`` (a conditional without hidden layer: ∂μ, ∂ℓ of the layer
    below through its output layer).  With ``HAS_EX`` (a conditional above reads this layer)
    ``∂μ = G`` and ``∂ℓ = G·u·e^ℓ`` go to ``dst_mu`` / ``dst_l`` and ``∂u = G·σ``; else ``∂u = G``.
    Then u (``u_row``, columns ``[LO, HI)``) takes its step.  Returns the trace's
    ``−½‖u‖² − kernel`` part per row."""
    lp = tl.zeros([BLOCK_B], tl.float32)
    for c0 in range(0, NP, TN):
        G = tl.zeros([BLOCK_B, TN], tl.float32)
        if HAS_E:
            G += load_cols(src_e, c0, TN, 0, -1, rmask)
        if GZ == 1:
            G = stream_product_t(G, src_g, rmask, GP, GT, params_ptr, z, GW_OFF, GW_NP, 0, c0, PREC)
        if GZ == 2:
            G = stream_product_t(G, src_g, rmask, GP, GT, params_ptr, z, GW_OFF, GW_NP, 0, c0, PREC)
            G = stream_product_t(G, src_g2, rmask, GP, GT, params_ptr, z, GW_OFF, GW_NP, GP, c0, PREC)
        u = load_cols(u_row, c0, TN, LO, HI, rmask)
        if HAS_EX:
            ex = load_cols(src_ex, c0, TN, 0, -1, rmask)
            gu, gl = cond_grads(G, u, ex, SIGMA_MIN, CLAMP)
            store_cols(dst_mu, c0, G, 0, -1, rmask)
            store_cols(dst_l, c0, gl, 0, -1, rmask)
        else:
            gu = G
        un = u
        if KERNEL:
            un = load_cols(un_row, c0, TN, LO, HI, rmask)
        if TRACE:
            lp += gauss_terms(u, un, alpha, inv2, KERNEL)
        if SEEDED:
            eps = noise_chunk(cid, step, k0, k1, BLK0 + c0 // 4, TN // 4, c0, LO, HI)
        else:
            eps = load_cols(noise_row, c0, TN, LO, HI, rmask)
        store_cols(u_row, c0, langevin_update(u, gu, un, eps, half, amp, alpha, inv2, KERNEL), LO, HI, rmask)
    return lp


@triton.jit
def stream_gauss(src, un, rmask, alpha, inv2, N: tl.constexpr, TN: tl.constexpr, KERNEL: tl.constexpr):
    """Per row ``−½‖u‖² − [KERNEL] ‖a·u − u_next‖²/(2σ²)`` of the state rows ``src`` (``N`` columns;
    ``un`` the u_next rows): log π's non-energy part, for a draw's log π in a swap round."""
    t = tl.sum(tl.zeros([src.shape[0], TN], dtype=tl.float32), axis=1)
    for c0 in range(0, N, TN):
        u = load_cols(src, c0, TN, 0, N, rmask)
        t -= 0.5 * tl.sum(u * u, axis=1)
        if KERNEL:
            kr = alpha * u - load_cols(un, c0, TN, 0, N, rmask)
            t -= 0.5 * tl.sum(kr * kr * inv2, axis=1)
    return t


@triton.jit
def copy_cols(src, dst, N: tl.constexpr, TN: tl.constexpr, rmask):
    """``dst[:, 0:N] = src[:, 0:N]`` (state rows into / out of the working copy)."""
    for c0 in range(0, N, TN):
        store_cols(dst, c0, load_cols(src, c0, TN, 0, N, rmask), 0, N, rmask)


# ---------------------------------------------------------------------------------- debug kernel
@triton.jit
def rng_debug_kernel(words_ptr, normal_ptr, key_ptr, ids_ptr, step, stream, B, D,
                     BLOCK_B: tl.constexpr, P: tl.constexpr, NBP: tl.constexpr):
    """hebm's stream exposed for bit-exact tests: words ``[B, 4·NB]`` (uint32 bits in int64) and the
    normals ``[B, D]`` of one step, through the kernels' own :func:`noise_tile`."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < B
    k0 = tl.load(key_ptr).to(tl.uint32)
    k1 = tl.load(key_ptr + 1).to(tl.uint32)
    cid = tl.load(ids_ptr + rows, mask=rm, other=0).to(tl.uint32)
    NB = (D + 3) // 4
    jj = tl.arange(0, NBP)
    x0, x1, x2, x3 = philox_block(jj.to(tl.uint32)[None, :], cid[:, None], step, stream, k0, k1)
    wm = rm[:, None] & (jj < NB)[None, :]
    base = words_ptr + rows[:, None].to(tl.int64) * (4 * NB) + 4 * jj[None, :]
    tl.store(base + 0, x0.to(tl.int64), mask=wm)
    tl.store(base + 1, x1.to(tl.int64), mask=wm)
    tl.store(base + 2, x2.to(tl.int64), mask=wm)
    tl.store(base + 3, x3.to(tl.int64), mask=wm)
    cols = tl.arange(0, P)
    v = noise_tile(cid, step, stream, k0, k1, 0, P // 4)
    m = rm[:, None] & (cols < D)[None, :]
    tl.store(normal_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], v, mask=m)
