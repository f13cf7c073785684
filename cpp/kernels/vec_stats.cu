// CUDA kernel of vec_stats — the twin of the CPU kernel (vec_stats.cpp, next to this file) with the
// same definitions (spectra/vec_stats.hpp):
//   norm = sqrt(Σ x²), max_abs = max |x|, participation_ratio = (Σ x²)² / Σ x⁴ (NaN for the zero
//   vector), all three NaN for a row holding a NaN; sums in float64 whatever the input type; float64
//   outputs for float64 input, float32 otherwise.
// One warp per row (lanes stride over the last dimension, a shuffle tree sums the lanes), reading
// the tensor in place through its strides: leading dims are coalesced like reshape would, and rows
// whose leading dims do not collapse are located from their logical index (no offset table, no copy).
// Torch-free: the op layer is cpp/ops/vec_stats_cuda.cu.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "spectra/cuda/load_double.cuh"
#include "spectra/cuda/vec_stats.cuh"
#include "spectra/scalar_types.hpp"

namespace spectra::cuda_kernels {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ int64_t row_offset(const LeadDims& lead, int64_t row) {
  if (lead.ndim == 1) return row * lead.stride[0];
  int64_t offset = 0;
  for (int i = lead.ndim - 1; i >= 0; --i) {
    const int64_t n = lead.size[i];
    offset += (row % n) * lead.stride[i];
    row /= n;
  }
  return offset;
}

template <typename In, typename Out>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    vec_stats_kernel(const In* __restrict__ x, LeadDims lead, int64_t rows, int64_t dim, int64_t col_stride,
                     Out* __restrict__ norm, Out* __restrict__ max_abs, Out* __restrict__ participation_ratio) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < rows; r += warps) {
    const In* row = x + row_offset(lead, r);
    double sum_sq = 0.0, sum_quartic = 0.0, max_v = 0.0;
    for (int64_t d = lane; d < dim; d += 32) {
      const double v = load_double(row + d * col_stride);
      const double sq = v * v;
      sum_sq += sq;
      sum_quartic += sq * sq;
      const double a = fabs(v);
      max_v = a > max_v ? a : max_v;  // as the CPU op: NaN never becomes the max (the sums carry it)
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
      sum_quartic += __shfl_xor_sync(0xffffffffu, sum_quartic, offset);
      const double other = __shfl_xor_sync(0xffffffffu, max_v, offset);
      max_v = other > max_v ? other : max_v;
    }
    if (lane == 0) {
      const double nan = __longlong_as_double(0x7ff8000000000000LL);
      if (isnan(sum_sq)) {  // any NaN input reaches Σx²; an inf alone does not
        norm[r] = max_abs[r] = participation_ratio[r] = static_cast<Out>(nan);
      } else {
        norm[r] = static_cast<Out>(sqrt(sum_sq));
        max_abs[r] = static_cast<Out>(max_v);
        participation_ratio[r] = static_cast<Out>(sum_quartic > 0.0 ? (sum_sq * sum_sq) / sum_quartic : nan);
      }
    }
  }
}

}  // namespace

bool coalesce_leading_dims(const int64_t* sizes, const int64_t* strides, int64_t ndim, LeadDims& lead) {
  constexpr int64_t kMaxTensorDims = 64;
  if (ndim - 1 > kMaxTensorDims) return false;
  int64_t size[kMaxTensorDims], stride[kMaxTensorDims];
  int n = 0;
  for (int64_t i = 0; i + 1 < ndim; ++i) {
    if (sizes[i] == 1) continue;
    if (n > 0 && stride[n - 1] == strides[i] * sizes[i]) {
      size[n - 1] *= sizes[i];
      stride[n - 1] = strides[i];
    } else {
      size[n] = sizes[i];
      stride[n] = strides[i];
      ++n;
    }
  }
  if (n == 0) {  // a single row
    size[0] = 1;
    stride[0] = 0;
    n = 1;
  }
  if (n > kVecStatsMaxLeadDims) return false;
  lead.ndim = n;
  for (int i = 0; i < n; ++i) {
    lead.size[i] = size[i];
    lead.stride[i] = stride[i];
  }
  return true;
}

template <typename In, typename Out>
cudaError_t launch_vec_stats(const In* x, const LeadDims& lead, int64_t rows, int64_t dim, int64_t col_stride,
                             Out* norm, Out* max_abs, Out* participation_ratio, cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, int64_t{1} << 20);
  vec_stats_kernel<In, Out><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(
      x, lead, rows, dim, col_stride, norm, max_abs, participation_ratio);
  return cudaGetLastError();
}

template cudaError_t launch_vec_stats<float, float>(const float*, const LeadDims&, int64_t, int64_t, int64_t, float*,
                                                    float*, float*, cudaStream_t);
template cudaError_t launch_vec_stats<double, double>(const double*, const LeadDims&, int64_t, int64_t, int64_t,
                                                      double*, double*, double*, cudaStream_t);
template cudaError_t launch_vec_stats<float16_t, float>(const float16_t*, const LeadDims&, int64_t, int64_t, int64_t,
                                                        float*, float*, float*, cudaStream_t);
template cudaError_t launch_vec_stats<bfloat16_t, float>(const bfloat16_t*, const LeadDims&, int64_t, int64_t,
                                                         int64_t, float*, float*, float*, cudaStream_t);

}  // namespace spectra::cuda_kernels
