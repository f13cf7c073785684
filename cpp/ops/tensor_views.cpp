#include "ops/tensor_views.hpp"

#include <ATen/TensorUtils.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <numeric>
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
  // Otherwise: a table of row starts (8 bytes a row) instead of a copy of the whole tensor, in
  // memory order (leading dims sorted by stride, largest outermost) so each task streams through
  // its part of the buffer; out_rows keeps the logical row-major index of every visited row.
  const int64_t n = static_cast<int64_t>(lead_shape.size());
  std::vector<int64_t> logical_stride(n, 1);
  for (int64_t d = n - 2; d >= 0; --d) logical_stride[d] = logical_stride[d + 1] * lead_shape[d + 1];
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lead_strides[a] > lead_strides[b]; });

  offsets_ = at::empty({rows_}, at::TensorOptions().dtype(at::kLong));
  out_rows_ = at::empty({rows_}, at::TensorOptions().dtype(at::kLong));
  int64_t* offsets = offsets_.mutable_data_ptr<int64_t>();
  int64_t* out_rows = out_rows_.mutable_data_ptr<int64_t>();
  std::vector<int64_t> index(n, 0);
  int64_t offset = 0, logical = 0;
  for (int64_t k = 0; k < rows_; ++k) {
    offsets[k] = offset;
    out_rows[k] = logical;
    // Odometer over the sorted dims, the smallest stride fastest.
    for (int64_t i = n - 1; i >= 0; --i) {
      const int64_t d = order[i];
      offset += lead_strides[d];
      logical += logical_stride[d];
      if (++index[d] < lead_shape[d]) break;
      offset -= lead_strides[d] * lead_shape[d];
      logical -= logical_stride[d] * lead_shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace spectra::bindings
