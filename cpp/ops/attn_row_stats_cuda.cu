// CUDA implementation of torch.ops.spectra.attn_row_stats: the ATen layer over the torch-free kernel
// (cpp/kernels/attn_row_stats.cu). Same checks, outputs and definitions as the CPU op; it picks the
// kernel's path (tensor cores for float16/bfloat16 on sm_80+, float32/float64 FMAs otherwise) and
// checks the launch limits.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cstdint>
#include <optional>

#include "ops/attn_row_stats.hpp"
#include "ops/op_checks.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/attn_row_stats.hpp"
#include "spectra/cuda/attn_row_stats.cuh"

namespace spectra::bindings {
namespace {

constexpr const char* kOp = "attn_row_stats";
constexpr int kRows = cuda_kernels::kAttnRowStatsCtaRows;

template <typename In, typename Acc, bool kTensorCores>
void launch(const at::Tensor& q, const at::Tensor& k, const AttnMaskSpec& mask, const AttnRowStatsParams& params,
            const AttnRowStatsOutputs<Acc>& out, int dpad, int64_t q_blocks, int max_shared, cudaStream_t stream) {
  const int shared = cuda_kernels::attn_row_stats_shared_bytes(kTensorCores, dpad, static_cast<int>(sizeof(Acc)));
  TORCH_CHECK(shared <= max_shared, kOp, ": needs ", shared, " bytes of shared memory per block; ",
              "this GPU allows ", max_shared);
  const int64_t blocks = q_blocks * q.size(0) * q.size(1);
  TORCH_CHECK_VALUE(blocks <= INT_MAX, kOp, ": batch · heads · ceil(query_len / ", kRows, ") = ", blocks,
                    " exceeds the CUDA grid limit; split the batch");
  C10_CUDA_CHECK((cuda_kernels::launch_attn_row_stats<In, Acc, kTensorCores>(
      heads_view_as<In>(q), heads_view_as<In>(k), mask, params, out, dpad, q_blocks, stream)));
}

}  // namespace

AttnRowStatsResult attn_row_stats_cuda(const at::Tensor& q_in, const at::Tensor& k_in, double scaling,
                                       const std::optional<at::Tensor>& key_valid, bool causal,
                                       int64_t sliding_window, std::optional<int64_t> query_offset, double threshold,
                                       int64_t n_sink, double softcap, const std::optional<at::Tensor>& sinks,
                                       const std::optional<at::Tensor>& visible) {
  const AttnRowStatsTensors out = attn_row_stats_outputs(Backend::kCuda, q_in, k_in, scaling, key_valid,
                                                         sliding_window, threshold, n_sink, softcap, sinks, visible);
  // Learned sinks and custom masks are in the CPU kernel and the torch path only; spectra.attn_row_stats
  // sends such a call on a CUDA tensor to the torch path, so only a direct torch.ops call reaches this.
  TORCH_CHECK_NOT_IMPLEMENTED(!sinks.has_value() && !visible.has_value(), kOp,
                              ": the CUDA kernel does not take sinks or a visible mask; call spectra.attn_row_stats, "
                              "which runs the torch path for them");
  const c10::cuda::OptionalCUDAGuard guard(q_in.device());
  const int64_t batch = q_in.size(0), heads = q_in.size(1), query_len = q_in.size(2), key_len = k_in.size(2);
  const int64_t dim = q_in.size(3);
  if (batch * heads * query_len == 0) return out.result();

  // key_valid may live on the CPU (as the mask the reference twin accepts); it is (batch, key_len) bools.
  const at::Tensor valid = key_valid.has_value() ? key_valid->to(q_in.device()).contiguous() : at::Tensor();
  const AttnMaskSpec mask = attn_mask_spec(valid, causal, sliding_window, query_offset, query_len, key_len);
  const AttnRowStatsParams params{scaling, softcap, threshold, n_sink};
  const int64_t q_blocks = (query_len + kRows - 1) / kRows;

  const int device = q_in.get_device();
  int cc_major = 0, max_shared = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const auto dtype = q_in.scalar_type();
  const int dpad = static_cast<int>((dim + 15) / 16 * 16);
  const bool sixteen_bit = dtype == at::kHalf || dtype == at::kBFloat16;
  const bool tensor_cores = sixteen_bit && dim <= cuda_kernels::kAttnRowStatsMaxTensorCoreDim && cc_major >= 8 &&
                            cuda_kernels::attn_row_stats_shared_bytes(true, dpad, 4) <= max_shared;
  if (tensor_cores && dtype == at::kHalf) {
    launch<float16_t, float, true>(q_in, k_in, mask, params, out.outputs<float>(), dpad, q_blocks, max_shared, stream);
  } else if (tensor_cores) {
    launch<bfloat16_t, float, true>(q_in, k_in, mask, params, out.outputs<float>(), dpad, q_blocks, max_shared, stream);
  } else if (dtype == at::kDouble) {
    launch<double, double, false>(q_in, k_in, mask, params, out.outputs<double>(), dpad, q_blocks, max_shared, stream);
  } else {
    // float32, or 16-bit inputs the tensor-core path does not take (head_dim > 256, pre-sm_80 GPUs):
    // float32 FMAs. A 16-bit input is widened to a float32 copy first (exact; the logits are float32
    // either way).
    const at::Tensor q = dtype == at::kFloat ? q_in : q_in.to(at::kFloat);
    const at::Tensor k = dtype == at::kFloat ? k_in : k_in.to(at::kFloat);
    launch<float, float, false>(q, k, mask, params, out.outputs<float>(), dpad, q_blocks, max_shared, stream);
  }
  return out.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CUDA, m) { m.impl("attn_row_stats", &spectra::bindings::attn_row_stats_cuda); }
