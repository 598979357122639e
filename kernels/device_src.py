"""Triton device functions shared by every generated kernel, kept as *source text*.

Why text: the Langevin kernels are generated per network structure (:mod:`kernels.codegen`) and
written to a cached module; these helpers are pasted into that module so it is self-contained,
and so that ``@triton.jit`` runs only when a kernel is first built — after the caller has had the
chance to set ``TRITON_INTERPRET=1`` (the interpreter must be chosen before the decorator runs).

Activation codes are the packed format of hebm (``hebm.nn.ACTIVATION_CODES``, never renumbered):
relu 0, leaky_relu 1, tanh 2, silu 3, gelu (erf) 4, gelu_tanh 5, softplus 6.  Every activation
returns ``(y, dy/dx)`` so the backward pass reuses the derivative saved in the forward pass.

The noise stream is hebm's (DESIGN.md §2): Philox4x32-10 with counter ``(j, chain, step, stream)``
and key ``(seed lo, seed hi)``; uniforms ``((x >> 9) + 0.5)·2⁻²³``; Box–Muller with ``r₁, 2πu₁``
for elements 4j, 4j+1 and ``r₂, 2πu₃`` for 4j+2, 4j+3.  Triton's ``philox_impl`` runs exactly
the Random123 rounds (multiplier 0xD2511F53 on word 0, 0xCD9E8D57 on word 2), verified
bit-for-bit against ``hebm.philox.philox4x32`` by the tests.
"""

ACT_NAMES = {0: "relu", 1: "leaky_relu", 2: "tanh", 3: "silu", 4: "gelu", 5: "gelu_tanh", 6: "softplus"}

DEVICE_SRC = r'''
import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _act_relu(x, p):
    return tl.maximum(x, 0.0), tl.where(x > 0.0, 1.0, 0.0)


@triton.jit
def _act_leaky_relu(x, p):
    # torch: grad = 1 for x > 0, slope otherwise (x = 0 included)
    return tl.where(x > 0.0, x, x * p), tl.where(x > 0.0, 1.0, p)


@triton.jit
def _act_tanh(x, p):
    # tanh(x) = 2σ(2x) − 1 (libdevice tanh does not run in the interpreter)
    y = 2.0 * _sigmoid(2.0 * x) - 1.0
    return y, 1.0 - y * y


@triton.jit
def _act_silu(x, p):
    s = _sigmoid(x)
    return x * s, s * (1.0 + x * (1.0 - s))


@triton.jit
def _act_gelu(x, p):
    cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
    pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
    return x * cdf, cdf + x * pdf


@triton.jit
def _act_gelu_tanh(x, p):
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    th = 2.0 * _sigmoid(2.0 * inner) - 1.0
    y = 0.5 * x * (1.0 + th)
    d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    return y, d


@triton.jit
def _act_softplus(x, p):
    # torch.nn.functional.softplus, beta 1, threshold 20
    big = x > 20.0
    ex = tl.exp(tl.minimum(x, 20.0))
    y = tl.where(big, x, tl.where(x < -15.0, ex, tl.log(1.0 + ex)))
    return y, tl.where(big, 1.0, ex / (1.0 + ex))


@triton.jit
def _philox_words(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 tensors (Random123 word order, as hebm.philox.philox4x32)."""
    return tl.philox_impl(c0, c1, c2, c3, k0, k1, 10)


@triton.jit
def _uniform(x):
    return ((x >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit
def _philox_normal(blk, cid, step, stream, comp, k0, k1):
    """hebm's normal for flat element 4·blk + comp of chain cid at ``step`` (broadcast shapes).

    blk, cid: uint32 tensors that broadcast to the tile; step, stream: scalars; comp: int32 in 0..3.
    """
    zero = (blk + cid) * 0
    c0 = zero + blk
    c1 = zero + cid
    c2 = (zero + step).to(tl.uint32)  # a step >= 2^31 arrives as int64: keep its low word
    c3 = (zero + stream).to(tl.uint32)
    x0, x1, x2, x3 = _philox_words(c0, c1, c2, c3, k0, k1)
    lo = comp < 2
    ua = _uniform(tl.where(lo, x0, x2))
    ub = _uniform(tl.where(lo, x1, x3))
    r = tl.sqrt_rn(-2.0 * tl.log(ua))
    ang = 6.283185307179586 * ub
    return tl.where((comp % 2) == 0, r * tl.cos(ang), r * tl.sin(ang))
'''

# a debug kernel exposing the stream (raw words, uniforms, normals) for bit-exact tests
RNG_DEBUG_SRC = r'''

@triton.jit
def rng_debug_kernel(words_ptr, normal_ptr, key_ptr, ids_ptr, step, stream, B, D,
                     BLOCK_B: tl.constexpr, P: tl.constexpr, NBP: tl.constexpr):
    """words [B, 4·NB] (uint32 bits in int64), normals [B, D] of one step, hebm's layout."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = rows < B
    k0 = tl.load(key_ptr).to(tl.uint32)
    k1 = tl.load(key_ptr + 1).to(tl.uint32)
    cid = tl.load(ids_ptr + rows, mask=rm, other=0).to(tl.uint32)
    # raw words of blocks j = 0 .. NB-1
    NB = (D + 3) // 4
    jj = tl.arange(0, NBP)
    zero = tl.zeros([BLOCK_B, NBP], dtype=tl.uint32)
    x0, x1, x2, x3 = _philox_words(zero + jj.to(tl.uint32)[None, :], zero + cid[:, None],
                                   (zero + step).to(tl.uint32), (zero + stream).to(tl.uint32), k0, k1)
    wm = rm[:, None] & (jj < NB)[None, :]
    base = words_ptr + rows[:, None].to(tl.int64) * (4 * NB) + 4 * jj[None, :]
    tl.store(base + 0, x0.to(tl.int64), mask=wm)
    tl.store(base + 1, x1.to(tl.int64), mask=wm)
    tl.store(base + 2, x2.to(tl.int64), mask=wm)
    tl.store(base + 3, x3.to(tl.int64), mask=wm)
    cols = tl.arange(0, P)
    v = _philox_normal((cols // 4).to(tl.uint32)[None, :], cid[:, None], step, stream, (cols % 4)[None, :], k0, k1)
    m = rm[:, None] & (cols < D)[None, :]
    tl.store(normal_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], v, mask=m)
'''
