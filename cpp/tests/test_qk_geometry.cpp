#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "spectra/qk_geometry.hpp"

using spectra::AxisB;
using spectra::QKRows;
using spectra::RowMatrix;

namespace {

struct Synthetic {
  RowMatrix q, k;
  Eigen::VectorXd t_q, t_k;
  QKRows rows() const { return {q, t_q, k, t_k}; }
};

// Two clusters (Q at +S, K at −S on dim 0) that drift along dim 1 with position, plus noise.
// Queries' separation grows with position (the PC0 confound); keys drift faster on dim 1.
Synthetic clusters_and_drift(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  Synthetic s;
  s.q = RowMatrix(n, d);
  s.k = RowMatrix(n, d);
  s.t_q.resize(n);
  s.t_k.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double tq = static_cast<double>(i % 512), tk = static_cast<double>((7 * i) % 512);
    s.t_q(i) = tq;
    s.t_k(i) = tk;
    for (int64_t j = 0; j < d; ++j) {
      s.q(i, j) = noise(rng);
      s.k(i, j) = noise(rng);
    }
    s.q(i, 0) += 20.0 + 0.02 * tq;
    s.k(i, 0) += -20.0;
    s.q(i, 1) += 0.002 * tq;
    s.k(i, 1) += 0.02 * tk;
  }
  return s;
}

}  // namespace

TEST_CASE("planar rotation: unit orthogonal axes, no drift off axis a, exact decomposition", "[qk_geometry]") {
  const Synthetic s = clusters_and_drift(3000, 16, 3);
  for (AxisB axis : {AxisB::centroid, AxisB::eigen}) {
    const auto r = spectra::planar_rotation(s.rows(), axis);
    CHECK(r.a.norm() == Approx(1.0));
    CHECK(r.b.norm() == Approx(1.0));
    CHECK(std::abs(r.a.dot(r.b)) < 1e-12);
    // Cov(vᵀx, t) = vᵀc = 0 for every v ⊥ a (the drift alignment lemma), here for random v.
    std::mt19937_64 rng(1);
    std::normal_distribution<double> g(0.0, 1.0);
    for (int trial = 0; trial < 20; ++trial) {
      Eigen::VectorXd v(16);
      for (auto& x : v) x = g(rng);
      v -= r.a * r.a.dot(v);
      v.normalize();
      CHECK(std::abs(v.dot(r.a * r.drift_norm)) <= 1e-12 * r.drift_norm);
    }
    CHECK(r.residual_pos_r < 1e-10);
    CHECK(r.var_frac_a > 0.0);
    CHECK(r.plane_var_fraction <= 1.0);
    CHECK(r.bias_strength == Approx(r.mu_q_a * r.alpha_k));
    CHECK(r.b.dot(Eigen::VectorXd(s.q.colwise().mean() - s.k.colwise().mean())) >= 0.0);
    // Keys drift faster on the drift axis.
    CHECK(std::abs(r.r_k_a) > std::abs(r.r_q_a));
  }
}

TEST_CASE("planar rotation: q·k decomposes exactly over {a, b, complement}", "[qk_geometry]") {
  const Synthetic s = clusters_and_drift(500, 8, 5);
  const auto r = spectra::planar_rotation(s.rows());
  for (int i = 0; i < 10; ++i) {
    const Eigen::VectorXd q = s.q.row(i).transpose(), k = s.k.row(3 * i).transpose();
    const double qa = r.a.dot(q), ka = r.a.dot(k), qb = r.b.dot(q), kb = r.b.dot(k);
    const Eigen::VectorXd q_rest = q - qa * r.a - qb * r.b, k_rest = k - ka * r.a - kb * r.b;
    CHECK(q.dot(k) == Approx(qa * ka + qb * kb + q_rest.dot(k_rest)).epsilon(1e-12));
  }
}

TEST_CASE("planar rotation: constant positions have no axis", "[qk_geometry]") {
  Synthetic s = clusters_and_drift(100, 4, 7);
  s.t_q.setConstant(3.0);
  s.t_k.setConstant(3.0);
  const auto r = spectra::planar_rotation(s.rows());
  CHECK(r.drift_norm == 0.0);
  CHECK(std::isnan(r.bias_strength));
}

TEST_CASE("combined PCA: sign rule, explained variance, the PC0 confound", "[qk_geometry]") {
  const Synthetic s = clusters_and_drift(3000, 16, 11);
  const auto pca = spectra::combined_pca(s.rows(), 10);
  CHECK(pca.components.rows() == 10);
  CHECK(pca.explained_variance.sum() <= 1.0 + 1e-12);
  for (int64_t j = 0; j + 1 < 10; ++j) CHECK(pca.explained_variance(j) >= pca.explained_variance(j + 1));
  for (int64_t j = 0; j < 10; ++j) {
    if (std::abs(pca.r_q(j)) >= 0.05) {
      CHECK(pca.r_q(j) >= 0.0);
    } else {
      CHECK(pca.r_k(j) >= 0.0);
    }
    CHECK(pca.components.row(j).norm() == Approx(1.0));
  }
  // PC0 is the Q/K separation axis, on which queries (not keys) vary with position.
  CHECK(pca.r_q(0) > std::abs(pca.r_k(0)));
  CHECK(pca.fisher_pc0 > 10.0);
  CHECK(pca.p_q >= 0.0);
  CHECK_THROWS_AS(spectra::combined_pca(s.rows(), 0), std::invalid_argument);
}

TEST_CASE("planar rotation: variance fractions of a, b and the complement sum to 1", "[qk_geometry]") {
  const Synthetic s = clusters_and_drift(2000, 12, 13);
  for (AxisB axis : {AxisB::centroid, AxisB::eigen}) {
    const auto r = spectra::planar_rotation(s.rows(), axis);
    CHECK(r.var_frac_a + r.var_frac_b + r.complement_var_fraction == Approx(1.0).epsilon(1e-12));
    REQUIRE(r.planes.size() == 5);  // (12 − 2) / 2 complement planes
    double total = 0.0;
    for (size_t i = 0; i < r.planes.size(); ++i) {
      total += r.planes[i].var_fraction;
      if (i > 0) CHECK(r.planes[i].var_fraction <= r.planes[i - 1].var_fraction + 1e-12);
      CHECK(r.planes[i].angle_r >= 0.0);
      CHECK(r.planes[i].angle_r <= 1.0);
    }
    CHECK(total == Approx(1.0).epsilon(1e-9));
  }
}

TEST_CASE("planar rotation: a plane turning with position is found, with its rate", "[qk_geometry]") {
  Synthetic s = clusters_and_drift(4096, 10, 17);
  const double omega = 2.0 * 3.141592653589793 * 6.0 / 512.0;  // 6 turns over positions 0..511
  for (int64_t i = 0; i < 4096; ++i) {
    s.q(i, 4) += 8.0 * std::cos(omega * s.t_q(i));
    s.q(i, 5) += 8.0 * std::sin(omega * s.t_q(i));
    s.k(i, 4) += 8.0 * std::cos(omega * s.t_k(i));
    s.k(i, 5) += 8.0 * std::sin(omega * s.t_k(i));
  }
  spectra::PlaneOptions options;
  options.n_planes = 3;
  const auto r = spectra::planar_rotation(s.rows(), AxisB::centroid, options);
  REQUIRE(r.planes.size() == 3);
  CHECK(r.planes[0].omega == Approx(omega).epsilon(1e-3));
  CHECK(r.planes[0].angle_r > 0.95);
  CHECK(r.planes[0].active);
  CHECK_FALSE(r.planes[1].active);
  CHECK(r.n_active_planes == 1);
  CHECK(r.planes[0].accuracy < 0.6);  // Q and K share the ring
}

TEST_CASE("kind PCA: scikit-learn's sign rule, EVR, position correlation", "[qk_geometry]") {
  const Synthetic s = clusters_and_drift(3000, 8, 19);
  const auto pca = spectra::kind_pca(s.k, s.t_k, 4);
  REQUIRE(pca.components.rows() == 4);
  CHECK(pca.explained_variance.sum() <= 1.0 + 1e-12);
  for (int64_t j = 0; j < 4; ++j) {
    Eigen::Index largest = 0;
    pca.components.row(j).cwiseAbs().maxCoeff(&largest);
    CHECK(pca.components(j, largest) > 0.0);
  }
  // Keys drift along dim 1 and nothing else has position signal: one component carries it.
  CHECK(pca.r.cwiseAbs().maxCoeff() > 0.9);
  CHECK_THROWS_AS(spectra::kind_pca(s.k, s.t_q.head(10), 2), std::invalid_argument);
}

TEST_CASE("batch: every head as alone, and a failing head leaves an error while the rest succeed", "[qk_geometry]") {
  const Synthetic a = clusters_and_drift(500, 6, 23), b = clusters_and_drift(700, 6, 29);
  RowMatrix narrow = b.k.leftCols(5);
  std::vector<QKRows> heads{a.rows(), b.rows(), QKRows{b.q, b.t_q, narrow, b.t_k}};
  std::vector<std::string> errors;
  const auto out = spectra::qk_geometry_batch(heads, 4, AxisB::centroid, 0.05, {}, errors);
  REQUIRE(out.size() == 3);
  CHECK(errors[0].empty());
  CHECK(errors[1].empty());
  CHECK_FALSE(errors[2].empty());
  const auto alone = spectra::qk_geometry(b.rows(), 4);
  CHECK(out[1].rotation.bias_strength == Approx(alone.rotation.bias_strength).epsilon(1e-12));
  CHECK(out[1].pca.r_q(0) == Approx(alone.pca.r_q(0)).epsilon(1e-12));
}
