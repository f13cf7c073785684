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
// When the leading dims of an N-d tensor do not collapse into one stride (a (B, H, T, D) view of a
// (B, T, H*D) projection, say), `row_offsets` gives each row's start instead, so no copy is needed.
template <typename T>
struct RowsView {
  const T* data;
  int64_t rows;
  int64_t dim;
  int64_t row_stride;
  int64_t col_stride;
  const int64_t* row_offsets = nullptr;

  const T* row(int64_t r) const { return data + (row_offsets ? row_offsets[r] : r * row_stride); }
};

// Computes rows [row_begin, row_end) of `x`; outputs are indexed by row, contiguous.
// Out is float or double. Instantiated for In in {float, double, float16_t, bfloat16_t}.
template <typename In, typename Out>
void vec_stats(const RowsView<In>& x, int64_t row_begin, int64_t row_end, Out* norm, Out* max_abs,
               Out* participation_ratio);

}  // namespace spectra
