// langevin_cuda.cpp — torch binding of the fused CUDA sampler, and its host block emulator.
//
// * TORCH_LIBRARY_IMPL(hebm, CUDA): the CUDA implementations of the ops hebm::langevin and
//   hebm::reverse_diffusion (schema defined once in Python, hebm/sampler/backends/ops.py, from the call
//   record).  Boxed kernels: the arguments are read from their slots (csrc/call_record.h) through
//   csrc/network.h, the network's slot tensors laid out in one flat buffer, and everything turned
//   into one KArgs struct (hebm_cuda.h); the kernel (langevin_kernel.cu) runs the whole loop in one
//   launch, after a small transpose launch (Wᵀ for the forward products).
// * TORCH_LIBRARY_IMPL(hebm_cuda_emu, CPU): the same two ops (same schema), implemented on CPU
//   tensors by running the kernel's block code (langevin_block.cuh) as 256 fibers (ucontext) with
//   emulated barriers for __syncthreads and the warp reductions.  Tests only: it checks, without a GPU, that the code the GPU runs
//   computes langevin_ref's math (layout, indexing, phases, per-row parameters, noise).
//
// Workspace plan (both paths): rows per block 8 or 16; the block's workspace in shared memory
// when it fits the device's opt-in limit, else a global scratch slice; params (W and Wᵀ) staged
// in shared memory when they fit too; the conditionals' hidden activations kept from the forward
// pass when they fit, else recomputed in the backward pass.  Env overrides (tuning, tests):
// HEBM_CUDA_ROWS=8|16, HEBM_CUDA_WS=global, HEBM_CUDA_STAGE=0, HEBM_CUDA_STORE=0|1.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <ucontext.h>

#include <memory>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#ifdef HEBM_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>   // c10 only: ATen/cuda/CUDAContext.h needs cuSPARSE/cuBLAS headers
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include "langevin_block.cuh"
#include "../network.h"

namespace hebm {
namespace cuda {
namespace {

// --------------------------------------------------------------------------------- arguments
int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return dflt;
  return std::atoi(v);
}
bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

struct Structure {
  int L = 0, D = 0, n_mlps = 0, n_layers = 0, maxw = 1, maxout = 1;
  std::vector<int> hidden_len;  // per MLP: Σ round4(hidden widths)
};

template <typename T>
Structure fill_structure(KArgs<T>& a, const at::Tensor& params, at::IntArrayRef dims, at::IntArrayRef layout,
                         at::IntArrayRef mlps, at::ArrayRef<double> act_params, bool has_energy, int64_t n_levels,
                         double sigma_min, double sigma_clamp) {
  Structure s;
  s.L = (int)dims.size();
  // the CUDA kernel's own limits (fixed-size argument tables, hebm_cuda.h)
  TORCH_CHECK(s.L <= kMaxL, "hebm cuda: 1 to ", kMaxL, " latent layers supported, got ", s.L);
  s.n_layers = (int)(layout.size() / LAY_NCOLS);
  s.n_mlps = (int)(mlps.size() / MLP_NCOLS);
  TORCH_CHECK(s.n_layers <= kMaxLayers, "hebm cuda: at most ", kMaxLayers, " Linear layers in all, got ", s.n_layers);
  const int64_t np = params.numel();
  TORCH_CHECK(np < (int64_t(1) << 31) - 8, "hebm cuda: params too large");
  std::memset(&a, 0, sizeof(a));
  a.L = s.L;
  int o = 0;
  for (int i = 0; i < s.L; ++i) {
    a.dims[i] = (int)dims[i];
    a.offs[i] = o;
    o += (int)dims[i];
  }
  s.D = o;
  a.D = o;
  a.LD = round4(o);
  a.n_layers = s.n_layers;
  a.n_mlps = s.n_mlps;
  a.has_energy = has_energy ? 1 : 0;
  a.n_levels = (int)n_levels;
  a.sigma_min = (T)sigma_min;
  TORCH_CHECK(sigma_clamp >= 0, "hebm cuda: sigma_clamp must be >= 0 (0: no clamp)");
  a.sigma_clamp = (T)sigma_clamp;
  a.n_params = np;
  for (int l = 0; l < s.n_layers; ++l) {
    const int64_t* row = layout.data() + l * LAY_NCOLS;
    LayerDesc& ly = a.layers[l];
    ly.in = (int)row[LAY_IN];
    ly.out = (int)row[LAY_OUT];
    ly.brows = (int)row[LAY_BROWS];
    ly.w_off = row[LAY_W];
    ly.b_off = row[LAY_B];
    s.maxw = std::max(s.maxw, std::max(ly.in, ly.out));
  }
  s.hidden_len.assign(s.n_mlps, 0);
  for (int m = 0; m < s.n_mlps; ++m) {
    const int64_t* row = mlps.data() + m * MLP_NCOLS;
    MlpDesc& md = a.mlps[m];
    md.first = (int)row[MLP_FIRST];
    md.n_layers = (int)row[MLP_NLAYERS];
    md.act = (int)row[MLP_ACT];
    md.act_param = (float)act_params[m];
    const bool cond = m < s.L - 1;
    const int i = cond ? m : m - (s.L - 1);
    const int want_out = cond ? 2 * a.dims[i] : 1;
    for (int j = 0; j + 1 < md.n_layers; ++j) s.hidden_len[m] += round4(a.layers[md.first + j].out);
    s.maxout = std::max(s.maxout, want_out);
  }
  return s;
}

// The network's slot tensors (csrc/network.h, checked) laid out in one flat buffer on their
// device — per layer W [out, in], then its bias table [brows, out] = bias + level rows (ATen's
// additions: the bits every backend reads) — and the layout table of that buffer (the columns of
// hebm_kernel.h; LAY_W / LAY_B hold element offsets here).
struct FlatNetwork {
  at::Tensor params;
  std::vector<int64_t> layout;
};

inline FlatNetwork flatten_network(const NetworkArgs& net) {
  FlatNetwork f;
  std::vector<at::Tensor> pieces;
  int64_t off = 0;
  const at::Tensor& any = net.slots.at(0);
  for (int64_t l = 0; l < net.n_layers; ++l) {
    const int64_t* row = net.layout.data() + l * LAY_NCOLS;
    const int64_t out = row[LAY_OUT], brows = row[LAY_BROWS];
    const at::Tensor& W = net.slots[row[LAY_W]];
    at::Tensor bt = row[LAY_B] >= 0 ? net.slots[row[LAY_B]].reshape({1, out}) : at::zeros({1, out}, any.options());
    if (row[LAY_LV] >= 0) bt = bt + net.slots[row[LAY_LV]].narrow(1, row[LAY_LVCOL], out);
    std::vector<int64_t> r(row, row + LAY_NCOLS);
    r[LAY_W] = off;
    off += W.numel();
    r[LAY_B] = off;
    off += brows * out;
    f.layout.insert(f.layout.end(), r.begin(), r.end());
    pieces.push_back(W.reshape({-1}));
    pieces.push_back(bt.reshape({-1}));
  }
  f.params = at::cat(pieces).contiguous();
  return f;
}

struct Plan {
  int rows = 16;
  bool global_ws = false, stage = false, store_all = false;
  int64_t smem = 0;       // dynamic shared memory bytes
  int64_t row_elems = 0;
};

template <typename T>
void layout_workspace(KArgs<T>& a, const Structure& s, bool store_all, bool has_un) {
  int o = 0;
  auto take = [&](int32_t& off, int len) { off = o; o += round4(len); };
  a.ld_w = round4(s.maxw);
  a.ld_out = round4(s.maxout);
  take(a.off_U, a.LD);
  take(a.off_Z, a.LD);
  take(a.off_G, a.LD);
  take(a.off_EX, a.LD);
  a.has_un = has_un ? 1 : 0;
  if (has_un) take(a.off_UN, a.LD); else a.off_UN = a.off_U;  // never read
  take(a.off_XT, a.ld_w);
  take(a.off_GA, a.ld_w);
  take(a.off_GB, a.ld_w);
  take(a.off_OUT, a.ld_out);
  // MLP stacks: store_all keeps every conditional's hidden activations until the backward pass
  int stack = 0, cond_sum = 0, emax = 0, amax = 0;
  for (int m = 0; m < s.n_mlps; ++m) {
    amax = std::max(amax, s.hidden_len[m]);
    if (m < s.L - 1) cond_sum += s.hidden_len[m]; else emax = std::max(emax, s.hidden_len[m]);
  }
  int c = 0;
  for (int m = 0; m < s.n_mlps; ++m) {
    if (!store_all) a.mlps[m].stack_off = 0;
    else if (m < s.L - 1) { a.mlps[m].stack_off = c; c += s.hidden_len[m]; }
    else a.mlps[m].stack_off = cond_sum;
  }
  stack = store_all ? cond_sum + emax : amax;
  a.stack_len = round4(stack);
  take(a.off_STACK, a.stack_len);
  take(a.off_RS, kRowScalars);
  if (a.metropolis) {
    take(a.off_U0, a.LD);
    take(a.off_G0, a.LD);
  }
  a.store_all = store_all ? 1 : 0;
  a.row_elems = o;
}

// Choose rows / workspace placement / staging for a device with `smem_limit` bytes of opt-in
// shared memory per block and `n_sm` multiprocessors.
template <typename T>
Plan make_plan(KArgs<T>& a, const Structure& s, bool has_un, int64_t B, int64_t smem_limit, int n_sm, int R = 1) {
  Plan p;
  const int64_t esz = sizeof(T);
  const int64_t params_bytes = 2 * (int64_t)round4((int)a.n_params) * esz;
  const int env_rows = env_int("HEBM_CUDA_ROWS", 0);
  const int env_store = env_int("HEBM_CUDA_STORE", -1);
  const bool force_global = env_is("HEBM_CUDA_WS", "global");
  const bool no_stage = env_is("HEBM_CUDA_STAGE", "0");
  auto ws_bytes = [&](int rows, bool store) {
    layout_workspace(a, s, store, has_un);
    return (int64_t)rows * a.row_elems * esz;
  };
  if (env_rows == 8 || env_rows == 16) p.rows = env_rows;
  else p.rows = ((B + 15) / 16 < n_sm || ws_bytes(16, false) > smem_limit) ? 8 : 16;
  if (R > p.rows) p.rows = 16;  // a ladder group lives in one block
  TORCH_CHECK(R <= p.rows, "hebm cuda: a ladder group of R = ", R, " chains does not fit a block of ", p.rows, " rows");
  bool store = false;
  if (env_store >= 0) store = env_store > 0;
  else store = ws_bytes(p.rows, true) <= smem_limit;
  const int64_t wsb = ws_bytes(p.rows, store);
  p.store_all = store;
  p.global_ws = force_global || wsb > smem_limit;
  const int64_t base = p.global_ws ? 0 : wsb;
  p.stage = !no_stage && base + params_bytes <= smem_limit;
  p.smem = base + (p.stage ? params_bytes : 0);
  p.row_elems = a.row_elems;
  a.rows = p.rows;
  a.block_chains = p.rows / R * R;
  a.stage_params = p.stage ? 1 : 0;
  a.ws_block_elems = ((int64_t)p.rows * a.row_elems + 63) / 64 * 64;
  return p;
}

template <typename T>
void transpose_host(const T* P, T* PT, const KArgs<T>& a) {
  for (int l = 0; l < a.n_layers; ++l) {
    const LayerDesc& ly = a.layers[l];
    for (int o = 0; o < ly.out; ++o)
      for (int c = 0; c < ly.in; ++c) PT[ly.w_off + (int64_t)c * ly.out + o] = P[ly.w_off + (int64_t)o * ly.in + c];
    for (int64_t i = 0; i < (int64_t)ly.brows * ly.out; ++i) PT[ly.b_off + i] = P[ly.b_off + i];
  }
}

// --------------------------------------------------------------------------------- emulator
// 256 "threads" as fibers (ucontext) on one OS thread: a fiber runs until it reaches a barrier
// (cx.sync() for the block, the warp barrier inside warp_sum), then the next runnable fiber
// runs.  A barrier releases its waiters when all its members arrived.  No runnable fiber while
// some wait = a barrier not reached by every thread (divergent __syncthreads / shuffle): error.
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  int wait = 0;  // 0 runnable, 1 block barrier, 2 warp barrier, 3 done
};

struct EmuShared {
  ucontext_t sched;
  Fiber fib[kThreads];
  int block_count = 0;
  int warp_count[kWarps] = {0};
  double slot[kThreads];
  int cur = 0;
  void arrive(int t, int kind) {
    Fiber& f = fib[t];
    if (kind == 1) {
      if (++block_count == kThreads) {
        block_count = 0;
        for (auto& g : fib)
          if (g.wait == 1) g.wait = 0;
        return;  // the last arrival goes on
      }
    } else {
      const int w = t / 32;
      if (++warp_count[w] == 32) {
        warp_count[w] = 0;
        for (int l = 0; l < 32; ++l)
          if (fib[w * 32 + l].wait == 2) fib[w * 32 + l].wait = 0;
        return;
      }
    }
    f.wait = kind;
    swapcontext(&f.ctx, &sched);
  }
};

struct EmuCtx {
  int t;
  EmuShared* sh;
  int tid() const { return t; }
  void sync() const { sh->arrive(t, 1); }
  template <typename T>
  T warp_sum(T v) const {
    sh->slot[t] = (double)v;
    sh->arrive(t, 2);
    T s = T(0);
    for (int l = 0; l < 32; ++l) s += (T)sh->slot[(t / 32) * 32 + l];
    sh->arrive(t, 2);
    return s;
  }
};

template <typename T, int ROWS>
struct EmuJob {
  const KArgs<T>* a;
  T* ws;
  const T* P;
  const T* PT;
  EmuShared* sh;
};

template <typename T, int ROWS>
void fiber_main(unsigned lo, unsigned hi, int t) {
  auto* job = reinterpret_cast<EmuJob<T, ROWS>*>((static_cast<uintptr_t>(hi) << 32) | lo);
  EmuCtx cx{t, job->sh};
  const int nblocks = (int)((job->a->B + job->a->block_chains - 1) / job->a->block_chains);
  for (int rb = 0; rb < nblocks; ++rb) block_run<T, ROWS>(*job->a, rb, job->ws, job->P, job->PT, cx);  // gridDim = 1
  job->sh->fib[t].wait = 3;
  swapcontext(&job->sh->fib[t].ctx, &job->sh->sched);
}

template <typename T, int ROWS>
void emulate_rows(const KArgs<T>& a, T* ws, const T* P, const T* PT) {
  std::unique_ptr<EmuShared> sh(new EmuShared());
  EmuJob<T, ROWS> job{&a, ws, P, PT, sh.get()};
  const uintptr_t jp = reinterpret_cast<uintptr_t>(&job);
  for (int t = 0; t < kThreads; ++t) {
    Fiber& f = sh->fib[t];
    f.stack.resize(128 * 1024);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &sh->sched;
    makecontext(&f.ctx, (void (*)())fiber_main<T, ROWS>, 3, (unsigned)(jp & 0xFFFFFFFFu), (unsigned)(jp >> 32), t);
  }
  for (;;) {
    bool any = false, all_done = true;
    for (int t = 0; t < kThreads; ++t) {
      Fiber& f = sh->fib[t];
      if (f.wait != 3) all_done = false;
      if (f.wait == 0) {
        any = true;
        swapcontext(&sh->sched, &f.ctx);
      }
    }
    if (all_done) break;
    TORCH_CHECK(any, "hebm_cuda_emu: deadlock — a barrier or warp_sum not reached by every thread of the block/warp");
  }
}

// One emulated block runs every row block (grid-stride with gridDim = 1), staging like the kernel.
template <typename T>
void emulate(KArgs<T>& a, const Plan& p, const at::Tensor& params, const at::Tensor& PT) {
  std::vector<T> smem((size_t)(p.smem / (int64_t)sizeof(T)) + 8, T(0));
  std::vector<T> gws;
  T* ws = smem.data();
  if (p.global_ws) {
    gws.assign((size_t)a.ws_block_elems, T(0));
    a.gws = gws.data();
    ws = a.gws;
  }
  const T* P = params.data_ptr<T>();
  const T* Pt = PT.data_ptr<T>();
  if (p.stage) {
    T* sp = smem.data() + (p.global_ws ? 0 : (int64_t)p.rows * a.row_elems);
    const int64_t np4 = round4((int)a.n_params);
    for (int64_t i = 0; i < a.n_params; ++i) {
      sp[i] = P[i];
      sp[np4 + i] = Pt[i];
    }
    P = sp;
    Pt = sp + np4;
  }
  if (p.rows == 8) emulate_rows<T, 8>(a, ws, P, Pt);
  else emulate_rows<T, 16>(a, ws, P, Pt);
}

// --------------------------------------------------------------------------------- common op body
struct DeviceInfo {
  int64_t smem_limit;
  int n_sm;
};

void check_precision(c10::string_view precision, const at::Tensor& u) {
  const std::string p(precision.data(), precision.size());
  TORCH_CHECK(p == "fp32" || p == "tf32" || p == "bf16" || p == "fp64" || p == "auto",
              "hebm cuda: unknown precision '", p, "'");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "hebm cuda: u must be float32 or float64");
}

#ifdef HEBM_WITH_CUDA
DeviceInfo cuda_device_info(const at::Tensor& u) {
  static std::mutex mu;
  static std::vector<DeviceInfo> cache;  // per device index; smem_limit < 0: not read yet
  const int dev = u.device().index();
  std::lock_guard<std::mutex> lk(mu);
  if ((int)cache.size() <= dev) cache.resize(dev + 1, DeviceInfo{-1, 0});
  if (cache[dev].smem_limit < 0) {
    int smem = 0, nsm = 0;
    cudaError_t e = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev);
    TORCH_CHECK(e == cudaSuccess, "hebm cuda: cannot read device properties: ", cudaGetErrorString(e));
    cache[dev] = DeviceInfo{(int64_t)smem - 1024, nsm};
  }
  return cache[dev];
}

template <typename T>
void launch(KArgs<T>& a, const Plan& p, const at::Tensor& u, const at::Tensor& params, at::Tensor& PT_out,
            const DeviceInfo& dev) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
  at::Tensor PT = at::empty_like(params);
  int err = launch_transpose(params.data_ptr<T>(), PT.data_ptr<T>(), a.layers, a.n_layers, sizeof(T) == 8, stream);
  TORCH_CHECK(err == 0, "hebm cuda: transpose launch failed: ", cudaGetErrorString((cudaError_t)err));
  a.P = params.data_ptr<T>();
  a.PT = PT.data_ptr<T>();
  const int nblocks = (int)((a.B + a.block_chains - 1) / a.block_chains);
  const int occ = sizeof(T) == 8 ? occupancy_f64(p.rows, p.smem) : occupancy_f32(p.rows, p.smem);
  TORCH_CHECK(occ > 0, "hebm cuda: the kernel cannot be resident with ", p.smem, " bytes of shared memory");
  const int grid = std::max(1, std::min(nblocks, occ * dev.n_sm));
  at::Tensor gws;
  if (p.global_ws) {
    gws = at::empty({(int64_t)grid * a.ws_block_elems}, u.options());
    a.gws = gws.data_ptr<T>();
  }
  err = sizeof(T) == 8 ? launch_langevin_f64(*reinterpret_cast<KArgs<double>*>(&a), grid, p.smem, stream)
                       : launch_langevin_f32(*reinterpret_cast<KArgs<float>*>(&a), grid, p.smem, stream);
  TORCH_CHECK(err == 0, "hebm cuda: kernel launch failed: ", cudaGetErrorString((cudaError_t)err));
  PT_out = PT;  // keep alive until the stream is done with it (caching allocator: stream-ordered)
}
#endif

// each call-record field of the op into its KArgs member, from the reader c (csrc/network.h)
#define HEBM_READ(name, slot, KIND) HEBM_FILL_##KIND(a, c, name, slot)

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> langevin_impl(
    bool emulated, CallReader& c, const NetworkArgs& net, bool trace) {
  const at::Tensor u = c.u.contiguous();
  const FlatNetwork flat = flatten_network(net);
  const at::Tensor& params = flat.params;
  KArgs<T> a;
  Structure s = fill_structure(a, params, net.dims, flat.layout, net.mlps, net.act_params, net.has_energy, net.n_levels,
                               net.sigma_min, net.sigma_clamp);
  TORCH_CHECK(u.size(1) == s.D && u.size(0) >= 1, "hebm cuda: u must be [B, ", s.D, "], got ", u.sizes());
  const int64_t B = u.size(0);
  TORCH_CHECK(B < (int64_t(1) << 31) && B * s.D < (int64_t(1) << 40), "hebm cuda: batch too large");
  a.B = (int)B;
  HEBM_LANGEVIN_FIELDS(HEBM_READ)
  // guards of the kernel's memory (the rules are hebm/sampler/checks.py's)
  TORCH_CHECK(a.n_steps < (int64_t(1) << 31), "hebm cuda: bad n_steps");
  // replica exchange: ladder groups of R consecutive chains, each inside one block (R <= 16:
  // hebm/sampler/backends/cuda.py refuses a longer ladder by name); the swap record [n_rounds, 2, B]
  const bool ladder = a.temperatures != nullptr;
  const int R = ladder ? (int)a.temperatures_n : 1;
  TORCH_CHECK(R >= 1 && R <= 16 && B % R == 0, "hebm cuda: bad ladder (R = ", R, ", B = ", B, ")");
  const int64_t n_rounds = ladder ? (a.step_offset + a.n_steps) / a.swap_every - a.step_offset / a.swap_every : 0;
  const at::Tensor swaps = ladder ? at::zeros({n_rounds, 2, B}, u.options()) : at::empty({0}, u.options());
  a.swaps = ladder ? swaps.data_ptr<T>() : nullptr;
  TORCH_CHECK(a.u_next == nullptr || (a.alpha != nullptr && a.sigma != nullptr), "hebm cuda: u_next needs alpha and sigma");
  const bool kern = a.u_next != nullptr;
  at::Tensor out = at::empty_like(u);
  at::Tensor logd = trace ? at::empty({a.n_steps, B}, u.options()) : at::empty({0}, u.options());
  at::Tensor acc = a.metropolis ? at::zeros({2, B}, u.options()) : at::empty({0}, u.options());
  // the draws of trace_every (hebm/sampler/checks.py draw_count): the state after every step whose
  // counter step_offset + k + 1 m divides, and its log π
  TORCH_CHECK(a.trace_every >= 0, "hebm cuda: bad trace_every");
  const int64_t n_draws =
      a.trace_every > 0 ? (a.step_offset + a.n_steps) / a.trace_every - a.step_offset / a.trace_every : 0;
  at::Tensor draws = at::empty({n_draws, B, (int64_t)s.D}, u.options());
  at::Tensor draws_logd = at::empty({n_draws, B}, u.options());
  if (a.n_steps == 0) {
    out.copy_(u);
    return {out, logd, acc, draws, draws_logd, swaps};
  }
  a.u_in = u.data_ptr<T>();
  a.u_out = out.data_ptr<T>();
  a.log_density = trace ? logd.data_ptr<T>() : nullptr;
  a.accept = a.metropolis ? acc.data_ptr<T>() : nullptr;
  a.draws = n_draws ? draws.data_ptr<T>() : nullptr;
  a.draws_log_density = n_draws ? draws_logd.data_ptr<T>() : nullptr;
  a.n_lv = 0;
  if (emulated) {
    TORCH_CHECK(u.device().is_cpu(), "hebm_cuda_emu takes CPU tensors");
    Plan p = make_plan(a, s, kern, B, 227 * 1024, 132, R);
    at::Tensor PT = at::empty_like(params);
    transpose_host(params.data_ptr<T>(), PT.data_ptr<T>(), a);
    a.P = params.data_ptr<T>();
    a.PT = PT.data_ptr<T>();
    emulate(a, p, params, PT);
  } else {
#ifdef HEBM_WITH_CUDA
    TORCH_CHECK(u.is_cuda(), "hebm cuda: tensors must be on a CUDA device");
    c10::cuda::CUDAGuard guard(u.device());
    const DeviceInfo dev = cuda_device_info(u);
    Plan p = make_plan(a, s, kern, B, dev.smem_limit, dev.n_sm, R);
    at::Tensor PT;
    launch(a, p, u, params, PT, dev);
#else
    TORCH_CHECK(false, "hebm cuda: built without CUDA");
#endif
  }
  return {out, logd, acc, draws, draws_logd, swaps};
}

template <typename T>
at::Tensor reverse_impl(bool emulated, CallReader& c, const NetworkArgs& net, const std::vector<int64_t>& level_t,
                        const std::vector<double>& level_step, const std::vector<double>& level_lam,
                        const std::vector<double>& level_alpha, const std::vector<double>& level_sigma,
                        bool return_levels) {
  const at::Tensor u = c.u.contiguous();
  const FlatNetwork flat = flatten_network(net);
  const at::Tensor& params = flat.params;
  KArgs<T> a;
  Structure s = fill_structure(a, params, net.dims, flat.layout, net.mlps, net.act_params, net.has_energy, net.n_levels,
                               net.sigma_min, net.sigma_clamp);
  TORCH_CHECK(u.size(1) == s.D && u.size(0) >= 1, "hebm cuda: u_T must be [B, ", s.D, "]");
  const int64_t B = u.size(0);
  TORCH_CHECK(B < (int64_t(1) << 31), "hebm cuda: batch too large");
  a.B = (int)B;
  HEBM_REVERSE_FIELDS(HEBM_READ)
  TORCH_CHECK(a.n_steps < (1 << 30), "hebm cuda: bad n_steps");
  const int n_lv = (int)level_t.size();
  a.n_lv = n_lv;
  for (int j = 0; j < n_lv; ++j) {
    TORCH_CHECK(level_t[j] >= 0 && level_t[j] < net.n_levels, "hebm cuda: level_t out of range");
    a.lv_t[j] = (int)level_t[j];
    a.lv_step[j] = (T)level_step[j];
    a.lv_lam[j] = (T)level_lam[j];
    a.lv_alpha[j] = (T)level_alpha[j];
    a.lv_sigma[j] = (T)level_sigma[j];
  }
  at::Tensor levels = at::empty({n_lv + 1, B, (int64_t)s.D}, u.options());
  levels[0].copy_(u);
  at::Tensor out = return_levels ? at::Tensor() : at::empty_like(u);
  a.u_in = u.data_ptr<T>();
  a.u_out = return_levels ? levels[n_lv].data_ptr<T>() : out.data_ptr<T>();
  a.levels_out = return_levels ? levels.data_ptr<T>() : nullptr;
  if (emulated) {
    TORCH_CHECK(u.device().is_cpu(), "hebm_cuda_emu takes CPU tensors");
    Plan p = make_plan(a, s, true, B, 227 * 1024, 132);
    at::Tensor PT = at::empty_like(params);
    transpose_host(params.data_ptr<T>(), PT.data_ptr<T>(), a);
    a.P = params.data_ptr<T>();
    a.PT = PT.data_ptr<T>();
    emulate(a, p, params, PT);
  } else {
#ifdef HEBM_WITH_CUDA
    TORCH_CHECK(u.is_cuda(), "hebm cuda: tensors must be on a CUDA device");
    c10::cuda::CUDAGuard guard(u.device());
    const DeviceInfo dev = cuda_device_info(u);
    Plan p = make_plan(a, s, true, B, dev.smem_limit, dev.n_sm);
    at::Tensor PT;
    launch(a, p, u, params, PT, dev);
#else
    TORCH_CHECK(false, "hebm cuda: built without CUDA");
#endif
  }
  return return_levels ? levels : out;
}

// --------------------------------------------------------------------------------- op entry points
template <bool EMU>
void langevin_op(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static std::once_flag schema_checked;
  std::call_once(schema_checked, [&] { check_schema(op, kLangevinArgNames, LANGEVIN_N_ARGS); });
  const auto args = torch::jit::last(*stack, LANGEVIN_N_ARGS);
  CallReader c(args, LANGEVIN_U, "u");
  check_precision(args[LANGEVIN_PRECISION].toStringView(), c.u);
  const NetworkArgs net = read_network(args, c.u);
  c.n_levels = net.n_levels;
  const bool trace = args[LANGEVIN_TRACE].toBool();
  auto res = c.u.scalar_type() == at::kDouble ? langevin_impl<double>(EMU, c, net, trace)
                                              : langevin_impl<float>(EMU, c, net, trace);
  torch::jit::drop(*stack, LANGEVIN_N_ARGS);
  // (the swap record: empty without a ladder)
  torch::jit::push(*stack, std::move(std::get<0>(res)), std::move(std::get<1>(res)), std::move(std::get<2>(res)),
                   std::move(std::get<3>(res)), std::move(std::get<4>(res)), std::move(std::get<5>(res)));
}

template <bool EMU>
void reverse_op(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static std::once_flag schema_checked;
  std::call_once(schema_checked, [&] { check_schema(op, kReverseArgNames, REVERSE_N_ARGS); });
  const auto args = torch::jit::last(*stack, REVERSE_N_ARGS);
  CallReader c(args, REVERSE_U_T, "u_T");
  check_precision(args[REVERSE_PRECISION].toStringView(), c.u);
  const NetworkArgs net = read_network(args, c.u);
  c.n_levels = net.n_levels;
  const std::vector<int64_t> level_t = args[REVERSE_LEVEL_T].toIntVector();
  const std::vector<double> step = args[REVERSE_LEVEL_STEP].toDoubleVector();
  const std::vector<double> lam = args[REVERSE_LEVEL_ENERGY_SCALE].toDoubleVector();
  const std::vector<double> alpha = args[REVERSE_LEVEL_ALPHA].toDoubleVector();
  const std::vector<double> sigma = args[REVERSE_LEVEL_SIGMA].toDoubleVector();
  const int n_lv = (int)level_t.size();
  TORCH_CHECK(n_lv >= 1 && n_lv <= kMaxLevels, "hebm cuda: 1 to ", kMaxLevels, " levels supported, got ", n_lv);
  TORCH_CHECK((int)step.size() == n_lv && (int)lam.size() == n_lv && (int)alpha.size() == n_lv &&
                  (int)sigma.size() == n_lv,
              "hebm cuda: the level lists must have one entry per level");
  c.steps_per_count = n_lv;
  const bool return_levels = args[REVERSE_RETURN_LEVELS].toBool();
  at::Tensor res = c.u.scalar_type() == at::kDouble
                       ? reverse_impl<double>(EMU, c, net, level_t, step, lam, alpha, sigma, return_levels)
                       : reverse_impl<float>(EMU, c, net, level_t, step, lam, alpha, sigma, return_levels);
  torch::jit::drop(*stack, REVERSE_N_ARGS);
  torch::jit::push(*stack, std::move(res));
}

}  // namespace
}  // namespace cuda
}  // namespace hebm

// The schema of both namespaces (hebm, hebm_cuda_emu) is defined once, in Python: hebm/sampler/backends/ops.py.
TORCH_LIBRARY_IMPL(hebm_cuda_emu, CPU, m) {
  m.impl("langevin", torch::CppFunction::makeFromBoxedFunction<&hebm::cuda::langevin_op<true>>());
  m.impl("reverse_diffusion", torch::CppFunction::makeFromBoxedFunction<&hebm::cuda::reverse_op<true>>());
}

// setup.py passes -DHEBM_SOURCE_HASH_TOKEN=h<hex>; hebm/sampler/backends/_build.py compares it with the
// sources so a stale prebuilt module is rebuilt instead of used
#define HEBM_CUDA_STR2(x) #x
#define HEBM_CUDA_STR(x) HEBM_CUDA_STR2(x)
#ifdef HEBM_SOURCE_HASH_TOKEN
#define HEBM_SOURCE_MARKER "hebm-source-hash:" HEBM_CUDA_STR(HEBM_SOURCE_HASH_TOKEN)
#else
#define HEBM_SOURCE_MARKER "hebm-source-hash:"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hebm CUDA sampler: CUDA implementation of torch.ops.hebm.langevin / reverse_diffusion, "
            "and torch.ops.hebm_cuda_emu (the kernel's block code on host threads, for tests)";
  m.attr("source_hash") = std::string(HEBM_SOURCE_MARKER).substr(17);
#ifdef HEBM_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}

#ifdef HEBM_WITH_CUDA
TORCH_LIBRARY_IMPL(hebm, CUDA, m) {
  m.impl("langevin", torch::CppFunction::makeFromBoxedFunction<&hebm::cuda::langevin_op<false>>());
  m.impl("reverse_diffusion", torch::CppFunction::makeFromBoxedFunction<&hebm::cuda::reverse_op<false>>());
}
#endif
