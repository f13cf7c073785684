// Glue between at::Tensor and the ATen-free kernels: argument checks with messages that name the
// argument and the allowed values, and a dtype switch onto spectra's own 16-bit storage types.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <utility>

#include "spectra/scalar_types.hpp"
#include "spectra/vec_stats.hpp"

namespace spectra::bindings {

// Work per parallel task, in elements (ATen's own grain size): smaller tasks cost more to schedule
// than they compute.
inline constexpr int64_t kElementsPerTask = 32768;

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_dtype(const at::Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op, ": ", arg, " has dtype ", x.scalar_type(),
                   "; allowed dtypes are float16, bfloat16, float32, float64");
}

// float64 in -> float64 out; every narrower float -> float32.
inline at::ScalarType stats_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Calls f(In{}, Out{}) with the kernel's element types for x's dtype.
template <typename F>
void dispatch_float_types(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat: return f(float{}, float{});
    case at::kDouble: return f(double{}, double{});
    case at::kHalf: return f(float16_t{}, float{});
    case at::kBFloat16: return f(bfloat16_t{}, float{});
    default: TORCH_CHECK_TYPE(false, "unsupported dtype ", t);
  }
}

// A (rows, dim) tensor as a strided kernel view; In must match the tensor's dtype (same bits).
template <typename In>
RowsView<In> rows_view(const at::Tensor& x2d) {
  return RowsView<In>{static_cast<const In*>(x2d.const_data_ptr()), x2d.size(0), x2d.size(1), x2d.stride(0),
                      x2d.stride(1)};
}

}  // namespace spectra::bindings
