#include "spectra/running_moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace spectra {
namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

RunningMoments::RunningMoments(int64_t n_groups) {
  if (n_groups < 1) throw std::invalid_argument("n_groups must be >= 1");
  s_.count.resize(n_groups);
  s_.nan_count.resize(n_groups);
  s_.mean.resize(n_groups);
  s_.m2.resize(n_groups);
  s_.min.resize(n_groups);
  s_.max.resize(n_groups);
  reset();
}

RunningMoments::RunningMoments(State state) : s_(std::move(state)) {
  const size_t n = s_.count.size();
  if (n == 0 || s_.nan_count.size() != n || s_.mean.size() != n || s_.m2.size() != n || s_.min.size() != n ||
      s_.max.size() != n) {
    throw std::invalid_argument("RunningMoments state vectors must all have the same non-zero length");
  }
}

void RunningMoments::reset() {
  std::fill(s_.count.begin(), s_.count.end(), 0);
  std::fill(s_.nan_count.begin(), s_.nan_count.end(), 0);
  std::fill(s_.mean.begin(), s_.mean.end(), 0.0);
  std::fill(s_.m2.begin(), s_.m2.end(), 0.0);
  std::fill(s_.min.begin(), s_.min.end(), kInf);
  std::fill(s_.max.begin(), s_.max.end(), -kInf);
}

void RunningMoments::merge_group(int64_t g, int64_t n_b, double mean_b, double m2_b, double min_b,
                                 double max_b) {
  if (n_b == 0) return;
  const int64_t n_a = s_.count[g];
  const int64_t n = n_a + n_b;
  const double delta = mean_b - s_.mean[g];
  s_.mean[g] += delta * static_cast<double>(n_b) / static_cast<double>(n);
  s_.m2[g] += m2_b + delta * delta * static_cast<double>(n_a) * static_cast<double>(n_b) / static_cast<double>(n);
  s_.count[g] = n;
  s_.min[g] = std::min(s_.min[g], min_b);
  s_.max[g] = std::max(s_.max[g], max_b);
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
    s_.nan_count[g] += nans;
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
    s_.nan_count[g] += other.s_.nan_count[g];
    merge_group(g, other.s_.count[g], other.s_.mean[g], other.s_.m2[g], other.s_.min[g], other.s_.max[g]);
  }
}

double RunningMoments::mean(int64_t g) const { return s_.count[g] > 0 ? s_.mean[g] : kNaN; }

double RunningMoments::variance(int64_t g, int64_t ddof) const {
  return s_.count[g] > ddof ? s_.m2[g] / static_cast<double>(s_.count[g] - ddof) : kNaN;
}

double RunningMoments::min(int64_t g) const { return s_.count[g] > 0 ? s_.min[g] : kNaN; }
double RunningMoments::max(int64_t g) const { return s_.count[g] > 0 ? s_.max[g] : kNaN; }

template void RunningMoments::update<float>(const RowsView<float>&, int64_t, int64_t);
template void RunningMoments::update<double>(const RowsView<double>&, int64_t, int64_t);
template void RunningMoments::update<float16_t>(const RowsView<float16_t>&, int64_t, int64_t);
template void RunningMoments::update<bfloat16_t>(const RowsView<bfloat16_t>&, int64_t, int64_t);

}  // namespace spectra
