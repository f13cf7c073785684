#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "spectra/plasticity_pairwise.hpp"

using spectra::PlasticityPairsView;

namespace {

struct Result {
  std::vector<double> m, v, p, pp;
};

template <typename T>
Result run(const PlasticityPairsView<T>& x) {
  Result r{std::vector<double>(x.pairs), std::vector<double>(x.pairs), std::vector<double>(x.pairs),
           std::vector<double>(x.pairs)};
  spectra::plasticity_pairwise(x, 0, x.pairs, {r.m.data(), r.v.data(), r.p.data(), r.pp.data()});
  return r;
}

// Contiguous w (P, d), shared mean (d) or per-pair mean (P, d), diagonal (d) or full (d, d) var.
template <typename T>
PlasticityPairsView<T> view(const std::vector<T>& w, int64_t dim, const std::vector<T>& mean,
                            const std::vector<T>& var) {
  const int64_t pairs = static_cast<int64_t>(w.size()) / dim;
  const bool per_pair = static_cast<int64_t>(mean.size()) != dim;
  const bool full = static_cast<int64_t>(var.size()) != dim;
  return {w.data(), pairs, dim, dim, 1, mean.data(), per_pair ? dim : 0, 1, var.data(), full, full ? dim : 0, 1};
}

// Φ(−z) for the tail checks, from mpmath at 40 digits.
constexpr double kPhiMinus10 = 7.619853024160526066e-24;
constexpr double kPhiMinus30 = 4.9067139271481870595e-198;

}  // namespace

TEST_CASE("plasticity_from_z matches tabulated values of 4·Φ(z)·Φ(−z)", "[plasticity_pairwise]") {
  CHECK(spectra::plasticity_from_z(0.0) == 1.0);
  CHECK(spectra::plasticity_from_z(0.5) == Approx(0.853369).margin(1e-6));
  CHECK(spectra::plasticity_from_z(1.0) == Approx(0.533935).margin(1e-6));
  CHECK(spectra::plasticity_from_z(2.0) == Approx(0.088930).margin(1e-6));
  CHECK(spectra::plasticity_from_z(3.0) == Approx(0.005392).margin(1e-6));
  // And to full precision (mpmath).
  CHECK(spectra::plasticity_from_z(1.0) == Approx(0.53393505732560773298).epsilon(1e-14));
  CHECK(spectra::plasticity_from_z(3.0) == Approx(0.0053923032277371828919).epsilon(1e-14));
}

TEST_CASE("normal_cdf is Φ in both tails", "[plasticity_pairwise]") {
  CHECK(spectra::normal_cdf(0.0) == 0.5);
  CHECK(spectra::normal_cdf(1.0) == Approx(1.0 - 0.15865525393145705141).epsilon(1e-15));
  CHECK(spectra::normal_cdf(-1.0) == Approx(0.15865525393145705141).epsilon(1e-15));
  CHECK(spectra::normal_cdf(-10.0) == Approx(kPhiMinus10).epsilon(1e-13));
  CHECK(spectra::normal_cdf(-30.0) == Approx(kPhiMinus30).epsilon(1e-12));
  CHECK(spectra::normal_cdf(std::numeric_limits<double>::infinity()) == 1.0);
  CHECK(spectra::normal_cdf(-std::numeric_limits<double>::infinity()) == 0.0);
}

TEST_CASE("plasticity_from_z is symmetric in z", "[plasticity_pairwise]") {
  for (double z : {0.1, 0.5, 1.0, 2.5, 5.0, 8.3, 12.0, 30.0}) {
    CHECK(spectra::plasticity_from_z(z) == spectra::plasticity_from_z(-z));
  }
}

TEST_CASE("plasticity_from_z keeps precision for large |z|", "[plasticity_pairwise]") {
  // 4p(1−p) with p = Φ(10) is exactly 0 in double; the stable form is not.
  const double p = spectra::normal_cdf(10.0);
  CHECK(4.0 * p * (1.0 - p) == 0.0);
  const double pp10 = spectra::plasticity_from_z(10.0);
  CHECK(pp10 > 0.0);
  CHECK(pp10 == Approx(4.0 * kPhiMinus10).epsilon(1e-13));
  CHECK(pp10 == Approx(3.0479412096642104264e-23).epsilon(1e-13));
  const double pp30 = spectra::plasticity_from_z(-30.0);
  CHECK(pp30 > 0.0);
  CHECK(pp30 == Approx(4.0 * kPhiMinus30).epsilon(1e-12));
  CHECK(spectra::plasticity_from_z(std::numeric_limits<double>::infinity()) == 0.0);
  CHECK(std::isnan(spectra::plasticity_from_z(std::numeric_limits<double>::quiet_NaN())));
}

TEST_CASE("pair_plasticity: the v <= 0 rule and NaN", "[plasticity_pairwise]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double v : {0.0, -1e-18}) {
    const auto pos = spectra::pair_plasticity(0.3, v);
    CHECK(pos.p == 1.0);
    CHECK(pos.pp == 0.0);
    const auto neg = spectra::pair_plasticity(-0.3, v);
    CHECK(neg.p == 0.0);
    CHECK(neg.pp == 0.0);
    const auto tie = spectra::pair_plasticity(0.0, v);
    CHECK(tie.p == 0.5);
    CHECK(tie.pp == 1.0);
  }
  for (auto r : {spectra::pair_plasticity(nan, 1.0), spectra::pair_plasticity(1.0, nan), spectra::pair_plasticity(nan, 0.0)}) {
    CHECK(std::isnan(r.p));
    CHECK(std::isnan(r.pp));
  }
}

TEST_CASE("plasticity_pairwise: the published tool's expected-value test cell", "[plasticity_pairwise]") {
  // μ(τ = 1) = 1, keys ±1 (w = 2), σ² = 1: m = 2, v = 4, z = 1.
  const std::vector<double> w{2.0}, mean{1.0}, var{1.0};
  const Result r = run(view(w, 1, mean, var));
  CHECK(r.m[0] == 2.0);
  CHECK(r.v[0] == 4.0);
  CHECK(r.p[0] == Approx(1.0 - 0.15865525393145705141).epsilon(1e-15));
  CHECK(r.pp[0] == Approx(0.533935).margin(1e-6));
  // Swapping the keys flips z and p but not PP.
  const std::vector<double> w_swapped{-2.0};
  const Result s = run(view(w_swapped, 1, mean, var));
  CHECK(s.p[0] == Approx(0.15865525393145705141).epsilon(1e-15));
  CHECK(s.pp[0] == r.pp[0]);
}

TEST_CASE("plasticity_pairwise: identical keys and zero-variance directions follow the v = 0 rule",
          "[plasticity_pairwise]") {
  // Pair 0: w = 0 (m = 0, v = 0) -> PP = 1. Pairs 1, 2: w along the zero-variance axis 1, m = ±0.5.
  const std::vector<double> w{0, 0, 0, 1, 0, -1}, mean{0.5, 0.5}, var{2.0, 0.0};
  const Result r = run(view(w, 2, mean, var));
  CHECK(r.v == std::vector<double>{0.0, 0.0, 0.0});
  CHECK(r.p == std::vector<double>{0.5, 1.0, 0.0});
  CHECK(r.pp == std::vector<double>{1.0, 0.0, 0.0});
}

TEST_CASE("plasticity_pairwise: a NaN input gives NaN for that pair only", "[plasticity_pairwise]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> w{1, nan, 1, 1}, mean{0.5, 0.5}, var{1.0, 1.0};
  const Result r = run(view(w, 2, mean, var));
  CHECK(std::isnan(r.m[0]));
  CHECK(std::isnan(r.p[0]));
  CHECK(std::isnan(r.pp[0]));
  CHECK(r.m[1] == 1.0);
  CHECK(r.v[1] == 2.0);
  CHECK(r.pp[1] == spectra::plasticity_from_z(1.0 / std::sqrt(2.0)));
}

TEST_CASE("plasticity_pairwise: full and diagonal covariance agree when Σ is diagonal", "[plasticity_pairwise]") {
  const int64_t pairs = 37, dim = 11;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> gauss;
  std::vector<double> w(pairs * dim), mean(pairs * dim), diag(dim), full(dim * dim, 0.0);
  for (auto& x : w) x = gauss(rng);
  for (auto& x : mean) x = gauss(rng);
  for (int64_t d = 0; d < dim; ++d) full[d * dim + d] = diag[d] = 0.1 + std::fabs(gauss(rng));
  const Result a = run(view(w, dim, mean, diag));
  const Result b = run(view(w, dim, mean, full));
  for (int64_t k = 0; k < pairs; ++k) {
    CHECK(a.m[k] == b.m[k]);
    CHECK(a.v[k] == Approx(b.v[k]).epsilon(1e-14));
    CHECK(a.p[k] == Approx(b.p[k]).epsilon(1e-13));
    CHECK(a.pp[k] == Approx(b.pp[k]).epsilon(1e-13));
  }
}

TEST_CASE("plasticity_pairwise agrees with a naive loop (per-pair mean, full Σ, strided, float input)",
          "[plasticity_pairwise]") {
  const int64_t pairs = 9, dim = 6;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> gauss;
  // w stored transposed (d, P): column stride P, pair stride 1. Σ = A Aᵀ stored transposed (same).
  std::vector<float> w_t(dim * pairs), mean(pairs * dim), a(dim * dim), cov(dim * dim, 0.0f);
  for (auto& x : w_t) x = gauss(rng);
  for (auto& x : mean) x = gauss(rng);
  for (auto& x : a) x = gauss(rng);
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t j = 0; j < dim; ++j)
      for (int64_t k = 0; k < dim; ++k) cov[i * dim + j] += a[i * dim + k] * a[j * dim + k];
  const PlasticityPairsView<float> x{w_t.data(), pairs, dim, 1, pairs, mean.data(), dim, 1, cov.data(), true, 1, dim};
  const Result r = run(x);
  for (int64_t k = 0; k < pairs; ++k) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < dim; ++i) {
      m += double(w_t[i * pairs + k]) * mean[k * dim + i];
      for (int64_t j = 0; j < dim; ++j) v += double(w_t[i * pairs + k]) * cov[j * dim + i] * w_t[j * pairs + k];
    }
    CHECK(r.m[k] == Approx(m).epsilon(1e-12).margin(1e-12));
    CHECK(r.v[k] == Approx(v).epsilon(1e-12));
    const double z = m / std::sqrt(v);
    CHECK(r.p[k] == Approx(0.5 * std::erfc(-z / std::sqrt(2.0))).epsilon(1e-12));
    CHECK(r.pp[k] == Approx(4.0 * spectra::normal_cdf(z) * spectra::normal_cdf(-z)).epsilon(1e-12));
  }
}

TEST_CASE("plasticity_pairwise on half inputs reads them exactly and accumulates in double", "[plasticity_pairwise]") {
  const std::vector<spectra::bfloat16_t> w{spectra::to_bfloat16(3.0f), spectra::to_bfloat16(-1.0f)};
  const std::vector<spectra::bfloat16_t> mean{spectra::to_bfloat16(0.5f), spectra::to_bfloat16(0.25f)};
  const std::vector<spectra::bfloat16_t> var{spectra::to_bfloat16(2.0f), spectra::to_bfloat16(4.0f)};
  const Result r = run(view(w, 2, mean, var));
  CHECK(r.m[0] == 1.25);
  CHECK(r.v[0] == 22.0);
  CHECK(r.pp[0] == spectra::plasticity_from_z(1.25 / std::sqrt(22.0)));
}

TEST_CASE("plasticity_pairwise computes only the requested pair range", "[plasticity_pairwise]") {
  const std::vector<double> w{1, 2, 3}, mean{1.0}, var{1.0};
  const PlasticityPairsView<double> x = view(w, 1, mean, var);
  std::vector<double> m(3, -1), v(3, -1), p(3, -1), pp(3, -1);
  spectra::plasticity_pairwise(x, 1, 2, {m.data(), v.data(), p.data(), pp.data()});
  CHECK(m == std::vector<double>{-1, 2, -1});
  CHECK(v == std::vector<double>{-1, 4, -1});
}

TEST_CASE("first_negative_variance finds a negative diagonal entry, ignoring off-diagonals and NaN",
          "[plasticity_pairwise]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> w{1, 1}, mean{0, 0};
  CHECK(spectra::first_negative_variance(view(w, 2, mean, std::vector<double>{1.0, 2.0})) == -1);
  CHECK(spectra::first_negative_variance(view(w, 2, mean, std::vector<double>{nan, -2.0})) == 1);
  const std::vector<double> full_ok{1.0, -0.5, -0.5, 1.0}, full_bad{1.0, 0.0, 0.0, -1e-3};
  CHECK(spectra::first_negative_variance(view(w, 2, mean, full_ok)) == -1);
  CHECK(spectra::first_negative_variance(view(w, 2, mean, full_bad)) == 1);
}
