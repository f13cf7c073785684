// CUDA kernels of plasticity_pairwise — the twins of the CPU kernels (plasticity_pairwise.cpp, next
// to this file) with the same definitions (spectra/plasticity_pairwise.hpp): per key difference w
// (row of (P, d)), m = wᵀμ, v = wᵀΣw (Σ diagonal (d) or full (d, d)), p = Φ(m/√v),
// PP = 4·Φ(−|z|)·(1 − Φ(−|z|)); v <= 0 gives p = 1, 0, ½ for m > 0, < 0, = 0; NaN in m or v gives
// NaN. Sums in float64 whatever the input type; float64 outputs. The op layer
// (cpp/ops/plasticity_pairwise_cuda.cu) promotes mixed input dtypes to one and raises the error for a
// negative variance on Σ's diagonal, found by first_negative_variance_kernel, before anything is computed.
//
// One block of 4 warps per pair. The pair's w is staged in shared memory as float64 (when d fits);
// for a full Σ each warp takes rows i of Σ and its lanes stride over j (coalesced for row-major Σ):
// v = Σ_i w_i (Σ_j Σ_ij w_j). Torch-free.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "spectra/cuda/load_double.cuh"
#include "spectra/cuda/plasticity_pairwise.cuh"
#include "spectra/plasticity_pairwise.hpp"

namespace spectra::cuda_kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxStagedDim = 6000;  // float64s within the default 48 KiB of shared memory

// Device twins of spectra/plasticity_pairwise.hpp's normal_cdf / plasticity_from_z / pair_plasticity.
__device__ __forceinline__ double normal_cdf(double z) { return 0.5 * erfc(-z / 1.41421356237309504880); }

__device__ __forceinline__ double plasticity_from_z(double z) {
  const double tail = normal_cdf(-fabs(z));
  return 4.0 * tail * (1.0 - tail);
}

__device__ __forceinline__ PairPlasticity pair_plasticity_device(double m, double v) {
  const double nan = __longlong_as_double(0x7ff8000000000000LL);
  if (isnan(m) || isnan(v)) return {nan, nan};
  if (!(v > 0.0)) {
    if (m > 0.0) return {1.0, 0.0};
    if (m < 0.0) return {0.0, 0.0};
    return {0.5, 1.0};
  }
  const double z = m / sqrt(v);
  return {normal_cdf(z), plasticity_from_z(z)};
}

__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over the block's threads; the result is valid in thread 0. `scratch` holds kWarps doubles.
__device__ __forceinline__ double block_sum(double x, double* scratch) {
  x = warp_sum(x);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int i = 0; i < kWarps; ++i) total += scratch[i];
  }
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    plasticity_pairwise_kernel(const PlasticityPairsView<T> x, bool staged, PlasticityOutputs out) {
  extern __shared__ double w_stage[];  // x.dim doubles when staged
  __shared__ double scratch[2 * kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t k = blockIdx.x; k < x.pairs; k += gridDim.x) {
    const T* w_row = x.w + k * x.w_pair_stride;
    const T* mean = x.mean + k * x.mean_pair_stride;
    if (staged) {
      for (int64_t d = threadIdx.x; d < x.dim; d += kThreads) w_stage[d] = load_double(w_row + d * x.w_col_stride);
      __syncthreads();
    }
    auto w_at = [&](int64_t d) { return staged ? w_stage[d] : load_double(w_row + d * x.w_col_stride); };
    double m_part = 0.0, v_part = 0.0;
    for (int64_t d = threadIdx.x; d < x.dim; d += kThreads) {
      const double wd = w_at(d);
      m_part += load_double(mean + d * x.mean_col_stride) * wd;
      if (!x.full_covariance) v_part += wd * wd * load_double(x.var + d * x.var_col_stride);
    }
    if (x.full_covariance) {
      for (int64_t i = warp; i < x.dim; i += kWarps) {
        const T* row = x.var + i * x.var_row_stride;
        double row_dot = 0.0;
        for (int64_t j = lane; j < x.dim; j += 32) row_dot += load_double(row + j * x.var_col_stride) * w_at(j);
        row_dot = warp_sum(row_dot);
        if (lane == 0) v_part += w_at(i) * row_dot;
      }
    }
    const double m = block_sum(m_part, scratch);
    const double v = block_sum(v_part, scratch + kWarps);
    if (threadIdx.x == 0) {
      const PairPlasticity r = pair_plasticity_device(m, v);
      out.m[k] = m;
      out.v[k] = v;
      out.p[k] = r.p;
      out.pp[k] = r.pp;
    }
    // block_sum ends with a barrier, so w_stage may be overwritten by the next pair.
  }
}

// first_negative_variance on the device: the smallest d with Σ_dd < 0 (NaN is not negative), or
// x.dim when there is none. One block.
template <typename T>
__global__ void __launch_bounds__(256) first_negative_variance_kernel(const PlasticityPairsView<T> x, int64_t* out) {
  __shared__ unsigned long long first;
  if (threadIdx.x == 0) first = static_cast<unsigned long long>(x.dim);
  __syncthreads();
  const int64_t diagonal_step = x.full_covariance ? x.var_row_stride + x.var_col_stride : x.var_col_stride;
  for (int64_t d = threadIdx.x; d < x.dim; d += blockDim.x) {
    if (load_double(x.var + d * diagonal_step) < 0.0) {
      atomicMin(&first, static_cast<unsigned long long>(d));
      break;  // later d of this thread are larger
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) *out = static_cast<int64_t>(first);
}

}  // namespace

template <typename T>
cudaError_t launch_first_negative_variance(const PlasticityPairsView<T>& x, int64_t* out, cudaStream_t stream) {
  first_negative_variance_kernel<T><<<1, 256, 0, stream>>>(x, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_plasticity_pairwise(const PlasticityPairsView<T>& x, const PlasticityOutputs& out,
                                       cudaStream_t stream) {
  const bool staged = x.dim <= kMaxStagedDim;
  const size_t shared = staged ? static_cast<size_t>(x.dim) * sizeof(double) : 0;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(x.pairs, int64_t{1} << 20));
  plasticity_pairwise_kernel<T><<<blocks, kThreads, shared, stream>>>(x, staged, out);
  return cudaGetLastError();
}

#define SPECTRA_INSTANTIATE(T)                                                                                  \
  template cudaError_t launch_first_negative_variance<T>(const PlasticityPairsView<T>&, int64_t*, cudaStream_t); \
  template cudaError_t launch_plasticity_pairwise<T>(const PlasticityPairsView<T>&, const PlasticityOutputs&,    \
                                                     cudaStream_t);
SPECTRA_INSTANTIATE(float)
SPECTRA_INSTANTIATE(double)
SPECTRA_INSTANTIATE(float16_t)
SPECTRA_INSTANTIATE(bfloat16_t)
#undef SPECTRA_INSTANTIATE

}  // namespace spectra::cuda_kernels
