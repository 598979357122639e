// hebm_kernel.h — what the C++ CPU kernel and the CUDA kernel share.
//
// The math contract is hebm/sampler/reference.py (langevin_ref) and docs/design.md §2; this header only holds
// the pieces both compiled kernels need bit-for-bit alike:
//   * the problem description (the network as csrc/network.h checked it, the call's fields as the
//     call record lists them: csrc/call_record.h),
//   * the Philox4x32-10 noise stream (hebm/prior/philox.py) and its Box–Muller normals,
//   * the activation family (hebm/prior/nn.py ACTIVATION_CODES), forward and derivative.
// Everything here is __host__ __device__ so the CPU tests exercise the code the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "call_record.h"

#if defined(__CUDACC__)
#define HEBM_HD __host__ __device__ __forceinline__
#else
#define HEBM_HD inline
#endif

namespace hebm {

// ------------------------------------------------------------------------------------------
// Problem: one call of the K-step ũ-space Langevin loop.  Pointers to per-chain data and to
// the network parameters live where the kernel runs (host for CPU, device for CUDA); the small
// structural tables are always host memory — a CUDA launcher copies what it needs into kernel
// arguments or constant memory.  The per-call fields are the call record's (csrc/call_record.h,
// generated from hebm/sampler/record.py): one member per field, of the type its kind gives (below).
// ------------------------------------------------------------------------------------------
enum Activation : int {
  ACT_RELU = 0,
  ACT_LEAKY_RELU = 1,
  ACT_TANH = 2,
  ACT_SILU = 3,
  ACT_GELU = 4,       // erf form
  ACT_GELU_TANH = 5,
  ACT_SOFTPLUS = 6,   // beta = 1, threshold = 20 (PyTorch's default)
};

// Columns of the op's layout table (hebm/sampler/backends/pack.py): one row per Linear layer — its widths,
// the slots of W and of the bias (-1: none), the bias-table rows (n_levels for the hidden layers of a
// level-conditioned energy, else 1), and the slot and first column of its level rows (-1: none).
enum LayoutCol : int { LAY_IN = 0, LAY_OUT, LAY_W, LAY_B, LAY_BROWS, LAY_LV, LAY_LVCOL, LAY_NCOLS };
// Columns of the mlps table: one row per MLP (conditionals g_1..g_{L-1}, then energies f_1..f_L).
enum MlpCol : int { MLP_FIRST = 0, MLP_NLAYERS = 1, MLP_ACT = 2, MLP_NCOLS = 3 };

// One Linear layer's numbers, where they are (checked by csrc/network.h before any kernel runs).
template <typename T>
struct LayerRef {
  int64_t in = 0, out = 0, brows = 1;
  const T* W = nullptr;      // [out, in] row-major (spectral norm already divided in)
  const T* bias = nullptr;   // [out]; null: no bias
  const T* level = nullptr;  // level rows: row r (= level t) at level + r * level_ld; null: none
  int64_t level_ld = 0;
  // Row r of the layer's bias table: bias + level[r] — the IEEE sums of hebm/sampler/backends/pack.py
  // unpack() (0 + level where there is no bias), so every backend reads the same bits.
  HEBM_HD T bias_at(int64_t r, int64_t o) const {
    const T b = bias != nullptr ? bias[o] : T(0);
    return level != nullptr ? b + level[r * level_ld + o] : b;
  }
};

// The members of one call-record field, by its kind (csrc/call_record.h).
#define HEBM_MEMBER_U(name) T* u = nullptr;                          // the state [B, D], updated in place
#define HEBM_MEMBER_STEPS(name) int64_t name = 0;
#define HEBM_MEMBER_COUNT(name) int64_t name = 0;
#define HEBM_MEMBER_CHAIN(name) const T* name = nullptr;             // [B]; null: not given (an optional term)
#define HEBM_MEMBER_LEVEL(name) const int64_t* name = nullptr;       // [B] levels; null: unconditional
#define HEBM_MEMBER_NEXT(name) const T* name = nullptr;              // [B, D]; null: not given
#define HEBM_MEMBER_SEED(name) uint32_t key0 = 0, key1 = 0;          // Philox key (used when noise is null)
#define HEBM_MEMBER_IDS(name) const int64_t* name = nullptr;         // [B]
#define HEBM_MEMBER_NOISE(name) const T* name = nullptr;             // [K, B, D]; null: the seeded stream
#define HEBM_MEMBER_FLAG(name) bool name = false;
#define HEBM_MEMBER_UNIF(name) const T* name = nullptr;              // [K, B]; null: the seeded stream
#define HEBM_MEMBER_LADDER(name) const T* name = nullptr; int64_t name##_n = 0;  // [R] β ladder; null: none
#define HEBM_MEMBER_CHOICE(name) int name = 0;                       // index into kChoices_<name> (call_record.h)
#define HEBM_MEMBER_ROUNDS(name) const T* name = nullptr;            // [n_rounds, B]; null: the seeded stream
#define HEBM_MEMBER(name, slot, KIND) HEBM_MEMBER_##KIND(name)

template <typename T>
struct Problem {
  // ---- shape: u is [B, D] row-major, layers bottom-up (u_1 first)
  int64_t B = 0, D = 0, L = 0;
  const int64_t* dims = nullptr;     // [L] host
  const int64_t* offsets = nullptr;  // [L] host, first column of each layer
  T sigma_min = T(0.01);
  T sigma_clamp = T(0);  // σ = exp(c·tanh(ℓ/c)) + σ_min with c = sigma_clamp; 0: σ = exp(ℓ) + σ_min

  // ---- networks: every Linear layer (LayerRef), and per MLP its first layer, depth and
  //      activation: conditionals g_1..g_{L-1}, then (has_energy) energies f_1..f_L
  const LayerRef<T>* layers = nullptr;
  int64_t n_layers = 0;
  const int64_t* mlps = nullptr;     // [n_mlps, MLP_NCOLS] host
  const double* act_params = nullptr;  // [n_mlps] host (LeakyReLU slope)
  int64_t n_mlps = 0;
  bool has_energy = false;
  int64_t n_levels = 1;

  // ---- the call: one member per field of the call record (u, n_steps, the per-chain parameters
  //      δ, c, λ, t, u_next, a, σ, the noise source, step_offset, metropolis, uniforms, …)
  HEBM_LANGEVIN_FIELDS(HEBM_MEMBER)

  // ---- outputs: log π at the state entering each step, [K, B] (nullptr: skip); with
  //      metropolis, `accept` [2, B] (zeroed by the caller) gets the accepted proposals and Σ min(1, α)
  T* log_density = nullptr;
  T* accept = nullptr;
  // with trace_every = m: the draws [n, B, D] (the state after every step whose counter
  // step_offset + k + 1 m divides) and their log π [n, B] (nullptr: skip)
  T* draws = nullptr;
  T* draws_log_density = nullptr;
  // ---- with temperatures: the swap record [n_rounds, 2, B] (round n: E = λF of each chain's
  //      state entering it, then at each pair's lower chain 1 = proposed, 2 = swapped, else 0)
  T* swaps = nullptr;
};

// ------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al. 2011), counter (j, chain, step, stream), key (seed lo, seed hi)
// ------------------------------------------------------------------------------------------
struct Philox4 {
  uint32_t x[4];
};

HEBM_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

HEBM_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c0, hi0, lo0);
    mulhilo32(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  Philox4 out = {{c0, c1, c2, c3}};
  return out;
}

// ((x >> 9) + 0.5) · 2^-23: exact in fp32, strictly inside (0, 1)
HEBM_HD float philox_uniform(uint32_t x) { return (static_cast<float>(x >> 9) + 0.5f) * 1.1920928955078125e-07f; }

// The Metropolis test's uniform of chain `chain` at `step`: counter (0, chain, step, 2), first
// output word (docs/design.md §2b; hebm/prior/philox.py philox_accept_uniform).
// The replica-exchange uniform of chain `chain` (ladder slot `slot` of R) for the swap round after
// `step`: counter (slot < R−1 ? slot mod 2 : 2, chain, step, 3), first output word (docs/design.md
// §2; hebm/prior/philox.py philox_swap_uniforms): a pair's U at its lower chain, the group's
// parity coin at its last chain.
HEBM_HD float philox_swap_uniform(uint32_t k0, uint32_t k1, uint64_t chain, int64_t slot, int64_t R, uint64_t step) {
  const uint32_t j = slot == R - 1 ? 2u : static_cast<uint32_t>(slot % 2);
  const Philox4 r = philox4x32_10(j, static_cast<uint32_t>(chain), static_cast<uint32_t>(step), 3u, k0, k1);
  return philox_uniform(r.x[0]);
}

HEBM_HD float philox_accept_uniform(uint32_t k0, uint32_t k1, uint64_t chain, uint64_t step) {
  const Philox4 r = philox4x32_10(0u, static_cast<uint32_t>(chain), static_cast<uint32_t>(step), 2u, k0, k1);
  return philox_uniform(r.x[0]);
}

// Four normals of element block j (elements 4j .. 4j+3) of chain `chain` at `step`, `stream`.
// Box–Muller in float64, rounded once to float32 at the end, as hebm/prior/philox.py computes it
// (docs/design.md §2): the double log/sqrt/sin/cos of any libm (glibc, Sleef, libdevice) are
// within ~1 ulp of double, so the rounded float32 normals are the same bits on every machine and
// backend except when a double result falls within an ulp of a float32 rounding boundary
// (≈ 1 normal in 10⁷–10⁸); in fp32 they differed in 5–21 % of normals between AVX-512 and AVX2.
HEBM_HD void philox_normal4(uint32_t k0, uint32_t k1, uint64_t j, uint64_t chain, uint64_t step, uint32_t stream,
                            float out[4]) {
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(chain), static_cast<uint32_t>(step),
                                  stream, k0, k1);
  const double two_pi = 6.283185307179586;
  const double u0 = philox_uniform(r.x[0]), u1 = philox_uniform(r.x[1]);
  const double u2 = philox_uniform(r.x[2]), u3 = philox_uniform(r.x[3]);
  const double r1 = sqrt(-2.0 * log(u0));
  const double r2 = sqrt(-2.0 * log(u2));
  const double a1 = two_pi * u1, a3 = two_pi * u3;
  out[0] = static_cast<float>(r1 * cos(a1));
  out[1] = static_cast<float>(r1 * sin(a1));
  out[2] = static_cast<float>(r2 * cos(a3));
  out[3] = static_cast<float>(r2 * sin(a3));
}

// ------------------------------------------------------------------------------------------
// Activations: value and derivative at the pre-activation x (what the backward pass needs).
// ------------------------------------------------------------------------------------------
template <typename T>
HEBM_HD T sigmoid_(T x) {
  return T(1) / (T(1) + exp(-x));
}

template <typename T>
HEBM_HD T act_forward(int act, T param, T x) {
  switch (act) {
    case ACT_RELU: return x > T(0) ? x : T(0);
    case ACT_LEAKY_RELU: return x > T(0) ? x : param * x;
    case ACT_TANH: return tanh(x);
    case ACT_SILU: return x * sigmoid_(x);
    case ACT_GELU: return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
    case ACT_GELU_TANH: {
      const T k = T(0.79788456080286535588);  // sqrt(2/pi)
      return T(0.5) * x * (T(1) + tanh(k * (x + T(0.044715) * x * x * x)));
    }
    case ACT_SOFTPLUS: return x > T(20) ? x : log1p(exp(x));
    default: return x;
  }
}

template <typename T>
HEBM_HD T act_derivative(int act, T param, T x) {
  switch (act) {
    case ACT_RELU: return x > T(0) ? T(1) : T(0);
    case ACT_LEAKY_RELU: return x > T(0) ? T(1) : param;
    case ACT_TANH: {
      const T y = tanh(x);
      return T(1) - y * y;
    }
    case ACT_SILU: {
      const T s = sigmoid_(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case ACT_GELU: {
      const T cdf = T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
      const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * x * x);
      return cdf + x * pdf;
    }
    case ACT_GELU_TANH: {
      const T k = T(0.79788456080286535588);
      const T inner = k * (x + T(0.044715) * x * x * x);
      const T th = tanh(inner);
      return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * k * (T(1) + T(3) * T(0.044715) * x * x);
    }
    case ACT_SOFTPLUS: return x > T(20) ? T(1) : sigmoid_(x);
    default: return T(1);
  }
}

}  // namespace hebm
