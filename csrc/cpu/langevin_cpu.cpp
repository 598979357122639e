// langevin_cpu.cpp — the fused ũ-space Langevin sampler on the CPU.
//
// Per chunk of R chains (R a multiple of RB rows), for every step k = 0 … K-1, with no
// allocation and no framework call inside the loop:
//   1. T_β forward, top-down: z_L = u_L;  (μ_i | ℓ_i) = g_i(z_{i+1});  z_i = μ_i + (e^{ℓ_i} + σ_min) u_i
//   2. energies f_i(z_i; t) forward and backward (seed λ_b) → ∂/∂z_i
//   3. backward through T_β, bottom-up: ∂/∂u_i = σ_i ⊙ ∂/∂z_i;  the conditional g_i gets
//      ∂/∂μ_i = ∂/∂z_i,  ∂/∂ℓ_i = ∂/∂z_i ⊙ u_i ⊙ e^{ℓ_i};  its input gradient adds into ∂/∂z_{i+1}
//   4. ∇ log π = ∂/∂u − u − [kernel] a (a u − u_next)/σ²,  log π (optional trace)
//   5. u ← u + (δ²/2) ∇ log π + c δ ε, ε explicit or Philox4x32-10 (hebm_kernel.h)
// Every Linear layer is a small matrix product C[R × N] = A[R × K] · M[K × N] done by a
// register-blocked micro-kernel (RB rows × NV vectors) written with GCC/Clang vector
// extensions, so the same source compiles to AVX-512 with -march=native and to SSE2 without.
// A product with only a few columns N (a scalar energy output; the input gradient of a 2-d
// latent layer) is done as row-wise dot products instead (gemm_skinny): the micro-kernel would
// pad N to a whole vector.
// Weights are packed once per call: Wᵀ (forward) and W (backward), columns zero-padded to the
// vector width and stored in micro-kernel column panels; activations for fp32 use vectorised exp/erf (the formulas PyTorch's own
// vectorised CPU kernels use), fp64 uses libm.
#include "langevin_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if !(defined(__GNUC__) || defined(__clang__))
#error "hebm's CPU kernel needs GCC or Clang (vector extensions)"
#endif

#if defined(__AVX512F__)
#define HEBM_VBYTES 64
#define HEBM_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define HEBM_VBYTES 32
#define HEBM_ISA "avx2+fma"
#elif defined(__AVX__)
#define HEBM_VBYTES 32
#define HEBM_ISA "avx"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define HEBM_VBYTES 16
#define HEBM_ISA "neon"
#else
#define HEBM_VBYTES 16
#define HEBM_ISA "sse2/generic"
#endif

#define HEBM_INLINE inline __attribute__((always_inline))
#define HEBM_UNROLL _Pragma("GCC unroll 16")

namespace hebm {
namespace cpu {

const char* isa_name() { return HEBM_ISA; }
int vector_bytes() { return HEBM_VBYTES; }

namespace {

constexpr int kAlign = 64;
constexpr int RB = 4;                                 // rows per micro-kernel tile
#ifndef HEBM_NV
#define HEBM_NV (HEBM_VBYTES >= 64 ? 4 : 3)  // AVX-512: 32 registers; AVX2/SSE/NEON: 16 (4x3 acc + 3 + 1)
#endif
constexpr int NV = HEBM_NV;                           // vectors per micro-kernel tile
constexpr int KC = 256;                               // k-block: keeps a weight tile in L1/L2

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float v __attribute__((vector_size(HEBM_VBYTES)));
  typedef int32_t vi __attribute__((vector_size(HEBM_VBYTES)));
};
template <>
struct Vec<double> {
  typedef double v __attribute__((vector_size(HEBM_VBYTES)));
  typedef int64_t vi __attribute__((vector_size(HEBM_VBYTES)));
};

template <typename T>
constexpr int64_t width() {
  return HEBM_VBYTES / sizeof(T);
}
template <typename T>
inline int64_t padw(int64_t n) {
  const int64_t w = width<T>();
  return (n + w - 1) / w * w;
}
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ---------------------------------------------------------------------------------- micro-kernel
// C[RB × NVX·W] (ldc) = (acc ? C : 0) + A[RB × K] (lda) · M[K × NVX·W] (ldm); C, M rows aligned.
template <typename T, int NVX>
HEBM_INLINE void micro(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict M, int64_t ldm,
                       T* __restrict C, int64_t ldc, bool acc) {
  typedef typename Vec<T>::v V;
  constexpr int64_t W = width<T>();
  V c[RB][NVX];
  HEBM_UNROLL for (int r = 0; r < RB; ++r) {
    HEBM_UNROLL for (int j = 0; j < NVX; ++j) {
      c[r][j] = acc ? *reinterpret_cast<const V*>(C + r * ldc + j * W) : V{};
    }
  }
  const T* a0 = A;
  const T* a1 = A + lda;
  const T* a2 = A + 2 * lda;
  const T* a3 = A + 3 * lda;
  for (int64_t k = 0; k < K; ++k) {
    V m[NVX];
    const V* mk = reinterpret_cast<const V*>(M + k * ldm);
    HEBM_UNROLL for (int j = 0; j < NVX; ++j) m[j] = mk[j];
    const T x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    HEBM_UNROLL for (int j = 0; j < NVX; ++j) {
      c[0][j] += x0 * m[j];
      c[1][j] += x1 * m[j];
      c[2][j] += x2 * m[j];
      c[3][j] += x3 * m[j];
    }
  }
  HEBM_UNROLL for (int r = 0; r < RB; ++r) {
    HEBM_UNROLL for (int j = 0; j < NVX; ++j) *reinterpret_cast<V*>(C + r * ldc + j * W) = c[r][j];
  }
}
static_assert(RB == 4, "micro() is written for 4-row tiles");

// Weight operands are stored in column panels, the layout the micro-kernel reads: the columns
// of panel p (vectors p·NV … p·NV + NV − 1, fewer in the last panel) lie contiguously, row after
// row, so a micro-kernel call streams one contiguous block.  (Row-major with the padded width as
// the stride put the rows of a panel 1–2 KiB apart for 256/512-wide layers: a power-of-two
// stride that maps a whole KC-row panel onto a few L1 sets and evicted it between calls.)
// Element (k, n) of a K × Np operand:
template <typename T>
inline int64_t panel_index(int64_t k, int64_t n, int64_t K, int64_t Np) {
  constexpr int64_t W = width<T>();
  const int64_t j0 = (n / W) / NV * NV;                 // first vector of n's panel
  const int64_t wv = std::min<int64_t>(NV, Np / W - j0);  // vectors in that panel
  return K * j0 * W + k * (wv * W) + (n - j0 * W);
}

// M[K × Np] in panels (above), element (k, n) = at(k, n): panel after panel, row after row — the
// order of panel_index, so the writes are contiguous.
template <typename T, typename F>
void to_panels(T* dst, int64_t K, int64_t Np, const F& at) {
  constexpr int64_t W = width<T>();
  for (int64_t j0 = 0; j0 < Np / W; j0 += NV) {
    const int64_t wv = std::min<int64_t>(NV, Np / W - j0), n0 = j0 * W, cols = wv * W;
    T* p = dst + K * n0;
    for (int64_t k = 0; k < K; ++k, p += cols)
      for (int64_t c = 0; c < cols; ++c) p[c] = at(k, n0 + c);
  }
}

// C[R × Np] (ldc) (+)= A[R × K] (lda) · M[K × Np] (M in panels, above);  R multiple of RB, Np
// multiple of W.
template <typename T>
void gemm(int64_t R, int64_t K, int64_t Np, const T* A, int64_t lda, const T* M, T* C, int64_t ldc, bool acc) {
  constexpr int64_t W = width<T>();
  const int64_t nvec = Np / W;
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = std::min<int64_t>(KC, K - k0);
    const bool ac = acc || k0 > 0;
    const T* Ak = A + k0;
    int64_t j = 0;
    for (; j + NV <= nvec; j += NV) {
      const T* Mp = M + K * j * W + k0 * (NV * W);
      for (int64_t r = 0; r < R; r += RB) micro<T, NV>(kc, Ak + r * lda, lda, Mp, NV * W, C + r * ldc + j * W, ldc, ac);
    }
    const int64_t rest = nvec - j;
    if (rest == 0) continue;
    const T* Mp = M + K * j * W + k0 * (rest * W);
    for (int64_t r = 0; r < R; r += RB) {
      switch (rest) {
        case 1: micro<T, 1>(kc, Ak + r * lda, lda, Mp, W, C + r * ldc + j * W, ldc, ac); break;
        case 2: micro<T, 2>(kc, Ak + r * lda, lda, Mp, 2 * W, C + r * ldc + j * W, ldc, ac); break;
        case 3: micro<T, 3>(kc, Ak + r * lda, lda, Mp, 3 * W, C + r * ldc + j * W, ldc, ac); break;
        default: break;
      }
    }
  }
}

// Horizontal sum of a vector.
template <typename V, typename T = decltype(V{}[0] + 0)>
HEBM_INLINE T hsum(V v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return _mm512_reduce_add_ps((__m512)v);
  else return _mm512_reduce_add_pd((__m512d)v);
#elif defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
  } else {
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128((__m256d)v), _mm256_extractf128_pd((__m256d)v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
  }
#else
  constexpr int n = sizeof(V) / sizeof(T);
  T x[n];
  std::memcpy(x, &v, sizeof(V));
  for (int h = n / 2; h > 0; h /= 2)
    for (int i = 0; i < h; ++i) x[i] += x[i + h];
  return x[0];
#endif
}

// The product for an operand with few columns N (a scalar energy output, the input gradient of a
// 2-d latent layer): as row-wise dot products with Mᵀ stored row-major [N, Kp], because the
// micro-kernel pads N to a whole vector (16 columns on AVX-512 for one useful one) and streams
// all K rows of the operand per 4 rows of A.  C[r, n] (+)= Σ_k A[r, k] Mᵀ[n, k] for n < N; the
// columns N … Np−1 are set to 0 unless acc.  A's rows are Kp long (a padded workspace buffer:
// finite values beyond K, where Mᵀ is 0), rows of A and Mᵀ vector-aligned.
template <typename T>
void gemm_skinny(int64_t R, int64_t Kp, int64_t N, int64_t Np, const T* A, int64_t lda, const T* MT, T* C, int64_t ldc,
                 bool acc) {
  typedef typename Vec<T>::v V;
  constexpr int64_t W = width<T>();
  for (int64_t r = 0; r < R; ++r) {
    const T* a = A + r * lda;
    T* c = C + r * ldc;
    for (int64_t n = 0; n < N; ++n) {
      const T* m = MT + n * Kp;
      V s0{}, s1{};
      int64_t k = 0;
      for (; k + 2 * W <= Kp; k += 2 * W) {
        s0 += *reinterpret_cast<const V*>(a + k) * *reinterpret_cast<const V*>(m + k);
        s1 += *reinterpret_cast<const V*>(a + k + W) * *reinterpret_cast<const V*>(m + k + W);
      }
      if (k < Kp) s0 += *reinterpret_cast<const V*>(a + k) * *reinterpret_cast<const V*>(m + k);
      const T v = hsum(s0 + s1);
      c[n] = acc ? c[n] + v : v;
    }
    if (!acc)
      for (int64_t n = N; n < Np; ++n) c[n] = T(0);
  }
}

// Whether the row-wise form above is cheaper than the micro-kernel for an N-column operand with K
// (padded Kp) rows: per row of A, ~N·(3·Kp/W + 8) vector operations (loads, FMAs, the horizontal
// sum) against ~2·K (one FMA per k plus its share of the loads and broadcasts).
template <typename T>
bool use_skinny(int64_t N, int64_t K) {
  const int64_t Kp = padw<T>(K);
  return N * (3 * Kp / width<T>() + 8) < 2 * K;
}

// ---------------------------------------------------------------------------------- fp32 vector math
typedef Vec<float>::v VF;
typedef Vec<float>::vi VI;

HEBM_INLINE VF vsel(VI m, VF a, VF b) { return m ? a : b; }

// exp, Cephes expf (≈1 ulp) with round-to-nearest by the 1.5·2²³ trick; input clamped to
// [-87.3, 88.3] (results below 2⁻¹²⁶ are not needed by any caller).
HEBM_INLINE VF vexp(VF x) {
  const VF hi = VF{} + 88.3f, lo = VF{} - 87.3f;
  x = vsel(x > hi, hi, x);
  x = vsel(x < lo, lo, x);
  const VF magic = VF{} + 12582912.0f;
  const VF t = x * 1.44269504088896341f + magic;
  const VF n = t - magic;
  const VI ni = (VI)t - (VI)magic;
  VF r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const VF z = r * r;
  VF y = VF{} + 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  const VI e = (ni + 127) << 23;
  return y * (VF)e;
}

HEBM_INLINE VF vabs(VF x) { return vsel(x < 0.0f, -x, x); }

// The activation value (written over x) and its derivative (to d), n a multiple of W.
void act_fwd_der_f32(int act, float param, float* __restrict x, float* __restrict d, int64_t n) {
  constexpr int64_t W = width<float>();
  if (act == ACT_SOFTPLUS) {  // rare: libm, PyTorch's threshold-20 form
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i];
      if (v > 20.0f) {
        x[i] = v;
        d[i] = 1.0f;
      } else {
        const float e = std::exp(v);
        x[i] = std::log1p(e);
        d[i] = e / (e + 1.0f);
      }
    }
    return;
  }
  for (int64_t i = 0; i < n; i += W) {
    VF v = *reinterpret_cast<VF*>(x + i);
    VF val, der;
    switch (act) {
      case ACT_RELU:
        val = vsel(v > 0.0f, v, VF{});
        der = vsel(v > 0.0f, VF{} + 1.0f, VF{});
        break;
      case ACT_LEAKY_RELU:
        val = vsel(v > 0.0f, v, v * param);
        der = vsel(v > 0.0f, VF{} + 1.0f, VF{} + param);
        break;
      case ACT_TANH: {
        const VF a = vabs(v);
        const VF s = v * v;
        VF p = VF{} - 5.70498872745E-3f;
        p = p * s + 2.06390887954E-2f;
        p = p * s - 5.37397155531E-2f;
        p = p * s + 1.33314422036E-1f;
        p = p * s - 3.33332819422E-1f;
        const VF small = p * s * v + v;
        VF big = 1.0f - 2.0f / (vexp(a + a) + 1.0f);
        big = vsel(v < 0.0f, -big, big);
        val = vsel(a < 0.625f, small, big);
        der = 1.0f - val * val;
        break;
      }
      case ACT_SILU: {
        const VF s = 1.0f / (1.0f + vexp(-v));
        val = v * s;
        der = s * (1.0f + v * (1.0f - s));
        break;
      }
      case ACT_GELU: {
        // erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), as ATen's Vectorized<float>::erf
        const VF xs = v * 0.70710678118654752440f;
        const VF ax = vabs(xs);
        const VF t = 1.0f / (0.3275911f * ax + 1.0f);
        VF r = VF{} + 1.061405429f;
        r = r * t - 1.453152027f;
        r = r * t + 1.421413741f;
        r = r * t - 0.284496736f;
        r = r * t + 0.254829592f;
        const VF e = vexp(-(ax * ax));  // = exp(-x²/2), shared with the pdf
        VF erf = 1.0f - r * t * e;
        erf = vsel(xs < 0.0f, -erf, erf);
        const VF cdf = 0.5f * (1.0f + erf);
        val = v * cdf;
        der = cdf + v * 0.39894228040143267794f * e;
        break;
      }
      case ACT_GELU_TANH: {
        const float k = 0.79788456080286535588f;
        const VF y = k * (v + 0.044715f * v * v * v);
        const VF s = 1.0f / (1.0f + vexp(-2.0f * y));  // (1 + tanh y)/2
        val = v * s;
        der = s + 2.0f * v * s * (1.0f - s) * k * (1.0f + 3.0f * 0.044715f * v * v);
        break;
      }
      default:
        val = v;
        der = VF{} + 1.0f;
    }
    *reinterpret_cast<VF*>(x + i) = val;
    *reinterpret_cast<VF*>(d + i) = der;
  }
}

void act_fwd_der(int act, float param, float* x, float* d, int64_t n) { act_fwd_der_f32(act, param, x, d, n); }

void act_fwd_der(int act, double param, double* x, double* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    x[i] = act_forward<double>(act, param, v);
    d[i] = act_derivative<double>(act, param, v);
  }
}

template <typename T>
HEBM_INLINE void vmul_inplace(T* __restrict a, const T* __restrict b, int64_t n) {
  typedef typename Vec<T>::v V;
  constexpr int64_t W = width<T>();
  for (int64_t i = 0; i < n; i += W) *reinterpret_cast<V*>(a + i) *= *reinterpret_cast<const V*>(b + i);
}

struct AlignedBuffer {
  void* p = nullptr;
  explicit AlignedBuffer(size_t bytes, bool zero = true) {
    if (bytes == 0) bytes = kAlign;
    p = std::aligned_alloc(kAlign, round_up(static_cast<int64_t>(bytes), kAlign));
    if (!p) throw std::bad_alloc();
    if (zero) std::memset(p, 0, round_up(static_cast<int64_t>(bytes), kAlign));
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

}  // namespace

// ---------------------------------------------------------------------------------- packed weights
// Wᵀ (forward) and W (backward) of every Linear layer in micro-kernel column panels, bias tables
// (bias + level rows) column-padded; a function of the network's numbers only, so a copy that
// never changes (a hebm.Sampler's: ops.cpp keeps the last few by its token) is laid out once and
// shared by every call and thread.
template <typename T>
struct PackedWeights {
  struct Layer {
    int64_t in, out, inp, outp, brows;
    const T* Wt;    // [in, outp]   forward operand (column panels: panel_index)
    const T* Wb;    // [out, inp]   backward operand (column panels)
    const T* bias;  // [brows, outp]
    // the row-major operands of gemm_skinny, where use_skinny says so (else null):
    const T* Wrow;   // [out, inp]  W: forward with few outputs
    const T* WTrow;  // [in, outp]  Wᵀ: backward with few inputs
  };
  struct Net {
    int64_t first, n, act;
    T param;
  };
  std::vector<Layer> layers;
  std::vector<Net> nets;  // conditionals g_0 … g_{L-2}, then energies f_0 … f_{L-1}
  std::unique_ptr<AlignedBuffer> buffer;
  int64_t maxWp = 0;

  explicit PackedWeights(const Problem<T>& p) {
    const int64_t n_layers_total = p.n_layers;
    int64_t total = 0;
    std::vector<int64_t> wt_off(n_layers_total), wb_off(n_layers_total), b_off(n_layers_total);
    std::vector<int64_t> wr_off(n_layers_total, -1), wtr_off(n_layers_total, -1);
    for (int64_t l = 0; l < n_layers_total; ++l) {
      const LayerRef<T>& src = p.layers[l];
      const int64_t in = src.in, out = src.out, brows = src.brows;
      wt_off[l] = total;
      total += in * padw<T>(out);
      wb_off[l] = total;
      total += out * padw<T>(in);
      b_off[l] = total;
      total += brows * padw<T>(out);
      if (use_skinny<T>(out, in)) {
        wr_off[l] = total;
        total += out * padw<T>(in);
      }
      if (use_skinny<T>(in, out)) {
        wtr_off[l] = total;
        total += in * padw<T>(out);
      }
    }
    buffer.reset(new AlignedBuffer(sizeof(T) * std::max<int64_t>(total, 1), /*zero=*/false));  // all written below
    T* base = static_cast<T*>(buffer->p);
    for (int64_t l = 0; l < n_layers_total; ++l) {
      const LayerRef<T>& src = p.layers[l];
      Layer ly;
      ly.in = src.in;
      ly.out = src.out;
      ly.brows = src.brows;
      ly.inp = padw<T>(ly.in);
      ly.outp = padw<T>(ly.out);
      const T* Wsrc = src.W;
      T* wt = base + wt_off[l];
      T* wb = base + wb_off[l];
      T* bb = base + b_off[l];
      // every element of every operand written once, in the order of the destination, the
      // padding as zeros (a langevin_fused call lays the weights out afresh each time: this is
      // part of its fixed cost, so no memset of the whole buffer first and no scattered writes)
      const int64_t in = ly.in, out = ly.out;
      to_panels<T>(wt, in, ly.outp, [&](int64_t k, int64_t n) { return n < out ? Wsrc[n * in + k] : T(0); });  // Wᵀ
      to_panels<T>(wb, out, ly.inp, [&](int64_t k, int64_t n) { return n < in ? Wsrc[k * in + n] : T(0); });   // W
      for (int64_t r = 0; r < ly.brows; ++r)
        for (int64_t o = 0; o < ly.outp; ++o) bb[r * ly.outp + o] = o < out ? src.bias_at(r, o) : T(0);
      ly.Wrow = wr_off[l] >= 0 ? base + wr_off[l] : nullptr;
      ly.WTrow = wtr_off[l] >= 0 ? base + wtr_off[l] : nullptr;
      if (ly.Wrow)
        for (int64_t o = 0; o < out; ++o)
          for (int64_t i = 0; i < ly.inp; ++i) base[wr_off[l] + o * ly.inp + i] = i < in ? Wsrc[o * in + i] : T(0);
      if (ly.WTrow)
        for (int64_t i = 0; i < in; ++i)
          for (int64_t o = 0; o < ly.outp; ++o) base[wtr_off[l] + i * ly.outp + o] = o < out ? Wsrc[o * in + i] : T(0);
      ly.Wt = wt;
      ly.Wb = wb;
      ly.bias = bb;
      layers.push_back(ly);
      maxWp = std::max({maxWp, ly.inp, ly.outp});
    }
    for (int64_t m = 0; m < p.n_mlps; ++m) {
      const int64_t* row = p.mlps + m * MLP_NCOLS;
      nets.push_back(Net{row[MLP_FIRST], row[MLP_NLAYERS], row[MLP_ACT], static_cast<T>(p.act_params[m])});
    }
  }
};

// ---------------------------------------------------------------------------------- the sampler
template <typename T>
struct SamplerImpl {
  using Layer = typename PackedWeights<T>::Layer;
  using Net = typename PackedWeights<T>::Net;

  Problem<T> p;
  int64_t R = 0, nchunks = 0, L = 0, D = 0, n_energy_hidden = 0, maxWp = 0;
  std::vector<int64_t> dims, offs;
  std::shared_ptr<const PackedWeights<T>> weights;
  const std::vector<Layer>& layers;
  const std::vector<Net>& nets;

  // workspace layout: offsets (in T elements) of each buffer from the 64-aligned base
  struct WsLayout {
    int64_t uc, zc, gz, unx, eps, row, tl, gout, ta, tb, eout, total;
    int64_t u0 = 0, g0 = 0, gp = 0;  // MALA only
    int64_t ge0 = 0, gep = 0;        // MALA on a ladder: λ∇F of the state and of the proposal
    std::vector<int64_t> cact, cder, cout;  // per conditional: hidden layer buffers (flattened), output
    std::vector<int64_t> cact_start;        // index into cact of each conditional's first hidden layer
    std::vector<int64_t> eact, eder;        // energy scratch per hidden layer index
  } ws;
  // per-row scalars inside the `row` block
  //  (replica exchange: ROW_BETA the slot's β, ROW_ELAM the untempered λ, ROW_F0 F at the MALA chain's state)
  enum { ROW_LAM = 0, ROW_DELTA, ROW_C, ROW_ALPHA, ROW_SIG, ROW_F, ROW_LOGP, ROW_LOGP_PROP, ROW_BETA, ROW_ELAM, ROW_F0,
         ROW_N };

  SamplerImpl(const Problem<T>& prob, int64_t chunk_rows, std::shared_ptr<const PackedWeights<T>> w)
      : p(prob),
        weights(w ? std::move(w) : std::make_shared<const PackedWeights<T>>(prob)),
        layers(weights->layers),
        nets(weights->nets) {
    L = p.L;
    D = p.D;
    dims.assign(p.dims, p.dims + L);
    offs.assign(p.offsets, p.offsets + L);
    R = std::max<int64_t>(RB, round_up(chunk_rows, RB));
    nchunks = (p.B + R - 1) / R;
    maxWp = weights->maxWp;
    // ---- workspace layout
    int64_t off = 0;
    auto take = [&](int64_t n) {
      const int64_t o = off;
      off += round_up(std::max<int64_t>(n, 1), kAlign / static_cast<int64_t>(sizeof(T)));
      return o;
    };
    ws.uc = take(R * D);
    ws.zc = take(R * D);
    ws.gz = take(R * D);
    ws.unx = take(R * D);
    ws.eps = take(R * D);
    if (p.metropolis) {  // MALA: the state before the proposal, both full gradients, log π of the proposal
      ws.u0 = take(R * D);
      ws.g0 = take(R * D);
      ws.gp = take(R * D);
      if (p.temperatures) {
        ws.ge0 = take(R * D);
        ws.gep = take(R * D);
      }
    }
    ws.row = take(R * ROW_N);
    ws.tl = take(R * static_cast<int64_t>(sizeof(int64_t) / sizeof(T)));  // level per row (int64)
    ws.gout = take(R * maxWp);
    ws.ta = take(R * maxWp);
    ws.tb = take(R * maxWp);
    for (int64_t i = 0; i + 1 < L; ++i) {
      const Net& g = nets[i];
      ws.cact_start.push_back(static_cast<int64_t>(ws.cact.size()));
      for (int64_t j = 0; j + 1 < g.n; ++j) {
        const Layer& ly = layers[g.first + j];
        ws.cact.push_back(take(R * ly.outp));
        ws.cder.push_back(take(R * ly.outp));
      }
      ws.cout.push_back(take(R * layers[g.first + g.n - 1].outp));
    }
    if (p.has_energy) {
      int64_t maxh = 0;
      for (int64_t i = 0; i < L; ++i) maxh = std::max(maxh, nets[L - 1 + i].n - 1);
      for (int64_t j = 0; j < maxh; ++j) {
        int64_t w = 0;
        for (int64_t i = 0; i < L; ++i) {
          const Net& f = nets[L - 1 + i];
          if (j + 1 < f.n) w = std::max(w, layers[f.first + j].outp);
        }
        ws.eact.push_back(take(R * w));
        ws.eder.push_back(take(R * w));
      }
      ws.eout = take(R * maxWp);
    } else {
      ws.eout = take(1);
    }
    ws.total = off;
  }

  size_t bytes() const { return sizeof(T) * static_cast<size_t>(ws.total) + kAlign; }

  // ---- one MLP forward over the chunk: input A [R, in] (lda); hidden values/derivatives to
  //      act/der, output to out [R, outp].  Bias row per chain: its level where the table has one.
  void mlp_forward(const Net& net, const T* A, int64_t lda, T* base, const int64_t* act_off, const int64_t* der_off,
                   T* out, const int64_t* tl) const {
    const T* src = A;
    int64_t slda = lda;
    for (int64_t j = 0; j < net.n; ++j) {
      const Layer& ly = layers[net.first + j];
      T* dst = (j + 1 < net.n) ? base + act_off[j] : out;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t br = ly.brows > 1 ? tl[r] : 0;
        std::memcpy(dst + r * ly.outp, ly.bias + br * ly.outp, sizeof(T) * ly.outp);
      }
      if (j > 0 && ly.Wrow)  // (the first layer reads z in place: its rows are not padded)
        gemm_skinny<T>(R, ly.inp, ly.out, ly.outp, src, slda, ly.Wrow, dst, ly.outp, true);
      else
        gemm<T>(R, ly.in, ly.outp, src, slda, ly.Wt, dst, ly.outp, true);
      if (j + 1 < net.n) act_fwd_der(static_cast<int>(net.act), net.param, dst, base + der_off[j], R * ly.outp);
      src = dst;
      slda = ly.outp;
    }
  }

  // ---- backward through one MLP: g [R, outp] (gradient at the output) → gin [R, inp] (returned)
  T* mlp_backward(const Net& net, const T* g, T* base, const int64_t* der_off) const {
    T* ta = base + ws.ta;
    T* tb = base + ws.tb;
    const T* src = g;
    T* dst = nullptr;
    for (int64_t j = net.n - 1; j >= 0; --j) {
      const Layer& ly = layers[net.first + j];
      dst = (src == ta) ? tb : ta;
      if (ly.WTrow)
        gemm_skinny<T>(R, ly.outp, ly.in, ly.inp, src, ly.outp, ly.WTrow, dst, ly.inp, false);
      else
        gemm<T>(R, ly.out, ly.inp, src, ly.outp, ly.Wb, dst, ly.inp, false);
      if (j > 0) vmul_inplace(dst, base + der_off[j - 1], R * ly.inp);
      src = dst;
    }
    return dst;
  }

  // ---- the energy part of ∇log π at the chunk's state (ws.uc): ws.gz = ∇_u λ·F(T_β(u)) (λ
  //      enters through the backward seed), ROW_F = F per row; nothing without energies
  void energy_grad(T* base) const {
    T* uc = base + ws.uc;
    T* zc = base + ws.zc;
    T* gz = base + ws.gz;
    T* rowv = base + ws.row;
    const T* lam = rowv + ROW_LAM * R;
    T* Fs = rowv + ROW_F * R;
    const int64_t* tl = reinterpret_cast<const int64_t*>(base + ws.tl);
    const T smin = p.sigma_min;
    const T clamp = p.sigma_clamp;

    if (p.has_energy) {
      // 1. T_β forward, top-down
      const int64_t top = offs[L - 1];
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < dims[L - 1]; ++c) zc[r * D + top + c] = uc[r * D + top + c];
      for (int64_t i = L - 2; i >= 0; --i) {
        const Net& g = nets[i];
        T* out = base + ws.cout[i];
        const int64_t s = ws.cact_start[i];
        mlp_forward(g, zc + offs[i + 1], D, base, ws.cact.data() + s, ws.cder.data() + s, out, tl);
        const int64_t di = dims[i], ldo = layers[g.first + g.n - 1].outp, oi = offs[i];
        for (int64_t r = 0; r < R; ++r) {
          T* o = out + r * ldo;
          for (int64_t c = 0; c < di; ++c) {
            // σ = exp(s(ℓ)) + σ_min, s(ℓ) = c·tanh(ℓ/c) (or ℓ); keep for the backward pass
            // e = exp(s(ℓ)) in the ℓ slot and ∂e/∂ℓ = e·s'(ℓ) in the μ slot (μ is not needed again)
            T lc = o[di + c], ds = T(1);
            if (clamp > T(0)) {
              const T th = std::tanh(lc / clamp);
              lc = clamp * th;
              ds = T(1) - th * th;
            }
            const T e = std::exp(lc);
            zc[r * D + oi + c] = o[c] + (e + smin) * uc[r * D + oi + c];
            o[di + c] = e;
            o[c] = e * ds;
          }
        }
      }
      // 2. energies forward and backward
      for (int64_t r = 0; r < R * D; ++r) gz[r] = T(0);
      for (int64_t r = 0; r < R; ++r) Fs[r] = T(0);
      T* eout = base + ws.eout;
      T* gout = base + ws.gout;
      for (int64_t i = 0; i < L; ++i) {
        const Net& f = nets[L - 1 + i];
        mlp_forward(f, zc + offs[i], D, base, ws.eact.data(), ws.eder.data(), eout, tl);
        const int64_t ldo = layers[f.first + f.n - 1].outp;
        for (int64_t r = 0; r < R; ++r) {
          Fs[r] += eout[r * ldo];
          T* g = gout + r * ldo;
          for (int64_t c = 0; c < ldo; ++c) g[c] = T(0);
          g[0] = lam[r];
        }
        const T* gin = mlp_backward(f, gout, base, ws.eder.data());
        const int64_t ldi = padw<T>(dims[i]), oi = offs[i];
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < dims[i]; ++c) gz[r * D + oi + c] += gin[r * ldi + c];
      }
      // 3. backward through T_β, bottom-up
      for (int64_t i = 0; i + 1 < L; ++i) {
        const Net& g = nets[i];
        const T* out = base + ws.cout[i];
        const int64_t di = dims[i], ldo = layers[g.first + g.n - 1].outp, oi = offs[i];
        for (int64_t r = 0; r < R; ++r) {
          const T* o = out + r * ldo;
          T* go = gout + r * ldo;
          for (int64_t c = 0; c < ldo; ++c) go[c] = T(0);
          for (int64_t c = 0; c < di; ++c) {
            const T gzc = gz[r * D + oi + c];
            const T e = o[di + c];
            go[c] = gzc;                                    // ∂/∂μ
            go[di + c] = gzc * uc[r * D + oi + c] * o[c];   // ∂/∂ℓ = ∂/∂z · u · e·s'(ℓ)
            gz[r * D + oi + c] = gzc * (e + smin);          // ∂/∂u_i
          }
        }
        const int64_t s = ws.cact_start[i];
        const T* gin = mlp_backward(g, gout, base, ws.cder.data() + s);
        const int64_t ldi = padw<T>(dims[i + 1]), on = offs[i + 1];
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < dims[i + 1]; ++c) gz[r * D + on + c] += gin[r * ldi + c];
      }
    }
  }

  // ---- the step's normals into ws.eps (seeded stream; rows whose c = 0 need none)
  void draw_noise(T* base, int64_t row0, int64_t nvalid, uint64_t philox_step) const {
    const T* cc = base + ws.row + ROW_C * R;
    T* eps = base + ws.eps;
    bool any_noise = false;
    for (int64_t r = 0; r < nvalid; ++r) any_noise |= (cc[r] != T(0));
    if (!any_noise) return;
    for (int64_t r = 0; r < nvalid; ++r) {
      const uint64_t chain = static_cast<uint64_t>(p.chain_ids[row0 + r]);
      T* e = eps + r * D;
      for (int64_t j = 0; 4 * j < D; ++j) {
        float nv[4];
        philox_normal4(p.key0, p.key1, static_cast<uint64_t>(j), chain, philox_step, 0u, nv);
        for (int q = 0; q < 4 && 4 * j + q < D; ++q) e[4 * j + q] = static_cast<T>(nv[q]);
      }
    }
  }

  // ---- the workspace's per-row views the gradient and the update read
  struct Rows {
    const T *gz, *unx, *lam, *delta, *cc, *al, *sg, *Fs;
  };
  Rows rows(const T* base) const {
    const T* rowv = base + ws.row;
    return Rows{base + ws.gz, base + ws.unx, rowv + ROW_LAM * R, rowv + ROW_DELTA * R, rowv + ROW_C * R,
                rowv + ROW_ALPHA * R, rowv + ROW_SIG * R, rowv + ROW_F * R};
  }

  // ---- ∇log π at element c of a row: the energy part gu[c] (after T_β's backward), the Gaussian
  //      −x and the kernel term −a(a·x − u_next)/σ²; accumulates ‖u‖² and ‖a·u − u_next‖² for log π
  T grad_at(T x, const T* gu, const T* un, int64_t c, T a, T inv_s2, bool kernel_on, T& uu, T& kk) const {
    T grad = (p.has_energy ? gu[c] : T(0)) - x;
    uu += x * x;
    if (kernel_on) {
      const T dlt = a * x - un[c];
      kk += dlt * dlt;
      grad -= a * dlt * inv_s2;
    }
    return grad;
  }

  // ---- one Langevin step of the chunk (state in ws.uc), gradient and update
  //      trace_k / draw_k ([B] rows, nullable): get log π at the state entering the step (the
  //      per-step trace; the log π of a draw taken after the previous step)
  void step(T* base, int64_t row0, int64_t nvalid, uint64_t philox_step, const T* noise_k, T* trace_k,
            bool kernel_on, T* draw_k = nullptr) const {
    T* uc = base + ws.uc;
    const T* eps = base + ws.eps;
    const Rows rw = rows(base);
    const T *gz = rw.gz, *unx = rw.unx, *lam = rw.lam, *delta = rw.delta, *cc = rw.cc, *al = rw.al, *sg = rw.sg,
            *Fs = rw.Fs;
    energy_grad(base);
    // 4./5. gradient of the Gaussian and kernel terms, log π, noise, update
    if (!noise_k) draw_noise(base, row0, nvalid, philox_step);
    for (int64_t r = 0; r < nvalid; ++r) {
      T* u = uc + r * D;
      const T* gu = gz + r * D;
      const T* un = unx + r * D;
      const T* ep = noise_k ? noise_k + (row0 + r) * D : eps + r * D;
      const T h = T(0.5) * delta[r] * delta[r];
      const T amp = cc[r] * delta[r];
      const bool noisy = cc[r] != T(0);
      T uu = T(0), kk = T(0);
      const T a = al[r], inv_s2 = T(1) / (sg[r] * sg[r]);
      for (int64_t c = 0; c < D; ++c) {
        const T x = u[c];
        const T grad = grad_at(x, gu, un, c, a, inv_s2, kernel_on, uu, kk);
        T nx = x + h * grad;
        if (noisy) nx += amp * ep[c];
        u[c] = nx;
      }
      if (trace_k || draw_k) {
        T lp = -T(0.5) * uu;
        if (p.has_energy) lp += lam[r] * Fs[r];
        if (kernel_on) lp -= kk / (T(2) * sg[r] * sg[r]);
        if (trace_k) trace_k[row0 + r] = lp;
        if (draw_k) draw_k[row0 + r] = lp;
      }
    }
  }

  // ---- ∇log π (full: energies, Gaussian, kernel term) into g and log π into lp, at ws.uc
  void full_grad(T* base, int64_t nvalid, bool kernel_on, T* g, T* lp) const {
    energy_grad(base);
    const T* uc = base + ws.uc;
    const Rows rw = rows(base);
    const T *gz = rw.gz, *unx = rw.unx, *lam = rw.lam, *al = rw.al, *sg = rw.sg, *Fs = rw.Fs;
    for (int64_t r = 0; r < nvalid; ++r) {
      const T* u = uc + r * D;
      const T* gu = gz + r * D;
      const T* un = unx + r * D;
      T* gr = g + r * D;
      T uu = T(0), kk = T(0);
      const T a = al[r], inv_s2 = T(1) / (sg[r] * sg[r]);
      for (int64_t c = 0; c < D; ++c) gr[c] = grad_at(u[c], gu, un, c, a, inv_s2, kernel_on, uu, kk);
      T l = -T(0.5) * uu;
      if (p.has_energy) l += lam[r] * Fs[r];
      if (kernel_on) l -= kk / (T(2) * sg[r] * sg[r]);
      lp[r] = l;
    }
  }

  // ---- draws (trace_every = m, hebm/sampler/reference.py langevin_loop): the state after step k
  //      is draw n = (step_offset + k + 1)/m − ⌊step_offset/m⌋ − 1 when m divides its counter
  //      step_offset + k + 1; −1: not a draw.  A chunk writes its own rows of draw n (no sync).
  int64_t draw_index(int64_t k) const {
    if (p.trace_every <= 0 || p.draws == nullptr) return -1;
    const int64_t c = p.step_offset + k + 1;
    return c % p.trace_every ? -1 : c / p.trace_every - p.step_offset / p.trace_every - 1;
  }
  // the chunk's state (ws.uc) as its rows of draw n; returns the [B] row of the draw's log π
  T* write_draw(const T* base, int64_t row0, int64_t nvalid, int64_t n) const {
    std::memcpy(p.draws + (n * p.B + row0) * D, base + ws.uc, sizeof(T) * nvalid * D);
    return p.draws_log_density + n * p.B;
  }

  // ---- MALA's proposal u' = u + (δ²/2)∇log π(u) + δε for the chunk's rows, the state kept in u0
  void mala_propose(T* base, int64_t row0, int64_t nvalid, const T* noise_k) const {
    T* uc = base + ws.uc;
    T* u0 = base + ws.u0;
    const T* g0 = base + ws.g0;
    const T* eps = base + ws.eps;
    const T* delta = base + ws.row + ROW_DELTA * R;
    for (int64_t r = 0; r < nvalid; ++r) {
      const T h = T(0.5) * delta[r] * delta[r];
      const T* ep = noise_k ? noise_k + (row0 + r) * D : eps + r * D;
      T* u = uc + r * D;
      T* s = u0 + r * D;
      const T* g = g0 + r * D;
      for (int64_t c = 0; c < D; ++c) {
        s[c] = u[c];
        u[c] = s[c] + h * g[c] + delta[r] * ep[c];
      }
    }
  }

  // ---- the Metropolis test of row r at step k (the proposal's log π and gradient evaluated):
  //      log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u); NaN refuses
  bool mala_test(T* base, int64_t row0, int64_t r, int64_t k, uint64_t step_k, T& log_alpha) const {
    const T* rowv = base + ws.row;
    const T delta = rowv[ROW_DELTA * R + r];
    const T h = T(0.5) * delta * delta;
    const T inv = delta > T(0) ? T(0.5) / (delta * delta) : T(0);
    const T* u = base + ws.uc + r * D;
    const T* s = base + ws.u0 + r * D;
    const T* g = base + ws.g0 + r * D;
    const T* gq = base + ws.gp + r * D;
    T rev = T(0), fwd = T(0);
    for (int64_t c = 0; c < D; ++c) {
      const T a = s[c] - u[c] - h * gq[c];
      const T b = u[c] - s[c] - h * g[c];
      rev += a * a;
      fwd += b * b;
    }
    log_alpha = rowv[ROW_LOGP_PROP * R + r] - rowv[ROW_LOGP * R + r] + (-rev * inv) - (-fwd * inv);
    const T U = p.uniforms ? p.uniforms[k * p.B + row0 + r]
                           : static_cast<T>(philox_accept_uniform(
                                 p.key0, p.key1, static_cast<uint64_t>(p.chain_ids[row0 + r]), step_k));
    return std::log(U) < log_alpha;
  }

  // ---- K Metropolis-adjusted steps of the chunk (the rule of hebm/sampler/reference.py mala_step):
  //      each state is evaluated once — the proposal's log π and gradient are the next step's
  //      when it is accepted — so K steps cost K + 1 evaluations where ULA costs K.
  void mala_chunk(T* base, int64_t row0, int64_t nvalid, bool kernel_on) const {
    T* uc = base + ws.uc;
    T* u0 = base + ws.u0;
    T* g0 = base + ws.g0;
    T* gp = base + ws.gp;
    T* rowv = base + ws.row;
    T* lp0 = rowv + ROW_LOGP * R;
    T* lpp = rowv + ROW_LOGP_PROP * R;
    if (p.n_steps > 0) full_grad(base, nvalid, kernel_on, g0, lp0);
    for (int64_t k = 0; k < p.n_steps; ++k) {
      const uint64_t step_k = static_cast<uint64_t>(p.step_offset + k);
      const T* noise_k = p.noise ? p.noise + k * p.B * D : nullptr;
      if (p.log_density)
        for (int64_t r = 0; r < nvalid; ++r) p.log_density[k * p.B + row0 + r] = lp0[r];
      if (!noise_k) draw_noise(base, row0, nvalid, step_k);
      mala_propose(base, row0, nvalid, noise_k);
      full_grad(base, nvalid, kernel_on, gp, lpp);
      // the test: log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u)
      for (int64_t r = 0; r < nvalid; ++r) {
        T* u = uc + r * D;
        T* s = u0 + r * D;
        T* g = g0 + r * D;
        const T* gq = gp + r * D;
        T log_alpha;
        const bool acc = mala_test(base, row0, r, k, step_k, log_alpha);
        if (acc) {
          std::memcpy(g, gq, sizeof(T) * D);
          lp0[r] = lpp[r];
          p.accept[row0 + r] += T(1);
        } else {
          std::memcpy(u, s, sizeof(T) * D);
        }
        const T prob = log_alpha >= T(0) ? T(1) : std::exp(log_alpha);
        if (prob == prob) p.accept[p.B + row0 + r] += prob;
      }
      const int64_t n = draw_index(k);
      if (n >= 0) std::memcpy(write_draw(base, row0, nvalid, n) + row0, lp0, sizeof(T) * nvalid);
    }
  }

  // ======================================================================= replica exchange
  // (the rule of hebm/sampler/reference.py swap_round; docs/design.md §2.)  A chunk holds whole
  // ladder groups of Rl = p.temperatures_n consecutive chains (ops.cpp rounds the chunk), so a
  // round is chunk-local.  The energies E = λ·F come from the step's own forward pass.

  // ---- one swap round of the chunk's groups: round `n` of this call (row n of swap_uniforms
  //      and of the swap record), global round index q (its parity for "deo"), after the step
  //      whose counter is `step` (stream 3).  F: F per row at the states entering the round.
  //      swap_rows(i, j) exchanges what rows i and j carry.  Returns whether any pair swapped.
  template <typename SwapRows>
  bool swap_round(T* base, int64_t row0, int64_t nvalid, int64_t n, int64_t q, uint64_t step, const T* F,
                  const SwapRows& swap_rows) const {
    const int64_t Rl = p.temperatures_n;
    const T* elam = base + ws.row + ROW_ELAM * R;
    const T* beta = p.temperatures;
    T* recE = p.swaps + (2 * n) * p.B;
    T* recC = p.swaps + (2 * n + 1) * p.B;
    bool any = false;
    constexpr int64_t kStack = 64;
    T Es[kStack], Us[kStack];
    std::vector<T> Eh, Uh;
    T* E = Es;
    T* U = Us;
    if (Rl > kStack) {
      Eh.resize(Rl);
      Uh.resize(Rl);
      E = Eh.data();
      U = Uh.data();
    }
    for (int64_t g0 = 0; g0 + Rl <= nvalid; g0 += Rl) {
      for (int64_t i = 0; i < Rl; ++i) {
        const int64_t r = g0 + i;
        E[i] = p.has_energy ? elam[r] * F[r] : T(0);
        recE[row0 + r] = E[i];
        U[i] = p.swap_uniforms ? p.swap_uniforms[n * p.B + row0 + r]
                               : static_cast<T>(philox_swap_uniform(
                                     p.key0, p.key1, static_cast<uint64_t>(p.chain_ids[row0 + r]), i, Rl, step));
      }
      const int64_t parity = p.swap_schedule == 0 ? (q % 2) : (U[Rl - 1] >= T(0.5) ? 1 : 0);
      for (int64_t i = parity; i + 1 < Rl; i += 2) {
        const T log_alpha = (beta[i + 1] - beta[i]) * (E[i] - E[i + 1]);
        const bool acc = std::log(U[i]) < log_alpha;  // NaN refuses
        recC[row0 + g0 + i] = acc ? T(2) : T(1);
        if (acc) {
          swap_rows(g0 + i, g0 + i + 1);
          any = true;
        }
      }
    }
    return any;
  }

  void swap_state_rows(T* buf, int64_t i, int64_t j) const {
    std::swap_ranges(buf + i * D, buf + (i + 1) * D, buf + j * D);
  }

  // ---- log π of row r at its slot's β, β·λ·F − ½‖u‖² − ‖a·u − u_next‖²/(2σ²), from F of its
  //      state (ROW_F, the last energy_grad) — the arithmetic of the step's own trace
  T tempered_log_pi(const T* base, int64_t r, bool kernel_on) const {
    const T* u = base + ws.uc + r * D;
    const T* un = base + ws.unx + r * D;
    const T* rowv = base + ws.row;
    const T a = rowv[ROW_ALPHA * R + r], sg = rowv[ROW_SIG * R + r];
    T uu = T(0), kk = T(0);
    for (int64_t c = 0; c < D; ++c) {
      const T x = u[c];
      uu += x * x;
      if (kernel_on) {
        const T dlt = a * x - un[c];
        kk += dlt * dlt;
      }
    }
    T lp = -T(0.5) * uu;
    if (p.has_energy) lp += (rowv[ROW_ELAM * R + r] * rowv[ROW_BETA * R + r]) * rowv[ROW_F * R + r];
    if (kernel_on) lp -= kk / (T(2) * sg * sg);
    return lp;
  }

  // ---- K ULA steps of the chunk on the tempered targets with the swap rounds between them.  The
  //      energy backward is seeded with the untempered λ (ROW_LAM holds it here), so ws.gz = λ∇F
  //      and ROW_F = F of the state whatever its slot: a round swaps them with the state, and
  //      the update applies the slot's β — no evaluation beyond one forward/backward per step
  //      (plus one after the last step when a round follows it).
  void ula_pt_chunk(T* base, int64_t row0, int64_t nvalid, bool kernel_on) const {
    T* uc = base + ws.uc;
    T* gz = base + ws.gz;
    const T* eps = base + ws.eps;
    T* rowv = base + ws.row;
    const T *unx = base + ws.unx, *delta = rowv + ROW_DELTA * R, *cc = rowv + ROW_C * R, *al = rowv + ROW_ALPHA * R,
            *sg = rowv + ROW_SIG * R, *elam = rowv + ROW_ELAM * R, *bt = rowv + ROW_BETA * R;
    T* Fs = rowv + ROW_F * R;
    const int64_t m = p.swap_every, off = p.step_offset;
    int64_t n = 0;
    auto swap_rows = [&](int64_t i, int64_t j) {
      swap_state_rows(uc, i, j);
      swap_state_rows(gz, i, j);
      std::swap(Fs[i], Fs[j]);
    };
    for (int64_t k = 0; k <= p.n_steps; ++k) {
      const bool due = k > 0 && (off + k) % m == 0;  // the round after step k − 1
      const int64_t dn = k > 0 ? draw_index(k - 1) : -1;  // a draw after step k − 1, taken before the round
      if (k == p.n_steps && !due && dn < 0) break;
      energy_grad(base);
      if (dn >= 0) {
        T* lrow = write_draw(base, row0, nvalid, dn) + row0;
        for (int64_t r = 0; r < nvalid; ++r) lrow[r] = tempered_log_pi(base, r, kernel_on);
      }
      if (due) {
        swap_round(base, row0, nvalid, n, (off + k) / m - 1, static_cast<uint64_t>(off + k - 1), Fs, swap_rows);
        ++n;
      }
      if (k == p.n_steps) break;
      const uint64_t step_k = static_cast<uint64_t>(off + k);
      const T* noise_k = p.noise ? p.noise + k * p.B * D : nullptr;
      T* trace_k = p.log_density ? p.log_density + k * p.B : nullptr;
      if (!noise_k) draw_noise(base, row0, nvalid, step_k);
      for (int64_t r = 0; r < nvalid; ++r) {
        T* u = uc + r * D;
        const T* gu = gz + r * D;
        const T* un = unx + r * D;
        const T* ep = noise_k ? noise_k + (row0 + r) * D : eps + r * D;
        const T h = T(0.5) * delta[r] * delta[r];
        const T amp = cc[r] * delta[r];
        const bool noisy = cc[r] != T(0);
        const T b = bt[r];
        T uu = T(0), kk = T(0);
        const T a = al[r], inv_s2 = T(1) / (sg[r] * sg[r]);
        for (int64_t c = 0; c < D; ++c) {
          const T x = u[c];
          T grad = (p.has_energy ? b * gu[c] : T(0)) - x;
          uu += x * x;
          if (kernel_on) {
            const T dlt = a * x - un[c];
            kk += dlt * dlt;
            grad -= a * dlt * inv_s2;
          }
          T nx = x + h * grad;
          if (noisy) nx += amp * ep[c];
          u[c] = nx;
        }
        if (trace_k) {
          T lp = -T(0.5) * uu;
          if (p.has_energy) lp += (elam[r] * b) * Fs[r];
          if (kernel_on) lp -= kk / (T(2) * sg[r] * sg[r]);
          trace_k[row0 + r] = lp;
        }
      }
    }
  }

  // ---- ∇log π and log π of the tempered targets at ws.uc (full_grad's, ROW_LAM = λ untempered):
  //      g = β·λ∇F − u − kernel term, lp = β·λ·F − ½‖u‖² − …, and ge = λ∇F itself (what a swap
  //      re-weights by)
  void full_grad_pt(T* base, int64_t nvalid, bool kernel_on, T* g, T* lp, T* ge) const {
    energy_grad(base);
    const T* uc = base + ws.uc;
    const Rows rw = rows(base);
    const T *gz = rw.gz, *unx = rw.unx, *al = rw.al, *sg = rw.sg, *Fs = rw.Fs;
    const T* rowv = base + ws.row;
    const T *bt = rowv + ROW_BETA * R, *elam = rowv + ROW_ELAM * R;
    for (int64_t r = 0; r < nvalid; ++r) {
      const T* u = uc + r * D;
      const T* gu = gz + r * D;
      const T* un = unx + r * D;
      T* gr = g + r * D;
      T* er = ge + r * D;
      const T b = bt[r];
      T uu = T(0), kk = T(0);
      const T a = al[r], inv_s2 = T(1) / (sg[r] * sg[r]);
      for (int64_t c = 0; c < D; ++c) {
        const T x = u[c];
        const T e = p.has_energy ? gu[c] : T(0);
        er[c] = e;
        T grad = b * e - x;
        uu += x * x;
        if (kernel_on) {
          const T dlt = a * x - un[c];
          kk += dlt * dlt;
          grad -= a * dlt * inv_s2;
        }
        gr[c] = grad;
      }
      T l = -T(0.5) * uu;
      if (p.has_energy) l += (elam[r] * b) * Fs[r];
      if (kernel_on) l -= kk / (T(2) * sg[r] * sg[r]);
      lp[r] = l;
    }
  }

  // ---- K Metropolis-adjusted steps with the swap rounds (mala_chunk's step on the tempered
  //      targets).  Each chain keeps, beside its cached log π and gradient, F and λ∇F of its state
  //      (ROW_F0, ws.ge0); a swap moves all four with the state and re-weights log π by
  //      (β_own − β_other)·λF and the gradient by (β_own − β_other)·λ∇F — no evaluation.
  void mala_pt_chunk(T* base, int64_t row0, int64_t nvalid, bool kernel_on) const {
    T* uc = base + ws.uc;
    T* u0 = base + ws.u0;
    T* g0 = base + ws.g0;
    T* gp = base + ws.gp;
    T* ge0 = base + ws.ge0;
    T* gep = base + ws.gep;
    T* rowv = base + ws.row;
    T* lp0 = rowv + ROW_LOGP * R;
    T* lpp = rowv + ROW_LOGP_PROP * R;
    const T* Fs = rowv + ROW_F * R;
    T* F0 = rowv + ROW_F0 * R;
    const T *bt = rowv + ROW_BETA * R, *elam = rowv + ROW_ELAM * R;
    const int64_t m = p.swap_every, off = p.step_offset;
    int64_t n = 0;
    auto swap_rows = [&](int64_t i, int64_t j) {
      swap_state_rows(uc, i, j);
      swap_state_rows(g0, i, j);
      swap_state_rows(ge0, i, j);
      std::swap(F0[i], F0[j]);
      std::swap(lp0[i], lp0[j]);
      for (const int64_t r : {i, j}) {  // row r now holds the other's state: re-weight to its own β
        const T db = bt[r] - bt[r == i ? j : i];
        if (p.has_energy) lp0[r] += db * (elam[r] * F0[r]);
        T* g = g0 + r * D;
        const T* e = ge0 + r * D;
        for (int64_t c = 0; c < D; ++c) g[c] += db * e[c];
      }
    };
    if (p.n_steps > 0) {
      full_grad_pt(base, nvalid, kernel_on, g0, lp0, ge0);
      for (int64_t r = 0; r < R; ++r) F0[r] = Fs[r];
    }
    for (int64_t k = 0; k < p.n_steps; ++k) {
      const uint64_t step_k = static_cast<uint64_t>(off + k);
      const T* noise_k = p.noise ? p.noise + k * p.B * D : nullptr;
      if (p.log_density)
        for (int64_t r = 0; r < nvalid; ++r) p.log_density[k * p.B + row0 + r] = lp0[r];
      if (!noise_k) draw_noise(base, row0, nvalid, step_k);
      mala_propose(base, row0, nvalid, noise_k);
      full_grad_pt(base, nvalid, kernel_on, gp, lpp, gep);
      for (int64_t r = 0; r < nvalid; ++r) {
        T* u = uc + r * D;
        T* s = u0 + r * D;
        T* g = g0 + r * D;
        const T* gq = gp + r * D;
        T log_alpha;
        const bool acc = mala_test(base, row0, r, k, step_k, log_alpha);
        if (acc) {
          std::memcpy(g, gq, sizeof(T) * D);
          std::memcpy(ge0 + r * D, gep + r * D, sizeof(T) * D);
          lp0[r] = lpp[r];
          F0[r] = Fs[r];
          p.accept[row0 + r] += T(1);
        } else {
          std::memcpy(u, s, sizeof(T) * D);
        }
        const T prob = log_alpha >= T(0) ? T(1) : std::exp(log_alpha);
        if (prob == prob) p.accept[p.B + row0 + r] += prob;
      }
      const int64_t dn = draw_index(k);  // the state after the step, before the round
      if (dn >= 0) std::memcpy(write_draw(base, row0, nvalid, dn) + row0, lp0, sizeof(T) * nvalid);
      if ((off + k + 1) % m == 0) {
        swap_round(base, row0, nvalid, n, (off + k + 1) / m - 1, step_k, F0, swap_rows);
        ++n;
      }
    }
  }

  // ---- load a chunk's rows into the workspace (padded rows: zeros, σ = 1)
  int64_t load_chunk(T* base, int64_t ci) const {
    const int64_t row0 = ci * R;
    const int64_t nvalid = std::min<int64_t>(R, p.B - row0);
    T* uc = base + ws.uc;
    std::memset(uc, 0, sizeof(T) * R * D);
    std::memcpy(uc, p.u + row0 * D, sizeof(T) * nvalid * D);
    T* rowv = base + ws.row;
    std::memset(rowv, 0, sizeof(T) * R * ROW_N);
    int64_t* tl = reinterpret_cast<int64_t*>(base + ws.tl);
    for (int64_t r = 0; r < R; ++r) rowv[ROW_SIG * R + r] = T(1);
    for (int64_t r = 0; r < nvalid; ++r) {
      rowv[ROW_LAM * R + r] = p.energy_scale[row0 + r];
      rowv[ROW_DELTA * R + r] = p.step_size[row0 + r];
      rowv[ROW_C * R + r] = p.noise_scale[row0 + r];
      tl[r] = p.t ? p.t[row0 + r] : 0;
      if (p.u_next) {
        rowv[ROW_ALPHA * R + r] = p.alpha[row0 + r];
        rowv[ROW_SIG * R + r] = p.sigma[row0 + r];
      }
    }
    if (p.temperatures) load_ladder(rowv, row0, nvalid);
    T* unx = base + ws.unx;
    std::memset(unx, 0, sizeof(T) * R * D);
    if (p.u_next) std::memcpy(unx, p.u_next + row0 * D, sizeof(T) * nvalid * D);
    return nvalid;
  }

  // ---- replica exchange: each row's β (its slot's) and the untempered λ, which is also the energy
  //      backward's seed ROW_LAM (λ∇F and F travel with a state; the slot's β is applied after)
  void load_ladder(T* rowv, int64_t row0, int64_t nvalid) const {
    for (int64_t r = 0; r < nvalid; ++r) {
      const T b = p.temperatures[(row0 + r) % p.temperatures_n], lam = p.energy_scale[row0 + r];
      rowv[ROW_BETA * R + r] = b;
      rowv[ROW_ELAM * R + r] = lam;
      rowv[ROW_LAM * R + r] = lam;
    }
  }

  T* ws_base(void* w) const {
    uintptr_t a = reinterpret_cast<uintptr_t>(w);
    a = (a + kAlign - 1) / kAlign * kAlign;
    return reinterpret_cast<T*>(a);
  }

  void run(int64_t c0, int64_t c1, void* w) const {
    T* base = ws_base(w);
    std::memset(static_cast<void*>(base), 0, sizeof(T) * ws.total);
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t row0 = ci * R;
      const int64_t nvalid = load_chunk(base, ci);
      if (p.temperatures) {
        if (p.metropolis) mala_pt_chunk(base, row0, nvalid, p.u_next != nullptr);
        else ula_pt_chunk(base, row0, nvalid, p.u_next != nullptr);
      } else if (p.metropolis) {
        mala_chunk(base, row0, nvalid, p.u_next != nullptr);
      } else {
        T* pending = nullptr;  // the log π row of the draw taken after the previous step
        for (int64_t k = 0; k < p.n_steps; ++k) {
          const T* nk = p.noise ? p.noise + k * p.B * D : nullptr;
          T* tk = p.log_density ? p.log_density + k * p.B : nullptr;
          step(base, row0, nvalid, static_cast<uint64_t>(p.step_offset + k), nk, tk, p.u_next != nullptr, pending);
          const int64_t n = draw_index(k);
          pending = n >= 0 ? write_draw(base, row0, nvalid, n) : nullptr;
        }
        // a draw after the last step: one more evaluation for its log π (ws.eps free as gradient scratch)
        if (pending) full_grad(base, nvalid, p.u_next != nullptr, base + ws.eps, pending + row0);
      }
      std::memcpy(p.u + row0 * D, base + ws.uc, sizeof(T) * nvalid * D);
    }
  }

  void run_reverse(int64_t c0, int64_t c1, void* w, const LevelParams* lv, int64_t nlv, T* levels_out) const {
    T* base = ws_base(w);
    std::memset(static_cast<void*>(base), 0, sizeof(T) * ws.total);
    const int64_t K = p.n_steps;
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t row0 = ci * R;
      const int64_t nvalid = load_chunk(base, ci);
      T* uc = base + ws.uc;
      T* rowv = base + ws.row;
      int64_t* tl = reinterpret_cast<int64_t*>(base + ws.tl);
      if (levels_out) std::memcpy(levels_out + row0 * D, uc, sizeof(T) * nvalid * D);
      for (int64_t j = 0; j < nlv; ++j) {
        const bool kernel_on = lv[j].alpha != 0.0;
        for (int64_t r = 0; r < R; ++r) {
          const bool valid = r < nvalid;
          rowv[ROW_LAM * R + r] = valid ? static_cast<T>(lv[j].energy_scale) : T(0);
          rowv[ROW_DELTA * R + r] = valid ? static_cast<T>(lv[j].step) : T(0);
          rowv[ROW_ALPHA * R + r] = valid ? static_cast<T>(lv[j].alpha) : T(0);
          rowv[ROW_SIG * R + r] = valid ? static_cast<T>(lv[j].sigma) : T(1);
          tl[r] = lv[j].t;
        }
        if (kernel_on) std::memcpy(base + ws.unx, uc, sizeof(T) * R * D);
        for (int64_t k = 0; k < K; ++k) {
          const T* nk = p.noise ? p.noise + (j * K + k) * p.B * D : nullptr;
          step(base, row0, nvalid, static_cast<uint64_t>(j * K + k), nk, nullptr, kernel_on);
        }
        if (levels_out) std::memcpy(levels_out + ((j + 1) * p.B + row0) * D, uc, sizeof(T) * nvalid * D);
      }
      std::memcpy(p.u + row0 * D, uc, sizeof(T) * nvalid * D);
    }
  }
};

template <typename T>
std::shared_ptr<const void> pack_weights(const Problem<T>& p) {
  return std::make_shared<const PackedWeights<T>>(p);
}

template <typename T>
Sampler<T>::Sampler(const Problem<T>& p, int64_t chunk_rows, std::shared_ptr<const void> weights)
    : impl_(new SamplerImpl<T>(p, chunk_rows, std::static_pointer_cast<const PackedWeights<T>>(weights))) {}
template <typename T>
Sampler<T>::~Sampler() = default;
template <typename T>
int64_t Sampler<T>::n_chunks() const {
  return impl_->nchunks;
}
template <typename T>
int64_t Sampler<T>::chunk_rows() const {
  return impl_->R;
}
template <typename T>
size_t Sampler<T>::workspace_bytes() const {
  return impl_->bytes();
}
template <typename T>
void Sampler<T>::run(int64_t c0, int64_t c1, void* w) const {
  impl_->run(c0, c1, w);
}
template <typename T>
void Sampler<T>::run_reverse(int64_t c0, int64_t c1, void* w, const LevelParams* lv, int64_t n, T* out) const {
  impl_->run_reverse(c0, c1, w, lv, n, out);
}

template class Sampler<float>;
template class Sampler<double>;
template std::shared_ptr<const void> pack_weights<float>(const Problem<float>&);
template std::shared_ptr<const void> pack_weights<double>(const Problem<double>&);

}  // namespace cpu
}  // namespace hebm
