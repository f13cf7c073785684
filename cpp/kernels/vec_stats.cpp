#include "spectra/vec_stats.hpp"

#include <cmath>
#include <limits>

namespace spectra {
namespace {

struct RowMoments {
  double sum_sq = 0.0;
  double sum_quartic = 0.0;
  double max_abs = 0.0;
};

// Independent partial sums, so the compiler can keep them in SIMD lanes (a single accumulator is a
// serial dependency chain it may not reorder). The order is fixed, so results stay deterministic.
constexpr int64_t kLanes = 8;

template <bool kContiguous, typename In>
RowMoments row_moments(const In* row, int64_t dim, int64_t strided_step) {
  const int64_t col_stride = kContiguous ? 1 : strided_step;
  double sq_lanes[kLanes] = {}, quartic_lanes[kLanes] = {}, max_lanes[kLanes] = {};
  auto accumulate = [&](int64_t lane, int64_t d) {
    const double v = static_cast<double>(to_float(row[d * col_stride]));
    const double sq = v * v;
    sq_lanes[lane] += sq;
    quartic_lanes[lane] += sq * sq;
    const double a = std::fabs(v);
    max_lanes[lane] = a > max_lanes[lane] ? a : max_lanes[lane];
  };
  const int64_t body = dim - dim % kLanes;
  for (int64_t d = 0; d < body; d += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) accumulate(l, d + l);
  }
  for (int64_t d = body; d < dim; ++d) accumulate(0, d);
  RowMoments m;
  for (int64_t l = 0; l < kLanes; ++l) {
    m.sum_sq += sq_lanes[l];
    m.sum_quartic += quartic_lanes[l];
    m.max_abs = std::fmax(m.max_abs, max_lanes[l]);
  }
  return m;
}

}  // namespace

template <typename In, typename Out>
void vec_stats(const RowsView<In>& x, int64_t row_begin, int64_t row_end, Out* norm, Out* max_abs,
               Out* participation_ratio) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t k = row_begin; k < row_end; ++k) {
    const RowMoments m = x.col_stride == 1 ? row_moments<true>(x.row(k), x.dim, 1)
                                            : row_moments<false>(x.row(k), x.dim, x.col_stride);
    const int64_t r = x.out_row(k);
    // Any NaN input reaches sum_sq (NaN^2 is NaN); an inf alone does not (inf^2 = inf).
    if (std::isnan(m.sum_sq)) {
      norm[r] = max_abs[r] = participation_ratio[r] = static_cast<Out>(nan);
      continue;
    }
    norm[r] = static_cast<Out>(std::sqrt(m.sum_sq));
    max_abs[r] = static_cast<Out>(m.max_abs);
    // 0/0 for the zero vector is NaN by definition (it has no participation ratio), so no epsilon here.
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
