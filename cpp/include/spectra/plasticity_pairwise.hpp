// Pairwise attention plasticity of a key pair under a Gaussian query (see docs/plasticity.md).
//
// For a key difference w = k1 − k2 and a query q ~ N(μ, Σ), the logit gap D = wᵀq is Gaussian with
//   m = wᵀμ,   v = wᵀΣw,   and   p = Pr(q·k1 > q·k2) = Φ(m/√v);
// the pairwise plasticity is PP = 4·p·(1−p) = 4·Var(Bernoulli), in [0, 1].
// PP is computed as 4·Φ(−|z|)·(1 − Φ(−|z|)) with Φ(−|z|) = ½·erfc(|z|/√2), so it keeps full relative
// precision in both tails (4p(1−p) rounds to 0 once p rounds to 1, near z ≈ 8.3).
// Degenerate v ≤ 0 (identical keys, or a direction of zero variance): p = 1, 0 or ½ when m > 0, < 0
// or = 0 (so PP = 0, 0 or 1), the rule the published plasticity method documents. NaN in m or v
// gives NaN p and PP.
// Sums run in double whatever the input type.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>

#include "spectra/scalar_types.hpp"

namespace spectra {

// Φ(z) = Pr(N(0, 1) ≤ z) = ½·erfc(−z/√2). erfc keeps full relative precision for large positive
// arguments, so the lower tail (z → −∞) is accurate down to the underflow of double (z ≈ −38.5).
inline double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::numbers::sqrt2); }

// PP(z) = 4·Φ(z)·Φ(−z), evaluated through the smaller factor Φ(−|z|) ≤ ½ (no cancellation for large
// |z|). Symmetric in z; 1 at z = 0, 0 at ±∞, NaN for NaN.
inline double plasticity_from_z(double z) {
  const double tail = normal_cdf(-std::fabs(z));
  return 4.0 * tail * (1.0 - tail);
}

struct PairPlasticity {
  double p;   // Pr(q·k1 > q·k2)
  double pp;  // 4·p·(1−p)
};

// p and PP from the logit-gap moments m = wᵀμ and v = wᵀΣw, with the v ≤ 0 rule above.
inline PairPlasticity pair_plasticity(double m, double v) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  if (std::isnan(m) || std::isnan(v)) return {nan, nan};
  if (!(v > 0.0)) {
    if (m > 0.0) return {1.0, 0.0};
    if (m < 0.0) return {0.0, 0.0};
    return {0.5, 1.0};
  }
  const double z = m / std::sqrt(v);
  return {normal_cdf(z), plasticity_from_z(z)};
}

// P key differences w (P, d) with the query law's mean and (co)variance; strides are in elements,
// as in PyTorch.
//  - mean: (d) shared by every pair (mean_pair_stride = 0) or (P, d) one per pair;
//  - var: (d) diagonal of Σ (full_covariance = false; var_row_stride unused) or (d, d) full Σ, in
//    which case v = Σ_ij w_i Σ_ij w_j (only the symmetric part of Σ matters).
template <typename T>
struct PlasticityPairsView {
  const T* w;
  int64_t pairs;
  int64_t dim;
  int64_t w_pair_stride;
  int64_t w_col_stride;
  const T* mean;
  int64_t mean_pair_stride;  // 0: one mean for all pairs
  int64_t mean_col_stride;
  const T* var;
  bool full_covariance;
  int64_t var_row_stride;  // full covariance only
  int64_t var_col_stride;
};

// Contiguous (P) float64 outputs.
struct PlasticityOutputs {
  double* m;
  double* v;
  double* p;
  double* pp;
};

// Computes pairs [pair_begin, pair_end) of `x`.
// Instantiated for T in {float, double, float16_t, bfloat16_t}.
template <typename T>
void plasticity_pairwise(const PlasticityPairsView<T>& x, int64_t pair_begin, int64_t pair_end,
                         const PlasticityOutputs& out);

// Index of the first negative variance (the diagonal of Σ when full), or -1 when none is; NaN does
// not count as negative.
template <typename T>
int64_t first_negative_variance(const PlasticityPairsView<T>& x);

}  // namespace spectra
