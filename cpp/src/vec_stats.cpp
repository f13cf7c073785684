#include "spectra/vec_stats.hpp"

#include <cmath>
#include <limits>

namespace spectra {
namespace {

struct RowMoments {
  double sum_sq = 0.0;
  double sum_quartic = 0.0;
  double max_abs = 0.0;
  bool has_nan = false;
};

template <typename In>
RowMoments row_moments(const In* row, int64_t dim, int64_t col_stride) {
  RowMoments m;
  if (col_stride == 1) {
    // Contiguous rows: a plain loop the compiler vectorises.
    for (int64_t d = 0; d < dim; ++d) {
      const double v = static_cast<double>(to_float(row[d]));
      const double sq = v * v;
      m.sum_sq += sq;
      m.sum_quartic += sq * sq;
      m.max_abs = std::fmax(m.max_abs, std::fabs(v));
      m.has_nan |= std::isnan(v);
    }
  } else {
    for (int64_t d = 0; d < dim; ++d) {
      const double v = static_cast<double>(to_float(row[d * col_stride]));
      const double sq = v * v;
      m.sum_sq += sq;
      m.sum_quartic += sq * sq;
      m.max_abs = std::fmax(m.max_abs, std::fabs(v));
      m.has_nan |= std::isnan(v);
    }
  }
  return m;
}

}  // namespace

template <typename In, typename Out>
void vec_stats(const RowsView<In>& x, int64_t row_begin, int64_t row_end, Out* norm, Out* max_abs,
               Out* participation_ratio) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const RowMoments m = row_moments(x.data + r * x.row_stride, x.dim, x.col_stride);
    if (m.has_nan) {
      norm[r] = max_abs[r] = participation_ratio[r] = static_cast<Out>(nan);
      continue;
    }
    norm[r] = static_cast<Out>(std::sqrt(m.sum_sq));
    max_abs[r] = static_cast<Out>(m.max_abs);
    // 0/0 for the zero vector is NaN by definition (M7), so no epsilon here.
    participation_ratio[r] =
        static_cast<Out>(m.sum_quartic > 0.0 ? (m.sum_sq * m.sum_sq) / m.sum_quartic : nan);
  }
}

#define SPECTRA_INSTANTIATE_VEC_STATS(In, Out)                                                  \
  template void vec_stats<In, Out>(const RowsView<In>&, int64_t, int64_t, Out*, Out*, Out*);

SPECTRA_INSTANTIATE_VEC_STATS(float, float)
SPECTRA_INSTANTIATE_VEC_STATS(double, double)
SPECTRA_INSTANTIATE_VEC_STATS(float16_t, float)
SPECTRA_INSTANTIATE_VEC_STATS(bfloat16_t, float)

#undef SPECTRA_INSTANTIATE_VEC_STATS

}  // namespace spectra
