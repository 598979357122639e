// langevin_kernel.cu — the fused CUDA Langevin sampler: one persistent launch runs all K steps
// (and, for a reverse diffusion, all levels) for every chain.  Plain CUDA, no torch headers
// (fast to compile; the torch binding is langevin_cuda.cpp).
//
// Grid: min(#row blocks, resident blocks); each block loops over row blocks of ROWS chains
// (grid-stride) and runs block_run (langevin_block.cuh) on each.  The block's workspace (state,
// z, gradients, MLP activations) lives in dynamic shared memory when it fits, else in a global
// scratch slice of its own (L1/L2-resident); params are staged in shared memory when they fit
// too, else read from global memory (L2).  Exact fp32: FMA register tiles, accurate expf/erff/
// logf (no --use_fast_math).
#include <cuda_runtime.h>

#include "langevin_block.cuh"

namespace hebm {
namespace cuda {

struct DevCtx {
  __device__ __forceinline__ int tid() const { return threadIdx.x; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  // Sum over the warp; the whole warp must call it (lane 0's result is the one used).
  template <typename T>
  __device__ __forceinline__ T warp_sum(T v) const {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
};

static_assert(sizeof(KArgs<double>) <= 32000, "kernel arguments too large");

template <typename T, int ROWS>
__global__ void __launch_bounds__(kThreads) langevin_kernel(const __grid_constant__ KArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  T* ws = a.gws != nullptr ? a.gws + (long)blockIdx.x * a.ws_block_elems : sm;
  const T* P = a.P;
  const T* PT = a.PT;
  DevCtx cx;
  if (a.stage_params) {
    T* sp = sm + (a.gws != nullptr ? 0 : (long)ROWS * a.row_elems);
    const long np4 = round4((int)a.n_params);
    for (long i = threadIdx.x; i < a.n_params; i += kThreads) {
      sp[i] = a.P[i];
      sp[np4 + i] = a.PT[i];
    }
    __syncthreads();
    P = sp;
    PT = sp + np4;
  }
  const int nblocks = (int)((a.B + a.block_chains - 1) / a.block_chains);
  for (int rb = blockIdx.x; rb < nblocks; rb += gridDim.x) block_run<T, ROWS>(a, rb, ws, P, PT, cx);
}

// Wᵀ of every layer into PT (same offsets); bias tables copied.  blockIdx.y = layer.
struct LayerTable {
  LayerDesc l[kMaxLayers];
};

template <typename T>
__global__ void transpose_kernel(const T* __restrict__ P, T* __restrict__ PT, const __grid_constant__ LayerTable tab) {
  const LayerDesc& ly = tab.l[blockIdx.y];
  const long nw = (long)ly.in * ly.out, nb = (long)ly.brows * ly.out;
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < nw + nb; i += (long)gridDim.x * blockDim.x) {
    if (i < nw) {
      const long o = i / ly.in, c = i % ly.in;  // W[o, c] -> Wt[c, o]
      PT[ly.w_off + c * ly.out + o] = P[ly.w_off + i];
    } else {
      PT[ly.b_off + (i - nw)] = P[ly.b_off + (i - nw)];
    }
  }
}

int launch_transpose(const void* P, void* PT, const LayerDesc* layers, int n_layers, bool dbl, void* stream) {
  if (n_layers <= 0) return 0;
  if (n_layers > kMaxLayers) return static_cast<int>(cudaErrorInvalidValue);
  LayerTable tab;
  for (int i = 0; i < n_layers; ++i) tab.l[i] = layers[i];
  const dim3 grid(64, n_layers);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dbl)
    transpose_kernel<double><<<grid, 256, 0, s>>>(static_cast<const double*>(P), static_cast<double*>(PT), tab);
  else
    transpose_kernel<float><<<grid, 256, 0, s>>>(static_cast<const float*>(P), static_cast<float*>(PT), tab);
  return static_cast<int>(cudaGetLastError());
}

template <typename T, int ROWS>
static int launch_one(const KArgs<T>& a, int grid, int64_t smem, cudaStream_t s) {
  auto kern = langevin_kernel<T, ROWS>;
  cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return static_cast<int>(e);
  kern<<<grid, kThreads, (size_t)smem, s>>>(a);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
static int launch_rows(const KArgs<T>& a, int grid, int64_t smem, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.rows) {
    case 8: return launch_one<T, 8>(a, grid, smem, s);
    case 16: return launch_one<T, 16>(a, grid, smem, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

int launch_langevin_f32(const KArgs<float>& a, int grid, int64_t smem, void* stream) { return launch_rows<float>(a, grid, smem, stream); }
int launch_langevin_f64(const KArgs<double>& a, int grid, int64_t smem, void* stream) { return launch_rows<double>(a, grid, smem, stream); }

template <typename T>
static int occupancy(int rows, int64_t smem) {
  int n = 0;
  cudaError_t e = cudaSuccess;
  if (rows == 8) {
    e = cudaFuncSetAttribute(langevin_kernel<T, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, langevin_kernel<T, 8>, kThreads, (size_t)smem);
  } else {
    e = cudaFuncSetAttribute(langevin_kernel<T, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, langevin_kernel<T, 16>, kThreads, (size_t)smem);
  }
  return e == cudaSuccess ? n : 0;
}
int occupancy_f32(int rows, int64_t smem) { return occupancy<float>(rows, smem); }
int occupancy_f64(int rows, int64_t smem) { return occupancy<double>(rows, smem); }

}  // namespace cuda
}  // namespace hebm
