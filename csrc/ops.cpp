// ops.cpp — the CPU implementation of hebm's two ops and the module bindings.
//
//   hebm::langevin          K steps of ũ-space Langevin (hebm/sampler/reference.py langevin_ref)
//   hebm::reverse_diffusion all levels of the ũ-space reverse diffusion, K steps each
//
// The schema is defined once, in Python (hebm/sampler/backends/ops.py, from the call record of
// hebm/sampler/record.py); this file registers boxed CPU kernels (TORCH_LIBRARY_IMPL) that read each argument
// from its slot (csrc/call_record.h) through csrc/network.h, as the CUDA extension (csrc/cuda/)
// does for the CUDA ones, so neither extension restates the argument list nor needs the other.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <list>
#include <numeric>
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
#include "network.h"

// setup.py passes -DHEBM_SOURCE_HASH_TOKEN=h<hex> (a bare token: survives ninja and the shell);
// hebm/sampler/backends/_build.py compares it with the sources to skip a stale prebuilt module.
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
// one call per K steps still gains from every core (hebm.sampler.backends.cpu.set_num_threads).
std::atomic<int64_t> g_kernel_threads{0};

int64_t kernel_threads() {
  const int64_t n = g_kernel_threads.load(std::memory_order_relaxed);
  return std::max<int64_t>(1, n > 0 ? n : at::get_num_threads());
}

// Threads for a call of `flops` work (the 4·B·params-per-step model of docs/design.md §5).  A
// worker asleep since the last call takes ~30 µs to wake on this VM, so the op wakes it at its
// entry (call_threads, before it reads the network and allocates its outputs): the wake-up runs
// beside that set-up instead of after it.  Only a call below about a third of a toy step stays on
// the calling thread, where even an early wake-up would cost more than the second core saves
// (benchmarks/NOTES.md, "The fixed cost: waking the pool early").
constexpr double kOneThreadFlops = 1e6;
void wake_pool(int64_t n_workers);

int64_t call_threads(double flops) {
  if (flops < kOneThreadFlops) return 1;
  const int64_t n = kernel_threads();
  if (n > 1) wake_pool(n - 1);
  return n;
}

// Row chunk per task: all chains of a thread when B is small (one chunk per thread), at most
// 64 rows (weight reuse vs. enough tasks for the threads).
int64_t choose_chunk_rows(int64_t B, int64_t threads) {
  int64_t per = (B + threads - 1) / threads;
  per = (per + 3) / 4 * 4;
  return std::max<int64_t>(4, std::min<int64_t>(per, 64));
}

// With a ladder of R temperatures a chunk holds whole ladder groups (a swap round stays inside
// one chunk): its rows rounded up to a multiple of lcm(4, R) (4: the kernel's row tile).
int64_t ladder_chunk_rows(int64_t rows, int64_t R) {
  const int64_t m = std::lcm<int64_t>(4, std::max<int64_t>(R, 1));
  return (rows + m - 1) / m * m;
}

void check_precision(c10::string_view precision) {
  const std::string p(precision);
  TORCH_CHECK(p == "fp32" || p == "tf32" || p == "bf16" || p == "fp64" || p == "auto",
              "hebm: precision must be fp32, tf32, bf16 or fp64, got ", p);
}

// The network part of a Problem (the LayerRefs live in `refs`, the tables in `net`).
template <typename T>
void fill_network(hebm::Problem<T>& P, const hebm::NetworkArgs& net, const std::vector<hebm::LayerRef<T>>& refs) {
  P.L = static_cast<int64_t>(net.dims.size());
  P.dims = net.dims.data();
  P.offsets = net.offsets.data();
  P.layers = refs.data();
  P.n_layers = net.n_layers;
  P.mlps = net.mlps.data();
  P.act_params = net.act_params.data();
  P.n_mlps = net.n_mlps;
  P.has_energy = net.has_energy;
  P.n_levels = net.n_levels;
  P.sigma_min = static_cast<T>(net.sigma_min);
  P.sigma_clamp = static_cast<T>(net.sigma_clamp);
}

// The level rows of the bias tables are read at row t: a network with them needs t.
bool needs_levels(const hebm::NetworkArgs& net) {
  for (int64_t l = 0; l < net.n_layers; ++l)
    if (net.layout[l * hebm::LAY_NCOLS + hebm::LAY_BROWS] > 1) return true;
  return false;
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

  // Starts n_workers workers spinning (a call about to come), unless one spins already.
  void wake(int64_t n_workers) {
    if (spinning_.load(std::memory_order_relaxed) > 0) return;
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return;  // another caller's call: it has the workers
    ensure(n_workers);
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++wakes_;
    }
    cv_.notify_all();
  }

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
    uint64_t seen = 0, woken = 0;
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
        cv_.wait(lk, [&] { return epoch_.load(std::memory_order_relaxed) != seen || wakes_ != woken; });
        woken = wakes_;
        if (epoch_.load(std::memory_order_relaxed) == seen) continue;  // woken early: spin for the call
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
  uint64_t wakes_ = 0;  // (under mu_) early wake-ups: a worker asleep goes back to spinning
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction order
  return *p;
}

void wake_pool(int64_t n_workers) { pool().wake(n_workers); }

template <typename F>
void parallel_chunks(int64_t threads, int64_t n_chunks, size_t ws_bytes, const F& f) {
  const int64_t nt = std::min<int64_t>(threads, n_chunks);
  auto chunk = [&](int64_t c) { f(c, c + 1, static_cast<void*>(thread_workspace(ws_bytes))); };
  if (nt > 1 && !at::in_parallel_region() && pool().run(nt, n_chunks, chunk)) return;
  f(0, n_chunks, static_cast<void*>(thread_workspace(ws_bytes)));  // one thread, or the pool is busy
}

// ---------------------------------------------------------------------------------- packed weights
// The weights of every Linear layer (the FLOP model's params), from the layout table.
int64_t n_weights(const hebm::NetworkArgs& net) {
  int64_t n = 0;
  for (int64_t l = 0; l < net.n_layers; ++l)
    n += net.layout[l * hebm::LAY_NCOLS + hebm::LAY_IN] * net.layout[l * hebm::LAY_NCOLS + hebm::LAY_OUT];
  return n;
}

// The weights in the kernel's layout, kept for the last few copies of a prior's values: a
// hebm.Sampler passes the token of its copy (it never changes), hebm.langevin_fused 0 — it reads
// the prior at every call, and the weights are laid out afresh.  A token is never reused.
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

// each call-record field of the op into its member of the Problem P, from the reader c (csrc/network.h)
#define HEBM_READ(name, slot, KIND) HEBM_FILL_##KIND(P, c, name, slot)

void langevin_cpu(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static std::once_flag schema_checked;
  std::call_once(schema_checked, [&] { hebm::check_schema(op, hebm::kLangevinArgNames, hebm::LANGEVIN_N_ARGS); });
  const auto args = torch::jit::last(*stack, hebm::LANGEVIN_N_ARGS);
  hebm::CallReader c(args, hebm::LANGEVIN_U, "u");
  TORCH_CHECK(c.u.device().is_cpu(), "hebm::langevin (CPU): tensors must be on the CPU");
  check_precision(args[hebm::LANGEVIN_PRECISION].toStringView());
  const hebm::NetworkArgs net = hebm::read_network(args, c.u);
  TORCH_CHECK(c.D == net.D, "hebm: u has ", c.D, " columns but sum(dims) = ", net.D);
  // the threads first: a worker woken now wakes while the outputs are made
  const int64_t n_steps_asked = args[hebm::LANGEVIN_N_STEPS].toInt();
  const int64_t threads = call_threads(4.0 * c.B * static_cast<double>(n_weights(net)) * n_steps_asked);
  c.n_levels = net.n_levels;
  const bool trace = args[hebm::LANGEVIN_TRACE].toBool();
  const int64_t B = c.B, D = c.D;
  Tensor u = c.u.clone(at::MemoryFormat::Contiguous);
  Tensor logd, acc, draws, draws_logd, swaps;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "hebm_langevin_cpu", [&] {
    using T = scalar_t;
    const std::vector<hebm::LayerRef<T>> refs = net.layer_refs<T>();
    hebm::Problem<T> P;
    fill_network(P, net, refs);
    HEBM_LANGEVIN_FIELDS(HEBM_READ)
    // guards of the kernel's memory (the rules are hebm/sampler/checks.py's)
    TORCH_CHECK(P.u_next == nullptr || (P.alpha != nullptr && P.sigma != nullptr), "hebm: u_next needs alpha and sigma");
    TORCH_CHECK(P.t != nullptr || !needs_levels(net), "hebm: the energies are level-conditioned; pass t");
    P.B = B;
    P.D = D;
    P.u = u.data_ptr<T>();
    logd = trace ? at::empty({P.n_steps, B}, u.options()) : at::empty({0}, u.options());
    acc = P.metropolis ? at::zeros({2, B}, u.options()) : at::empty({0}, u.options());
    P.log_density = trace ? logd.data_ptr<T>() : nullptr;
    P.accept = P.metropolis ? acc.data_ptr<T>() : nullptr;
    // the draws of trace_every (hebm/sampler/checks.py draw_count)
    const int64_t n_draws =
        P.trace_every > 0 ? (P.step_offset + P.n_steps) / P.trace_every - P.step_offset / P.trace_every : 0;
    draws = at::empty({n_draws, B, D}, u.options());
    draws_logd = at::empty({n_draws, B}, u.options());
    P.draws = n_draws ? draws.data_ptr<T>() : nullptr;
    P.draws_log_density = n_draws ? draws_logd.data_ptr<T>() : nullptr;
    // replica exchange: the swap record [n_rounds, 2, B]; a chunk holds whole ladder groups
    const int64_t n_rounds = P.temperatures ? (P.step_offset + P.n_steps) / P.swap_every - P.step_offset / P.swap_every : 0;
    swaps = P.temperatures ? at::zeros({n_rounds, 2, B}, u.options()) : at::empty({0}, u.options());
    P.swaps = P.temperatures ? swaps.data_ptr<T>() : nullptr;
    if (B == 0 || P.n_steps == 0) return;
    int64_t rows = choose_chunk_rows(B, threads);
    if (P.temperatures) rows = ladder_chunk_rows(rows, P.temperatures_n);
    hebm::cpu::Sampler<T> sampler(P, rows, cached_weights<T>(net.token, P));
    parallel_chunks(threads, sampler.n_chunks(), sampler.workspace_bytes(),
                    [&](int64_t c0, int64_t c1, void* ws) { sampler.run(c0, c1, ws); });
  });
  torch::jit::drop(*stack, hebm::LANGEVIN_N_ARGS);
  torch::jit::push(*stack, std::move(u), std::move(logd), std::move(acc), std::move(draws), std::move(draws_logd),
                   std::move(swaps));
}

void reverse_diffusion_cpu(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static std::once_flag schema_checked;
  std::call_once(schema_checked, [&] { hebm::check_schema(op, hebm::kReverseArgNames, hebm::REVERSE_N_ARGS); });
  const auto args = torch::jit::last(*stack, hebm::REVERSE_N_ARGS);
  hebm::CallReader c(args, hebm::REVERSE_U_T, "u_T");
  TORCH_CHECK(c.u.device().is_cpu(), "hebm::reverse_diffusion (CPU): tensors must be on the CPU");
  check_precision(args[hebm::REVERSE_PRECISION].toStringView());
  const hebm::NetworkArgs net = hebm::read_network(args, c.u);
  TORCH_CHECK(c.D == net.D, "hebm: u_T has ", c.D, " columns but sum(dims) = ", net.D);
  c.n_levels = net.n_levels;
  const std::vector<int64_t> level_t = args[hebm::REVERSE_LEVEL_T].toIntVector();
  const std::vector<double> level_step = args[hebm::REVERSE_LEVEL_STEP].toDoubleVector();
  const std::vector<double> level_lam = args[hebm::REVERSE_LEVEL_ENERGY_SCALE].toDoubleVector();
  const std::vector<double> level_alpha = args[hebm::REVERSE_LEVEL_ALPHA].toDoubleVector();
  const std::vector<double> level_sigma = args[hebm::REVERSE_LEVEL_SIGMA].toDoubleVector();
  const bool return_levels = args[hebm::REVERSE_RETURN_LEVELS].toBool();
  const int64_t nlv = static_cast<int64_t>(level_t.size());
  TORCH_CHECK(static_cast<int64_t>(level_step.size()) == nlv && static_cast<int64_t>(level_lam.size()) == nlv &&
                  static_cast<int64_t>(level_alpha.size()) == nlv && static_cast<int64_t>(level_sigma.size()) == nlv,
              "hebm: the level_* lists must have one entry per level");
  std::vector<hebm::cpu::LevelParams> lv(nlv);
  for (int64_t j = 0; j < nlv; ++j) {
    TORCH_CHECK(level_t[j] >= 0 && level_t[j] < net.n_levels, "hebm: level_t must lie in [0, ", net.n_levels - 1, "]");
    lv[j] = hebm::cpu::LevelParams{level_t[j], level_step[j], level_lam[j], level_alpha[j], level_sigma[j]};
  }
  c.steps_per_count = nlv;
  const int64_t B = c.B, D = c.D;
  Tensor u = c.u.contiguous().clone();
  Tensor levels = return_levels ? at::empty({nlv + 1, B, D}, u.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "hebm_reverse_diffusion_cpu", [&] {
    using T = scalar_t;
    const std::vector<hebm::LayerRef<T>> refs = net.layer_refs<T>();
    hebm::Problem<T> P;
    fill_network(P, net, refs);
    HEBM_REVERSE_FIELDS(HEBM_READ)
    std::vector<T> zeros(B, T(0));
    P.B = B;
    P.D = D;
    P.u = u.data_ptr<T>();
    P.step_size = zeros.data();
    P.energy_scale = zeros.data();
    if (B == 0) return;
    const int64_t threads = call_threads(4.0 * B * static_cast<double>(n_weights(net)) * P.n_steps * nlv);
    hebm::cpu::Sampler<T> sampler(P, choose_chunk_rows(B, threads), cached_weights<T>(net.token, P));
    T* lvl = return_levels ? levels.data_ptr<T>() : nullptr;
    parallel_chunks(threads, sampler.n_chunks(), sampler.workspace_bytes(), [&](int64_t c0, int64_t c1, void* ws) {
      sampler.run_reverse(c0, c1, ws, lv.data(), nlv, lvl);
    });
  });
  if (return_levels && B == 0) levels.zero_();
  torch::jit::drop(*stack, hebm::REVERSE_N_ARGS);
  torch::jit::push(*stack, return_levels ? std::move(levels) : std::move(u));
}

// Test hook: the normals of hebm/prior/philox.py from the shared header, [B, D] float32.
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
  m.impl("langevin", torch::CppFunction::makeFromBoxedFunction<&langevin_cpu>());
  m.impl("reverse_diffusion", torch::CppFunction::makeFromBoxedFunction<&reverse_diffusion_cpu>());
}

// The value summaries behind hebm.sampler.values.ValueChecks (the rules live there, in Python): for each
// tensor its (min, max) as doubles — NaN for both when it holds a NaN, ±inf where it holds ±inf,
// (0, 0) when empty.  One call for all of a call's tensors, where torch's reductions cost a
// dispatch and a host read each (benchmarks/NOTES.md, "One door into each kernel").
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
  m.def("value_ranges", &value_ranges, "(min, max) of each CPU tensor, NaN where it holds a NaN (hebm.sampler.values)",
        pybind11::arg("tensors"));
  m.def("philox_normal", &philox_normal_cpp, "normals of the shared Philox stream (tests)", pybind11::arg("seed"),
        pybind11::arg("chain_ids"), pybind11::arg("step"), pybind11::arg("D"), pybind11::arg("stream") = 0);
}
