// Argument checks and tensor views of the tensor ops, shared by their CPU (cpp/bindings/*_op.cpp) and
// CUDA (cpp/src/cuda/*.cu) implementations, so both backends accept the same inputs and refuse the
// rest with the same messages; only the device rule differs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "spectra/attn_row_stats.hpp"
#include "spectra/plasticity_pairwise.hpp"
#include "tensor_views.hpp"

namespace spectra::bindings {

enum class Backend { kCpu, kCuda };

// Whether x lives where the op runs: the CPU, or the CUDA device of the op's first tensor.
inline bool on_backend(Backend backend, const at::Tensor& first, const at::Tensor& x) {
  return backend == Backend::kCpu ? x.device().is_cpu() : first.device().is_cuda() && x.device() == first.device();
}

inline const char* backend_place(Backend backend) {
  return backend == Backend::kCpu ? "on the CPU here" : "on the same CUDA device here";
}

inline void check_vec_stats_args(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "vec_stats: x must have shape (..., D) with at least 1 dimension; got a 0-d tensor");
  check_float_dtype(x, "vec_stats", "x");
  TORCH_CHECK_VALUE(x.size(-1) >= 1, "vec_stats: x's last dimension D must be >= 1; got shape ", x.sizes());
}

inline void check_attn_row_stats_args(Backend backend, const at::Tensor& q, const at::Tensor& k, double scaling,
                                      const std::optional<at::Tensor>& key_valid, int64_t sliding_window,
                                      double threshold, int64_t n_sink, double softcap) {
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
}

// A (batch, heads, seq, dim) tensor as the kernels' strided view; spectra's 16-bit types are
// bit-identical to c10::Half / c10::BFloat16.
template <typename T>
HeadsView<T> heads_view_as(const at::Tensor& x) {
  return {reinterpret_cast<const T*>(x.const_data_ptr()), x.size(0), x.size(1), x.size(2), x.size(3),
          x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

inline void check_plasticity_pairwise_args(Backend backend, const at::Tensor& w, const at::Tensor& mean,
                                           const at::Tensor& var) {
  constexpr const char* op = "plasticity_pairwise";
  TORCH_CHECK_VALUE(w.dim() == 2, op, ": w must have shape (P, d), one key difference k1 - k2 per row; got shape ",
                    w.sizes());
  const int64_t pairs = w.size(0), dim = w.size(1);
  TORCH_CHECK_VALUE(dim >= 1, op, ": w's dimension d must be >= 1; got shape ", w.sizes());
  check_float_dtype(w, op, "w");
  check_float_dtype(mean, op, "mean");
  check_float_dtype(var, op, "var");
  TORCH_CHECK_VALUE(on_backend(backend, w, w) && on_backend(backend, w, mean) && on_backend(backend, w, var), op,
                    ": w, mean and var must be ", backend_place(backend), "; got ", w.device(), ", ", mean.device(),
                    " and ", var.device());
  const bool mean_ok = (mean.dim() == 1 && mean.size(0) == dim) ||
                       (mean.dim() == 2 && mean.size(0) == pairs && mean.size(1) == dim);
  TORCH_CHECK_VALUE(mean_ok, op, ": mean must have shape (d,) = (", dim, ",) shared by all pairs or (P, d) = (",
                    pairs, ", ", dim, ") one per pair; got shape ", mean.sizes());
  const bool var_ok = (var.dim() == 1 && var.size(0) == dim) ||
                      (var.dim() == 2 && var.size(0) == dim && var.size(1) == dim);
  TORCH_CHECK_VALUE(var_ok, op, ": var must have shape (d,) = (", dim, ",) for diagonal variances or (d, d) = (", dim,
                    ", ", dim, ") for a full covariance; got shape ", var.sizes());
}

// The pairs as the kernels' strided view (mean per pair or shared; var diagonal or full).
template <typename T>
PlasticityPairsView<T> pairs_view(const at::Tensor& w, const at::Tensor& mean, const at::Tensor& var) {
  const bool per_pair_mean = mean.dim() == 2;
  const bool full = var.dim() == 2;
  return {reinterpret_cast<const T*>(w.const_data_ptr()),
          w.size(0),
          w.size(1),
          w.stride(0),
          w.stride(1),
          reinterpret_cast<const T*>(mean.const_data_ptr()),
          per_pair_mean ? mean.stride(0) : 0,
          mean.stride(-1),
          reinterpret_cast<const T*>(var.const_data_ptr()),
          full,
          full ? var.stride(0) : 0,
          var.stride(-1)};
}

}  // namespace spectra::bindings
