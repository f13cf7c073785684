#include "spectra/qk_geometry.hpp"

#include <Eigen/Eigenvalues>
#include <unsupported/Eigen/FFT>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace spectra {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct PlaneRotation {
  double omega, coherence;
};

// Pearson correlation from a covariance and two variances; 0 when either variance is not positive
// (the reference tool's rule for a constant side).
double correlation(double cov, double var_x, double var_t) {
  return var_x > 0.0 && var_t > 0.0 ? cov / std::sqrt(var_x * var_t) : 0.0;
}

// Population covariance of the rows and their mean, from the Gram matrix XᵀX (one matrix product,
// no centred copy; float64 keeps the μμᵀ subtraction exact enough for activations of order 1–100).
Eigen::MatrixXd covariance(const Eigen::Ref<const RowMatrix>& x, const double* given_gram, Eigen::VectorXd& mean) {
  const double n = static_cast<double>(x.rows());
  mean = x.colwise().sum().transpose() / n;
  Eigen::MatrixXd gram(x.cols(), x.cols());
  if (given_gram != nullptr) {
    gram = Eigen::Map<const RowMatrix>(given_gram, x.cols(), x.cols());
  } else {
    gram.setZero();
    gram.selfadjointView<Eigen::Lower>().rankUpdate(x.transpose());
    gram.triangularView<Eigen::StrictlyUpper>() = gram.transpose();
  }
  gram /= n;
  gram.noalias() -= mean * mean.transpose();
  return gram;
}

// Training accuracy of the equal-prior linear discriminant between the Q rows' and the K rows'
// coordinates zq (n_q × m) and zk (n_k × m), m small: w = S_w⁻¹(μ_Q − μ_K) with S_w = ½(S_Q + S_K)
// (population covariances), a row is called Q when wᵀz exceeds wᵀ(μ_Q + μ_K)/2.
double discriminant_accuracy(const Eigen::Ref<const Eigen::MatrixXd>& zq, const Eigen::Ref<const Eigen::MatrixXd>& zk) {
  const Eigen::RowVectorXd mq = zq.colwise().mean(), mk = zk.colwise().mean();
  const Eigen::MatrixXd cq = zq.rowwise() - mq, ck = zk.rowwise() - mk;
  const Eigen::MatrixXd within = 0.5 * (cq.transpose() * cq / static_cast<double>(zq.rows()) +
                                        ck.transpose() * ck / static_cast<double>(zk.rows()));
  const Eigen::VectorXd gap = (mq - mk).transpose();
  // The pseudo-inverse keeps a degenerate direction (zero within-kind variance) from blowing up.
  const Eigen::VectorXd w = within.completeOrthogonalDecomposition().solve(gap);
  const double threshold = 0.5 * w.dot((mq + mk).transpose());
  const Eigen::ArrayXd sq = (zq * w).array(), sk = (zk * w).array();
  const double right = static_cast<double>((sq > threshold).count() + (sk <= threshold).count());
  return right / static_cast<double>(zq.rows() + zk.rows());
}

// How well the angles θ of a plane's rows turn with position at one rate: the phase coherence
// R(ω) = |Σ_j u_j e^{−iωt_j}| / Σ_j |u_j| with u_j = e^{iθ_j} − mean(e^{iθ}) (removing the mean keeps
// a plane whose angles merely cluster from looking like a rotation), maximised over ω ≠ 0. A
// perfect rotation θ = ωt + φ gives R = 1; angles unrelated to position give about sqrt(ln M / n).
// The search is one FFT of the u_j binned by (integer, rounded) position, zero-padded to M >= 2T,
// then a golden-section refinement between the neighbours of the best bin. The direction of turn
// depends on the sign of the plane's basis vectors, so |ω| is reported (radians per token).
// The rows' plane coordinates come as zq (n_q × 2) and zk (n_k × 2), positions t as [t_q; t_k];
// e^{iθ} = z / |z| needs no trigonometry (θ = 0 at the origin, as atan2(0, 0)).
PlaneRotation rotation_frequency(const Eigen::Ref<const Eigen::MatrixXd>& zq, const Eigen::Ref<const Eigen::MatrixXd>& zk,
                                 const Eigen::ArrayXd& t) {
  using Complex = std::complex<double>;
  const int64_t nq = zq.rows(), n = nq + zk.rows();
  std::vector<Complex> u(n);
  Complex mean(0.0, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    const double x = j < nq ? zq(j, 0) : zk(j - nq, 0), y = j < nq ? zq(j, 1) : zk(j - nq, 1);
    const double r = std::sqrt(x * x + y * y);
    mean += (u[j] = r > 0.0 ? Complex(x / r, y / r) : Complex(1.0, 0.0));
  }
  mean /= static_cast<double>(n);
  double norm = 0.0;
  for (auto& x : u) {
    x -= mean;
    norm += std::sqrt(std::norm(x));
  }
  if (!(norm > 0.0)) return {kNaN, 0.0};
  const double t_min = t.minCoeff();
  std::vector<int64_t> slot(n);
  int64_t span = 1;
  for (int64_t j = 0; j < n; ++j) span = std::max(span, (slot[j] = std::llround(t(j) - t_min)) + 1);
  int64_t m = 64;
  while (m < 2 * span) m *= 2;
  std::vector<Complex> binned(m, Complex(0.0, 0.0)), spectrum;
  for (int64_t j = 0; j < n; ++j) binned[slot[j]] += u[j];
  Eigen::FFT<double> fft;
  fft.fwd(spectrum, binned);  // spectrum[k] = Σ_p binned[p] e^{−2πi kp/m}
  int64_t best = 1;
  for (int64_t k = 2; k < m; ++k)
    if (std::norm(spectrum[k]) > std::norm(spectrum[best])) best = k;
  const double step = 2.0 * std::numbers::pi / static_cast<double>(m);
  // The refinement evaluates R(ω) on the binned sums, not the rows: by the recurrence
  // e^{−iω(p+1)} = e^{−iωp}·e^{−iω} over a dense span, or one polar per occupied slot when sparse.
  std::vector<int64_t> occupied;
  for (int64_t p = 0; p < span; ++p)
    if (binned[p] != Complex(0.0, 0.0)) occupied.push_back(p);
  const bool dense = 4 * static_cast<int64_t>(occupied.size()) >= span;
  // Real arithmetic: std::complex's operator* goes through the NaN-checking __muldc3 (no -ffast-math).
  auto coherence = [&](double omega) {
    double re = 0.0, im = 0.0;
    if (dense) {
      const double c = std::cos(omega), sn = -std::sin(omega);
      double pr = 1.0, pi = 0.0;
      for (int64_t p = 0; p < span; ++p) {
        const double br = binned[p].real(), bi = binned[p].imag();
        re += br * pr - bi * pi;
        im += br * pi + bi * pr;
        const double next = pr * c - pi * sn;
        pi = pr * sn + pi * c;
        pr = next;
      }
    } else {
      for (const int64_t p : occupied) {
        const double angle = -omega * static_cast<double>(p), c = std::cos(angle), sn = std::sin(angle);
        re += binned[p].real() * c - binned[p].imag() * sn;
        im += binned[p].real() * sn + binned[p].imag() * c;
      }
    }
    return std::sqrt(re * re + im * im);
  };
  const double centre = (best <= m / 2 ? best : best - m) * step;
  double lo = centre - step, hi = centre + step;
  const double golden = 0.5 * (std::sqrt(5.0) - 1.0);
  double x1 = hi - golden * (hi - lo), x2 = lo + golden * (hi - lo), f1 = coherence(x1), f2 = coherence(x2);
  for (int iteration = 0; iteration < 30; ++iteration) {  // shrinks the bracket to 1e-6 of a bin
    if (f1 > f2) {
      hi = x2, x2 = x1, f2 = f1, x1 = hi - golden * (hi - lo), f1 = coherence(x1);
    } else {
      lo = x1, x1 = x2, f1 = f2, x2 = lo + golden * (hi - lo), f2 = coherence(x2);
    }
  }
  const double at_bin = std::abs(spectrum[best]);
  const double refined = std::max(f1, f2);
  const double omega = refined >= at_bin ? (f1 > f2 ? x1 : x2) : centre;
  return {std::abs(omega), std::min(1.0, std::max(refined, at_bin) / norm)};
}

void check(const QKRows& rows) {
  if (rows.q.rows() < 2 || rows.k.rows() < 2)
    throw std::invalid_argument("q and k need at least 2 rows each");
  if (rows.q.cols() != rows.k.cols() || rows.q.cols() < 2)
    throw std::invalid_argument("q and k must have the same head_dim (>= 2)");
  if (rows.t_q.size() != rows.q.rows() || rows.t_k.size() != rows.k.rows())
    throw std::invalid_argument("positions must have one entry per row");
}

// Everything both analyses need, as sufficient statistics: every projection's mean, variance and
// covariance with position is a quadratic or linear form in these, so no row is visited twice.
struct Pooled {
  Eigen::VectorXd mu_q, mu_k, mean, drift;  // drift = Cov(X, t) over the pooled rows
  Eigen::VectorXd cov_qt, cov_kt;           // Cov(Q, t_q) and Cov(K, t_k), within each kind
  Eigen::MatrixXd s_q, s_k, cov;
  double t_mean = 0, t_var = 0, var_tq = 0, var_tk = 0, mean_tq = 0, mean_tk = 0;
};

Pooled pool(const QKRows& rows) {
  Pooled p;
  p.s_q = covariance(rows.q, rows.gram_q, p.mu_q);
  p.s_k = covariance(rows.k, rows.gram_k, p.mu_k);
  const double nq = static_cast<double>(rows.q.rows()), nk = static_cast<double>(rows.k.rows()), n = nq + nk;
  p.mean = (nq * p.mu_q + nk * p.mu_k) / n;
  const Eigen::VectorXd gap = p.mu_q - p.mu_k;
  p.cov = (nq * p.s_q + nk * p.s_k) / n + (nq * nk / (n * n)) * gap * gap.transpose();
  p.t_mean = (rows.t_q.sum() + rows.t_k.sum()) / n;
  const Eigen::ArrayXd tq = rows.t_q.array() - p.t_mean, tk = rows.t_k.array() - p.t_mean;
  p.t_var = ((tq * tq).sum() + (tk * tk).sum()) / n;
  // Cov(X, t) = (1/N) Σ (x − x̄)(t − t̄) = (1/N) Σ x (t − t̄) since Σ (t − t̄) = 0.
  p.drift = (rows.q.transpose() * tq.matrix() + rows.k.transpose() * tk.matrix()) / n;
  p.mean_tq = rows.t_q.mean();
  p.mean_tk = rows.t_k.mean();
  const Eigen::ArrayXd tq_own = rows.t_q.array() - p.mean_tq, tk_own = rows.t_k.array() - p.mean_tk;
  p.var_tq = (tq_own * tq_own).mean();
  p.var_tk = (tk_own * tk_own).mean();
  p.cov_qt = rows.q.transpose() * tq_own.matrix() / nq;
  p.cov_kt = rows.k.transpose() * tk_own.matrix() / nk;
  return p;
}

}  // namespace

static CombinedPca combined_pca_of(const QKRows& rows, const Pooled& p, int64_t n_components, double anchor_tolerance) {
  const int64_t d = rows.q.cols();
  const int64_t n = std::min<int64_t>({n_components, d, rows.q.rows() + rows.k.rows()});
  if (n < 1) throw std::invalid_argument("n_components must be >= 1");
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(p.cov);
  const double total = p.cov.trace();
  CombinedPca out;
  out.mean = p.mean;
  out.components.resize(n, d);
  out.explained_variance.resize(n);
  out.r_q.resize(n);
  out.r_k.resize(n);
  // The top n eigenvectors (eigenvalues ascend). A component's projections z = (x − m)ᵀv have, on
  // the Q rows, mean (μ_Q − m)ᵀv, variance vᵀS_Q v and covariance with t_q vᵀCov(Q, t_q).
  const Eigen::MatrixXd v = solver.eigenvectors().rightCols(n).rowwise().reverse();
  for (int64_t j = 0; j < n; ++j) {
    const double lambda = std::max(0.0, solver.eigenvalues()(d - 1 - j));
    const Eigen::VectorXd vj = v.col(j);
    const double var_zq = vj.dot(p.s_q * vj), var_zk = vj.dot(p.s_k * vj);
    const double r_q = correlation(vj.dot(p.cov_qt), var_zq, p.var_tq);
    const double r_k = correlation(vj.dot(p.cov_kt), var_zk, p.var_tk);
    const bool flip = std::abs(r_q) < anchor_tolerance ? r_k < 0.0 : r_q < 0.0;
    const double sign = flip ? -1.0 : 1.0;
    out.components.row(j) = sign * vj.transpose();
    out.explained_variance(j) = total > 0.0 ? lambda / total : kNaN;
    out.r_q(j) = sign * r_q;
    out.r_k(j) = sign * r_k;
    if (j == 0) {
      const double gap = (p.mu_q - p.mu_k).dot(vj), spread = var_zq + var_zk;
      out.fisher_pc0 = spread > 0.0 ? gap * gap / spread : kNaN;
    }
  }
  // Q/K separability on (PC0, PC1): the rows' coordinates, from two products with the components.
  const int64_t m = std::min<int64_t>(n, 2);
  const Eigen::MatrixXd basis = out.components.topRows(m).transpose();
  const Eigen::RowVectorXd shift = out.mean.transpose() * basis;
  const Eigen::MatrixXd zq = (rows.q * basis).rowwise() - shift, zk = (rows.k * basis).rowwise() - shift;
  out.accuracy_pc01 = discriminant_accuracy(zq, zk);
  out.p_q = (out.explained_variance.array() * out.r_q.array().square()).sum();
  out.p_k = (out.explained_variance.array() * out.r_k.array().square()).sum();
  return out;
}

CombinedPca combined_pca(const QKRows& rows, int64_t n_components, double anchor_tolerance) {
  check(rows);
  return combined_pca_of(rows, pool(rows), n_components, anchor_tolerance);
}

static Rotation planar_rotation_of(const QKRows& rows, const Pooled& p, AxisB axis_b, const PlaneOptions& options) {
  const int64_t d = rows.q.cols();
  Rotation out;
  out.drift_norm = p.drift.norm();
  if (!(out.drift_norm > 0.0)) {  // constant positions: no drift direction
    const double nan = kNaN;
    out.a = out.b = Eigen::VectorXd::Constant(d, nan);
    out.mu_q_a = out.mu_k_a = out.mu_q_b = out.mu_k_b = out.intercept_q_a = out.intercept_k_a = nan;
    out.alpha_q = out.alpha_k = out.r_q_a = out.r_k_a = out.position_r = out.bias_strength = nan;
    out.separation_strength = out.var_frac_a = out.var_frac_b = out.plane_var_fraction = nan;
    out.content_var_b = out.residual_pos_r = out.complement_var_fraction = out.active_var_fraction = nan;
    return out;
  }
  out.a = p.drift / out.drift_norm;
  const Eigen::VectorXd gap = p.mu_q - p.mu_k;
  const Eigen::MatrixXd project = Eigen::MatrixXd::Identity(d, d) - out.a * out.a.transpose();
  if (axis_b == AxisB::centroid) {
    out.b = project * gap;
  } else {
    const Eigen::MatrixXd c_delta = p.s_q + p.s_k + gap * gap.transpose();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(project * c_delta * project);
    out.b = solver.eigenvectors().col(d - 1);
  }
  out.b -= out.a * out.a.dot(out.b);  // exactly ⊥ a, whatever rounding left
  const double b_norm = out.b.norm();
  out.b = b_norm > 0.0 ? Eigen::VectorXd(out.b / b_norm) : Eigen::VectorXd::Constant(d, kNaN);
  if (out.b.dot(gap) < 0.0) out.b = -out.b;

  // Projections are uncentred (q_a = aᵀq): their means, variances and position covariances are
  // forms in the kind's statistics.
  out.mu_q_a = out.a.dot(p.mu_q);
  out.mu_k_a = out.a.dot(p.mu_k);
  out.mu_q_b = out.b.dot(p.mu_q);
  out.mu_k_b = out.b.dot(p.mu_k);
  const double var_qa = out.a.dot(p.s_q * out.a), var_ka = out.a.dot(p.s_k * out.a);
  const double cov_qa = out.a.dot(p.cov_qt), cov_ka = out.a.dot(p.cov_kt);
  out.alpha_q = p.var_tq > 0.0 ? cov_qa / p.var_tq : kNaN;
  out.alpha_k = p.var_tk > 0.0 ? cov_ka / p.var_tk : kNaN;
  out.intercept_q_a = out.mu_q_a - out.alpha_q * p.mean_tq;
  out.intercept_k_a = out.mu_k_a - out.alpha_k * p.mean_tk;
  out.r_q_a = correlation(cov_qa, var_qa, p.var_tq);
  out.r_k_a = correlation(cov_ka, var_ka, p.var_tk);
  out.bias_strength = out.mu_q_a * out.alpha_k;

  const double total = p.cov.trace();
  const double var_a = out.a.dot(p.cov * out.a), var_b = out.b.dot(p.cov * out.b);
  out.var_frac_a = var_a / total;
  out.var_frac_b = var_b / total;
  out.plane_var_fraction = out.var_frac_a + out.var_frac_b;
  // corr(aᵀx, t) = aᵀc / sqrt(Var(aᵀx) Var(t)) = ‖c‖ / sqrt(var_a t_var).
  out.position_r = std::abs(out.drift_norm / std::sqrt(var_a * p.t_var));
  const double var_qb = out.b.dot(p.s_q * out.b), var_kb = out.b.dot(p.s_k * out.b);
  out.content_var_b = 0.5 * (var_qb + var_kb);
  const double gap_b = out.mu_q_b - out.mu_k_b;
  const double delta_b = var_qb + var_kb + gap_b * gap_b;
  const double delta_total = p.s_q.trace() + p.s_k.trace() + gap.squaredNorm();
  out.separation_strength = delta_total > 0.0 ? delta_b / delta_total : kNaN;

  // The complement of {a, b}: its covariance's eigenvectors are the centred SVD directions. Each
  // one's correlation with position is vᵀc / sqrt(λ_v Var t), analytically 0 (c ∥ a).
  const Eigen::MatrixXd plane = Eigen::MatrixXd::Identity(d, d) - out.a * out.a.transpose() - out.b * out.b.transpose();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> complement(plane * p.cov * plane);
  const Eigen::VectorXd& lambdas = complement.eigenvalues();  // ascending
  const double top = lambdas.maxCoeff();
  const double complement_total = std::max(0.0, lambdas.sum());
  out.complement_var_fraction = complement_total / total;
  double worst = 0.0;
  int64_t usable = 0;  // directions with variance: the plane's own (null) directions and numerical zeros are not
  for (int64_t i = 0; i < d; ++i) {
    const double lambda = lambdas(i);
    if (!(lambda > 1e-12 * top)) continue;
    ++usable;
    const Eigen::VectorXd v = complement.eigenvectors().col(i);
    worst = std::max(worst, std::abs(v.dot(p.drift)) / std::sqrt(lambda * p.t_var));
  }
  out.residual_pos_r = worst;

  // Rotation planes: directions paired (2i, 2i+1) by decreasing variance; every row's centred
  // coordinates in them come from one product per kind.
  const int64_t n_planes = std::min<int64_t>(std::max<int64_t>(options.n_planes, 0), usable / 2);
  if (n_planes > 0 && complement_total > 0.0) {
    const Eigen::MatrixXd basis = complement.eigenvectors().rightCols(2 * n_planes).rowwise().reverse();
    const Eigen::RowVectorXd shift = p.mean.transpose() * basis;
    auto coordinates = [&](const Eigen::Ref<const RowMatrix>& x) -> Eigen::MatrixXd {
      if (rows.project) return rows.project(x, basis).rowwise() - shift;
      return (x * basis).rowwise() - shift;
    };
    const Eigen::MatrixXd zq = coordinates(rows.q), zk = coordinates(rows.k);
    Eigen::ArrayXd t(rows.q.rows() + rows.k.rows());
    t << rows.t_q.array(), rows.t_k.array();
    out.planes.resize(n_planes);
    // Planes are independent: one per thread (inside a batch, which already runs a head per thread,
    // this loop stays serial).
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_planes; ++i) {
      ComplementPlane& stats = out.planes[i];
      const double lambda = lambdas(d - 1 - 2 * i) + lambdas(d - 2 - 2 * i);
      stats.var_fraction = std::max(0.0, lambda) / complement_total;
      const PlaneRotation turn = rotation_frequency(zq.middleCols(2 * i, 2), zk.middleCols(2 * i, 2), t);
      stats.omega = turn.omega;
      stats.angle_r = turn.coherence;
      stats.accuracy = discriminant_accuracy(zq.middleCols(2 * i, 2), zk.middleCols(2 * i, 2));
      stats.active = stats.angle_r > options.active_threshold;
    }
    for (const ComplementPlane& stats : out.planes) {
      if (stats.active) {
        ++out.n_active_planes;
        out.active_var_fraction += stats.var_fraction;
      }
    }
  }
  return out;
}

Rotation planar_rotation(const QKRows& rows, AxisB axis_b, const PlaneOptions& planes) {
  check(rows);
  return planar_rotation_of(rows, pool(rows), axis_b, planes);
}

QKGeometry qk_geometry(const QKRows& rows, int64_t n_components, AxisB axis_b, double anchor_tolerance,
                       const PlaneOptions& planes) {
  check(rows);
  const Pooled p = pool(rows);  // the covariances both analyses share, computed once
  return {combined_pca_of(rows, p, n_components, anchor_tolerance), planar_rotation_of(rows, p, axis_b, planes)};
}

std::vector<QKGeometry> qk_geometry_batch(const std::vector<QKRows>& heads, int64_t n_components, AxisB axis_b,
                                          double anchor_tolerance, const PlaneOptions& planes,
                                          std::vector<std::string>& errors) {
  const int64_t n = static_cast<int64_t>(heads.size());
  std::vector<QKGeometry> out(heads.size());
  errors.assign(heads.size(), std::string());
  // One head per thread: Eigen sees it runs inside a parallel region and keeps its products serial.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      out[i] = qk_geometry(heads[i], n_components, axis_b, anchor_tolerance, planes);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  return out;
}

KindPca kind_pca(const Eigen::Ref<const RowMatrix>& x, const Eigen::Ref<const Eigen::VectorXd>& t,
                 int64_t n_components, const double* gram) {
  if (x.rows() < 2 || x.cols() < 1) throw std::invalid_argument("x needs at least 2 rows and 1 column");
  if (t.size() != x.rows()) throw std::invalid_argument("positions must have one entry per row");
  const int64_t d = x.cols();
  const int64_t n = std::min<int64_t>({n_components, d, x.rows()});
  if (n < 1) throw std::invalid_argument("n_components must be >= 1");
  KindPca out;
  const Eigen::MatrixXd cov = covariance(x, gram, out.mean);
  const double t_mean = t.mean();
  const Eigen::ArrayXd tc = t.array() - t_mean;
  const double var_t = (tc * tc).mean();
  const Eigen::VectorXd cov_xt = x.transpose() * tc.matrix() / static_cast<double>(x.rows());
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(cov);
  const double total = cov.trace();
  out.components.resize(n, d);
  out.explained_variance.resize(n);
  out.r.resize(n);
  for (int64_t j = 0; j < n; ++j) {
    Eigen::VectorXd v = solver.eigenvectors().col(d - 1 - j);
    Eigen::Index largest = 0;
    v.cwiseAbs().maxCoeff(&largest);
    if (v(largest) < 0.0) v = -v;  // scikit-learn's svd_flip on the components
    out.components.row(j) = v.transpose();
    out.explained_variance(j) = total > 0.0 ? std::max(0.0, solver.eigenvalues()(d - 1 - j)) / total : kNaN;
    out.r(j) = correlation(v.dot(cov_xt), v.dot(cov * v), var_t);
  }
  return out;
}

}  // namespace spectra
