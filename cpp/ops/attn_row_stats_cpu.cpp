// CPU implementation of torch.ops.spectra.attn_row_stats.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <optional>
#include <tuple>

#include "spectra/attn_row_stats.hpp"
#include "op_checks.hpp"
#include "tensor_views.hpp"

namespace spectra::bindings {
namespace {

using AttnRowStatsResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor>;

}  // namespace

AttnRowStatsResult attn_row_stats_cpu(const at::Tensor& q, const at::Tensor& k, double scaling,
                                      const std::optional<at::Tensor>& key_valid, bool causal, int64_t sliding_window,
                                      std::optional<int64_t> query_offset, double threshold, int64_t n_sink,
                                      double softcap) {
  check_attn_row_stats_args(Backend::kCpu, q, k, scaling, key_valid, sliding_window, threshold, n_sink, softcap);
  const int64_t batch = q.size(0), heads = q.size(1), query_len = q.size(2), key_len = k.size(2);
  const auto float_options = q.options().dtype(stats_dtype(q.scalar_type()));
  const auto long_options = q.options().dtype(at::kLong);
  const std::array<int64_t, 3> shape{batch, heads, query_len};
  at::Tensor entropy = at::empty(shape, float_options);
  at::Tensor entropy_normalized = at::empty(shape, float_options);
  at::Tensor max_attn = at::empty(shape, float_options);
  at::Tensor sink_mass = at::empty(shape, float_options);
  at::Tensor sink_mass_n = at::empty(shape, float_options);
  at::Tensor argmax = at::empty(shape, long_options);
  at::Tensor k_eff = at::empty(shape, long_options);
  at::Tensor n_visible = at::empty(shape, long_options);
  at::Tensor logit_var = at::empty(shape, float_options);
  const int64_t tasks = attn_row_stats_tasks(batch, heads, query_len);
  if (tasks == 0) return {entropy, entropy_normalized, max_attn, argmax, k_eff, sink_mass, sink_mass_n, n_visible, logit_var};

  at::Tensor valid = key_valid.has_value() ? key_valid->contiguous() : at::Tensor();
  AttnMaskSpec mask;
  mask.key_valid = valid.defined() ? valid.const_data_ptr<bool>() : nullptr;
  mask.causal = causal;
  mask.sliding_window = sliding_window;
  mask.query_offset = query_offset.value_or(key_len - query_len);
  const AttnRowStatsParams params{scaling, softcap, threshold, n_sink};
  const int64_t work_per_task = kAttnRowsPerBlock * std::max<int64_t>(key_len, 1) * q.size(3);
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / work_per_task);

  dispatch_float_types(q.scalar_type(), [&](auto in, auto out) {
    using In = decltype(in);
    using Out = decltype(out);
    const HeadsView<In> qv = heads_view_as<In>(q), kv = heads_view_as<In>(k);
    const AttnRowStatsOutputs<Out> outputs{
        entropy.mutable_data_ptr<Out>(),   entropy_normalized.mutable_data_ptr<Out>(),
        max_attn.mutable_data_ptr<Out>(),  sink_mass.mutable_data_ptr<Out>(),
        sink_mass_n.mutable_data_ptr<Out>(), argmax.mutable_data_ptr<int64_t>(),
        k_eff.mutable_data_ptr<int64_t>(), n_visible.mutable_data_ptr<int64_t>(),
        logit_var.mutable_data_ptr<Out>()};
    at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
      attn_row_stats(qv, kv, mask, params, outputs, begin, end);
    });
  });
  return {entropy, entropy_normalized, max_attn, argmax, k_eff, sink_mass, sink_mass_n, n_visible, logit_var};
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("attn_row_stats", &spectra::bindings::attn_row_stats_cpu); }
