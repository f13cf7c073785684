#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "spectra/second_moments.hpp"

using spectra::SecondMoments;

namespace {

// x[r][g][d], contiguous.
std::vector<double> random_rows(int64_t rows, int64_t groups, int64_t dim, double offset, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(rows * groups * dim));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t d = 0; d < dim; ++d) x[(r * groups + g) * dim + d] = offset + (1.0 + d) * gauss(rng);
  return x;
}

void add(SecondMoments& acc, const std::vector<double>& x, int64_t rows, int64_t groups, int64_t dim) {
  acc.update(x.data(), rows, groups * dim, dim, 1, 0, groups);
}

// Two-pass covariance of group g, for comparison.
Eigen::MatrixXd naive_covariance(const std::vector<double>& x, int64_t rows, int64_t groups, int64_t dim, int64_t g) {
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(dim);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < dim; ++d) mean[d] += x[(r * groups + g) * dim + d] / rows;
  Eigen::MatrixXd c = Eigen::MatrixXd::Zero(dim, dim);
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::VectorXd v(dim);
    for (int64_t d = 0; d < dim; ++d) v[d] = x[(r * groups + g) * dim + d] - mean[d];
    c += v * v.transpose() / static_cast<double>(rows);
  }
  return c;
}

}  // namespace

TEST_CASE("SecondMoments covariance matches a two-pass computation", "[second_moments]") {
  const int64_t rows = 700, groups = 2, dim = 5;
  const auto x = random_rows(rows, groups, dim, 3.0, 7);
  SecondMoments acc(groups, dim);
  add(acc, x, rows, groups, dim);
  for (int64_t g = 0; g < groups; ++g) {
    const Eigen::MatrixXd want = naive_covariance(x, rows, groups, dim, g);
    CHECK((acc.matrix(g, true) - want).cwiseAbs().maxCoeff() < 1e-10 * want.cwiseAbs().maxCoeff());
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(want);
    const Eigen::VectorXd lambda = solver.eigenvalues();
    const double pr = lambda.sum() * lambda.sum() / lambda.squaredNorm();
    CHECK(acc.spectral_pr(g, true) == Approx(pr).epsilon(1e-10));
    CHECK(acc.count(g) == rows);
  }
}

TEST_CASE("SecondMoments: batches and merges equal one pass", "[second_moments]") {
  const int64_t rows = 600, groups = 3, dim = 4;
  const auto x = random_rows(rows, groups, dim, 0.5, 11);
  SecondMoments whole(groups, dim), left(groups, dim), right(groups, dim);
  add(whole, x, rows, groups, dim);
  left.update(x.data(), 250, groups * dim, dim, 1, 0, groups);
  right.update(x.data() + 250 * groups * dim, rows - 250, groups * dim, dim, 1, 0, groups);
  left.merge(right);
  for (int64_t g = 0; g < groups; ++g) {
    CHECK((left.matrix(g, false) - whole.matrix(g, false)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(left.entropy_rank(g, true) == Approx(whole.entropy_rank(g, true)).epsilon(1e-12));
  }
  SecondMoments other(groups + 1, dim);
  CHECK_THROWS_AS(left.merge(other), std::invalid_argument);
}

TEST_CASE("SecondMoments effective ranks of known matrices", "[second_moments]") {
  // Isotropic: all D eigenvalues equal -> both ranks D. Rank one: both 1.
  const int64_t dim = 4;
  std::vector<double> axes;
  for (int64_t i = 0; i < dim; ++i)
    for (double sign : {1.0, -1.0})
      for (int64_t d = 0; d < dim; ++d) axes.push_back(d == i ? sign : 0.0);
  SecondMoments iso(1, dim);
  iso.update(axes.data(), 2 * dim, dim, dim, 1, 0, 1);
  CHECK(iso.spectral_pr(0, true) == Approx(4.0));
  CHECK(iso.entropy_rank(0, true) == Approx(4.0));
  std::vector<double> line;
  for (double t : {-2.0, -1.0, 1.0, 2.0})
    for (int64_t d = 0; d < dim; ++d) line.push_back(t * (d + 1.0));
  SecondMoments one(1, dim);
  one.update(line.data(), 4, dim, dim, 1, 0, 1);
  CHECK(one.spectral_pr(0, true) == Approx(1.0));
  CHECK(one.entropy_rank(0, true) == Approx(1.0).epsilon(1e-6));
  // A constant offset only shows uncentered: centered it is no direction at all.
  std::vector<double> constant(3 * dim, 5.0);
  SecondMoments flat(1, dim);
  flat.update(constant.data(), 3, dim, dim, 1, 0, 1);
  CHECK(std::isnan(flat.spectral_pr(0, true)));
  CHECK(flat.spectral_pr(0, false) == Approx(1.0));
}

TEST_CASE("SecondMoments skips non-finite vectors and reports empty groups as NaN", "[second_moments]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> x{1.0, 2.0, nan, 1.0, 3.0, 4.0};
  SecondMoments acc(1, 2);
  acc.update(x.data(), 3, 2, 2, 1, 0, 1);
  CHECK(acc.count(0) == 2);
  CHECK(acc.nan_count(0) == 1);
  SecondMoments empty(1, 2);
  CHECK(std::isnan(empty.spectral_pr(0, true)));
  CHECK(std::isnan(empty.entropy_rank(0, false)));
  CHECK(std::isnan(empty.matrix(0, true)(0, 0)));
}
