// CUDA implementation of torch.ops.spectra.vec_stats — the twin of the CPU op (cpp/src/vec_stats.cpp,
// cpp/bindings/vec_stats_op.cpp) with the same definitions (spectra/vec_stats.hpp):
//   norm = sqrt(Σ x²), max_abs = max |x|, participation_ratio = (Σ x²)² / Σ x⁴ (NaN for the zero
//   vector), all three NaN for a row holding a NaN; sums in float64 whatever the input type; float64
//   outputs for float64 input, float32 otherwise.
// One warp per row (lanes stride over the last dimension, a shuffle tree sums the lanes), reading
// the tensor in place through its strides: leading dims are coalesced like reshape would, and rows
// whose leading dims do not collapse are located from their logical index (no offset table, no copy).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "spectra/scalar_types.hpp"
#include "ops/op_checks.hpp"
#include "ops/tensor_views.hpp"

namespace spectra::cuda_kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxLeadDims = 8;

__device__ __forceinline__ double load_double(const float* p) { return static_cast<double>(*p); }
__device__ __forceinline__ double load_double(const double* p) { return *p; }
__device__ __forceinline__ double load_double(const float16_t* p) {
  return static_cast<double>(__half2float(__ushort_as_half(p->bits)));
}
__device__ __forceinline__ double load_double(const bfloat16_t* p) {
  return static_cast<double>(__uint_as_float(static_cast<uint32_t>(p->bits) << 16));
}

// Leading dims of the (..., D) input after merging the ones that collapse; row k (logical,
// row-major) starts at Σ index_i(k) · stride_i.
struct LeadDims {
  int ndim = 0;
  int64_t size[kMaxLeadDims] = {};
  int64_t stride[kMaxLeadDims] = {};
};

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

// Merges adjacent leading dims that collapse (stride[i] == stride[i+1]·size[i+1]) and drops size-1
// dims, keeping the logical row-major order. False when more than kMaxLeadDims remain.
bool coalesce_leading_dims(const at::Tensor& x, LeadDims& lead) {
  constexpr int64_t kMaxTensorDims = 64;
  if (x.dim() - 1 > kMaxTensorDims) return false;
  int64_t size[kMaxTensorDims], stride[kMaxTensorDims];
  int n = 0;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) {
    if (x.size(i) == 1) continue;
    if (n > 0 && stride[n - 1] == x.stride(i) * x.size(i)) {
      size[n - 1] *= x.size(i);
      stride[n - 1] = x.stride(i);
    } else {
      size[n] = x.size(i);
      stride[n] = x.stride(i);
      ++n;
    }
  }
  if (n == 0) {  // a single row
    size[0] = 1;
    stride[0] = 0;
    n = 1;
  }
  if (n > kMaxLeadDims) return false;
  lead.ndim = n;
  for (int i = 0; i < n; ++i) {
    lead.size[i] = size[i];
    lead.stride[i] = stride[i];
  }
  return true;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> vec_stats_cuda(const at::Tensor& x_in) {
  bindings::check_vec_stats_args(x_in);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const auto out_shape = x_in.sizes().slice(0, x_in.dim() - 1);
  const auto out_options = x_in.options().dtype(bindings::stats_dtype(x_in.scalar_type()));
  at::Tensor norm = at::empty(out_shape, out_options);
  at::Tensor max_abs = at::empty(out_shape, out_options);
  at::Tensor participation_ratio = at::empty(out_shape, out_options);
  const int64_t rows = norm.numel();
  if (rows == 0) return {norm, max_abs, participation_ratio};

  LeadDims lead;
  at::Tensor x = x_in;
  if (!coalesce_leading_dims(x, lead)) {  // more than 8 non-collapsing leading dims: read a copy
    x = x_in.contiguous();
    lead.ndim = 1;
    lead.size[0] = rows;
    lead.stride[0] = x.size(-1);
  }
  const int64_t dim = x.size(-1);
  const int64_t blocks = std::min<int64_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, int64_t{1} << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  bindings::dispatch_float_types(x.scalar_type(), [&](auto in, auto out) {
    using In = decltype(in);
    using Out = decltype(out);
    vec_stats_kernel<In, Out><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(
        reinterpret_cast<const In*>(x.const_data_ptr()), lead, rows, dim, x.stride(-1), norm.mutable_data_ptr<Out>(),
        max_abs.mutable_data_ptr<Out>(), participation_ratio.mutable_data_ptr<Out>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {norm, max_abs, participation_ratio};
}

}  // namespace spectra::cuda_kernels

TORCH_LIBRARY_IMPL(spectra, CUDA, m) { m.impl("vec_stats", &spectra::cuda_kernels::vec_stats_cuda); }
