// CUDA launcher of vec_stats (cpp/kernels/vec_stats.cu): raw pointers, strides and a stream, no
// PyTorch. The op layer (cpp/ops/vec_stats_cuda.cu) checks the arguments, allocates the outputs
// and calls it. CUDA translation units only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "spectra/scalar_types.hpp"

namespace spectra::cuda_kernels {

inline constexpr int kVecStatsMaxLeadDims = 8;

// Leading dims of the (..., D) input after merging the ones that collapse; row k (logical,
// row-major) starts at Σ index_i(k) · stride_i.
struct LeadDims {
  int ndim = 0;
  int64_t size[kVecStatsMaxLeadDims] = {};
  int64_t stride[kVecStatsMaxLeadDims] = {};
};

// Merges adjacent leading dims (all of `ndim` but the last) that collapse
// (stride[i] == stride[i+1]·size[i+1]) and drops size-1 dims, keeping the logical row-major order.
// False when more than kVecStatsMaxLeadDims remain.
bool coalesce_leading_dims(const int64_t* sizes, const int64_t* strides, int64_t ndim, LeadDims& lead);

// Launches the kernel on `stream` for `rows` rows of `dim` elements (column stride col_stride);
// outputs are contiguous, indexed by logical row. Returns the launch's error code.
// Instantiated for (In, Out) in {(float, float), (double, double), (float16_t, float), (bfloat16_t, float)}.
template <typename In, typename Out>
cudaError_t launch_vec_stats(const In* x, const LeadDims& lead, int64_t rows, int64_t dim, int64_t col_stride,
                             Out* norm, Out* max_abs, Out* participation_ratio, cudaStream_t stream);

}  // namespace spectra::cuda_kernels
