// Two-sided one-sample Kolmogorov–Smirnov test against N(0, 1), native and without PyTorch, so the
// per-head normality diagnostics need no SciPy at run time.
//
// kolmogorov_sf(n, d) = Pr(D_n ≥ d) equals scipy.stats.kstwo.sf(d, n): it follows the branches of
// SciPy's scipy/stats/_ksstats.py::_kolmogn(n, x, cdf=False), the algorithm selection of
//   Simard R, L'Ecuyer P (2011), "Computing the Two-Sided Kolmogorov–Smirnov Distribution",
//   J. Stat. Softw. 39(11),
// with its methods: the Ruben–Gambino closed forms near d = 1/(2n) and d = 1 − 1/n; Durbin's matrix
// (Durbin 1968) in the Marsaglia–Tsang–Wang form (J. Stat. Softw. 8(18), 2003, "DMTW"); the
// Pomeranz recursion (CACM 17(12), 1974); the Pelz–Good expansion (JRSS B 38(2), 1976); and
// 2·smirnov(n, d), which is exact for d ≥ ½ and Miller's approximation below.
//
// smirnov_sf(n, d) = Pr(D_n⁺ ≥ d) equals scipy.special.smirnov (xsf's cephes/kolmogorov.h): the
// Birnbaum–Tingey sum Σ_v C(n, v)·d·(d + v/n)^(v−1)·(1 − d − v/n)^(n−v) with SciPy's special
// cases. SciPy sums every term in double-double (≈ 10 ms at n = 8000); here the terms come from
// their logarithm, and for large n the sum is taken over every h-th term times h (the trapezoid
// rule, exact to double precision for a smooth bell many terms wide) — see ks_test.cpp.
//
// The sample statistic is ks_1samp's: with x sorted, D = max(Dplus, Dminus), Dplus = max_i(i/N −
// Φ(x_i)), Dminus = max_i(Φ(x_i) − (i−1)/N), and Φ(x) = ½·erfc(−x/√2). SciPy's norm.cdf uses ndtr,
// which can differ from that Φ in the last bit, so D can differ by an ulp.
#pragma once

#include <cstdint>

namespace spectra {

// Pr(D_n ≥ d) for the two-sided statistic of n ≥ 1 samples; 1 for d ≤ 0, 0 for d ≥ 1, NaN for NaN d
// or n ≤ 0.
double kolmogorov_sf(int64_t n, double d);

// Pr(D_n⁺ ≥ d) for the one-sided statistic; NaN outside n ≥ 1, 0 ≤ d ≤ 1.
double smirnov_sf(int64_t n, double d);

// D of x[0..n) against N(0, 1). `scratch` holds n doubles (the sorted copy; x is left untouched).
// NaN when n == 0 or any x is NaN.
double ks_normal_statistic(const double* x, int64_t n, double* scratch);

struct KsResult {
  double statistic;
  double pvalue;
};

// statistic = ks_normal_statistic(x, n, scratch), pvalue = kolmogorov_sf(n, statistic).
KsResult ks_normal_test(const double* x, int64_t n, double* scratch);

}  // namespace spectra
