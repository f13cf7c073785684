#include "spectra/running_moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace spectra {
namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

RunningMoments::RunningMoments(int64_t n_groups) {
  if (n_groups < 1) throw std::invalid_argument("n_groups must be >= 1");
  count_.resize(n_groups);
  nan_count_.resize(n_groups);
  mean_.resize(n_groups);
  m2_.resize(n_groups);
  min_.resize(n_groups);
  max_.resize(n_groups);
  reset();
}

void RunningMoments::reset() {
  std::fill(count_.begin(), count_.end(), 0);
  std::fill(nan_count_.begin(), nan_count_.end(), 0);
  std::fill(mean_.begin(), mean_.end(), 0.0);
  std::fill(m2_.begin(), m2_.end(), 0.0);
  std::fill(min_.begin(), min_.end(), kInf);
  std::fill(max_.begin(), max_.end(), -kInf);
}

void RunningMoments::merge_group(int64_t g, int64_t n_b, double mean_b, double m2_b, double min_b,
                                 double max_b) {
  if (n_b == 0) return;
  const int64_t n_a = count_[g];
  const int64_t n = n_a + n_b;
  const double delta = mean_b - mean_[g];
  mean_[g] += delta * static_cast<double>(n_b) / static_cast<double>(n);
  m2_[g] += m2_b + delta * delta * static_cast<double>(n_a) * static_cast<double>(n_b) / static_cast<double>(n);
  count_[g] = n;
  min_[g] = std::min(min_[g], min_b);
  max_[g] = std::max(max_[g], max_b);
}

template <typename In>
void RunningMoments::update(const RowsView<In>& x, int64_t group_begin, int64_t group_end) {
  if (x.dim != n_groups()) throw std::invalid_argument("x must have n_groups columns");
  for (int64_t g = group_begin; g < group_end; ++g) {
    const int64_t column = g * x.col_stride;
    // Two passes over the batch (mean, then squared deviations) before one pairwise merge:
    // more accurate than per-sample Welford and no slower.
    int64_t n = 0, nans = 0;
    double sum = 0.0, lo = kInf, hi = -kInf;
    for (int64_t r = 0; r < x.rows; ++r) {
      const double v = static_cast<double>(to_float(x.row(r)[column]));
      if (std::isnan(v)) {
        ++nans;
        continue;
      }
      ++n;
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    nan_count_[g] += nans;
    if (n == 0) continue;
    const double batch_mean = sum / static_cast<double>(n);
    double m2 = 0.0;
    for (int64_t r = 0; r < x.rows; ++r) {
      const double v = static_cast<double>(to_float(x.row(r)[column]));
      if (!std::isnan(v)) m2 += (v - batch_mean) * (v - batch_mean);
    }
    merge_group(g, n, batch_mean, m2, lo, hi);
  }
}

void RunningMoments::merge(const RunningMoments& other) {
  if (other.n_groups() != n_groups()) throw std::invalid_argument("cannot merge RunningMoments with different n_groups");
  for (int64_t g = 0; g < n_groups(); ++g) {
    nan_count_[g] += other.nan_count_[g];
    merge_group(g, other.count_[g], other.mean_[g], other.m2_[g], other.min_[g], other.max_[g]);
  }
}

double RunningMoments::mean(int64_t g) const { return count_[g] > 0 ? mean_[g] : kNaN; }

double RunningMoments::variance(int64_t g, int64_t ddof) const {
  return count_[g] > ddof ? m2_[g] / static_cast<double>(count_[g] - ddof) : kNaN;
}

double RunningMoments::min(int64_t g) const { return count_[g] > 0 ? min_[g] : kNaN; }
double RunningMoments::max(int64_t g) const { return count_[g] > 0 ? max_[g] : kNaN; }

template void RunningMoments::update<float>(const RowsView<float>&, int64_t, int64_t);
template void RunningMoments::update<double>(const RowsView<double>&, int64_t, int64_t);
template void RunningMoments::update<float16_t>(const RowsView<float16_t>&, int64_t, int64_t);
template void RunningMoments::update<bfloat16_t>(const RowsView<bfloat16_t>&, int64_t, int64_t);

}  // namespace spectra
