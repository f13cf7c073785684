#include "spectra/plasticity_pairwise.hpp"

#include <vector>

namespace spectra {
namespace {

// Independent partial sums, so the compiler can keep them in SIMD lanes; the order is fixed, so
// results do not depend on threading.
constexpr int64_t kLanes = 4;

template <typename T>
double load(const T* x) {
  return static_cast<double>(to_float(*x));
}

// Σ_j a_j·b_j for a strided row `a` of T and contiguous doubles `b`.
template <bool kContiguous, typename T>
double dot(const T* a, int64_t strided_step, const double* b, int64_t n) {
  const int64_t step = kContiguous ? 1 : strided_step;
  double lanes[kLanes] = {};
  const int64_t body = n - n % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += load(a + (j + l) * step) * b[j + l];
  }
  for (int64_t j = body; j < n; ++j) lanes[0] += load(a + j * step) * b[j];
  double sum = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// wᵀΣw with Σ (d, d) read through its strides; `w` is the pair's difference in double.
template <typename T>
double quadratic_form(const PlasticityPairsView<T>& x, const double* w) {
  double lanes[kLanes] = {};
  for (int64_t i = 0; i < x.dim; ++i) {
    const T* row = x.var + i * x.var_row_stride;
    const double row_dot = x.var_col_stride == 1 ? dot<true>(row, 1, w, x.dim) : dot<false>(row, x.var_col_stride, w, x.dim);
    lanes[i % kLanes] += w[i] * row_dot;
  }
  double sum = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

}  // namespace

template <typename T>
void plasticity_pairwise(const PlasticityPairsView<T>& x, int64_t pair_begin, int64_t pair_end,
                         const PlasticityOutputs& out) {
  std::vector<double> w(static_cast<size_t>(x.dim));
  for (int64_t k = pair_begin; k < pair_end; ++k) {
    const T* w_row = x.w + k * x.w_pair_stride;
    const T* mean = x.mean + k * x.mean_pair_stride;
    for (int64_t d = 0; d < x.dim; ++d) w[d] = load(w_row + d * x.w_col_stride);
    const double m = x.mean_col_stride == 1 ? dot<true>(mean, 1, w.data(), x.dim)
                                            : dot<false>(mean, x.mean_col_stride, w.data(), x.dim);
    double v;
    if (x.full_covariance) {
      v = quadratic_form(x, w.data());
    } else {
      double lanes[kLanes] = {};
      for (int64_t d = 0; d < x.dim; ++d) lanes[d % kLanes] += w[d] * w[d] * load(x.var + d * x.var_col_stride);
      v = 0.0;
      for (int64_t l = 0; l < kLanes; ++l) v += lanes[l];
    }
    const PairPlasticity r = pair_plasticity(m, v);
    out.m[k] = m;
    out.v[k] = v;
    out.p[k] = r.p;
    out.pp[k] = r.pp;
  }
}

template <typename T>
int64_t first_negative_variance(const PlasticityPairsView<T>& x) {
  const int64_t diagonal_step = x.full_covariance ? x.var_row_stride + x.var_col_stride : x.var_col_stride;
  for (int64_t d = 0; d < x.dim; ++d) {
    if (load(x.var + d * diagonal_step) < 0.0) return d;
  }
  return -1;
}

#define SPECTRA_INSTANTIATE_PLASTICITY(T)                                                                   \
  template void plasticity_pairwise<T>(const PlasticityPairsView<T>&, int64_t, int64_t, const PlasticityOutputs&); \
  template int64_t first_negative_variance<T>(const PlasticityPairsView<T>&);

SPECTRA_INSTANTIATE_PLASTICITY(float)
SPECTRA_INSTANTIATE_PLASTICITY(double)
SPECTRA_INSTANTIATE_PLASTICITY(float16_t)
SPECTRA_INSTANTIATE_PLASTICITY(bfloat16_t)

#undef SPECTRA_INSTANTIATE_PLASTICITY

}  // namespace spectra
