// hebm_kernel.h — what the C++ CPU kernel and the CUDA kernel share.
//
// The math contract is hebm/reference.py (langevin_ref) and docs/design.md §2; this header only holds
// the pieces both compiled kernels need bit-for-bit alike:
//   * the problem description (flat buffers laid out by hebm/backends/pack.py),
//   * the Philox4x32-10 noise stream (hebm/philox.py) and its Box–Muller normals,
//   * the activation family (hebm/nn.py ACTIVATION_CODES), forward and derivative.
// Everything here is __host__ __device__ so the CPU tests exercise the code the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define HEBM_HD __host__ __device__ __forceinline__
#else
#define HEBM_HD inline
#endif

namespace hebm {

// ------------------------------------------------------------------------------------------
// Problem: one call of the K-step ũ-space Langevin loop.  Pointers to per-chain data and to
// the network parameters live where the kernel runs (host for CPU, device for CUDA); the small
// structural tables (dims, layout, mlps, act_params) are always host memory — a CUDA launcher
// copies what it needs into kernel arguments or constant memory.
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

// Columns of the layout table (pack.py): one row per Linear layer.
enum LayoutCol : int { LAY_IN = 0, LAY_OUT = 1, LAY_W = 2, LAY_B = 3, LAY_BROWS = 4, LAY_NCOLS = 5 };
// Columns of the mlps table: one row per MLP (conditionals g_1..g_{L-1}, then energies f_1..f_L).
enum MlpCol : int { MLP_FIRST = 0, MLP_NLAYERS = 1, MLP_ACT = 2, MLP_NCOLS = 3 };

template <typename T>
struct Problem {
  // ---- state: u is [B, D] row-major, layers bottom-up (u_1 first); updated in place
  int64_t B = 0, D = 0, L = 0;
  const int64_t* dims = nullptr;     // [L] host
  const int64_t* offsets = nullptr;  // [L] host, first column of each layer
  T* u = nullptr;
  T sigma_min = T(0.01);
  T sigma_clamp = T(0);  // σ = exp(c·tanh(ℓ/c)) + σ_min with c = sigma_clamp; 0: σ = exp(ℓ) + σ_min

  // ---- networks (pack.py): W [out, in] row-major at params + w_off, then a bias table
  //      [b_rows, out] at params + b_off; b_rows = n_levels for the hidden layers of a
  //      level-conditioned energy (row = level t), else 1.
  const T* params = nullptr;
  const int64_t* layout = nullptr;   // [n_layers_total, LAY_NCOLS] host
  const int64_t* mlps = nullptr;     // [n_mlps, MLP_NCOLS] host
  const double* act_params = nullptr;  // [n_mlps] host (LeakyReLU slope)
  int64_t n_mlps = 0;
  bool has_energy = false;           // energies present: mlps[L-1 .. 2L-2] are f_1..f_L
  int64_t n_levels = 1;

  // ---- per-chain parameters, [B] each (always materialised, never broadcast)
  const T* step_size = nullptr;      // δ
  const T* noise_scale = nullptr;    // c
  const T* energy_scale = nullptr;   // λ
  const int64_t* t = nullptr;        // level per chain, nullptr for an unconditional prior
  const T* u_next = nullptr;         // [B, D]; nullptr ⇒ no kernel term (alpha, sigma unused)
  const T* alpha = nullptr;
  const T* sigma = nullptr;

  // ---- noise: explicit [K, B, D] or the Philox stream (key, chain_ids, step_offset)
  const T* noise = nullptr;
  uint32_t key0 = 0, key1 = 0;
  const int64_t* chain_ids = nullptr;  // [B]
  int64_t step_offset = 0;
  int64_t n_steps = 0;

  // ---- optional output: log π at the state entering each step, [K, B] (nullptr: skip)
  T* log_density = nullptr;

  // ---- Metropolis adjustment (MALA, docs/design.md §2b): the step is a proposal (c = 1), kept
  //      when log U < log α; U from `uniforms` [K, B] or stream 2 of the Philox key above.
  //      `accept` [2, B] (zeroed by the caller) gets the accepted proposals and Σ min(1, α).
  bool metropolis = false;
  const T* uniforms = nullptr;
  T* accept = nullptr;
};

// ------------------------------------------------------------------------------------------
// The one structure validator of the packed networks (hebm/backends/pack.py), used by the CPU
// and the CUDA extension alike.  Host code.  Returns "" when the tables describe L-1
// conditionals g_i: d_{i+1} -> 2 d_i followed (has_energy) by L energies f_i: d_i -> 1, every
// MLP a contiguous run of Linear layers whose widths chain, weights and bias tables inside a
// params buffer of n_params elements, bias tables of 1 or n_levels rows (1 for output layers);
// else what is wrong, for the op's error message.
// ------------------------------------------------------------------------------------------
inline std::string validate_structure(const int64_t* dims, int64_t L, const int64_t* layout, int64_t layout_len,
                                      const int64_t* mlps, int64_t mlps_len, int64_t n_act_params, bool has_energy,
                                      int64_t n_levels, int64_t n_params) {
  auto S = [](int64_t v) { return std::to_string(v); };
  constexpr int64_t kMaxWidth = int64_t(1) << 20;
  if (L < 1) return "dims must not be empty";
  for (int64_t i = 0; i < L; ++i)
    if (dims[i] < 1 || dims[i] >= kMaxWidth) return "layer size dims[" + S(i) + "] = " + S(dims[i]) + " is out of range";
  if (n_levels < 1) return "n_levels must be >= 1";
  if (layout_len % LAY_NCOLS != 0) return "layout must be an [n_layers, 5] table, flattened";
  if (mlps_len % MLP_NCOLS != 0) return "mlps must be an [n_mlps, 3] table, flattened";
  const int64_t n_layers = layout_len / LAY_NCOLS, n_mlps = mlps_len / MLP_NCOLS;
  const int64_t want = (L - 1) + (has_energy ? L : 0);
  if (n_mlps != want)
    return "expected " + S(want) + " networks (L-1 conditionals" + (has_energy ? " + L energies" : "") + "), got " + S(n_mlps);
  if (n_act_params != n_mlps) return "act_params must have one entry per network";
  int64_t next_layer = 0;
  for (int64_t m = 0; m < n_mlps; ++m) {
    const int64_t first = mlps[m * MLP_NCOLS + MLP_FIRST], nl = mlps[m * MLP_NCOLS + MLP_NLAYERS];
    const int64_t act = mlps[m * MLP_NCOLS + MLP_ACT];
    if (first != next_layer || nl < 1 || first + nl > n_layers) return "network " + S(m) + " has a bad layer range";
    if (act < ACT_RELU || act > ACT_SOFTPLUS) return "unknown activation code " + S(act) + " of network " + S(m);
    next_layer = first + nl;
    const bool cond = m < L - 1;
    const int64_t i = cond ? m : m - (L - 1);
    const int64_t want_in = cond ? dims[i + 1] : dims[i], want_out = cond ? 2 * dims[i] : 1;
    int64_t prev_out = want_in;
    for (int64_t j = 0; j < nl; ++j) {
      const int64_t* row = layout + (first + j) * LAY_NCOLS;
      const int64_t in = row[LAY_IN], out = row[LAY_OUT], w = row[LAY_W], b = row[LAY_B], brows = row[LAY_BROWS];
      const std::string where = "network " + S(m) + " layer " + S(j);
      if (in != prev_out || out < 1 || out >= kMaxWidth) return where + ": widths do not chain";
      if (brows != 1 && brows != n_levels) return where + ": bias table rows must be 1 or n_levels";
      if (j == nl - 1 && brows != 1) return where + ": an output layer takes one bias row";
      if (w < 0 || w + in * out > n_params || b < 0 || b + brows * out > n_params) return where + " lies outside params";
      prev_out = out;
    }
    if (prev_out != want_out) return "network " + S(m) + " must output " + S(want_out) + " values, got " + S(prev_out);
  }
  if (next_layer != n_layers) return "layout has layers no network uses";
  return "";
}

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
// output word (docs/design.md §2b; hebm/philox.py philox_accept_uniform).
HEBM_HD float philox_accept_uniform(uint32_t k0, uint32_t k1, uint64_t chain, uint64_t step) {
  const Philox4 r = philox4x32_10(0u, static_cast<uint32_t>(chain), static_cast<uint32_t>(step), 2u, k0, k1);
  return philox_uniform(r.x[0]);
}

// Four normals of element block j (elements 4j .. 4j+3) of chain `chain` at `step`, `stream`.
// Box–Muller in float64, rounded once to float32 at the end, as hebm/philox.py computes it
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
