// torch.ops.spectra.attn_row_stats, the part its CPU (attn_row_stats_cpu.cpp) and CUDA
// (attn_row_stats_cuda.cu) implementations share: the argument checks, the output tensors, the
// kernels' views of q and k and the mask.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "ops/op_checks.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/attn_row_stats.hpp"

namespace spectra::bindings {

using AttnRowStatsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor>;

struct AttnRowStatsTensors {
  at::Tensor entropy, entropy_normalized, max_attn, sink_mass, sink_mass_n, argmax, k_eff, n_visible, logit_var;

  // In the schema's order.
  AttnRowStatsResult result() const {
    return {entropy, entropy_normalized, max_attn, argmax, k_eff, sink_mass, sink_mass_n, n_visible, logit_var};
  }

  // The kernels' output pointers; Out is the element type of the float outputs.
  template <typename Out>
  AttnRowStatsOutputs<Out> outputs() const {
    return {entropy.mutable_data_ptr<Out>(),     entropy_normalized.mutable_data_ptr<Out>(),
            max_attn.mutable_data_ptr<Out>(),    sink_mass.mutable_data_ptr<Out>(),
            sink_mass_n.mutable_data_ptr<Out>(), argmax.mutable_data_ptr<int64_t>(),
            k_eff.mutable_data_ptr<int64_t>(),   n_visible.mutable_data_ptr<int64_t>(),
            logit_var.mutable_data_ptr<Out>()};
  }
};

// Checks the arguments and allocates the outputs, each (batch, heads, query_len) on q's device:
// float64 for float64 q and float32 otherwise; argmax, k_eff and n_visible int64.
inline AttnRowStatsTensors attn_row_stats_outputs(Backend backend, const at::Tensor& q, const at::Tensor& k,
                                                  double scaling, const std::optional<at::Tensor>& key_valid,
                                                  int64_t sliding_window, double threshold, int64_t n_sink,
                                                  double softcap, const std::optional<at::Tensor>& sinks,
                                                  const std::optional<at::Tensor>& visible) {
  constexpr const char* op = "attn_row_stats";
  TORCH_CHECK_VALUE(q.dim() == 4, op, ": q must have shape (batch, heads, query_len, head_dim); got ", q.sizes());
  TORCH_CHECK_VALUE(k.dim() == 4, op, ": k must have shape (batch, kv_heads, key_len, head_dim); got ", k.sizes());
  check_float_dtype(q, op, "q");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), op, ": k has dtype ", k.scalar_type(), " but q has ",
                   q.scalar_type(), "; they must match");
  TORCH_CHECK_VALUE(on_backend(backend, q, q) && on_backend(backend, q, k), op, ": q and k must be ",
                    backend_place(backend), "; got ", q.device(), " and ", k.device());
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
  if (visible.has_value()) {
    TORCH_CHECK_TYPE(visible->scalar_type() == at::kBool, op, ": visible must be a bool tensor; got ",
                     visible->scalar_type());
    TORCH_CHECK_VALUE(visible->dim() == 4 && (visible->size(0) == 1 || visible->size(0) == q.size(0)) &&
                          (visible->size(1) == 1 || visible->size(1) == q.size(1)) &&
                          visible->size(2) == q.size(2) && visible->size(3) == k.size(2),
                      op, ": visible must have shape (batch or 1, heads or 1, query_len, key_len) = (", q.size(0),
                      " or 1, ", q.size(1), " or 1, ", q.size(2), ", ", k.size(2), "); got ", visible->sizes());
  }
  if (sinks.has_value()) {
    check_float_dtype(*sinks, op, "sinks");
    TORCH_CHECK_VALUE(sinks->dim() == 1 && sinks->size(0) == q.size(1), op,
                      ": sinks must have shape (heads,) = (", q.size(1), ",); got ", sinks->sizes());
  }
  const std::array<int64_t, 3> shape{q.size(0), q.size(1), q.size(2)};
  const auto float_options = q.options().dtype(stats_dtype(q.scalar_type()));
  const auto long_options = q.options().dtype(at::kLong);
  return {at::empty(shape, float_options), at::empty(shape, float_options), at::empty(shape, float_options),
          at::empty(shape, float_options), at::empty(shape, float_options), at::empty(shape, long_options),
          at::empty(shape, long_options),  at::empty(shape, long_options),  at::empty(shape, float_options)};
}

// The mask for the kernels. `valid` is key_valid made contiguous on the op's device, or undefined;
// `visible` the custom mask on the op's device (read through its strides; broadcast dimensions get
// stride 0), or undefined.
inline AttnMaskSpec attn_mask_spec(const at::Tensor& valid, bool causal, int64_t sliding_window,
                                   std::optional<int64_t> query_offset, int64_t query_len, int64_t key_len,
                                   const at::Tensor& visible = at::Tensor()) {
  AttnMaskSpec mask;
  if (visible.defined()) {
    mask.visible = visible.const_data_ptr<bool>();
    mask.visible_stride_batch = visible.size(0) == 1 ? 0 : visible.stride(0);
    mask.visible_stride_head = visible.size(1) == 1 ? 0 : visible.stride(1);
    mask.visible_stride_query = visible.stride(2);
    mask.visible_stride_key = visible.stride(3);
  }
  mask.key_valid = valid.defined() ? valid.const_data_ptr<bool>() : nullptr;
  mask.causal = causal;
  mask.sliding_window = sliding_window;
  mask.query_offset = query_offset.value_or(key_len - query_len);
  return mask;
}

// A (batch, heads, seq, dim) tensor as the kernels' strided view; spectra's 16-bit types are
// bit-identical to c10::Half / c10::BFloat16.
template <typename T>
HeadsView<T> heads_view_as(const at::Tensor& x) {
  return {reinterpret_cast<const T*>(x.const_data_ptr()), x.size(0), x.size(1), x.size(2), x.size(3),
          x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

}  // namespace spectra::bindings
