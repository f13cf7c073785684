// CPU implementation of torch.ops.spectra.attn_row_stats.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <optional>
#include <tuple>

#include "spectra/attn_stats.hpp"
#include "tensor_views.hpp"

namespace spectra::bindings {
namespace {

using AttnRowStatsResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor>;

template <typename T>
HeadsView<T> heads_view_as(const at::Tensor& x) {
  // spectra's 16-bit types are bit-identical to c10::Half / c10::BFloat16.
  return {reinterpret_cast<const T*>(x.const_data_ptr()), x.size(0), x.size(1), x.size(2), x.size(3),
          x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

void check_args(const at::Tensor& q, const at::Tensor& k, double scaling, const std::optional<at::Tensor>& key_valid,
                int64_t sliding_window, double threshold, int64_t n_sink, double softcap) {
  constexpr const char* op = "attn_row_stats";
  TORCH_CHECK_VALUE(q.dim() == 4, op, ": q must have shape (batch, heads, query_len, head_dim); got ", q.sizes());
  TORCH_CHECK_VALUE(k.dim() == 4, op, ": k must have shape (batch, kv_heads, key_len, head_dim); got ", k.sizes());
  check_float_dtype(q, op, "q");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), op, ": k has dtype ", k.scalar_type(), " but q has ",
                   q.scalar_type(), "; they must match");
  TORCH_CHECK_VALUE(q.device().is_cpu() && k.device().is_cpu(), op, ": q and k must be on the CPU here; got ",
                    q.device(), " and ", k.device());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), op, ": k has batch ", k.size(0), " but q has ", q.size(0));
  TORCH_CHECK_VALUE(k.size(3) == q.size(3), op, ": k has head_dim ", k.size(3), " but q has ", q.size(3));
  TORCH_CHECK_VALUE(q.size(3) >= 1, op, ": head_dim must be >= 1");
  TORCH_CHECK_VALUE(k.size(1) >= 1 && q.size(1) % k.size(1) == 0, op, ": q's heads (", q.size(1),
                    ") must be a multiple of k's kv_heads (", k.size(1), ")");
  TORCH_CHECK_VALUE(std::isfinite(scaling), op, ": scaling must be finite; got ", scaling);
  TORCH_CHECK_VALUE(threshold > 0.0 && threshold <= 1.0, op, ": threshold must lie in (0, 1]; got ", threshold);
  TORCH_CHECK_VALUE(n_sink >= 0, op, ": n_sink must be >= 0; got ", n_sink);
  TORCH_CHECK_VALUE(sliding_window >= 0, op, ": sliding_window must be >= 0 (0: none); got ", sliding_window);
  TORCH_CHECK_VALUE(softcap >= 0.0 && std::isfinite(softcap), op, ": softcap must be >= 0 (0: none); got ", softcap);
  if (key_valid.has_value()) {
    TORCH_CHECK_TYPE(key_valid->scalar_type() == at::kBool, op, ": key_valid must be a bool tensor; got ",
                     key_valid->scalar_type());
    TORCH_CHECK_VALUE(key_valid->dim() == 2 && key_valid->size(0) == k.size(0) && key_valid->size(1) == k.size(2),
                      op, ": key_valid must have shape (batch, key_len) = (", k.size(0), ", ", k.size(2), "); got ",
                      key_valid->sizes());
  }
}

}  // namespace

AttnRowStatsResult attn_row_stats_cpu(const at::Tensor& q, const at::Tensor& k, double scaling,
                                      const std::optional<at::Tensor>& key_valid, bool causal, int64_t sliding_window,
                                      std::optional<int64_t> query_offset, double threshold, int64_t n_sink,
                                      double softcap) {
  check_args(q, k, scaling, key_valid, sliding_window, threshold, n_sink, softcap);
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
