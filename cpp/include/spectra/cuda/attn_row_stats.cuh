// CUDA launcher of attn_row_stats (cpp/kernels/attn_row_stats.cu): raw pointers, strides and a
// stream, no PyTorch. The op layer (cpp/ops/attn_row_stats_cuda.cu) checks the arguments, allocates
// the outputs, picks the path (tensor cores or FMAs) and calls it. CUDA translation units only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "spectra/attn_row_stats.hpp"

namespace spectra::cuda_kernels {

inline constexpr int kAttnRowStatsCtaRows = 64;            // query rows per CTA
inline constexpr int kAttnRowStatsMaxTensorCoreDim = 256;  // the tensor-core path's largest head_dim

// Dynamic shared memory of one CTA, in bytes: tensor-core path (16-bit inputs, head_dim rounded up
// to dpad, a multiple of 16) or FMA path, with acc_size = sizeof(Acc).
int attn_row_stats_shared_bytes(bool tensor_cores, int dpad, int acc_size);

// Launches one CTA per (batch, query head, block of kAttnRowStatsCtaRows query rows): q_blocks ·
// batch · heads CTAs, which the caller has checked fit the grid, with
// attn_row_stats_shared_bytes(kTensorCores, dpad, sizeof(Acc)) bytes of shared memory, which the
// caller has checked the device allows. q, k, mask.key_valid and out are device memory. Returns the
// first error code of the setup and the launch.
// Instantiated for (In, Acc, kTensorCores) in {(float16_t, float, true), (bfloat16_t, float, true),
// (float, float, false), (double, double, false)}.
template <typename In, typename Acc, bool kTensorCores>
cudaError_t launch_attn_row_stats(const HeadsView<In>& q, const HeadsView<In>& k, const AttnMaskSpec& mask,
                                  const AttnRowStatsParams& params, const AttnRowStatsOutputs<Acc>& out, int dpad,
                                  int64_t q_blocks, cudaStream_t stream);

}  // namespace spectra::cuda_kernels
