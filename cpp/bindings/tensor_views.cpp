#include "tensor_views.hpp"

#include <ATen/TensorUtils.h>
#include <ATen/ops/empty.h>

#include <vector>

namespace spectra::bindings {

Rows::Rows(const at::Tensor& x) : x_(x) {
  const auto lead_shape = x.sizes().slice(0, x.dim() - 1);
  const auto lead_strides = x.strides().slice(0, x.dim() - 1);
  rows_ = c10::multiply_integers(lead_shape);
  if (rows_ == 0) return;
  // One stride covers all rows whenever the leading dims collapse (what reshape would view).
  const int64_t flat[] = {rows_};
  if (auto collapsed = at::detail::computeStride(lead_shape, lead_strides, flat)) {
    row_stride_ = (*collapsed)[0];
    return;
  }
  // Otherwise: the start of every row (8 bytes a row) instead of a copy of the whole tensor.
  offsets_ = at::empty({rows_}, at::TensorOptions().dtype(at::kLong));
  int64_t* out = offsets_.mutable_data_ptr<int64_t>();
  std::vector<int64_t> index(lead_shape.size(), 0);
  int64_t offset = 0;
  for (int64_t r = 0; r < rows_; ++r) {
    out[r] = offset;
    // Odometer over the leading index, last dim fastest (row-major order, as reshape numbers rows).
    for (int64_t d = static_cast<int64_t>(index.size()) - 1; d >= 0; --d) {
      offset += lead_strides[d];
      if (++index[d] < lead_shape[d]) break;
      offset -= lead_strides[d] * lead_shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace spectra::bindings
