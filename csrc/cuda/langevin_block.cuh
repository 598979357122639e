// langevin_block.cuh — what one thread block does: K Langevin steps for a block of ROWS chains.
//
// Compiled twice from this one source:
//   * by nvcc as device code (langevin_kernel.cu; Ctx = DevCtx: threadIdx, __syncthreads,
//     warp_sum by xor shuffles — every lane of the warp must call it);
//   * by the host compiler as a block *emulator* (langevin_cuda.cpp; Ctx = EmuCtx: 256 fibers
//     (ucontext) on one host thread, switched at every __syncthreads and warp_sum: an exchange
//     buffer + per-warp rendezvous for the reductions), which the CPU test
//     suite runs against langevin_ref — so the indexing, the layout, the phase structure and the
//     math the GPU runs are exercised on every machine, GPU or not.
//
// Math (docs/design.md §2, hebm/sampler/reference.py):  per chain b,
//     log π(u) = λ_b · Σ_i f_i(z_i; t_b) − ½‖u‖² − [kernel] ‖a_b·u − u_next‖² / (2σ_b²),  z = T_β(u)
//     u ← u + (δ_b²/2) ∇ log π(u) + c_b δ_b ε
// Per step: T_β forward top-down (z_L = u_L, z_i = μ_i + (exp s(ℓ_i) + σ_min) ⊙ u_i, s the soft clamp
// c·tanh(ℓ/c) when a.sigma_clamp = c > 0, else the identity), energies
// forward + backward (seed λ_b; hidden biases from the level table row t_b), then bottom-up
// backward through the conditionals (∂z_i/∂u_i = σ_i, ∂z_i/∂ℓ_i = exp(s(ℓ_i)) s'(ℓ_i) ⊙ u_i, ∂z_i/∂μ_i = 1),
// Gaussian and kernel terms, Philox or explicit noise, the update, the optional log π trace.
//
// Every phase is a loop of the block's threads over disjoint outputs; phases are separated by
// cx.sync().  A phase reads only what earlier phases wrote (no read/write of one buffer by two
// threads inside a phase) — the invariant to keep when editing.
#pragma once

#include "hebm_cuda.h"

#if defined(__CUDACC__)
#define HEBM_DEV __device__ __forceinline__
#define HEBM_NOINLINE __device__ __noinline__
#else
#define HEBM_DEV inline
#define HEBM_NOINLINE inline
#endif

namespace hebm {
namespace cuda {

template <typename T>
struct Vec4 {
  T v[4];
};

// 4 consecutive elements from a 16-byte (float) / 32-byte (double) aligned address.
template <typename T>
HEBM_DEV Vec4<T> load4(const T* p) {
  Vec4<T> r;
#if defined(__CUDA_ARCH__)
  if (sizeof(T) == 4) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    r.v[0] = f.x; r.v[1] = f.y; r.v[2] = f.z; r.v[3] = f.w;
    return r;
  } else {
    const double2 a = *reinterpret_cast<const double2*>(p);
    const double2 b = *reinterpret_cast<const double2*>(p + 2);
    r.v[0] = a.x; r.v[1] = a.y; r.v[2] = b.x; r.v[3] = b.y;
    return r;
  }
#else
  r.v[0] = p[0]; r.v[1] = p[1]; r.v[2] = p[2]; r.v[3] = p[3];
  return r;
#endif
}

template <typename T>
HEBM_DEV T fma_(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

HEBM_DEV int imin(int a, int b) { return a < b ? a : b; }
HEBM_DEV int imax(int a, int b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------------------
// out[r, c] (=|+=) Σ_m in[r, m] · M[m·Nout + c]  (+ bias[row(r), c]),  r < ROWS, c < Nout.
// `in`: [ROWS, ldi] 4-aligned rows; M row-major [Min, Nout] (forward: Wᵀ; backward: W).
// Bias row of r: trow[r] (clamped to brows-1), 0 when brows == 1.  No sync inside.
// Wide form: a warp owns 8 rows × 64 columns (lane + 32·j), register tile 8×2, M loads
// coalesced along c.  Narrow form (few outputs, long sums): a warp owns (r, c) pairs, lanes
// split m, shuffle reduction.  The choice is uniform over the block (sizes only).
// ------------------------------------------------------------------------------------------
constexpr int kRT = 8;  // rows per register tile
constexpr int kTC = 2;  // columns per lane

template <typename T, int ROWS, class Ctx>
HEBM_DEV void gemm(const T* in, int ldi, int Min, const T* M, int Nout, T* out, int ldo, const T* bias, int brows,
                   const T* trow, bool accumulate, Ctx& cx) {
  static_assert(ROWS % kRT == 0, "ROWS must be a multiple of the register tile");
  const int warp = cx.tid() / 32, lane = cx.tid() % 32;
  const int n_rg = ROWS / kRT;
  const int n_cc = (Nout + 32 * kTC - 1) / (32 * kTC);
  const int units = n_rg * n_cc;
  const long cost_wide = (long)((units + kWarps - 1) / kWarps) * (long)Min * 20;
  const int pairs = ROWS * Nout;
  const long cost_narrow = (long)((pairs + kWarps - 1) / kWarps) * (long)(((Min + 31) / 32) * 3 + 15);
  if (cost_wide <= cost_narrow) {
    for (int unit = warp; unit < units; unit += kWarps) {
      const int rg = unit % n_rg, cc = unit / n_rg;  // consecutive warps share a column chunk (L1 reuse of M)
      const int r0 = rg * kRT, c0 = cc * 32 * kTC + lane;
      bool cv[kTC];
      T acc[kRT][kTC];
#pragma unroll
      for (int j = 0; j < kTC; ++j) cv[j] = c0 + 32 * j < Nout;
#pragma unroll
      for (int i = 0; i < kRT; ++i)
#pragma unroll
        for (int j = 0; j < kTC; ++j) acc[i][j] = T(0);
      int m = 0;
      for (; m + 4 <= Min; m += 4) {
        T w[4][kTC];
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
          for (int j = 0; j < kTC; ++j) w[q][j] = cv[j] ? M[(long)(m + q) * Nout + c0 + 32 * j] : T(0);
#pragma unroll
        for (int i = 0; i < kRT; ++i) {
          const Vec4<T> x = load4(in + (r0 + i) * ldi + m);
#pragma unroll
          for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int j = 0; j < kTC; ++j) acc[i][j] = fma_(x.v[q], w[q][j], acc[i][j]);
        }
      }
      for (; m < Min; ++m) {
        T w[kTC];
#pragma unroll
        for (int j = 0; j < kTC; ++j) w[j] = cv[j] ? M[(long)m * Nout + c0 + 32 * j] : T(0);
#pragma unroll
        for (int i = 0; i < kRT; ++i) {
          const T x = in[(r0 + i) * ldi + m];
#pragma unroll
          for (int j = 0; j < kTC; ++j) acc[i][j] = fma_(x, w[j], acc[i][j]);
        }
      }
#pragma unroll
      for (int i = 0; i < kRT; ++i) {
        const int r = r0 + i;
        int brow = 0;
        if (bias != nullptr && brows > 1) brow = imin(imax((int)trow[r], 0), brows - 1);
#pragma unroll
        for (int j = 0; j < kTC; ++j) {
          if (!cv[j]) continue;
          const int c = c0 + 32 * j;
          T v = acc[i][j];
          if (bias != nullptr) v += bias[(long)brow * Nout + c];
          if (accumulate) v += out[r * ldo + c];
          out[r * ldo + c] = v;
        }
      }
    }
  } else {
    for (int p = warp; p < pairs; p += kWarps) {  // warp-uniform loop: every lane reaches warp_sum
      const int r = p / Nout, c = p % Nout;
      T s = T(0);
      for (int m = lane; m < Min; m += 32) s = fma_(in[r * ldi + m], M[(long)m * Nout + c], s);
      s = cx.warp_sum(s);
      if (lane == 0) {
        if (bias != nullptr) {
          const int brow = brows > 1 ? imin(imax((int)trow[r], 0), brows - 1) : 0;
          s += bias[(long)brow * Nout + c];
        }
        if (accumulate) s += out[r * ldo + c];
        out[r * ldo + c] = s;
      }
    }
  }
}

// The normals of elements 4j … 4j+3 of chain row b at step `step`: row `nk` of the explicit noise
// ([steps, B, D]), else the Philox stream (stream 0); elements ≥ D are 0.
template <typename T>
HEBM_DEV void noise4(const KArgs<T>& a, long nk, long b, int j, long step, T epsT[4]) {
  if (a.noise != nullptr) {
    const T* nz = a.noise + (nk * a.B + b) * a.D;
    for (int q = 0; q < 4; ++q) epsT[q] = (4 * j + q < a.D) ? nz[4 * j + q] : T(0);
  } else {
    float eps[4] = {0.f, 0.f, 0.f, 0.f};
    philox_normal4(a.key0, a.key1, (uint64_t)j, (uint64_t)a.chain_ids[b], (uint64_t)step, 0u, eps);
    for (int q = 0; q < 4; ++q) epsT[q] = T(eps[q]);
  }
}

// Draws (trace_every = m, hebm/sampler/reference.py langevin_loop): the state after step k of the
// call is draw n = (step_offset + k + 1)/m − ⌊step_offset/m⌋ − 1 when m divides its counter
// step_offset + k + 1; −1: not a draw (or no draws asked).  As the cpu kernel's draw_index.
template <typename T>
HEBM_DEV long draw_index(const KArgs<T>& a, long k) {
  if (a.draws == nullptr || a.trace_every <= 0 || k < 0) return -1;
  const long c = (long)a.step_offset + k + 1;
  return c % a.trace_every ? -1 : c / a.trace_every - (long)a.step_offset / a.trace_every - 1;
}

// The block's valid rows of U as draw n ([n, B, D]), and (r_lp: a [ROWS] row, or nullptr) their log π.
template <typename T, int ROWS, class Ctx>
HEBM_DEV void store_draw(const KArgs<T>& a, long n, const T* U, const T* r_lp, long r_begin, int nvalid, Ctx& cx) {
  const int D = a.D, LD = a.LD;
  T* dst = a.draws + n * (long)a.B * D;
  for (int idx = cx.tid(); idx < nvalid * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    dst[(r_begin + r) * D + d] = U[r * LD + d];
  }
  if (r_lp != nullptr)
    for (int r = cx.tid(); r < nvalid; r += kThreads) a.draws_log_density[n * (long)a.B + r_begin + r] = r_lp[r];
}

// Hidden buffer j (pre-activations of hidden layer j) of an MLP inside its stack; ld returned.
template <typename T, int ROWS>
HEBM_DEV T* hidden_buf(const KArgs<T>& a, const MlpDesc& md, T* stack, int j, int& ld) {
  int off = 0;
  for (int jj = 0; jj < j; ++jj) off += round4(a.layers[md.first + jj].out);
  ld = round4(a.layers[md.first + j].out);
  return stack + ROWS * off;
}

// Forward of MLP m on in[r, 0:w0] (row stride ldin): hidden pre-activations into its stack,
// output into OUT [ROWS, ld_out].  Ends synced.
template <typename T, int ROWS, class Ctx>
HEBM_DEV void mlp_forward(const KArgs<T>& a, int m, const T* in, int ldin, T* ws, const T* P, const T* PT,
                          const T* trow, Ctx& cx) {
  const MlpDesc& md = a.mlps[m];
  T* XT = ws + ROWS * a.off_XT;
  T* OUT = ws + ROWS * a.off_OUT;
  T* stack = ws + ROWS * (a.off_STACK + md.stack_off);
  const int ldw = a.ld_w;
  const int w0 = a.layers[md.first].in;
  for (int idx = cx.tid(); idx < ROWS * w0; idx += kThreads) {
    const int r = idx / w0, c = idx % w0;
    XT[r * ldw + c] = in[r * ldin + c];
  }
  cx.sync();
  for (int j = 0; j < md.n_layers; ++j) {
    const LayerDesc& ly = a.layers[md.first + j];
    const bool hidden = j < md.n_layers - 1;
    int ldo = a.ld_out;
    T* out = hidden ? hidden_buf<T, ROWS>(a, md, stack, j, ldo) : OUT;
    gemm<T, ROWS>(XT, ldw, ly.in, PT + ly.w_off, ly.out, out, ldo, P + ly.b_off, ly.brows, trow, false, cx);
    cx.sync();
    if (hidden) {
      const T prm = T(md.act_param);
      const int w = ly.out;
      for (int idx = cx.tid(); idx < ROWS * w; idx += kThreads) {
        const int r = idx / w, c = idx % w;
        XT[r * ldw + c] = act_forward<T>(md.act, prm, out[r * ldo + c]);
      }
      cx.sync();
    }
  }
}

// Backward of MLP m: output gradient in GA [ROWS, w_n] (ld_w); the input gradient is ADDED to
// dst[r, 0:w0] (row stride lddst).  Needs the hidden pre-activations of the last forward of m.
// Ends synced.
template <typename T, int ROWS, class Ctx>
HEBM_DEV void mlp_backward(const KArgs<T>& a, int m, T* dst, int lddst, T* ws, const T* P, Ctx& cx) {
  const MlpDesc& md = a.mlps[m];
  T* GA = ws + ROWS * a.off_GA;
  T* GB = ws + ROWS * a.off_GB;
  T* stack = ws + ROWS * (a.off_STACK + md.stack_off);
  const int ldw = a.ld_w;
  T* GY = GA;
  for (int j = md.n_layers - 1; j >= 0; --j) {
    const LayerDesc& ly = a.layers[md.first + j];
    if (j > 0) {
      T* GX = (GY == GA) ? GB : GA;
      gemm<T, ROWS>(GY, ldw, ly.out, P + ly.w_off, ly.in, GX, ldw, (const T*)nullptr, 1, (const T*)nullptr, false, cx);
      cx.sync();
      int ldp = 0;
      const T* pre = hidden_buf<T, ROWS>(a, md, stack, j - 1, ldp);
      const T prm = T(md.act_param);
      const int w = ly.in;
      for (int idx = cx.tid(); idx < ROWS * w; idx += kThreads) {
        const int r = idx / w, c = idx % w;
        GX[r * ldw + c] *= act_derivative<T>(md.act, prm, pre[r * ldp + c]);
      }
      cx.sync();
      GY = GX;
    } else {
      gemm<T, ROWS>(GY, ldw, ly.out, P + ly.w_off, ly.in, dst, lddst, (const T*)nullptr, 1, (const T*)nullptr, true, cx);
      cx.sync();
    }
  }
}

// ------------------------------------------------------------------------------------------
// The swap round after step k of the block's ladder groups (docs/design.md §2; hebm/sampler/reference.py
// swap_round), on r_F of the state U (energy_grad just ran): E = λ·F per chain; one thread per group
// decides its pairs and writes the swap record; then the accepted pairs exchange their rows of U and G
// (ULA's untempered ∂(λF)/∂u) and their F (disjoint pairs: no row is touched twice).  Not inlined: its
// two call sites (ULA, MALA) in each of the kernel's instantiations would each get a copy.
// ------------------------------------------------------------------------------------------
template <typename T, int ROWS, class Ctx>
HEBM_NOINLINE void swap_round_rows(const KArgs<T>& a, long k, long r_begin, int nvalid, T* U, T* G, T* RS, Ctx& cx) {
  const int tid = cx.tid();
  const int D = a.D, LD = a.LD;
  const long B = a.B;
  T* r_F = RS + 5 * ROWS;
  T* r_sw = RS + 9 * ROWS;  // 1 at the lower chain of an accepted pair (MALA's r_acc: free here)
  T* r_lam0 = RS + 10 * ROWS;
  T* r_E = RS + 11 * ROWS;
  const long c = (long)a.step_offset + k + 1;
  const long n_round = c / a.swap_every - 1;                      // the chain's round
  const long nr = n_round - (long)a.step_offset / a.swap_every;  // the call's round
  const long step = (long)a.step_offset + k;
  const int R = (int)a.temperatures_n;
  for (int r = tid; r < ROWS; r += kThreads) {
    r_E[r] = r_lam0[r] * r_F[r];
    r_sw[r] = T(0);
  }
  cx.sync();
  for (int g = tid; g < nvalid / R; g += kThreads) {
    const int r0 = g * R;
    const long b0 = r_begin + r0;
    T* rec = a.swaps + nr * 2 * B;
    for (int r = 0; r < R; ++r) {
      rec[b0 + r] = r_E[r0 + r];
      rec[B + b0 + r] = T(0);
    }
    int parity = (int)(n_round % 2);  // "deo"; "even_odd": the group's coin at its last chain
    if (a.swap_schedule != 0) {
      const T coin = a.swap_uniforms != nullptr
                         ? a.swap_uniforms[nr * B + b0 + R - 1]
                         : T(philox_swap_uniform(a.key0, a.key1, (uint64_t)a.chain_ids[b0 + R - 1], R - 1, R,
                                                 (uint64_t)step));
      parity = coin >= T(0.5) ? 1 : 0;
    }
    for (int r = parity; r < R - 1; r += 2) {
      const T Uu = a.swap_uniforms != nullptr
                       ? a.swap_uniforms[nr * B + b0 + r]
                       : T(philox_swap_uniform(a.key0, a.key1, (uint64_t)a.chain_ids[b0 + r], r, R, (uint64_t)step));
      const T log_alpha = (a.temperatures[r + 1] - a.temperatures[r]) * (r_E[r0 + r] - r_E[r0 + r + 1]);
      const bool acc = log(Uu) < log_alpha;  // NaN refuses
      rec[B + b0 + r] = acc ? T(2) : T(1);
      r_sw[r0 + r] = acc ? T(1) : T(0);
    }
  }
  cx.sync();
  for (int idx = tid; idx < ROWS * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    if (r < nvalid && r_sw[r] != T(0)) {
      const T x = U[r * LD + d];
      U[r * LD + d] = U[(r + 1) * LD + d];
      U[(r + 1) * LD + d] = x;
      const T y = G[r * LD + d];
      G[r * LD + d] = G[(r + 1) * LD + d];
      G[(r + 1) * LD + d] = y;
    }
  }
  for (int r = tid; r < ROWS; r += kThreads) {
    if (r < nvalid && r_sw[r] != T(0)) {
      const T f = r_F[r];
      r_F[r] = r_F[r + 1];
      r_F[r + 1] = f;
    }
  }
  cx.sync();
}

// ------------------------------------------------------------------------------------------
// One block of ROWS chains (row block rb), all levels and steps.  ws: this block's workspace
// (shared or global memory, ROWS·row_elems elements); P/PT: params (global or staged copies).
// ------------------------------------------------------------------------------------------
template <typename T, int ROWS, class Ctx>
HEBM_DEV void block_run(const KArgs<T>& a, int rb, T* ws, const T* P, const T* PT, Ctx& cx) {
  const int tid = cx.tid();
  const int warp = tid / 32, lane = tid % 32;
  const int D = a.D, LD = a.LD, L = a.L;
  const long B = a.B;
  // a block holds a.block_chains chains: ROWS, or with a ladder of R the whole groups that fit
  const long r_begin = (long)rb * a.block_chains;
  const int nvalid = (int)((B - r_begin) < a.block_chains ? (B - r_begin) : a.block_chains);
  T* U = ws + ROWS * a.off_U;
  T* Z = ws + ROWS * a.off_Z;
  T* G = ws + ROWS * a.off_G;
  T* EX = ws + ROWS * a.off_EX;
  T* UN = ws + ROWS * a.off_UN;  // valid only when a.has_un
  T* GA = ws + ROWS * a.off_GA;
  T* OUT = ws + ROWS * a.off_OUT;
  T* RS = ws + ROWS * a.off_RS;  // [kRowScalars][ROWS]
  T* r_half = RS;                // δ²/2
  T* r_amp = RS + ROWS;          // c·δ
  T* r_lam = RS + 2 * ROWS;      // λ
  T* r_alpha = RS + 3 * ROWS;    // a
  T* r_sig = RS + 4 * ROWS;      // σ (kernel)
  T* r_F = RS + 5 * ROWS;        // Σ_i f_i of the current step
  T* r_t = RS + 6 * ROWS;        // level (as T; exact for small ints)
  T* r_lam0 = RS + 10 * ROWS;    // λ before the ladder's β (replica exchange: E = λ·F; slot 11: E, swap_round_rows)
  const T smin = a.sigma_min;
  const T clamp = a.sigma_clamp;
  const bool diffusion = a.n_lv > 0;
  const int n_lv = diffusion ? a.n_lv : 1;
  const int K = a.n_steps;
  const int NB4 = (D + 3) / 4;

  for (int idx = tid; idx < ROWS * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    U[r * LD + d] = r < nvalid ? a.u_in[(r_begin + r) * D + d] : T(0);
  }
  cx.sync();
  for (int lv = 0; lv < n_lv; ++lv) {
    const bool kernel_on = diffusion ? (a.lv_alpha[lv] != T(0)) : (a.u_next != nullptr);
    for (int r = tid; r < ROWS; r += kThreads) {
      const long b = r_begin + r;
      T dl = T(0), c = T(0), lam = T(0), al = T(0), sg = T(1), tt = T(0);
      if (r < nvalid) {
        if (diffusion) {
          dl = a.lv_step[lv]; lam = a.lv_lam[lv]; tt = T(a.lv_t[lv]);
          al = a.lv_alpha[lv]; sg = a.lv_sigma[lv];
        } else {
          dl = a.step_size[b]; lam = a.energy_scale[b];
          tt = a.t != nullptr ? T(a.t[b]) : T(0);
          r_lam0[r] = lam;
          if (a.temperatures != nullptr) lam = lam * a.temperatures[b % a.temperatures_n];  // chain b at β_(b mod R)
          if (kernel_on) { al = a.alpha[b]; sg = a.sigma[b]; }
        }
        c = a.noise_scale[b];
      }
      r_half[r] = T(0.5) * dl * dl;
      r_amp[r] = c * dl;
      r_lam[r] = lam;
      r_alpha[r] = al;
      r_sig[r] = sg;
      r_t[r] = tt;
    }
    if (kernel_on) {
      for (int idx = tid; idx < ROWS * D; idx += kThreads) {
        const int r = idx / D, d = idx % D;
        T v = T(0);
        if (r < nvalid) v = diffusion ? U[r * LD + d] : a.u_next[(r_begin + r) * D + d];
        UN[r * LD + d] = v;
      }
    }
    cx.sync();
    const long step_base = diffusion ? (long)lv * K : a.step_offset;
    // ULA on a ladder: the energy backward is seeded with the untempered λ, so G = ∂(λF)/∂u and r_F
    // belong to the state and move with it in a swap round; the step applies its slot's β (below)
    const bool ula_ladder = a.temperatures != nullptr && !a.metropolis && !diffusion;
    const T* r_seed = ula_ladder ? r_lam0 : r_lam;
    // phases 1–4 at the state U: G = ∂(λF)/∂u (the energy part of ∇log π), r_F = Σ_i f_i
    auto energy_grad = [&]() {
      // ---- phase 1: z_L = u_L; G = 0; F = 0
      {
        const int o = a.offs[L - 1], dL = a.dims[L - 1];
        for (int idx = tid; idx < ROWS * LD; idx += kThreads) {
          const int r = idx / LD, d = idx % LD;
          G[idx] = T(0);
          if (d >= o && d < o + dL) Z[r * LD + d] = U[r * LD + d];
        }
        for (int r = tid; r < ROWS; r += kThreads) r_F[r] = T(0);
      }
      cx.sync();
      // ---- phase 2: T_β forward, top-down
      for (int i = L - 2; i >= 0; --i) {
        mlp_forward<T, ROWS>(a, i, Z + a.offs[i + 1], LD, ws, P, PT, r_t, cx);
        const int di = a.dims[i], o = a.offs[i];
        for (int idx = tid; idx < ROWS * di; idx += kThreads) {
          const int r = idx / di, c = idx % di;
          const T mu = OUT[r * a.ld_out + c];
          T lc = OUT[r * a.ld_out + di + c];
          if (clamp > T(0)) lc = clamp * tanh(lc / clamp);  // s(ℓ) = c·tanh(ℓ/c)
          const T e = exp(lc);
          EX[r * LD + o + c] = e;
          Z[r * LD + o + c] = mu + (e + smin) * U[r * LD + o + c];
        }
        cx.sync();
      }
      // ---- phase 3: energies forward + backward; ∂(λF)/∂z_i accumulates in G
      if (a.has_energy) {
        for (int i = 0; i < L; ++i) {
          const int m = L - 1 + i;
          mlp_forward<T, ROWS>(a, m, Z + a.offs[i], LD, ws, P, PT, r_t, cx);
          for (int r = tid; r < ROWS; r += kThreads) {
            r_F[r] += OUT[r * a.ld_out];
            GA[r * a.ld_w] = r_seed[r];
          }
          cx.sync();
          mlp_backward<T, ROWS>(a, m, G + a.offs[i], LD, ws, P, cx);
        }
      }
      // ---- phase 4: backward through the conditionals, bottom-up; G becomes ∂(λF)/∂u
      for (int i = 0; i < L - 1; ++i) {
        if (!a.store_all) mlp_forward<T, ROWS>(a, i, Z + a.offs[i + 1], LD, ws, P, PT, r_t, cx);
        const int di = a.dims[i], o = a.offs[i];
        for (int idx = tid; idx < ROWS * di; idx += kThreads) {
          const int r = idx / di, c = idx % di;
          const T g = G[r * LD + o + c];
          const T e = EX[r * LD + o + c];
          T de = e;  // ∂e/∂ℓ = e·s'(ℓ); with the clamp s'(ℓ) = 1 − tanh²(ℓ/c) = 1 − (log(e)/c)²
          if (clamp > T(0)) {
            const T th = log(e) / clamp;
            de = e * (T(1) - th * th);
          }
          GA[r * a.ld_w + c] = g;                               // ∂/∂μ_i
          GA[r * a.ld_w + di + c] = g * U[r * LD + o + c] * de; // ∂/∂ℓ_i
          G[r * LD + o + c] = g * (e + smin);                  // ∂/∂u_i
        }
        cx.sync();
        mlp_backward<T, ROWS>(a, i, G + a.offs[i + 1], LD, ws, P, cx);
      }
    };
    // ---- replica exchange: whether a swap round follows step k (its counter step_offset + k + 1 is
    //      a multiple of swap_every), and the round (swap_round_rows)
    auto round_after = [&](long k) -> bool {
      return a.temperatures != nullptr && !diffusion && k >= 0 && ((long)a.step_offset + k + 1) % a.swap_every == 0;
    };
    auto swap_round = [&](long k) { swap_round_rows<T, ROWS>(a, k, r_begin, nvalid, U, G, RS, cx); };
    if (a.metropolis && !diffusion) {
      // ---- Metropolis-adjusted steps (hebm/sampler/reference.py mala_step): each state evaluated once —
      // the proposal's log π and gradient serve the next step when it is accepted.
      T* U0 = ws + ROWS * a.off_U0;  // the state before the proposal
      T* G0 = ws + ROWS * a.off_G0;  // its ∇log π
      T* r_lp = RS + 7 * ROWS;       // log π of U
      T* r_lp0 = RS + 8 * ROWS;      // log π of U0
      T* r_acc = RS + 9 * ROWS;      // 1: the proposal was accepted
      // G ← ∇log π(U) (energy part + Gaussian + kernel term), r_lp ← log π(U): a warp per row
      auto full_grad = [&]() {
        for (int r = warp; r < ROWS; r += kWarps) {
          T su = T(0), sk = T(0);
          for (int d = lane; d < D; d += 32) {
            const T u = U[r * LD + d];
            T g = G[r * LD + d] - u;
            su += u * u;
            if (kernel_on) {
              const T df = r_alpha[r] * u - UN[r * LD + d];
              sk += df * df;
              g -= r_alpha[r] * df / (r_sig[r] * r_sig[r]);
            }
            G[r * LD + d] = g;
          }
          su = cx.warp_sum(su);
          sk = cx.warp_sum(sk);
          if (lane == 0) {
            T lp = T(-0.5) * su;
            if (a.has_energy) lp += r_lam[r] * r_F[r];
            if (kernel_on) lp -= sk / (T(2) * r_sig[r] * r_sig[r]);
            r_lp[r] = lp;
          }
        }
        cx.sync();
      };
      T* r_F0 = RS + 11 * ROWS;  // F of U0 (a ladder's round reads F of the state kept; slot 11 is free then)
      // the state is evaluated at the start and after a swap round (one call site: each inlined
      // evaluation is a copy of every network's forward and backward in the kernel)
      bool fresh = K > 0;
      for (int k = 0; k < K; ++k) {
        if (fresh) {
          energy_grad();
          full_grad();
          fresh = false;
        }
        const long step = step_base + k;
        // the trace, and the state kept: U0, G0, r_lp0, r_F0
        for (int r = tid; r < ROWS; r += kThreads) {
          if (a.log_density != nullptr && r < nvalid) a.log_density[(long)k * B + r_begin + r] = r_lp[r];
          r_lp0[r] = r_lp[r];
          r_F0[r] = r_F[r];
        }
        // the proposal u' = u + (δ²/2)∇log π(u) + δε (c = 1: r_amp = δ), four elements a thread
        for (int idx = tid; idx < ROWS * NB4; idx += kThreads) {
          const int r = idx / NB4, j = idx % NB4;
          const long b = r_begin + r;
          T epsT[4] = {T(0), T(0), T(0), T(0)};
          if (r < nvalid) noise4(a, k, b, j, step, epsT);
          for (int q = 0; q < 4; ++q) {
            const int d = 4 * j + q;
            if (d >= D) break;
            const T u = U[r * LD + d], g = G[r * LD + d];
            U0[r * LD + d] = u;
            G0[r * LD + d] = g;
            U[r * LD + d] = u + r_half[r] * g + r_amp[r] * epsT[q];
          }
        }
        cx.sync();
        energy_grad();
        full_grad();
        // the test: log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u), a warp per row
        for (int r = warp; r < ROWS; r += kWarps) {
          T fwd = T(0), rev = T(0);
          const T h = r_half[r];
          for (int d = lane; d < D; d += 32) {
            const T x = U0[r * LD + d], y = U[r * LD + d];
            const T e1 = x - y - h * G[r * LD + d];   // u − u' − (δ²/2)∇log π(u')
            const T e2 = y - x - h * G0[r * LD + d];  // u' − u − (δ²/2)∇log π(u)
            rev += e1 * e1;
            fwd += e2 * e2;
          }
          rev = cx.warp_sum(rev);
          fwd = cx.warp_sum(fwd);
          if (lane == 0) {
            bool acc = false;
            if (r < nvalid) {
              const long b = r_begin + r;
              const T dl = r_amp[r];  // δ (c = 1)
              const T inv = dl > T(0) ? T(0.5) / (dl * dl) : T(0);
              const T log_alpha = r_lp[r] - r_lp0[r] + (-rev * inv) - (-fwd * inv);
              const T Uu = a.uniforms != nullptr
                               ? a.uniforms[(long)k * B + b]
                               : T(philox_accept_uniform(a.key0, a.key1, (uint64_t)a.chain_ids[b], (uint64_t)step));
              acc = log(Uu) < log_alpha;  // NaN refuses
              const T prob = log_alpha >= T(0) ? T(1) : exp(log_alpha);
              a.accept[b] += acc ? T(1) : T(0);
              if (prob == prob) a.accept[B + b] += prob;
            }
            r_acc[r] = acc ? T(1) : T(0);
          }
        }
        cx.sync();
        // a refused proposal: the chain stays (state, gradient, log π)
        for (int idx = tid; idx < ROWS * D; idx += kThreads) {
          const int r = idx / D, d = idx % D;
          if (r_acc[r] == T(0)) {
            U[r * LD + d] = U0[r * LD + d];
            G[r * LD + d] = G0[r * LD + d];
          }
        }
        for (int r = tid; r < ROWS; r += kThreads)
          if (r_acc[r] == T(0)) {
            r_lp[r] = r_lp0[r];
            r_F[r] = r_F0[r];
          }
        cx.sync();
        // a draw: the chain's state after the step and its own log π (no extra evaluation); synced
        // before the next proposal rewrites U
        const long n = draw_index(a, k);
        if (n >= 0) {
          store_draw<T, ROWS>(a, n, U, r_lp, r_begin, nvalid, cx);
          cx.sync();
        }
        // a swap round on the kept state's F; then log π and its gradient afresh at the chains' own β
        // (as the reference's next run of steps starts)
        if (round_after(k)) {
          swap_round(k);
          fresh = true;
        }
      }
      continue;  // (Langevin mode has one level)
    }
    // ---- log π at the state U (after energy_grad) into the trace row k (when k >= 0 and traced)
    //      and the log π of draw n (when n >= 0): a warp per row
    auto log_density_rows = [&](long k, long n) {
      for (int r = warp; r < ROWS; r += kWarps) {
        T su = T(0), sk = T(0);
        for (int d = lane; d < D; d += 32) {
          const T u = U[r * LD + d];
          su += u * u;
          if (kernel_on) {
            const T df = r_alpha[r] * u - UN[r * LD + d];
            sk += df * df;
          }
        }
        su = cx.warp_sum(su);
        sk = cx.warp_sum(sk);
        if (lane == 0 && r < nvalid) {
          T lp = T(-0.5) * su;
          if (a.has_energy) lp += r_lam[r] * r_F[r];
          if (kernel_on) lp -= sk / (T(2) * r_sig[r] * r_sig[r]);
          if (k >= 0 && a.log_density != nullptr) a.log_density[k * B + r_begin + r] = lp;
          if (n >= 0) a.draws_log_density[n * B + r_begin + r] = lp;
        }
      }
      cx.sync();
    };
    // The K steps, and a trailing pass (k = K) when a swap round or a draw follows the last step: it
    // evaluates the final state for them.  One evaluation site (each inlined evaluation is a copy of
    // every network's forward and backward in the kernel): the state entering step k is evaluated at
    // the top, and a swap round after step k − 1 runs there, on that F; ULA's untempered G and F then
    // move with the swapped states.
    const bool tail = !diffusion && K > 0 && (round_after((long)K - 1) || draw_index(a, (long)K - 1) >= 0);
    for (int k = 0; k < K + (tail ? 1 : 0); ++k) {
      energy_grad();
      if (round_after((long)k - 1)) {  // a draw after step k − 1 gets its log π before its state moves
        const long n = draw_index(a, (long)k - 1);
        if (n >= 0) log_density_rows(-1, n);
        swap_round(k - 1);
      }
      if (k == K) {  // the trailing pass: the last draw's log π, when no round took it
        const long n = round_after((long)K - 1) ? -1 : draw_index(a, (long)K - 1);
        if (n >= 0) log_density_rows(-1, n);
        break;
      }
      // ---- phase 5 (trace): log π at the state entering this step — the per-step trace, and the
      //      log π of the draw taken after the previous step (the cpu kernel's `pending`; one before a
      //      swap round had its log π written above)
      const long pend = diffusion || round_after((long)k - 1) ? -1 : draw_index(a, (long)k - 1);
      if ((a.log_density != nullptr || pend >= 0) && !diffusion) log_density_rows(k, pend);
      // ---- phase 6: the update u ← u + (δ²/2)∇log π + cδε, four elements (one Philox block) a thread
      const long step = step_base + k;
      for (int idx = tid; idx < ROWS * NB4; idx += kThreads) {
        const int r = idx / NB4, j = idx % NB4;
        if (r >= nvalid) continue;
        const long b = r_begin + r;
        T epsT[4];
        noise4(a, diffusion ? lv * K + k : k, b, j, step, epsT);
        for (int q = 0; q < 4; ++q) {
          const int d = 4 * j + q;
          if (d >= D) break;
          const T u = U[r * LD + d];
          T g = (ula_ladder ? a.temperatures[b % a.temperatures_n] * G[r * LD + d] : G[r * LD + d]) - u;
          if (kernel_on) {
            const T al = r_alpha[r], sg = r_sig[r];
            g -= al * (al * u - UN[r * LD + d]) / (sg * sg);
          }
          U[r * LD + d] = u + r_half[r] * g + r_amp[r] * epsT[q];
        }
      }
      cx.sync();
      // a draw: the state after the step (its log π comes with the next step's, or below)
      if (!diffusion) {
        const long n = draw_index(a, k);
        if (n >= 0) {
          store_draw<T, ROWS>(a, n, U, (const T*)nullptr, r_begin, nvalid, cx);
          cx.sync();  // (the next phase only reads U; synced all the same, a draw step is rare)
        }
      }
    }
    if (diffusion && a.levels_out != nullptr) {
      T* dst = a.levels_out + (long)(lv + 1) * B * D;
      for (int idx = tid; idx < nvalid * D; idx += kThreads) {
        const int r = idx / D, d = idx % D;
        dst[(r_begin + r) * D + d] = U[r * LD + d];
      }
    }
    cx.sync();  // next level rewrites the row scalars and UN
  }
  for (int idx = tid; idx < nvalid * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    a.u_out[(r_begin + r) * D + d] = U[r * LD + d];
  }
  cx.sync();  // the next row block reuses the workspace
}

}  // namespace cuda
}  // namespace hebm
