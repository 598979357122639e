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

// The value refusals of hebm/args.py, for calls whose Python side left them to the kernel
// (hebm.args.ValueChecks, deferred; the op's check_values): finite values, step_size and
// noise_scale >= 0, sigma > 0, chain_ids in [0, 2**32) — and, on every call, t in
// [0, n_levels).  One pass over arrays the kernel reads anyway, where the Python check costs
// separate reductions and a host read.  The error only says which argument;
// hebm/backends/cpu.py re-raises it with hebm.args' message.
enum class Sign { any, nonneg, pos };

template <typename T>
bool values_ok(const Tensor& x, Sign sign) {
  const T* p = x.data_ptr<T>();
  const int64_t n = x.numel();
  T nan_if_bad = T(0);  // v·0 is 0 for finite v, NaN for ±Inf and NaN: a branch-free, vectorised pass
  bool sign_ok = true;
  for (int64_t i = 0; i < n; ++i) {
    nan_if_bad += p[i] * T(0);
    if (sign == Sign::nonneg) sign_ok &= p[i] >= T(0);
    if (sign == Sign::pos) sign_ok &= p[i] > T(0);
  }
  return nan_if_bad == T(0) && sign_ok;
}

bool ints_in(const Tensor& x, int64_t lo, int64_t hi) {  // every value in [lo, hi)
  const int64_t* p = x.data_ptr<int64_t>();
  bool ok = true;
  for (int64_t i = 0, n = x.numel(); i < n; ++i) ok &= p[i] >= lo && p[i] < hi;
  return ok;
}

#define HEBM_REFUSE(ok, name) TORCH_CHECK_VALUE(ok, "hebm: bad values in ", name, " (hebm.args states the rule)")

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

std::tuple<Tensor, Tensor> langevin_cpu(const Tensor& u_in, const Tensor& params_in, at::IntArrayRef dims,
                                        at::IntArrayRef layout, at::IntArrayRef mlps, at::ArrayRef<double> act_params,
                                        bool has_energy, int64_t n_levels, double sigma_min, double sigma_clamp,
                                        int64_t pack_token, const Tensor& step_size,
                                        const Tensor& noise_scale, const Tensor& energy_scale, const OptTensor& t,
                                        const OptTensor& u_next, const OptTensor& alpha, const OptTensor& sigma,
                                        const OptTensor& noise, int64_t key0, int64_t key1, const Tensor& chain_ids,
                                        int64_t n_steps, int64_t step_offset, bool trace, bool check_values,
                                        c10::string_view precision) {
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
    HEBM_REFUSE(ints_in(tt, 0, n_levels), "t");  // always: t indexes the bias tables
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

  if (check_values) AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "hebm_langevin_cpu_values", [&] {
    HEBM_REFUSE(ints_in(ids, 0, int64_t(1) << 32), "chain_ids");
    HEBM_REFUSE(values_ok<scalar_t>(u, Sign::any), "u");
    HEBM_REFUSE(values_ok<scalar_t>(step, Sign::nonneg), "step_size");
    HEBM_REFUSE(values_ok<scalar_t>(c, Sign::nonneg), "noise_scale");
    HEBM_REFUSE(values_ok<scalar_t>(lam, Sign::any), "energy_scale");
    if (un.defined()) {
      HEBM_REFUSE(values_ok<scalar_t>(un, Sign::any), "u_next");
      HEBM_REFUSE(values_ok<scalar_t>(a, Sign::any), "alpha");
      HEBM_REFUSE(values_ok<scalar_t>(s, Sign::pos), "sigma");
    }
    if (nz.defined()) HEBM_REFUSE(values_ok<scalar_t>(nz, Sign::any), "noise");
  });
  if (B == 0 || n_steps == 0) return {u, logd};

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
    const int64_t threads = call_threads(4.0 * B * params.numel() * n_steps);
    hebm::cpu::Sampler<scalar_t> sampler(P, choose_chunk_rows(B, threads), cached_weights<scalar_t>(pack_token, P));
    parallel_chunks(threads, sampler.n_chunks(), sampler.workspace_bytes(),
                    [&](int64_t c0, int64_t c1, void* ws) { sampler.run(c0, c1, ws); });
  });
  return {u, logd};
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

// ---------------------------------------------------------------------------------- the fast path
// hebm.langevin_fused's fast path for eager CPU calls (hebm/backends/cpu.py fast_langevin): the
// argument forms that hebm.args' normalisation passes through unchanged — u an exact
// torch.Tensor [B, D] of the plan's dtype, contiguous, on the CPU, without grad; every per-chain
// argument a Python number or such a [B] tensor; t an int or an int64 [B] tensor; a Python int
// seed or a [K, B, D] noise tensor — go from the Python objects straight to the kernel, with the
// value checks applied by the kernel (check_values) and the prior's bytes compared with the
// snapshot its pack was made from.  Anything else — another form, a refused value, a changed
// prior — is *declined* (None): the caller then takes the general path, which normalises, or
// raises hebm.args' error.  So this function decides nothing the general path would decide
// differently; it only skips the Python work for the forms where that work is the identity
// (a Python number becomes torch.full((B,), v) either way).  tests/test_fast_path.py compares
// both paths bit for bit over a matrix of forms and runs the bad-input matrix through this one.
namespace py = pybind11;

struct FastPlan {
  // the pack cache entry's tensors and the snapshot of their bytes (hebm/backends/pack.py)
  std::vector<Tensor> tensors;
  Tensor snapshot;
  // the pack (hebm::langevin's network arguments)
  Tensor params;
  std::vector<int64_t> dims, layout, mlps;
  std::vector<double> act_params;
  bool has_energy;
  int64_t n_levels, token, t_levels;  // t_levels: the prior's n_levels (t required), 0: t must be None
  double sigma_min, sigma_clamp;
  at::ScalarType dtype;
  int64_t D = 0;

  FastPlan(std::vector<Tensor> tensors_, Tensor snapshot_, Tensor params_, std::vector<int64_t> dims_,
           std::vector<int64_t> layout_, std::vector<int64_t> mlps_, std::vector<double> act_params_, bool has_energy_,
           int64_t n_levels_, double sigma_min_, double sigma_clamp_, int64_t token_, int64_t t_levels_)
      : tensors(std::move(tensors_)), snapshot(std::move(snapshot_)), params(std::move(params_)), dims(std::move(dims_)),
        layout(std::move(layout_)), mlps(std::move(mlps_)), act_params(std::move(act_params_)), has_energy(has_energy_),
        n_levels(n_levels_), token(token_), t_levels(t_levels_), sigma_min(sigma_min_), sigma_clamp(sigma_clamp_),
        dtype(params.scalar_type()) {
    TORCH_CHECK(snapshot.scalar_type() == dtype && params.device().is_cpu() && params.is_contiguous(),
                "hebm: a fast-path plan needs a CPU pack and a snapshot of its dtype");
    for (int64_t d : dims) D += d;
  }

  // a tensor argument in the form the general path passes through as is
  static bool plain(py::handle h, at::ScalarType dt, Tensor& out) {
    if (!THPVariable_CheckExact(h.ptr())) return false;
    const Tensor& x = THPVariable_Unpack(h.ptr());
    static const c10::DispatchKeySet odd({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                          c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                          c10::DispatchKey::Conjugate, c10::DispatchKey::Negative});
    if (!x.defined() || !x.device().is_cpu() || x.layout() != at::kStrided || x.scalar_type() != dt ||
        !x.is_contiguous() || x.requires_grad() || !x.has_storage() || x.key_set().has_any(odd))
      return false;
    out = x;
    return true;
  }
  // a per-chain argument: a Python float/int (not bool) → torch.full((B,), v); a plain [B] tensor
  bool per_chain_arg(py::handle h, int64_t B, Tensor& out) const {
    if (PyFloat_CheckExact(h.ptr()) || PyLong_CheckExact(h.ptr())) {
      const double v = PyFloat_CheckExact(h.ptr()) ? PyFloat_AS_DOUBLE(h.ptr()) : PyLong_AsDouble(h.ptr());
      if (v == -1.0 && PyErr_Occurred()) {  // an int too large for a double: the general path says so
        PyErr_Clear();
        return false;
      }
      if (!std::isfinite(v)) return false;  // refused, with its message, by the general path
      out = at::full({B}, v, at::TensorOptions().dtype(dtype));
      return true;
    }
    return plain(h, dtype, out) && out.dim() == 1 && out.size(0) == B;
  }
  static bool py_int(py::handle h, int64_t lo, int64_t hi, int64_t& v) {  // an exact int in [lo, hi]
    if (!PyLong_CheckExact(h.ptr())) return false;
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(h.ptr(), &overflow);
    if (overflow != 0 || (x == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return false;
    }
    v = static_cast<int64_t>(x);
    return v >= lo && v <= hi;
  }

  // (u_K, log π trace, all finite) or None (declined: take the general path).  Any error on the
  // way (an overflowing constant, an allocation) declines too: the general path meets it again
  // and reports it in its own words.
  py::object run(py::handle u_h, py::handle n_steps_h, py::handle step_h, py::handle noise_scale_h, py::handle lam_h,
                 py::handle t_h, py::handle u_next_h, py::handle alpha_h, py::handle sigma_h, py::handle seed_h,
                 py::handle ids_h, py::handle noise_h, py::handle offset_h, int64_t max_steps, bool trace) const {
    try {
      return run_checked(u_h, n_steps_h, step_h, noise_scale_h, lam_h, t_h, u_next_h, alpha_h, sigma_h, seed_h, ids_h,
                         noise_h, offset_h, max_steps, trace);
    } catch (const c10::Error&) {
      return py::none();
    }
  }

  py::object run_checked(py::handle u_h, py::handle n_steps_h, py::handle step_h, py::handle noise_scale_h, py::handle lam_h,
                 py::handle t_h, py::handle u_next_h, py::handle alpha_h, py::handle sigma_h, py::handle seed_h,
                 py::handle ids_h, py::handle noise_h, py::handle offset_h, int64_t max_steps, bool trace) const {
    constexpr int64_t kMaxStep = (int64_t(1) << 32) - 1;  // hebm.philox.MAX_STEP
    Tensor u;
    if (!plain(u_h, dtype, u) || u.dim() != 2 || u.size(0) < 1 || u.size(1) != D) return py::none();
    const int64_t B = u.size(0);
    int64_t K = 0, offset = 0;
    if (!py_int(n_steps_h, 1, max_steps, K) || !py_int(offset_h, 0, kMaxStep, offset)) return py::none();
    Tensor step, c, lam;
    if (!per_chain_arg(step_h, B, step) || !per_chain_arg(noise_scale_h, B, c) || !per_chain_arg(lam_h, B, lam))
      return py::none();
    OptTensor t;
    if (t_levels == 0) {
      if (!t_h.is_none()) return py::none();
    } else {
      int64_t tv = 0;
      Tensor tt;
      if (py_int(t_h, 0, t_levels - 1, tv)) {
        t = at::full({B}, tv, at::TensorOptions().dtype(at::kLong));
      } else if (plain(t_h, at::kLong, tt) && tt.dim() == 1 && tt.size(0) == B) {
        t = tt;  // its range: checked by the kernel (always)
      } else {
        return py::none();
      }
    }
    OptTensor un, a, s;
    if (!u_next_h.is_none()) {
      Tensor x, y, z;
      if (!plain(u_next_h, dtype, x) || x.sizes() != u.sizes() || !per_chain_arg(alpha_h, B, y) ||
          !per_chain_arg(sigma_h, B, z))
        return py::none();
      un = x;
      a = y;
      s = z;
    } else if (!alpha_h.is_none() || !sigma_h.is_none()) {
      return py::none();
    }
    OptTensor nz;
    Tensor ids;
    int64_t key0 = 0, key1 = 0;
    if (!noise_h.is_none()) {
      Tensor x;
      if (!seed_h.is_none() || !ids_h.is_none() || !plain(noise_h, dtype, x) || x.dim() != 3 || x.size(0) != K ||
          x.size(1) != B || x.size(2) != D)
        return py::none();
      nz = x;
      ids = at::arange(B, at::TensorOptions().dtype(at::kLong));  // unused by the kernel with explicit noise
    } else {
      if (!PyLong_CheckExact(seed_h.ptr())) return py::none();
      const unsigned long long seed = PyLong_AsUnsignedLongLong(seed_h.ptr());
      if (seed == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {  // < 0 or >= 2**64
        PyErr_Clear();
        return py::none();
      }
      if (offset + K > kMaxStep + 1) return py::none();
      key0 = static_cast<int64_t>(seed & 0xffffffffull);  // hebm.philox.seed_to_key
      key1 = static_cast<int64_t>(seed >> 32);
      if (ids_h.is_none()) {
        ids = at::arange(B, at::TensorOptions().dtype(at::kLong));  // hebm.philox.default_chain_ids
      } else if (!plain(ids_h, at::kLong, ids) || ids.dim() != 1 || ids.size(0) != B) {
        return py::none();
      }
    }
    std::tuple<Tensor, Tensor> res;
    bool ok = true, finite = true;
    {
      py::gil_scoped_release nogil;  // as the dispatcher: other Python threads run
      if (same_bytes(tensors, snapshot) != 1) {
        ok = false;  // the prior changed (or cannot be compared here): the general path repacks
      } else {
        try {  // (with the GIL released, the error is caught here, not in run())
          res = langevin_cpu(u, params, dims, layout, mlps, act_params, has_energy, n_levels, sigma_min, sigma_clamp,
                             token, step, c, lam, t, un, a, s, nz, key0, key1, ids, K, offset, trace,
                             /*check_values=*/true, dtype == at::kDouble ? "fp64" : "fp32");
        } catch (const c10::Error&) {
          ok = false;  // a refused value: the general path raises hebm.args' error for it
        }
        if (ok) {
          const Tensor& out = std::get<0>(res);
          finite = out.scalar_type() == at::kFloat ? values_ok<float>(out, Sign::any) : values_ok<double>(out, Sign::any);
        }
      }
    }
    if (!ok) return py::none();
    return py::make_tuple(std::get<0>(res), trace ? py::cast(std::get<1>(res)) : py::none(), finite);
  }
};

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
  // hebm::langevin's CPU kernel called without the dispatcher (hebm/backends/ops.py uses it for
  // eager CPU calls): its boxing of 27 arguments cost ~13 µs a call, a third of a toy step.
  // Same arguments as the schema in hebm/backends/ops.py (layout, mlps, act_params as the pack's flat
  // tensors instead of lists), same function.
  m.def("langevin_direct", [](const Tensor& u_in, const Tensor& params_in, std::vector<int64_t> dims,
                              const Tensor& layout, const Tensor& mlps, const Tensor& act_params,
                              bool has_energy, int64_t n_levels, double sigma_min, double sigma_clamp, int64_t pack_token,
                              const Tensor& step_size, const Tensor& noise_scale, const Tensor& energy_scale,
                              const OptTensor& t, const OptTensor& u_next, const OptTensor& alpha,
                              const OptTensor& sigma, const OptTensor& noise, int64_t key0, int64_t key1,
                              const Tensor& chain_ids, int64_t n_steps, int64_t step_offset, bool trace, bool check_values,
                              const std::string& precision) {
    // layout / mlps / act_params as the pack's own flat tensors, not lists: no per-element conversion
    TORCH_CHECK(layout.scalar_type() == at::kLong && mlps.scalar_type() == at::kLong &&
                    act_params.scalar_type() == at::kDouble && layout.is_contiguous() && mlps.is_contiguous() &&
                    act_params.is_contiguous() && layout.device().is_cpu() && mlps.device().is_cpu() &&
                    act_params.device().is_cpu(),
                "hebm: langevin_direct takes layout/mlps as contiguous int64 CPU tensors, act_params float64");
    return langevin_cpu(u_in, params_in, dims, at::IntArrayRef(layout.data_ptr<int64_t>(), layout.numel()),
                        at::IntArrayRef(mlps.data_ptr<int64_t>(), mlps.numel()),
                        at::ArrayRef<double>(act_params.data_ptr<double>(), act_params.numel()), has_energy, n_levels,
                        sigma_min, sigma_clamp, pack_token, step_size, noise_scale, energy_scale, t, u_next, alpha, sigma,
                        noise, key0, key1, chain_ids, n_steps, step_offset, trace, check_values, precision);
  }, pybind11::call_guard<pybind11::gil_scoped_release>());  // as the dispatcher: other Python threads run
  py::class_<FastPlan, std::shared_ptr<FastPlan>>(m, "FastPlan",
                                                  "hebm.langevin_fused's fast path for one pack (hebm/backends/cpu.py)")
      .def(py::init<std::vector<Tensor>, Tensor, Tensor, std::vector<int64_t>, std::vector<int64_t>,
                    std::vector<int64_t>, std::vector<double>, bool, int64_t, double, double, int64_t, int64_t>(),
           py::arg("tensors"), py::arg("snapshot"), py::arg("params"), py::arg("dims"), py::arg("layout"),
           py::arg("mlps"), py::arg("act_params"), py::arg("has_energy"), py::arg("n_levels"), py::arg("sigma_min"),
           py::arg("sigma_clamp"), py::arg("token"), py::arg("t_levels"))
      .def_readonly("token", &FastPlan::token)
      .def("run", &FastPlan::run, "(u_K, log π trace or None, all finite), or None: take the general path");
  m.def("philox_normal", &philox_normal_cpp, "normals of the shared Philox stream (tests)", pybind11::arg("seed"),
        pybind11::arg("chain_ids"), pybind11::arg("step"), pybind11::arg("D"), pybind11::arg("stream") = 0);
}
