// The published attention-plasticity tool's own test assertions (regression, orientation, Householder,
// expected-value cell, window and same-example rules), ported to the native head.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "spectra/plasticity_pairwise.hpp"
#include "spectra/plasticity_head.hpp"

using spectra::PlasticityMode;
using spectra::PlasticityOptions;
using spectra::PlasticityRows;

namespace {

struct Head {
  std::vector<double> q, q_pos, k, k_pos;
  std::vector<int64_t> q_bucket, k_bucket, k_example;
  int64_t dim;
  PlasticityRows rows() const {
    return {q.data(),       q_pos.data(),     q_bucket.data(),  static_cast<int64_t>(q_pos.size()),
            k.data(),       k_pos.data(),     k_bucket.data(),  k_example.data(),
            static_cast<int64_t>(k_pos.size()), dim};
  }
};

// A one-dimensional model with μ(t) = t and σ² = 1, as the published expected-value test injects.
spectra::QueryModel unit_model(const Head&) {
  spectra::QueryModel m;
  m.dim = 1;
  m.alpha_rot = {0.0};
  m.beta_rot = {1.0};
  m.resid_var = {1.0};
  m.sign = {1.0};  // keys used as they are: no reflection (householder empty)
  return m;
}

PlasticityOptions published(int64_t pairs_per_cell, int64_t lookback = 0) {
  PlasticityOptions o;
  o.mode = PlasticityMode::published;
  o.pairs_per_cell = pairs_per_cell;
  o.lookback = lookback;
  return o;
}

}  // namespace

TEST_CASE("key orientation is the sign of the mean of bucket means, zero giving +1", "[plasticity_head]") {
  // keys [1, -2, 0] in bucket 0 and [2, -1, 0], [-3, 4, 0] in bucket 1: bucket means [1, -2, 0] and
  // [-0.5, 1.5, 0], mean [0.25, -0.25, 0].
  const std::vector<double> k = {1, -2, 0, 2, -1, 0, -3, 4, 0};
  const std::vector<int64_t> bucket = {0, 1, 1};
  CHECK(spectra::key_orientation(k.data(), bucket.data(), 3, 3) == std::vector<double>{1.0, -1.0, 1.0});
}

TEST_CASE("the expected-value cell gives 4 Phi(1) Phi(-1)", "[plasticity_head]") {
  Head h{{0.0, 1.0, 1.0}, {0.0, 1.0, 1.0}, {1.0, -1.0}, {0.0, 0.0}, {0, 1, 1}, {0, 0}, {0, 0}, 1};
  const PlasticityOptions o = published(1);
  auto cells = spectra::plasticity_cells(h.rows(), o);
  REQUIRE(cells.size() == 1);
  CHECK(cells[0].q_cell == 1);
  CHECK(cells[0].k_bucket == 0);
  CHECK(cells[0].tau == 1.0);
  auto pairs = spectra::draw_plasticity_pairs(h.rows(), cells, o);
  auto result = spectra::evaluate_plasticity_pairs(h.rows(), unit_model(h), cells, pairs, o);
  CHECK(result.cells[0].ap == Approx(0.533935).margin(1e-6));
  CHECK(result.cells[0].n_pairs == 1);
}

TEST_CASE("a one-bucket window removes cell (2, 0) and keeps (2, 1)", "[plasticity_head]") {
  Head h{{0.0, 1.0, 2.0}, {0.0, 1.0, 2.0}, {1.0, 2.0}, {0.0, 0.1}, {0, 1, 2}, {0, 1}, {0, 0}, 1};
  auto keys = [&](int64_t lookback) {
    std::set<std::pair<int64_t, int64_t>> out;
    for (const auto& c : spectra::plasticity_cells(h.rows(), published(1, lookback))) out.insert({c.q_cell, c.k_bucket});
    return out;
  };
  CHECK(keys(0) == std::set<std::pair<int64_t, int64_t>>{{1, 0}, {2, 0}, {2, 1}});
  CHECK(keys(1) == std::set<std::pair<int64_t, int64_t>>{{1, 0}, {2, 1}});
}

TEST_CASE("pairs come from one example", "[plasticity_head]") {
  // Keys at t = 0 and 1 in example 0, and 100 in example 1, all in key bucket 0: the only pair is
  // (k0, k1), so the cell is 4 Phi(-1)(1 - Phi(-1)) at tau = 1 whatever the draw order.
  Head h{{0.0, 1.0, 1.0}, {0.0, 1.0, 1.0}, {1.0, -1.0, 100.0}, {0.0, 0.0, 0.0}, {0, 1, 1}, {0, 0, 0}, {0, 0, 1}, 1};
  const PlasticityOptions o = published(50);
  auto cells = spectra::plasticity_cells(h.rows(), o);
  auto pairs = spectra::draw_plasticity_pairs(h.rows(), cells, o);
  REQUIRE(pairs.first.size() == 1);  // min(50, C(2, 2))
  CHECK(std::set<int64_t>{pairs.first[0], pairs.second[0]} == std::set<int64_t>{0, 1});
  auto result = spectra::evaluate_plasticity_pairs(h.rows(), unit_model(h), cells, pairs, o);
  const double phi = 0.5 * std::erfc(1.0 / std::sqrt(2.0));
  CHECK(result.cells[0].ap == Approx(4.0 * phi * (1.0 - phi)).epsilon(1e-14));
}

TEST_CASE("the query model of exact linear data", "[plasticity_head]") {
  // q = (t, 2t + 1, -t) + tiny alternating noise at t = 64..127 (where log2(t + 1) is nearly linear
  // in t, so the scalar fit is good); keys in four buckets.
  const int64_t n = 64, dim = 3;
  Head h;
  h.dim = dim;
  for (int64_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(64 + i), e = (i % 2 ? 1e-3 : -1e-3);
    h.q.insert(h.q.end(), {t + e, 2 * t + 1 - e, -t + e});
    h.q_pos.push_back(t);
    h.q_bucket.push_back(i / 16);
    h.k.insert(h.k.end(), {0.5 * t, 1.0 + e, 0.25});
    h.k_pos.push_back(t);
    h.k_bucket.push_back(i / 16);
    h.k_example.push_back(0);
  }
  const spectra::QueryModel m = spectra::fit_query_model(h.rows(), {0, 1});
  CHECK(m.sign == std::vector<double>{1.0, 1.0, 1.0});
  CHECK(m.r2_pos == Approx(1.0).margin(1e-6));
  const double norm = std::sqrt(m.beta[0] * m.beta[0] + m.beta[1] * m.beta[1] + m.beta[2] * m.beta[2]);
  CHECK(norm == Approx(std::sqrt(6.0)).epsilon(1e-4));
  // The drift now lies on coordinate 1 alone.
  CHECK(m.beta_rot[0] == Approx(norm).epsilon(1e-12));
  CHECK(std::fabs(m.beta_rot[1]) < 1e-12);
  CHECK(std::fabs(m.beta_rot[2]) < 1e-12);
  REQUIRE(m.householder.size() == 3);
  CHECK(m.r2_scalar > 0.95);
  CHECK(m.mae_proj < m.mae_baseline);
  REQUIRE(m.noise_ks.size() == 2);
  for (const auto& ks : m.noise_ks) CHECK((ks.pvalue >= 0.0 && ks.pvalue <= 1.0));
}

TEST_CASE("a constant position gives the published defaults", "[plasticity_head]") {
  // t constant: beta = 0, alpha = the mean, R² = 0, H = I; the first residual is x - mean, whose
  // z-scores (of -1, -0.5, 0, 0.5, 1) have skew 0 and bias-corrected excess kurtosis -1.2.
  Head h{{-1.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0},
         {1.0, 1.0, 1.0, 1.0, 1.0},
         {1.0, 1.0, 2.0, 2.0},
         {0.0, 1.0},
         {0, 0, 0, 0, 0},
         {0, 0},
         {0, 0},
         2};
  const spectra::QueryModel m = spectra::fit_query_model(h.rows(), {0});
  CHECK(m.beta == std::vector<double>{0.0, 0.0});
  CHECK(m.r2_pos == 0.0);
  CHECK(m.householder.empty());
  CHECK(std::fabs(m.resid0_skew) < 1e-12);
  CHECK(m.resid0_kurt == Approx(-1.2).margin(1e-12));
  CHECK(m.resid0_ks.pvalue == Approx(1.0).margin(5e-4));
}

TEST_CASE("thesis cells take keys before tau and skip cells with one query", "[plasticity_head]") {
  Head h;
  h.dim = 1;
  h.q = {0.1, 0.2, 0.3, 0.4, 0.5};
  h.q_pos = {0.0, 1.0, 10.0, 12.0, 25.0};
  h.q_bucket = {0, 0, 1, 1, 2};
  h.k = {1.0, -1.0, 0.5, 2.0};
  h.k_pos = {0.0, 3.0, 8.0, 13.0};
  h.k_bucket = {0, 0, 1, 1};
  h.k_example = {0, 0, 0, 0};
  PlasticityOptions o;
  o.mode = PlasticityMode::thesis;
  o.grid_width = 8.0;
  o.pairs_per_cell = 1000;
  auto cells = spectra::plasticity_cells(h.rows(), o);
  REQUIRE(cells.size() == 3);
  CHECK(cells[0].tau == 4.0);   // midpoint of [0, 8): keys at 0 and 3
  CHECK(cells[1].tau == 12.0);  // [8, 16): keys at 0, 3, 8
  CHECK(cells[2].n_queries == 1);
  auto pairs = spectra::draw_plasticity_pairs(h.rows(), cells, o);
  std::vector<int64_t> per_cell(3, 0);
  for (size_t p = 0; p < pairs.cell.size(); ++p) {
    ++per_cell[pairs.cell[p]];
    CHECK(h.k_pos[pairs.first[p]] < cells[pairs.cell[p]].tau);
    CHECK(h.k_pos[pairs.second[p]] < cells[pairs.cell[p]].tau);
  }
  CHECK(per_cell == std::vector<int64_t>{1, 3, 0});  // C(2, 2), C(3, 2), and no draws below min_queries
}
