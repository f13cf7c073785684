// Glue between at::Tensor and the ATen-free kernels: argument checks with messages that name the
// argument and the allowed values, and a dtype switch onto spectra's own 16-bit storage types.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cstdint>

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

// A (..., dim) tensor as rows of its last dimension, read in place whatever its strides.
// Keeps the row-offset table (if one was needed) alive as long as the views made from it.
class Rows {
 public:
  explicit Rows(const at::Tensor& x);

  int64_t rows() const { return rows_; }
  int64_t dim() const { return x_.size(-1); }

  // In must match the tensor's dtype bit for bit (float16_t for at::Half, ...).
  template <typename In>
  RowsView<In> view() const {
    return RowsView<In>{static_cast<const In*>(x_.const_data_ptr()), rows_, dim(), row_stride_, x_.stride(-1),
                        offsets_.defined() ? offsets_.const_data_ptr<int64_t>() : nullptr,
                        out_rows_.defined() ? out_rows_.const_data_ptr<int64_t>() : nullptr};
  }

 private:
  at::Tensor x_;
  at::Tensor offsets_;
  at::Tensor out_rows_;
  int64_t rows_;
  int64_t row_stride_ = 0;
};

}  // namespace spectra::bindings
