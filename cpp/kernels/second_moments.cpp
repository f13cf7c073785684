#include "spectra/second_moments.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "spectra/scalar_types.hpp"

namespace spectra {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}

SecondMoments::SecondMoments(int64_t n_groups, int64_t dim) : dim_(dim) {
  if (n_groups < 1 || dim < 1) throw std::invalid_argument("SecondMoments: n_groups and dim must be >= 1");
  count_.assign(static_cast<size_t>(n_groups), 0);
  nan_count_.assign(static_cast<size_t>(n_groups), 0);
  sum_.assign(static_cast<size_t>(n_groups), Eigen::VectorXd::Zero(dim));
  outer_.assign(static_cast<size_t>(n_groups), Eigen::MatrixXd::Zero(dim, dim));
}

template <typename In>
void SecondMoments::update(const In* x, int64_t rows, int64_t stride_row, int64_t stride_group, int64_t stride_dim,
                           int64_t group_begin, int64_t group_end) {
  // Rows are gathered in blocks into a dense float64 matrix so that Σxxᵀ is one rank-k update
  // (a blocked matrix product) per block rather than one outer product per vector.
  constexpr int64_t kBlock = 256;
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> block(kBlock, dim_);
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
      int64_t kept = 0;
      for (int64_t r = r0; r < std::min(rows, r0 + kBlock); ++r) {
        const In* v = x + r * stride_row + g * stride_group;
        bool finite = true;
        for (int64_t d = 0; d < dim_; ++d) {
          const double value = static_cast<double>(to_float(v[d * stride_dim]));
          finite = finite && std::isfinite(value);
          block(kept, d) = value;
        }
        if (finite) {
          ++kept;
        } else {
          ++nan_count_[g];
        }
      }
      if (kept == 0) continue;
      const auto used = block.topRows(kept);
      outer_[g].selfadjointView<Eigen::Lower>().rankUpdate(used.transpose());
      sum_[g] += used.colwise().sum().transpose();
      count_[g] += kept;
    }
  }
}

void SecondMoments::merge(const SecondMoments& other) {
  if (other.n_groups() != n_groups() || other.dim_ != dim_)
    throw std::invalid_argument("SecondMoments.merge: the other accumulator has another shape");
  for (int64_t g = 0; g < n_groups(); ++g) {
    count_[g] += other.count_[g];
    nan_count_[g] += other.nan_count_[g];
    sum_[g] += other.sum_[g];
    outer_[g] += other.outer_[g];
  }
}

Eigen::MatrixXd SecondMoments::matrix(int64_t g, bool centered) const {
  if (count_[g] == 0) return Eigen::MatrixXd::Constant(dim_, dim_, kNaN);
  const double n = static_cast<double>(count_[g]);
  Eigen::MatrixXd m = outer_[g].selfadjointView<Eigen::Lower>();
  m /= n;
  if (centered) {
    const Eigen::VectorXd mean = sum_[g] / n;
    m -= mean * mean.transpose();
  }
  return m;
}

Eigen::VectorXd SecondMoments::eigenvalues(int64_t g, bool centered) const {
  const Eigen::MatrixXd m = matrix(g, centered);
  if (count_[g] == 0) return Eigen::VectorXd::Constant(dim_, kNaN);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(m, Eigen::EigenvaluesOnly);
  Eigen::VectorXd values = solver.eigenvalues().reverse();  // ascending -> descending
  return values.cwiseMax(0.0);
}

double SecondMoments::spectral_pr(int64_t g, bool centered) const {
  if (count_[g] == 0) return kNaN;
  const Eigen::MatrixXd m = matrix(g, centered);
  const double trace = m.trace(), frobenius2 = m.squaredNorm();
  return frobenius2 > 0.0 ? trace * trace / frobenius2 : kNaN;
}

double SecondMoments::entropy_rank(int64_t g, bool centered) const {
  if (count_[g] == 0) return kNaN;
  const Eigen::VectorXd sigma = eigenvalues(g, centered).cwiseSqrt();
  const double total = sigma.sum();
  if (!(total > 0.0)) return kNaN;
  double entropy = 0.0;
  for (int64_t i = 0; i < sigma.size(); ++i) {
    const double p = sigma[i] / total;
    if (p > 0.0) entropy -= p * std::log(p);
  }
  return std::exp(entropy);
}

#define SPECTRA_INSTANTIATE(In)                                                                          \
  template void SecondMoments::update<In>(const In*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
SPECTRA_INSTANTIATE(float)
SPECTRA_INSTANTIATE(double)
SPECTRA_INSTANTIATE(float16_t)
SPECTRA_INSTANTIATE(bfloat16_t)
#undef SPECTRA_INSTANTIATE

}  // namespace spectra
