// ops.cpp — the CPU implementation of hebm's two ops and the module bindings.
//
//   hebm::langevin          K steps of ũ-space Langevin (hebm/reference.py langevin_ref)
//   hebm::reverse_diffusion all levels of the ũ-space reverse diffusion, K steps each
//
// The schema is defined once, in Python (hebm/backends/ops.py); this file only registers the CPU
// kernels (TORCH_LIBRARY_IMPL), as the CUDA extension (csrc/cuda/) registers the CUDA ones, so
// neither extension needs the other.  Flat network buffers come from hebm/backends/pack.py; see
// csrc/hebm_kernel.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <cstring>
#include <mutex>
#include <optional>
#include <exception>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

#include "cpu/langevin_cpu.h"
#include "hebm_kernel.h"

// setup.py passes -DHEBM_SOURCE_HASH_TOKEN=h<hex> (a bare token: survives ninja and the shell);
// hebm/backends/_build.py compares it with the sources to skip a stale prebuilt module.
#define HEBM_STR2(x) #x
#define HEBM_STR(x) HEBM_STR2(x)
// The marker "hebm-source-hash:h<hex>" is one string literal in the binary, so the loader can
// check a prebuilt module's sources by reading the file, before importing (and registering) it.
#ifdef HEBM_SOURCE_HASH_TOKEN
#define HEBM_SOURCE_MARKER "hebm-source-hash:" HEBM_STR(HEBM_SOURCE_HASH_TOKEN)
#else
#define HEBM_SOURCE_MARKER "hebm-source-hash:"
#endif

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Kernel threads: 0 follows torch.get_num_threads().  A separate knob because a training loop
// wants torch's intra-op pool at 1 thread (tiny eager ops oversubscribe) while this kernel's
// one call per K steps still gains from every core (hebm.backends.cpu.set_num_threads).
std::atomic<int64_t> g_kernel_threads{0};

int64_t kernel_threads() {
  const int64_t n = g_kernel_threads.load(std::memory_order_relaxed);
  return std::max<int64_t>(1, n > 0 ? n : at::get_num_threads());
}

// Threads for a call of `flops` work (the 4·B·params-per-step model of docs/design.md §5).  A
// call of about a toy step or less runs on the calling thread alone unless a worker is still
// spinning from the previous call: waking a sleeping worker costs ~30 µs on this VM, as much as
// the second core saves (toy B = 64, K = 1: 94 µs on one thread, 101 µs on two, asleep), while a
// spinning one joins at once (benchmarks/NOTES.md, "CPU backend, session 4").
constexpr double kOneThreadFlops = 8e6;
bool pool_is_hot();

int64_t call_threads(double flops) {
  if (flops < kOneThreadFlops && !pool_is_hot()) return 1;
  return kernel_threads();
}

// Row chunk per task: all chains of a thread when B is small (one chunk per thread), at most
// 64 rows (weight reuse vs. enough tasks for the threads).
int64_t choose_chunk_rows(int64_t B, int64_t threads) {
  int64_t per = (B + threads - 1) / threads;
  per = (per + 3) / 4 * 4;
  return std::max<int64_t>(4, std::min<int64_t>(per, 64));
}

// The structural checks shared by both ops (hebm::validate_structure); fills offsets.
void check_structure(const Tensor& u, const Tensor& params, at::IntArrayRef dims, at::IntArrayRef layout,
                     at::IntArrayRef mlps, at::ArrayRef<double> act_params, bool has_energy, int64_t n_levels,
                     std::vector<int64_t>& offsets) {
  TORCH_CHECK(u.dim() == 2, "hebm: u must be [B, D], got ", u.sizes());
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "hebm: u must be float32 or float64, got ", u.scalar_type());
  TORCH_CHECK(params.scalar_type() == u.scalar_type(), "hebm: params must have u's dtype ", u.scalar_type(),
              ", got ", params.scalar_type());
  TORCH_CHECK(params.dim() == 1, "hebm: params must be a flat 1-d buffer");
  const std::string why = hebm::validate_structure(dims.data(), static_cast<int64_t>(dims.size()), layout.data(),
                                                   static_cast<int64_t>(layout.size()), mlps.data(),
                                                   static_cast<int64_t>(mlps.size()),
                                                   static_cast<int64_t>(act_params.size()), has_energy, n_levels,
                                                   params.numel());
  TORCH_CHECK(why.empty(), "hebm: ", why);
  int64_t D = 0;
  offsets.clear();
  for (int64_t d : dims) {
    offsets.push_back(D);
    D += d;
  }
  TORCH_CHECK(u.size(1) == D, "hebm: u has ", u.size(1), " columns but sum(dims) = ", D);
}

// x in dtype dt, contiguous: x itself when it is already (the common case), without the
// dispatcher round trip of a no-op .to() — a few µs of a short call's fixed cost.
Tensor as_contiguous(const Tensor& x, at::ScalarType dt) {
  if (x.scalar_type() == dt && x.is_contiguous()) return x;
  return x.to(dt).contiguous();
}

Tensor per_chain(const OptTensor& x, const char* name, const Tensor& u) {
  TORCH_CHECK(x.has_value(), "hebm: ", name, " is required");
  const Tensor& t = *x;
  TORCH_CHECK(t.device().is_cpu(), "hebm: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 1 && t.size(0) == u.size(0), "hebm: ", name, " must be [B] = [", u.size(0), "], got ",
              t.sizes());
  return as_contiguous(t, u.scalar_type());
}

Tensor per_chain_int(const Tensor& t, const char* name, const Tensor& u) {
  TORCH_CHECK(t.device().is_cpu(), "hebm: ", name, " must be a CPU tensor");
  TORCH_CHECK(!at::isFloatingType(t.scalar_type()), "hebm: ", name, " must be an integer tensor");
  TORCH_CHECK(t.dim() == 1 && t.size(0) == u.size(0), "hebm: ", name, " must be [B] = [", u.size(0), "], got ",
              t.sizes());
  return as_contiguous(t, at::kLong);
}

// t indexes the bias tables: a value outside [0, n_levels) would read outside them.  hebm.args
// refuses it with its message before any backend runs; this guards the memory of a direct op call.
bool ints_in(const Tensor& x, int64_t lo, int64_t hi) {  // every value in [lo, hi)
  const int64_t* p = x.data_ptr<int64_t>();
  bool ok = true;
  for (int64_t i = 0, n = x.numel(); i < n; ++i) ok &= p[i] >= lo && p[i] < hi;
  return ok;
}

void check_precision(c10::string_view precision) {
  const std::string p(precision);
  TORCH_CHECK(p == "fp32" || p == "tf32" || p == "bf16" || p == "fp64" || p == "auto",
              "hebm: precision must be fp32, tf32, bf16 or fp64, got ", p);
}

template <typename T>
void fill_structure(hebm::Problem<T>& P, const Tensor& params, at::IntArrayRef dims, const std::vector<int64_t>& offs,
                    at::IntArrayRef layout, at::IntArrayRef mlps, at::ArrayRef<double> act_params, bool has_energy,
                    int64_t n_levels, double sigma_min, double sigma_clamp) {
  P.L = static_cast<int64_t>(dims.size());
  P.dims = dims.data();
  P.offsets = offs.data();
  P.params = params.data_ptr<T>();
  P.layout = layout.data();
  P.mlps = mlps.data();
  P.act_params = act_params.data();
  P.n_mlps = static_cast<int64_t>(mlps.size()) / hebm::MLP_NCOLS;
  P.has_energy = has_energy;
  P.n_levels = n_levels;
  P.sigma_min = static_cast<T>(sigma_min);
  TORCH_CHECK(sigma_clamp >= 0, "hebm: sigma_clamp must be >= 0 (0: no clamp)");
  P.sigma_clamp = static_cast<T>(sigma_clamp);
}

// ---------------------------------------------------------------------------------- threads
// A persistent pool.  The calling thread and the workers take chunks from one counter (the
// chunks are equal work, one or more per thread), so the caller never waits for a worker that
// has not started: a worker joins a call only while the call is open (registration under the
// lock), and the caller waits only for the chunks already taken.  A late or missed wake-up
// therefore costs parallelism, never a hang — the first version assigned share i to worker i
// and once span forever waiting for a share no worker took (a diffusion training run, 28 min).
// Workers are started once and spin for kSpinMicros between calls, because creating threads per
// call cost ~50 µs — a step and more of the toy problem — and waking a sleeping one ~30 µs; a
// sampler called in a loop (a training step, a benchmark) finds them spinning.  Own threads
// rather than at::parallel_for: that one is an inline `#pragma omp parallel`, which would bind the extension to whichever
// OpenMP runtime it was linked with and runs serially without -fopenmp.
char* thread_workspace(size_t bytes) {
  thread_local std::unique_ptr<char[]> buf;
  thread_local size_t cap = 0;
  if (cap < bytes) {
    buf.reset(new char[bytes]);
    cap = bytes;
  }
  return buf.get();
}

class Pool {
 public:
  using Task = std::function<void(int64_t)>;  // runs chunk c on the calling thread

  // Whether a worker is spinning now, i.e. would join a call without a wake-up.
  bool hot() const { return spinning_.load(std::memory_order_relaxed) > 0; }

  // Runs task(0 … n_chunks−1) with up to n_threads threads (this one included); false when the
  // pool is busy with another caller (then the caller runs the chunks itself).
  bool run(int64_t n_threads, int64_t n_chunks, const Task& task) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure(n_threads - 1);
    Job job{&task, n_chunks, n_threads - 1};
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      ++epoch_;
    }
    cv_.notify_all();
    work(job);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = nullptr;  // closed: no worker joins from here on
    }
    while (job.active.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    if (job.error) std::rethrow_exception(job.error);
    return true;
  }

 private:
  struct Job {
    const Task* task;
    int64_t n_chunks;
    int64_t seats;  // workers that may join (the thread count asked for, less the caller)
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> active{0};  // workers inside work()
    std::mutex error_mu;
    std::exception_ptr error;
    Job(const Task* t, int64_t n, int64_t s) : task(t), n_chunks(n), seats(s) {}
  };

  static void work(Job& job) {
    for (int64_t c; (c = job.next.fetch_add(1, std::memory_order_relaxed)) < job.n_chunks;) {
      try {
        (*job.task)(c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(job.error_mu);
        if (!job.error) job.error = std::current_exception();
        job.next.store(job.n_chunks);  // stop handing out chunks
      }
    }
  }

  void ensure(int64_t n_workers) {
    while (static_cast<int64_t>(workers_.size()) < n_workers) workers_.emplace_back([this] { loop(); });
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      // spin for the next call before sleeping
      spinning_.fetch_add(1, std::memory_order_relaxed);
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
      while (epoch_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      spinning_.fetch_sub(1, std::memory_order_relaxed);
      Job* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return epoch_.load(std::memory_order_relaxed) != seen; });
        seen = epoch_.load(std::memory_order_relaxed);
        job = job_;
        if (job == nullptr || job->seats == 0) continue;  // that call has closed already
        --job->seats;
        job->active.fetch_add(1, std::memory_order_relaxed);
      }
      work(*job);
      job->active.fetch_sub(1, std::memory_order_release);
    }
  }

  static constexpr int64_t kSpinMicros = 500;
  std::atomic<int64_t> spinning_{0};  // workers in their spin phase (a hint: a worker may stop at once)
  std::mutex run_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  std::atomic<uint64_t> epoch_{0};
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction order
  return *p;
}

bool pool_is_hot() { return pool().hot(); }

template <typename F>
void parallel_chunks(int64_t threads, int64_t n_chunks, size_t ws_bytes, const F& f) {
  const int64_t nt = std::min<int64_t>(threads, n_chunks);
  auto chunk = [&](int64_t c) { f(c, c + 1, static_cast<void*>(thread_workspace(ws_bytes))); };
  if (nt > 1 && !at::in_parallel_region() && pool().run(nt, n_chunks, chunk)) return;
  f(0, n_chunks, static_cast<void*>(thread_workspace(ws_bytes)));  // one thread, or the pool is busy
}

// ---------------------------------------------------------------------------------- packed weights
// The weights in the kernel's layout, kept for the last few packed priors: hebm/backends/ops.py
// passes the token of its (immutable) pack, 0 to pack afresh.  A token is never reused.
template <typename T>
std::shared_ptr<const void> cached_weights(int64_t token, const hebm::Problem<T>& P) {
  static std::mutex mu;
  static std::list<std::pair<std::pair<int64_t, int>, std::shared_ptr<const void>>> lru;
  constexpr size_t kKeep = 8;
  if (token == 0) return hebm::cpu::pack_weights<T>(P);
  const std::pair<int64_t, int> key{token, static_cast<int>(sizeof(T))};
  {
    std::lock_guard<std::mutex> lk(mu);
    for (auto it = lru.begin(); it != lru.end(); ++it)
      if (it->first == key) {
        lru.splice(lru.begin(), lru, it);
        return it->second;
      }
  }
  auto w = hebm::cpu::pack_weights<T>(P);
  std::lock_guard<std::mutex> lk(mu);
  lru.emplace_front(key, w);
  while (lru.size() > kKeep) lru.pop_back();
  return w;
}

std::tuple<Tensor, Tensor, Tensor> langevin_cpu(const Tensor& u_in, const Tensor& params_in, at::IntArrayRef dims,
                                        at::IntArrayRef layout, at::IntArrayRef mlps, at::ArrayRef<double> act_params,
                                        bool has_energy, int64_t n_levels, double sigma_min, double sigma_clamp,
                                        int64_t pack_token, const Tensor& step_size,
                                        const Tensor& noise_scale, const Tensor& energy_scale, const OptTensor& t,
                                        const OptTensor& u_next, const OptTensor& alpha, const OptTensor& sigma,
                                        const OptTensor& noise, int64_t key0, int64_t key1, const Tensor& chain_ids,
                                        int64_t n_steps, int64_t step_offset, bool trace, bool metropolis,
                                        const OptTensor& uniforms, c10::string_view precision) {
  TORCH_CHECK(u_in.device().is_cpu() && params_in.device().is_cpu(), "hebm::langevin (CPU): tensors must be on the CPU");
  check_precision(precision);
  std::vector<int64_t> offs;
  check_structure(u_in, params_in, dims, layout, mlps, act_params, has_energy, n_levels, offs);
  TORCH_CHECK(n_steps >= 0 && step_offset >= 0, "hebm: n_steps and step_offset must be >= 0");
  const int64_t B = u_in.size(0), D = u_in.size(1);
  Tensor u = u_in.clone(at::MemoryFormat::Contiguous);
  Tensor params = params_in.contiguous();
  Tensor step = per_chain(step_size, "step_size", u), c = per_chain(noise_scale, "noise_scale", u);
  Tensor lam = per_chain(energy_scale, "energy_scale", u);
  Tensor ids = per_chain_int(chain_ids, "chain_ids", u);
  Tensor tt;
  bool needs_t = false;
  for (size_t l = 0; l < layout.size() / hebm::LAY_NCOLS; ++l) needs_t |= layout[l * hebm::LAY_NCOLS + 4] > 1;
  if (t.has_value()) {
    tt = per_chain_int(*t, "t", u);
    TORCH_CHECK_VALUE(ints_in(tt, 0, n_levels), "hebm: t must lie in [0, ", n_levels, ")");
  } else {
    TORCH_CHECK(!needs_t, "hebm: the energies are level-conditioned; pass t");
  }
  Tensor un, a, s;
  if (u_next.has_value()) {
    TORCH_CHECK(u_next->sizes() == u.sizes() && u_next->device().is_cpu(), "hebm: u_next must be a CPU tensor [B, D]");
    un = as_contiguous(*u_next, u.scalar_type());
    a = per_chain(alpha, "alpha", u);
    s = per_chain(sigma, "sigma", u);
  }
  Tensor nz;
  if (noise.has_value()) {
    TORCH_CHECK(noise->dim() == 3 && noise->size(0) == n_steps && noise->size(1) == B && noise->size(2) == D &&
                    noise->device().is_cpu(),
                "hebm: noise must be a CPU tensor [K, B, D] = [", n_steps, ", ", B, ", ", D, "], got ", noise->sizes());
    nz = as_contiguous(*noise, u.scalar_type());
  }
  Tensor logd = trace ? at::empty({n_steps, B}, u.options()) : at::empty({0}, u.options());
  Tensor acc = metropolis ? at::zeros({2, B}, u.options()) : at::empty({0}, u.options());
  Tensor unif;
  if (uniforms.has_value()) {
    TORCH_CHECK(metropolis && noise.has_value(), "hebm: uniforms go with metropolis=True and explicit noise");
    TORCH_CHECK(uniforms->dim() == 2 && uniforms->size(0) == n_steps && uniforms->size(1) == B &&
                    uniforms->device().is_cpu(),
                "hebm: uniforms must be a CPU tensor [K, B] = [", n_steps, ", ", B, "], got ", uniforms->sizes());
    unif = as_contiguous(*uniforms, u.scalar_type());
  }
  TORCH_CHECK(!metropolis || noise.has_value() == unif.defined(), "hebm: metropolis=True with explicit noise needs uniforms");

  if (B == 0 || n_steps == 0) return {u, logd, acc};

  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "hebm_langevin_cpu", [&] {
    hebm::Problem<scalar_t> P;
    fill_structure(P, params, dims, offs, layout, mlps, act_params, has_energy, n_levels, sigma_min, sigma_clamp);
    P.B = B;
    P.D = D;
    P.u = u.data_ptr<scalar_t>();
    P.step_size = step.data_ptr<scalar_t>();
    P.noise_scale = c.data_ptr<scalar_t>();
    P.energy_scale = lam.data_ptr<scalar_t>();
    P.t = tt.defined() ? tt.data_ptr<int64_t>() : nullptr;
    P.u_next = un.defined() ? un.data_ptr<scalar_t>() : nullptr;
    P.alpha = a.defined() ? a.data_ptr<scalar_t>() : nullptr;
    P.sigma = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
    P.noise = nz.defined() ? nz.data_ptr<scalar_t>() : nullptr;
    P.key0 = static_cast<uint32_t>(key0);
    P.key1 = static_cast<uint32_t>(key1);
    P.chain_ids = ids.data_ptr<int64_t>();
    P.step_offset = step_offset;
    P.n_steps = n_steps;
    P.log_density = trace ? logd.data_ptr<scalar_t>() : nullptr;
    P.metropolis = metropolis;
    P.uniforms = unif.defined() ? unif.data_ptr<scalar_t>() : nullptr;
    P.accept = metropolis ? acc.data_ptr<scalar_t>() : nullptr;
    const int64_t threads = call_threads(4.0 * B * params.numel() * n_steps);
    hebm::cpu::Sampler<scalar_t> sampler(P, choose_chunk_rows(B, threads), cached_weights<scalar_t>(pack_token, P));
    parallel_chunks(threads, sampler.n_chunks(), sampler.workspace_bytes(),
                    [&](int64_t c0, int64_t c1, void* ws) { sampler.run(c0, c1, ws); });
  });
  return {u, logd, acc};
}

Tensor reverse_diffusion_cpu(const Tensor& u_T, const Tensor& params_in, at::IntArrayRef dims, at::IntArrayRef layout,
                             at::IntArrayRef mlps, at::ArrayRef<double> act_params, bool has_energy, int64_t n_levels,
                             double sigma_min, double sigma_clamp, int64_t pack_token, at::IntArrayRef level_t,
                             at::ArrayRef<double> level_step,
                             at::ArrayRef<double> level_energy_scale, at::ArrayRef<double> level_alpha,
                             at::ArrayRef<double> level_sigma, const Tensor& noise_scale, const OptTensor& noise,
                             int64_t key0, int64_t key1, const Tensor& chain_ids, int64_t n_steps, bool return_levels,
                             c10::string_view precision) {
  TORCH_CHECK(u_T.device().is_cpu() && params_in.device().is_cpu(),
              "hebm::reverse_diffusion (CPU): tensors must be on the CPU");
  check_precision(precision);
  std::vector<int64_t> offs;
  check_structure(u_T, params_in, dims, layout, mlps, act_params, has_energy, n_levels, offs);
  const int64_t nlv = static_cast<int64_t>(level_t.size());
  TORCH_CHECK(static_cast<int64_t>(level_step.size()) == nlv && static_cast<int64_t>(level_energy_scale.size()) == nlv &&
                  static_cast<int64_t>(level_alpha.size()) == nlv && static_cast<int64_t>(level_sigma.size()) == nlv,
              "hebm: the level_* lists must have one entry per level");
  std::vector<hebm::cpu::LevelParams> lv(nlv);
  for (int64_t j = 0; j < nlv; ++j) {
    TORCH_CHECK(level_t[j] >= 0 && level_t[j] < n_levels, "hebm: level_t must lie in [0, ", n_levels - 1, "]");
    TORCH_CHECK(level_sigma[j] > 0 || level_alpha[j] == 0, "hebm: level_sigma must be > 0 where alpha != 0");
    lv[j] = hebm::cpu::LevelParams{level_t[j], level_step[j], level_energy_scale[j], level_alpha[j], level_sigma[j]};
  }
  TORCH_CHECK(n_steps >= 0, "hebm: n_steps must be >= 0");
  const int64_t B = u_T.size(0), D = u_T.size(1);
  Tensor u = u_T.contiguous().clone();
  Tensor params = params_in.contiguous();
  Tensor c = per_chain(noise_scale, "noise_scale", u);
  Tensor ids = per_chain_int(chain_ids, "chain_ids", u);
  Tensor nz;
  if (noise.has_value()) {
    TORCH_CHECK(noise->dim() == 3 && noise->size(0) == nlv * n_steps && noise->size(1) == B && noise->size(2) == D &&
                    noise->device().is_cpu(),
                "hebm: noise must be a CPU tensor [n_levels*K, B, D] = [", nlv * n_steps, ", ", B, ", ", D, "], got ",
                noise->sizes());
    nz = noise->to(u.scalar_type()).contiguous();
  }
  Tensor levels = return_levels ? at::empty({nlv + 1, B, D}, u.options()) : Tensor();
  if (B > 0) {
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "hebm_reverse_diffusion_cpu", [&] {
      hebm::Problem<scalar_t> P;
      fill_structure(P, params, dims, offs, layout, mlps, act_params, has_energy, n_levels, sigma_min, sigma_clamp);
      std::vector<scalar_t> ones(B, scalar_t(1)), zeros(B, scalar_t(0));
      P.B = B;
      P.D = D;
      P.u = u.data_ptr<scalar_t>();
      P.step_size = zeros.data();
      P.energy_scale = zeros.data();
      P.noise_scale = c.data_ptr<scalar_t>();
      P.noise = nz.defined() ? nz.data_ptr<scalar_t>() : nullptr;
      P.key0 = static_cast<uint32_t>(key0);
      P.key1 = static_cast<uint32_t>(key1);
      P.chain_ids = ids.data_ptr<int64_t>();
      P.n_steps = n_steps;
      const int64_t threads = call_threads(4.0 * B * params.numel() * n_steps * nlv);
      hebm::cpu::Sampler<scalar_t> sampler(P, choose_chunk_rows(B, threads), cached_weights<scalar_t>(pack_token, P));
      scalar_t* lvl = return_levels ? levels.data_ptr<scalar_t>() : nullptr;
      parallel_chunks(threads, sampler.n_chunks(), sampler.workspace_bytes(), [&](int64_t c0, int64_t c1, void* ws) {
        sampler.run_reverse(c0, c1, ws, lv.data(), nlv, lvl);
      });
    });
  }
  if (return_levels) {
    if (B == 0) levels.zero_();
    return levels;
  }
  return u;
}

// Test hook: the normals of hebm/philox.py from the shared header, [B, D] float32.
Tensor philox_normal_cpp(int64_t seed, const Tensor& chain_ids, int64_t step, int64_t D, int64_t stream) {
  const uint64_t s = static_cast<uint64_t>(seed);
  Tensor ids = chain_ids.to(at::kLong).contiguous();
  const int64_t B = ids.size(0);
  Tensor out = at::empty({B, D}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; 4 * j < D; ++j) {
      float nv[4];
      hebm::philox_normal4(static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32), j, id[b], step,
                           static_cast<uint32_t>(stream), nv);
      for (int q = 0; q < 4 && 4 * j + q < D; ++q) o[b * D + 4 * j + q] = nv[q];
    }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(hebm, CPU, m) {
  m.impl("langevin", &langevin_cpu);
  m.impl("reverse_diffusion", &reverse_diffusion_cpu);
}

// The pack cache's value check (hebm/backends/pack.py) without a Python-side flatten: 1 when the
// tensors' bytes, laid end to end, equal the snapshot's; 0 when they differ; -1 when the tensors
// cannot be compared this way (not CPU, not contiguous, another dtype): the caller flattens.
// Bytes, not values: equal bits give an equal pack (and a NaN weight compares equal to itself).
int64_t same_bytes(const std::vector<Tensor>& tensors, const Tensor& snapshot) {
  if (!snapshot.device().is_cpu() || !snapshot.is_contiguous()) return -1;
  const char* snap = static_cast<const char*>(snapshot.data_ptr());
  const size_t total = static_cast<size_t>(snapshot.numel()) * snapshot.element_size();
  size_t off = 0;
  for (const Tensor& t : tensors) {
    if (!t.device().is_cpu() || t.scalar_type() != snapshot.scalar_type() || !t.is_contiguous()) return -1;
    const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    if (off + n > total) return 0;
    if (n > 0 && std::memcmp(t.data_ptr(), snap + off, n) != 0) return 0;
    off += n;
  }
  return off == total ? 1 : 0;
}

// The value summaries behind hebm.args.ValueChecks (the rules live there, in Python): for each
// tensor its (min, max) as doubles — NaN for both when it holds a NaN, ±inf where it holds ±inf,
// (0, 0) when empty.  One call for all of a call's tensors, where torch's reductions cost a
// dispatch and a host read each (benchmarks/NOTES.md, "one door").
std::vector<double> value_ranges(const std::vector<Tensor>& xs) {
  std::vector<double> out(2 * xs.size(), 0.0);
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor x = xs[i].contiguous();
    TORCH_CHECK(x.device().is_cpu(), "hebm: value_ranges takes CPU tensors");
    const int64_t n = x.numel();
    if (n == 0) continue;
    double lo = 0, hi = 0;
    if (x.scalar_type() == at::kLong) {
      const int64_t* p = x.data_ptr<int64_t>();
      int64_t l = p[0], h = p[0];
      for (int64_t k = 1; k < n; ++k) { l = std::min(l, p[k]); h = std::max(h, p[k]); }
      lo = double(l), hi = double(h);
    } else {
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hebm_value_ranges", [&] {
        const scalar_t* p = x.data_ptr<scalar_t>();
        scalar_t l = p[0], h = p[0];
        bool nan = false;
        for (int64_t k = 0; k < n; ++k) {
          nan |= p[k] != p[k];
          l = p[k] < l ? p[k] : l;
          h = p[k] > h ? p[k] : h;
        }
        lo = nan ? NAN : double(l), hi = nan ? NAN : double(h);
      });
    }
    out[2 * i] = lo, out[2 * i + 1] = hi;
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hebm C++ CPU kernel: registers torch.ops.hebm.langevin / reverse_diffusion";
  m.attr("source_hash") = std::string(HEBM_SOURCE_MARKER).substr(17);
  m.def("isa", []() { return std::string(hebm::cpu::isa_name()); }, "ISA the vector code was compiled for");
  m.def("vector_bytes", []() { return hebm::cpu::vector_bytes(); });
  m.def("set_num_threads", [](int64_t n) { g_kernel_threads.store(std::max<int64_t>(0, n)); },
        "threads of the CPU kernel; 0 follows torch.get_num_threads()", pybind11::arg("n"));
  m.def("get_num_threads", []() { return kernel_threads(); }, "threads the CPU kernel uses now");
  m.def("same_bytes", &same_bytes, "the pack cache's value check: 1 equal, 0 differ, -1 not comparable here",
        pybind11::arg("tensors"), pybind11::arg("snapshot"));
  m.def("value_ranges", &value_ranges, "(min, max) of each CPU tensor, NaN where it holds a NaN (hebm.args)",
        pybind11::arg("tensors"));
  m.def("philox_normal", &philox_normal_cpp, "normals of the shared Philox stream (tests)", pybind11::arg("seed"),
        pybind11::arg("chain_ids"), pybind11::arg("step"), pybind11::arg("D"), pybind11::arg("stream") = 0);
}
