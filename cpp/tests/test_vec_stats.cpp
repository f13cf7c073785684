#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>
#include <xtensor/xarray.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xrandom.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>

#include "spectra/vec_stats.hpp"

using spectra::RowsView;

namespace {

struct Stats {
  std::vector<double> norm, max_abs, pr;
};

template <typename In, typename Out = double>
Stats run(const RowsView<In>& x) {
  std::vector<Out> n(x.rows), m(x.rows), p(x.rows);
  spectra::vec_stats(x, 0, x.rows, n.data(), m.data(), p.data());
  return {{n.begin(), n.end()}, {m.begin(), m.end()}, {p.begin(), p.end()}};
}

Stats run_rows(const std::vector<double>& data, int64_t dim) {
  const RowsView<double> view{data.data(), static_cast<int64_t>(data.size()) / dim, dim, dim, 1};
  return run(view);
}

}  // namespace

TEST_CASE("vec_stats matches hand-computed values", "[vec_stats]") {
  const Stats s = run_rows({3, 4, 1, 1, 1, 1, 1, 0, 0, 0}, 2);
  // [3,4]
  CHECK(s.norm[0] == 5.0);
  CHECK(s.max_abs[0] == 4.0);
  CHECK(s.pr[0] == Approx(625.0 / 337.0).epsilon(1e-15));
  CHECK(s.pr[0] == Approx(1.8545994065).margin(1e-10));

  const Stats four = run_rows({1, 1, 1, 1, 1, 0, 0, 0, -2, 0, 0, 0}, 4);
  CHECK(four.pr[0] == 4.0);   // equal magnitudes -> D
  CHECK(four.pr[1] == 1.0);   // one-hot -> 1
  CHECK(four.norm[2] == 2.0);
  CHECK(four.max_abs[2] == 2.0);  // |x|, not x
}

TEST_CASE("vec_stats: zero vector has participation ratio NaN, norm and max_abs 0", "[vec_stats]") {
  const Stats s = run_rows({0, 0, 0}, 3);
  CHECK(s.norm[0] == 0.0);
  CHECK(s.max_abs[0] == 0.0);
  CHECK(std::isnan(s.pr[0]));
}

TEST_CASE("vec_stats: a NaN anywhere in a row makes the whole row NaN", "[vec_stats]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Stats s = run_rows({1, nan, 2, 1, 2, 3}, 3);
  CHECK(std::isnan(s.norm[0]));
  CHECK(std::isnan(s.max_abs[0]));
  CHECK(std::isnan(s.pr[0]));
  CHECK(s.norm[1] == Approx(std::sqrt(14.0)));
}

TEST_CASE("vec_stats: RMSNorm output of any nonzero D=64 vector has norm 8", "[vec_stats]") {
  std::mt19937 rng(7);
  std::normal_distribution<double> gauss(0.0, 3.0);
  std::vector<double> x(64);
  for (auto& v : x) v = gauss(rng);
  double ms = 0;
  for (double v : x) ms += v * v / 64.0;
  for (auto& v : x) v /= std::sqrt(ms);
  CHECK(run_rows(x, 64).norm[0] == Approx(8.0).epsilon(1e-12));
}

TEST_CASE("vec_stats: mean participation ratio of Gaussian vectors at D=64 is about 22.66", "[vec_stats]") {
  const int64_t rows = 100000, dim = 64;
  std::mt19937_64 rng(42);
  std::normal_distribution<double> gauss;
  std::vector<double> x(rows * dim);
  for (auto& v : x) v = gauss(rng);
  const Stats s = run_rows(x, dim);
  double mean = 0;
  for (double p : s.pr) mean += p / rows;
  CHECK(mean == Approx(22.66).margin(0.1));
}

TEST_CASE("vec_stats reads strided views in place and agrees with xtensor reductions", "[vec_stats]") {
  // A (dim, rows) array read transposed: column stride != 1, row stride 1.
  xt::random::seed(3);
  const xt::xarray<double> base = xt::random::randn<double>({16, 37});
  const auto xT = xt::transpose(base);  // (37, 16) view over base's memory
  const RowsView<double> view{base.data(), 37, 16, static_cast<int64_t>(base.strides()[1]),
                              static_cast<int64_t>(base.strides()[0])};
  const Stats s = run(view);
  const xt::xarray<double> sq = xT * xT;
  const xt::xarray<double> norm = xt::sqrt(xt::sum(sq, {1}));
  const xt::xarray<double> max_abs = xt::amax(xt::abs(xT), {1});
  const xt::xarray<double> pr = xt::square(xt::sum(sq, {1})) / xt::sum(sq * sq, {1});
  for (int64_t r = 0; r < 37; ++r) {
    CHECK(s.norm[r] == Approx(norm(r)).epsilon(1e-14));
    CHECK(s.max_abs[r] == max_abs(r));
    CHECK(s.pr[r] == Approx(pr(r)).epsilon(1e-13));
  }
}

TEST_CASE("vec_stats on half inputs accumulates in double and avoids float overflow", "[vec_stats]") {
  // 60000^4 * 128 overflows float32 (3.4e38) but not double; half holds 60000 only approximately.
  const int64_t dim = 128;
  std::vector<spectra::float16_t> x(dim, spectra::float16_t{0x7B53});  // 60000 in binary16
  const float v = spectra::to_float(x[0]);
  REQUIRE(v == 60000.0f);
  const RowsView<spectra::float16_t> view{x.data(), 1, dim, dim, 1};
  const Stats s = run<spectra::float16_t, float>(view);
  CHECK(s.pr[0] == Approx(128.0).epsilon(1e-6));
  CHECK(s.norm[0] == Approx(60000.0 * std::sqrt(128.0)).epsilon(1e-6));
  CHECK(s.max_abs[0] == 60000.0);
}

TEST_CASE("vec_stats computes only the requested row range", "[vec_stats]") {
  const std::vector<double> data{1, 0, 0, 2, 3, 4};
  const RowsView<double> view{data.data(), 3, 2, 2, 1};
  std::vector<double> n(3, -1), m(3, -1), p(3, -1);
  spectra::vec_stats(view, 1, 2, n.data(), m.data(), p.data());
  CHECK(n[0] == -1);
  CHECK(n[1] == 2);
  CHECK(n[2] == -1);
}

TEST_CASE("vec_stats reads rows through a row-offset table", "[vec_stats]") {
  // Rows 0 and 2 of a 3x2 matrix, in reverse order: offsets {4, 0}.
  const std::vector<double> data{3, 4, 9, 9, 1, 0};
  const int64_t offsets[] = {4, 0};
  const RowsView<double> view{data.data(), 2, 2, /*row_stride=*/0, 1, offsets};
  const Stats s = run(view);
  CHECK(s.norm[0] == 1.0);
  CHECK(s.norm[1] == 5.0);
}

TEST_CASE("vec_stats writes each visited row to its logical output index", "[vec_stats]") {
  const std::vector<double> data{3, 4, 9, 9, 1, 0};
  const int64_t offsets[] = {0, 4};   // visit rows 0 and 2 of the buffer in memory order...
  const int64_t out_rows[] = {1, 0};  // ...but they are logical rows 1 and 0
  const RowsView<double> view{data.data(), 2, 2, 0, 1, offsets, out_rows};
  const Stats s = run(view);
  CHECK(s.norm[0] == 1.0);
  CHECK(s.norm[1] == 5.0);
}
