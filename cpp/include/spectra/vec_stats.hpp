// Per-vector geometry of Q/K/V rows: L2 norm, max |x_d| and participation ratio.
//
// Definitions (spec/seed-experiments.md M1, M6, M7):
//   norm                = sqrt(sum_d x_d^2)
//   max_abs             = max_d |x_d|
//   participation_ratio = (sum_d x_d^2)^2 / sum_d x_d^4, NaN for the zero vector (0/0)
// A NaN anywhere in a row makes all three outputs of that row NaN.
// Sums run in double whatever the input type: x^4 of an fp16 activation in the hundreds already
// overflows float32 accumulation over a long head dimension.
#pragma once

#include <cstdint>

#include "spectra/scalar_types.hpp"

namespace spectra {

// Strided view of a (rows, dim) matrix; strides are in elements, as in ATen.
template <typename T>
struct RowsView {
  const T* data;
  int64_t rows;
  int64_t dim;
  int64_t row_stride;
  int64_t col_stride;
};

// Computes rows [row_begin, row_end) of `x`; outputs are indexed by row, contiguous.
// Out is float or double. Instantiated for In in {float, double, float16_t, bfloat16_t}.
template <typename In, typename Out>
void vec_stats(const RowsView<In>& x, int64_t row_begin, int64_t row_end, Out* norm, Out* max_abs,
               Out* participation_ratio);

}  // namespace spectra
