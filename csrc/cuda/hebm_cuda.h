// hebm_cuda.h — the CUDA sampler's kernel arguments and launch entry points (plain C++, no torch).
//
// Shared by: langevin_kernel.cu (device code, nvcc), langevin_cuda.cpp (torch binding + the
// host emulator of one thread block, host compiler).  The math contract is hebm/sampler/reference.py
// (langevin_ref); the block algorithm lives in langevin_block.cuh.
#pragma once

#include <cstdint>

#include "../hebm_kernel.h"

namespace hebm {
namespace cuda {

constexpr int kThreads = 256;  // threads per block (8 warps); the block code assumes exactly this
constexpr int kWarps = kThreads / 32;
constexpr int kMaxL = 16;                // latent layers
constexpr int kMaxMlps = 2 * kMaxL - 1;  // conditionals + energies
constexpr int kMaxLayers = 64;           // Linear layers over all MLPs
constexpr int kMaxLevels = 16;           // levels of a fused reverse diffusion
constexpr int kRowScalars = 12;          // per-row scalar slots in the workspace (4-aligned)

struct LayerDesc {
  int32_t in, out, brows, pad;
  int64_t w_off, b_off;  // element offsets into params (W [out, in] row-major; bias table [brows, out])
};

struct MlpDesc {
  int32_t first, n_layers, act, stack_off;  // stack_off: per-row element offset of its hidden buffers
  float act_param;
  int32_t pad;
};

HEBM_HD int round4(int x) { return (x + 3) & ~3; }

// KArgs' members of the call record's fields: as hebm::Problem's, but the state is u_in → u_out
#define HEBM_KMEMBER_U(name)
#define HEBM_KMEMBER(name, slot, KIND) HEBM_KMEMBER_##KIND(name)
#define HEBM_KMEMBER_STEPS HEBM_MEMBER_STEPS
#define HEBM_KMEMBER_COUNT HEBM_MEMBER_COUNT
#define HEBM_KMEMBER_CHAIN HEBM_MEMBER_CHAIN
#define HEBM_KMEMBER_LEVEL HEBM_MEMBER_LEVEL
#define HEBM_KMEMBER_NEXT HEBM_MEMBER_NEXT
#define HEBM_KMEMBER_SEED HEBM_MEMBER_SEED
#define HEBM_KMEMBER_IDS HEBM_MEMBER_IDS
#define HEBM_KMEMBER_NOISE HEBM_MEMBER_NOISE
#define HEBM_KMEMBER_FLAG HEBM_MEMBER_FLAG
#define HEBM_KMEMBER_UNIF HEBM_MEMBER_UNIF
#define HEBM_KMEMBER_LADDER HEBM_MEMBER_LADDER
#define HEBM_KMEMBER_CHOICE HEBM_MEMBER_CHOICE
#define HEBM_KMEMBER_ROUNDS HEBM_MEMBER_ROUNDS

// Everything one launch needs, passed by value as a __grid_constant__ kernel parameter.
template <typename T>
struct KArgs {
  // ---- structure (the flat parameter buffer the launcher laid out from csrc/network.h's slots)
  int32_t B, D, L, LD;  // LD = round4(D): row stride of the state buffers
  int32_t dims[kMaxL], offs[kMaxL];
  int32_t n_mlps, n_layers, has_energy, n_levels;
  MlpDesc mlps[kMaxMlps];
  LayerDesc layers[kMaxLayers];
  T sigma_min;
  T sigma_clamp;  // σ = exp(c·tanh(ℓ/c)) + σ_min with c = sigma_clamp; 0: σ = exp(ℓ) + σ_min
  const T* P;   // params as packed
  const T* PT;  // same offsets, every W transposed to [in, out] (biases copied)
  int64_t n_params;

  // ---- workspace plan (per-row element offsets; every region a multiple of 4 elements)
  int32_t rows;         // rows per block = the template ROWS of the kernel
  int32_t block_chains; // chains per block: rows, or with a ladder of R the whole groups that fit (rows / R · R)
  int32_t ld_w, ld_out, stack_len, store_all, has_un, stage_params;
  int32_t off_U, off_Z, off_G, off_EX, off_UN, off_XT, off_GA, off_GB, off_OUT, off_STACK, off_RS;
  int32_t off_U0 = 0, off_G0 = 0;  // Metropolis: the state before the proposal and its gradient
  int32_t row_elems;    // elements per row of the workspace
  T* gws;               // global workspace [gridDim.x, ws_block_elems] or nullptr (shared memory)
  int64_t ws_block_elems;

  // ---- the call (Langevin mode): one member per field of the call record (csrc/call_record.h;
  //      the types of csrc/hebm_kernel.h HEBM_MEMBER_<KIND>), the state as u_in → u_out.  With
  //      metropolis (docs/design.md §2) the step is a proposal (c = 1) kept when log U < log α; U
  //      from `uniforms` [n_steps, B] or stream 2; accept [2, B] (zeroed by the launcher) gets the
  //      accepted proposals and Σ min(1, α).  Langevin mode only.
  const T* u_in;
  T* u_out;
  HEBM_LANGEVIN_FIELDS(HEBM_KMEMBER)
  T* log_density;    // [n_steps, B] or nullptr
  T* accept = nullptr;
  // with trace_every = m (Langevin mode): the state after every step whose counter
  // step_offset + k + 1 m divides, [n, B, D], and its log π [n, B] (nullptr: none)
  T* draws = nullptr;
  T* draws_log_density = nullptr;
  // with temperatures: the swap record [n_rounds, 2, B] (round n: E = λF of each chain's state
  // entering it, then at each pair's lower chain 1 = proposed, 2 = swapped, else 0), as the cpu kernel's
  T* swaps = nullptr;

  // ---- reverse-diffusion mode (n_lv > 0): levels j = 0..n_lv-1, scalars per level
  int32_t n_lv;
  int32_t lv_t[kMaxLevels];
  T lv_step[kMaxLevels], lv_lam[kMaxLevels], lv_alpha[kMaxLevels], lv_sigma[kMaxLevels];
  T* levels_out;     // [n_lv + 1, B, D] (slot 0 written by the launcher) or nullptr
};

// Launch entry points (langevin_kernel.cu).  `stream` is a cudaStream_t; the return value is a
// cudaError_t (0 = success).  `grid` = number of blocks (grid-stride over row blocks).
// Every layer's W transposed into PT (same offsets; biases copied).  `layers`: host table.
int launch_transpose(const void* P, void* PT, const LayerDesc* layers, int n_layers, bool dbl, void* stream);
int launch_langevin_f32(const KArgs<float>& a, int grid, int64_t smem_bytes, void* stream);
int launch_langevin_f64(const KArgs<double>& a, int grid, int64_t smem_bytes, void* stream);
// Blocks of `rows` chains that fit one SM at `smem_bytes` (cudaOccupancyMaxActiveBlocksPerMultiprocessor).
int occupancy_f32(int rows, int64_t smem_bytes);
int occupancy_f64(int rows, int64_t smem_bytes);

}  // namespace cuda
}  // namespace hebm
