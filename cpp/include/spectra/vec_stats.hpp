// Per-vector geometry of Q/K/V rows: L2 norm, max |x_d| and participation ratio.
//
// Definitions:
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

// Strided view of a (rows, dim) matrix; strides are in elements, as in PyTorch.
// When the leading dims of an N-d tensor do not collapse into one stride (a (B, H, T, D) view of a
// (B, T, H*D) projection, say), `row_offsets` gives the start of the k-th row visited and
// `out_rows` its logical (row-major) index, so rows can be read in memory order without a copy.
template <typename T>
struct RowsView {
  const T* data;
  int64_t rows;
  int64_t dim;
  int64_t row_stride;
  int64_t col_stride;
  const int64_t* row_offsets = nullptr;
  const int64_t* out_rows = nullptr;

  // The k-th row visited, and where its results go.
  const T* row(int64_t k) const { return data + (row_offsets ? row_offsets[k] : k * row_stride); }
  int64_t out_row(int64_t k) const { return out_rows ? out_rows[k] : k; }
};

// Computes the rows visited at positions [row_begin, row_end) of `x`; outputs are contiguous and
// indexed by logical row (x.out_row(k)).
// Out is float or double. Instantiated for In in {float, double, float16_t, bfloat16_t}.
template <typename In, typename Out>
void vec_stats(const RowsView<In>& x, int64_t row_begin, int64_t row_end, Out* norm, Out* max_abs,
               Out* participation_ratio);

}  // namespace spectra
