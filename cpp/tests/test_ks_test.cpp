#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "spectra/ks_test.hpp"

namespace {

struct Case {
  int64_t n;
  double d;
  double expected;
};

// Relative 1e-10; zeros (the underflow cut-offs) must be exact.
void check_cases(const std::vector<Case>& cases, double (*f)(int64_t, double)) {
  for (const Case& c : cases) {
    CAPTURE(c.n, c.d, c.expected);
    const double got = f(c.n, c.d);
    if (c.expected == 0.0) {
      CHECK(got == 0.0);
    } else {
      CHECK(got == Approx(c.expected).epsilon(1e-10).margin(0.0));
    }
  }
}

}  // namespace

// Reference values: scipy 1.17.1, scipy.stats.kstwo.sf(d, n). The comment names the _kolmogn
// branch each one exercises (t = n·d, nx² = n·d²).
TEST_CASE("kolmogorov_sf matches scipy kstwo.sf in every branch", "[ks_test]") {
  const std::vector<Case> cases = {
      // n = 1: t ≤ 0.5 gives 1, then Ruben–Gambino 2 − 2d.
      {1, 1.0000000000000001e-09, 1},
      {1, 0.29999999999999999, 1},
      {1, 0.69999999999999996, 0.60000000000000009},
      // n = 5: t ≤ 0.5, Ruben–Gambino product, DMTW, Pomeranz, d ≥ ½ (2·smirnov), t ≥ n − 1.
      {5, 0.050000000000000003, 1},
      {5, 0.14999999999999999, 0.99880000000000002},
      {5, 0.29999999999999999, 0.66400000000000003},
      {5, 0.45000000000000001, 0.19399374999999963},
      {5, 0.59999999999999998, 0.03008000000000001},
      {5, 0.84999999999999998, 0.0001518750000000001},
      // n = 50: adds Miller's 2·smirnov for nx² > 4.
      {50, 0.01, 1},
      {50, 0.014999999999999999, 1},
      {50, 0.10000000000000001, 0.66231127046581861},    // DMTW
      {50, 0.20000000000000001, 0.031438777769532411},   // Pomeranz
      {50, 0.34999999999999998, 5.5735235148031851e-06},  // Miller
      {50, 0.59999999999999998, 9.6340704561423735e-18},  // exact 2·smirnov
      {50, 0.98499999999999999, 1.2752430004281557e-91},  // Ruben–Gambino, t ≥ n − 1
      // n = 140, the last small n.
      {140, 0.070000000000000007, 0.47762282879465767},   // DMTW
      {140, 0.10000000000000001, 0.11353657290090946},    // Pomeranz
      {140, 0.20000000000000001, 2.1981563302200222e-05},  // Miller
      // n = 141, the first large n.
      {141, 0.0050000000000000001, 1},                   // Ruben–Gambino via Stirling
      {141, 0.040000000000000001, 0.97106822690131833},  // DMTW (n·d^1.5 ≤ 1.4)
      {141, 0.050000000000000003, 0.85484569300966295},  // Pelz–Good
      {141, 0.13, 0.015449346308454497},                 // 2·smirnov, nx² ≥ 2.2
      {141, 0.14999999999999999, 0.0031058623613645147},
      // n = 1000.
      {1000, 0.0030000000000000001, 1},                     // DMTW
      {1000, 0.012500000000000001, 0.99715280205979084},    // DMTW at its n·d^1.5 edge
      {1000, 0.02, 0.81089716568955772},                    // Pelz–Good
      {1000, 0.050000000000000003, 0.013012074781090332},   // 2·smirnov
      {1000, 0.10000000000000001, 3.7036870968177108e-09},  // 2·smirnov
      {1000, 0.55000000000000004, 1.3562992367912131e-284},  // d ≥ ½
      {1000, 0.60999999999999999, 0},                        // d ≥ ½, smirnov's underflow cut
      // n = 8000, the diagnostics' typical sample size.
      {8000, 1.0000000000000001e-05, 1},
      {8000, 0.0001, 1},                                       // Ruben–Gambino via Stirling
      {8000, 0.002, 0.99999999999999944},                      // DMTW
      {8000, 0.0030000000000000001, 0.9999995768142198},       // DMTW
      {8000, 0.0050000000000000001, 0.98770280106567654},      // Pelz–Good
      {8000, 0.01, 0.39788001231862979},                       // Pelz–Good
      {8000, 0.02, 0.003277812972787873},                      // 2·smirnov
      {8000, 0.050000000000000003, 8.0460398843641115e-18},    // 2·smirnov
      {8000, 0.20000000000000001, 5.9832904412329171e-281},    // 2·smirnov, deep tail
      {8000, 0.22, 0},                                         // nx² ≥ 370
      // Around n = 100000, the DMTW limit.
      {100000, 0.00040000000000000002, 1},
      {100000, 0.00058, 0.999999999999998},                    // DMTW, 115×115 matrix
      {100000, 0.00059999999999999995, 0.99999999999997913},   // Pelz–Good
      {100001, 0.00050000000000000001, 1},                     // Pelz–Good (n > 100000)
      {100001, 0.0030000000000000001, 0.32845050055711633},    // Pelz–Good
      {100001, 0.01, 4.0924594316146085e-09},                  // 2·smirnov
      // n = 200000.
      {200000, 0.001, 0.98815002088557291},                    // Pelz–Good
      {200000, 0.0040000000000000001, 0.0033142128225602551},  // 2·smirnov
      {200000, 0.040000000000000001, 1.7473221725261057e-278},  // 2·smirnov, deep tail
      {200000, 0.043099999999999999, 0},                        // nx² ≥ 370
  };
  check_cases(cases, spectra::kolmogorov_sf);
}

TEST_CASE("kolmogorov_sf edge arguments", "[ks_test]") {
  CHECK(spectra::kolmogorov_sf(10, 0.0) == 1.0);
  CHECK(spectra::kolmogorov_sf(10, -0.5) == 1.0);
  CHECK(spectra::kolmogorov_sf(10, 1.0) == 0.0);
  CHECK(spectra::kolmogorov_sf(10, 2.0) == 0.0);
  CHECK(std::isnan(spectra::kolmogorov_sf(10, std::numeric_limits<double>::quiet_NaN())));
  CHECK(std::isnan(spectra::kolmogorov_sf(0, 0.1)));
  CHECK(std::isnan(spectra::kolmogorov_sf(-3, 0.1)));
}

TEST_CASE("kolmogorov_sf is monotone across branch boundaries", "[ks_test]") {
  for (int64_t n : {5, 50, 140, 141, 1000, 8000, 100001}) {
    CAPTURE(n);
    double prev = 1.0;
    for (int i = 1; i < 400; ++i) {
      const double d = std::pow(10.0, -5.0 + 5.0 * i / 400.0);
      const double sf = spectra::kolmogorov_sf(n, d);
      CAPTURE(d, sf, prev);
      REQUIRE(sf >= 0.0);
      // Neighbouring methods agree to far better than this; a branch mix-up would not.
      REQUIRE(sf <= prev * (1 + 1e-9) + 1e-15);
      prev = sf;
    }
  }
}

// Reference values: scipy 1.17.1, scipy.special.smirnov(n, d).
TEST_CASE("smirnov_sf matches scipy special.smirnov", "[ks_test]") {
  const std::vector<Case> cases = {
      {1, 0.29999999999999999, 0.69999999999999996},
      {10, 0.050000000000000003, 0.92243358920107421},         // d ≤ 1/n
      {10, 0.14999999999999999, 0.58312771449619138},          // upper sum
      {10, 0.94999999999999996, 9.7656250000000862e-14},       // d ≥ 1 − 1/n
      {20, 0.5, 1.8937976202695159e-05},                       // n·d an integer
      {50, 0.29999999999999999, 8.6766301013593692e-05},
      {141, 0.20000000000000001, 1.0138392111988456e-05},      // every term
      {8000, 0.00029999999999999997, 0.99836181447626771},     // upper sum, large n
      {8000, 0.02, 0.0016389064863939365},                     // trapezoid over the terms
      {200000, 0.0040000000000000001, 0.0016571064112801276},
      {200000, 0.040000000000000001, 8.7366108626305285e-279},
      {2000000, 0.001, 0.018303432023617325},                  // n > 10^6 approximation
  };
  check_cases(cases, spectra::smirnov_sf);
  CHECK(spectra::smirnov_sf(7, 0.0) == 1.0);
  CHECK(spectra::smirnov_sf(7, 1.0) == 0.0);
  CHECK(std::isnan(spectra::smirnov_sf(7, 1.5)));
  CHECK(std::isnan(spectra::smirnov_sf(0, 0.5)));
}

TEST_CASE("ks_normal_statistic on a hand-checkable sample", "[ks_test]") {
  // Sorted {−1, 0, 1}: Φ = {0.158655…, ½, 0.841344…}; the largest gap is 1/3 − Φ(−1) (and, by
  // symmetry, Φ(1) − 2/3).
  const double phi_minus_1 = 0.15865525393145705141;  // mpmath
  const std::vector<double> x = {1.0, -1.0, 0.0};
  std::vector<double> scratch(x.size());
  const double d = spectra::ks_normal_statistic(x.data(), 3, scratch.data());
  CHECK(d == Approx(1.0 / 3.0 - phi_minus_1).epsilon(1e-15));
  CHECK(x == std::vector<double>{1.0, -1.0, 0.0});  // input untouched

  // One observation at the median: D = ½, and Pr(D_1 ≥ ½) = 1.
  const double zero = 0.0;
  double one_scratch;
  const spectra::KsResult r1 = spectra::ks_normal_test(&zero, 1, &one_scratch);
  CHECK(r1.statistic == 0.5);
  CHECK(r1.pvalue == 1.0);
}

// scipy 1.17.1: stats.ks_1samp(x, stats.norm.cdf).
TEST_CASE("ks_normal_test matches scipy ks_1samp", "[ks_test]") {
  {
    // Sorted {−2, 0, ½, 3/2}: Φ = {0.02275, ½, 0.69146, 0.93319}; D = D⁻ = Φ(0) − 1/4 = ¼.
    const std::vector<double> x = {0.5, -2.0, 1.5, 0.0};
    std::vector<double> scratch(x.size());
    const spectra::KsResult r = spectra::ks_normal_test(x.data(), 4, scratch.data());
    CHECK(r.statistic == Approx(0.25).epsilon(1e-15));
    CHECK(r.pvalue == Approx(0.90625).epsilon(1e-12));
  }
  {
    const std::vector<double> x = {-1.0, 0.0, 1.0};
    std::vector<double> scratch(x.size());
    const spectra::KsResult r = spectra::ks_normal_test(x.data(), 3, scratch.data());
    CHECK(r.statistic == Approx(0.1746780794018763).epsilon(1e-14));
    CHECK(r.pvalue == Approx(0.9999753186701124).epsilon(1e-10));
  }
}

TEST_CASE("ks_normal_test with NaN or no data", "[ks_test]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> x = {0.1, nan, -0.3};
  std::vector<double> scratch(x.size());
  const spectra::KsResult r = spectra::ks_normal_test(x.data(), 3, scratch.data());
  CHECK(std::isnan(r.statistic));
  CHECK(std::isnan(r.pvalue));
  const spectra::KsResult empty = spectra::ks_normal_test(nullptr, 0, nullptr);
  CHECK(std::isnan(empty.statistic));
  CHECK(std::isnan(empty.pvalue));
}
