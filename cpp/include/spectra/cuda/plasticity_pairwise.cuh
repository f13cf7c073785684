// CUDA launchers of plasticity_pairwise (cpp/kernels/plasticity_pairwise.cu): raw pointers,
// strides and a stream, no PyTorch. The op layer (cpp/ops/plasticity_pairwise_cuda.cu) checks the
// arguments, allocates the outputs and calls them. CUDA translation units only.
// Instantiated for T in {float, double, float16_t, bfloat16_t}.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "spectra/plasticity_pairwise.hpp"

namespace spectra::cuda_kernels {

// first_negative_variance on the device: writes to *out (one int64 in device memory) the smallest
// d with Σ_dd < 0 (NaN is not negative), or x.dim when there is none. Returns the launch's error code.
template <typename T>
cudaError_t launch_first_negative_variance(const PlasticityPairsView<T>& x, int64_t* out, cudaStream_t stream);

// Computes every pair of `x` into `out` (device memory). Returns the launch's error code.
template <typename T>
cudaError_t launch_plasticity_pairwise(const PlasticityPairsView<T>& x, const PlasticityOutputs& out,
                                       cudaStream_t stream);

}  // namespace spectra::cuda_kernels
