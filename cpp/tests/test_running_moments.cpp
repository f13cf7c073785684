#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "spectra/running_moments.hpp"

using spectra::RowsView;
using spectra::RunningMoments;

namespace {
RowsView<double> rows(const std::vector<double>& x, int64_t groups) {
  return {x.data(), static_cast<int64_t>(x.size()) / groups, groups, groups, 1};
}
}  // namespace

TEST_CASE("RunningMoments matches two-pass statistics on one batch", "[running_moments]") {
  RunningMoments acc(2);
  const std::vector<double> x{1, 10, 2, 20, 3, 30, 4, 40};
  acc.update(rows(x, 2), 0, 2);
  CHECK(acc.count(0) == 4);
  CHECK(acc.mean(0) == 2.5);
  CHECK(acc.variance(0, 0) == 1.25);
  CHECK(acc.variance(0, 1) == Approx(5.0 / 3.0));
  CHECK(acc.mean(1) == 25.0);
  CHECK(acc.min(1) == 10.0);
  CHECK(acc.max(1) == 40.0);
}

TEST_CASE("RunningMoments: batches, merges and one pass agree", "[running_moments]") {
  std::mt19937_64 rng(1);
  std::normal_distribution<double> gauss(1e6, 1.0);  // large offset: naive sum-of-squares would lose digits
  std::vector<double> all(3000);
  for (auto& v : all) v = gauss(rng);

  RunningMoments whole(3), batched(3), left(3), right(3);
  whole.update(rows(all, 3), 0, 3);
  for (size_t start = 0; start < all.size(); start += 300) {
    std::vector<double> chunk(all.begin() + start, all.begin() + start + 300);
    batched.update(rows(chunk, 3), 0, 3);
  }
  std::vector<double> a(all.begin(), all.begin() + 1200), b(all.begin() + 1200, all.end());
  left.update(rows(a, 3), 0, 3);
  right.update(rows(b, 3), 0, 3);
  left.merge(right);

  for (int64_t g = 0; g < 3; ++g) {
    double mean = 0, m2 = 0;
    for (int64_t r = 0; r < 1000; ++r) mean += all[r * 3 + g] / 1000.0;
    for (int64_t r = 0; r < 1000; ++r) m2 += (all[r * 3 + g] - mean) * (all[r * 3 + g] - mean);
    for (const RunningMoments* acc : {&whole, &batched, &left}) {
      CHECK(acc->count(g) == 1000);
      CHECK(acc->mean(g) == Approx(mean).epsilon(1e-14));
      CHECK(acc->variance(g, 1) == Approx(m2 / 999.0).epsilon(1e-9));
    }
  }
}

TEST_CASE("RunningMoments counts NaNs apart and reports NaN for empty groups", "[running_moments]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  RunningMoments acc(2);
  const std::vector<double> x{nan, 1, nan, 3};
  acc.update(rows(x, 2), 0, 2);
  CHECK(acc.count(0) == 0);
  CHECK(acc.nan_count(0) == 2);
  CHECK(std::isnan(acc.mean(0)));
  CHECK(std::isnan(acc.min(0)));
  CHECK(acc.mean(1) == 2.0);
  CHECK(std::isnan(acc.variance(1, 2)));  // count 2 <= ddof 2
  acc.reset();
  CHECK(acc.count(1) == 0);
  CHECK(acc.nan_count(0) == 0);
}

TEST_CASE("RunningMoments rejects bad shapes", "[running_moments]") {
  CHECK_THROWS_AS(RunningMoments(0), std::invalid_argument);
  RunningMoments a(2), b(3);
  CHECK_THROWS_AS(a.merge(b), std::invalid_argument);
  const std::vector<double> x{1, 2, 3};
  CHECK_THROWS_AS(a.update(rows(x, 3), 0, 2), std::invalid_argument);
}

TEST_CASE("RunningMoments round-trips through its state", "[running_moments]") {
  RunningMoments acc(2);
  const std::vector<double> x{1, 2, 3, std::numeric_limits<double>::quiet_NaN()};
  acc.update(rows(x, 2), 0, 2);
  const RunningMoments copy(acc.state());
  CHECK(copy.mean(0) == acc.mean(0));
  CHECK(copy.variance(0, 1) == acc.variance(0, 1));
  CHECK(copy.nan_count(1) == 1);
  RunningMoments::State bad = acc.state();
  bad.m2.pop_back();
  CHECK_THROWS_AS(RunningMoments(bad), std::invalid_argument);
}
