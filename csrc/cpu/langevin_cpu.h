// langevin_cpu.h — interface of the fused CPU sampler (csrc/cpu/langevin_cpu.cpp).
//
// No torch headers here: the kernel translation unit compiles fast and stays free of ATen
// inline code.  csrc/ops.cpp owns the tensors, the checks and the threads (its own std::thread
// split over row chunks — deliberately not at::parallel_for, which is an inline OpenMP region
// that runs serially in this build) and calls into this.
//
// The math is hebm/sampler/reference.py (langevin_ref) and docs/design.md §2:
//     u ← u + (δ²/2) ∇ log π(u) + c δ ε,
//     log π(u) = λ Σ_i f_i(z_i; t) − ½‖u‖² − [kernel] ‖a u − u_next‖² / (2σ²),   z = T_β(u).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "../hebm_kernel.h"

namespace hebm {
namespace cpu {

// One level of a fused reverse diffusion (every chain at the same level).
struct LevelParams {
  int64_t t = 0;
  double step = 0, energy_scale = 0, alpha = 0, sigma = 1;  // alpha == 0: no kernel term
};

template <typename T>
struct SamplerImpl;

// The weights of p's networks in the micro-kernel layout (type-erased; made for p's dtype T).
// A function of the network's numbers only (p.layers): reusable by every Sampler of the same copy.
template <typename T>
std::shared_ptr<const void> pack_weights(const Problem<T>& p);

// Packs the networks of `p` once (transposed, column-padded, 64-byte aligned copies) and runs
// chunks of `chunk_rows` chains for all K steps; each chunk owns its rows, so chunks run on
// any thread in any order.  `workspace_bytes()` bytes (64-aligned) per concurrently running
// thread; nothing is allocated inside the step loop.
template <typename T>
class Sampler {
 public:
  // `weights`: from pack_weights(p) (of the same networks and dtype), or null to pack here.
  Sampler(const Problem<T>& p, int64_t chunk_rows, std::shared_ptr<const void> weights = nullptr);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  int64_t n_chunks() const;
  int64_t chunk_rows() const;
  size_t workspace_bytes() const;

  // Langevin: p.u is updated in place for the chunks [c0, c1) (p.n_steps steps each).
  void run(int64_t c0, int64_t c1, void* workspace) const;

  // Reverse diffusion over `n_levels` levels (K = p.n_steps steps each, step counter j*K + k);
  // p.u holds u_T on entry and u_0 on exit; `levels_out` ([n_lv + 1, B, D]) gets every state
  // (u_T first) when not null.  p.t / u_next / alpha / sigma / step_size / energy_scale are
  // ignored (taken from `levels`); p.noise (if set) is [n_lv * K, B, D].
  void run_reverse(int64_t c0, int64_t c1, void* workspace, const LevelParams* levels, int64_t n_levels,
                   T* levels_out) const;

 private:
  std::unique_ptr<SamplerImpl<T>> impl_;
};

// Compile-time facts of this build (ISA the vector code targets, vector width in bytes).
const char* isa_name();
int vector_bytes();

}  // namespace cpu
}  // namespace hebm
