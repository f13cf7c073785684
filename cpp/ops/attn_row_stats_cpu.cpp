// CPU implementation of torch.ops.spectra.attn_row_stats.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "ops/attn_row_stats.hpp"
#include "ops/op_checks.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/attn_row_stats.hpp"

namespace spectra::bindings {

AttnRowStatsResult attn_row_stats_cpu(const at::Tensor& q, const at::Tensor& k, double scaling,
                                      const std::optional<at::Tensor>& key_valid, bool causal, int64_t sliding_window,
                                      std::optional<int64_t> query_offset, double threshold, int64_t n_sink,
                                      double softcap, const std::optional<at::Tensor>& sinks,
                                      const std::optional<at::Tensor>& visible) {
  const AttnRowStatsTensors out = attn_row_stats_outputs(Backend::kCpu, q, k, scaling, key_valid, sliding_window,
                                                         threshold, n_sink, softcap, sinks, visible);
  const int64_t batch = q.size(0), heads = q.size(1), query_len = q.size(2), key_len = k.size(2);
  const int64_t tasks = attn_row_stats_tasks(batch, heads, query_len);
  if (tasks == 0) return out.result();

  const at::Tensor valid = key_valid.has_value() ? key_valid->contiguous() : at::Tensor();
  const at::Tensor custom = visible.has_value() ? visible->to(at::kCPU) : at::Tensor();
  const AttnMaskSpec mask = attn_mask_spec(valid, causal, sliding_window, query_offset, query_len, key_len, custom);
  // The sink logits as float64 on the CPU (one per head; the kernel adds them in float64).
  const at::Tensor sink_logits =
      sinks.has_value() ? sinks->detach().to(at::kCPU, at::kDouble).contiguous() : at::Tensor();
  const AttnRowStatsParams params{scaling, softcap, threshold, n_sink,
                                  sink_logits.defined() ? sink_logits.const_data_ptr<double>() : nullptr};
  const int64_t work_per_task = kAttnRowsPerBlock * std::max<int64_t>(key_len, 1) * q.size(3);
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / work_per_task);

  dispatch_float_types(q.scalar_type(), [&](auto in, auto out_type) {
    using In = decltype(in);
    using Out = decltype(out_type);
    const HeadsView<In> qv = heads_view_as<In>(q), kv = heads_view_as<In>(k);
    const AttnRowStatsOutputs<Out> outputs = out.outputs<Out>();
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
      attn_row_stats(qv, kv, mask, params, outputs, begin, end);
    });
  });
  return out.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("attn_row_stats", &spectra::bindings::attn_row_stats_cpu); }
