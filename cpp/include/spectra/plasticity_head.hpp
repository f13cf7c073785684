// Attention plasticity of one head from its captured queries and keys (see docs/plasticity.md): the
// positional–semantic query model, the key pairs each query point is asked about, and their
// pairwise plasticity PP = 4·Φ(z)·Φ(−z).
//
// Two modes share the model and the pair evaluation and differ in which cells exist and which
// Gaussian a cell's queries follow:
//  - published: the attention-plasticity tool at 23e1d60. One cell per (query bucket j ≥ 1, key
//    bucket c < j); key pairs come from one example inside bucket c; the query law is global:
//    mean α_rot + β_rot·τ_j, diagonal variance resid_var (values ≤ 0 raised to 1e-12); draws with
//    v ≤ 0 are skipped.
//  - thesis: one cell per point of a query grid; key pairs come from one example with both keys
//    before the cell's position τ; the positional coordinate follows the global regression and the
//    other coordinates the cell's own queries (mean, ddof=1 variance or full covariance + 1e-12·I);
//    degenerate pairs follow the v ≤ 0 rule of spectra/plasticity_pairwise.hpp (identical keys
//    count as PP = 1).
// Randomness is a counter-based stream per cell, so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "spectra/ks_test.hpp"

namespace spectra {

// One head's rows: float64, row-major (n, dim), contiguous. Buckets and example ids are int64.
struct PlasticityRows {
  const double* q;
  const double* q_pos;
  const int64_t* q_bucket;
  int64_t n_q;
  const double* k;
  const double* k_pos;
  const int64_t* k_bucket;
  const int64_t* k_example;
  int64_t n_k;
  int64_t dim;
};

// The published tool's per-head model and diagnostics (orientation, OLS on position, Householder
// rotation, refit, residual and noise statistics), plus the rotated rows.
struct QueryModel {
  int64_t dim = 0;
  std::vector<double> sign;            // orientation s_j from the signs of the K bucket means
  std::vector<double> alpha, beta, r2;  // q_j ≈ alpha_j + beta_j·t in the oriented basis; R²_j
  double r2_pos = 0.0;                 // nanmean of R²_j
  double beta_norm = 0.0;
  double r2_scalar = 0.0, mae_baseline = 0.0, mae_proj = 0.0;  // log2(t + 1) from the drift projection
  std::vector<double> householder;     // unit v of H = I − 2vvᵀ (H β̂ = e_1); empty when H = I
  std::vector<double> alpha_rot, beta_rot, resid_var;  // the refit in the rotated basis
  double resid0_skew = 0.0, resid0_kurt = 0.0;
  KsResult resid0_ks{0.0, 1.0};
  double noise_med_abs_skew = 0.0, noise_med_abs_kurt = 0.0;
  std::vector<KsResult> noise_ks;      // one per requested noise dimension
  std::vector<double> q_rot;           // oriented query rows times H, (n_q, dim); keys are rotated per pair
};

// Per-dimension signs of the mean of the per-bucket key means (0 → +1): a ±1 diagonal map that
// keeps q·k and fixes each head's sign convention, as the published tool does first. k is (n_k, dim)
// row-major.
std::vector<double> key_orientation(const double* k, const int64_t* k_bucket, int64_t n_k, int64_t dim);

// Fits the model. `noise_ks_dims` are 0-based indices among rotated coordinates 2..dim (the
// published tool draws them with NumPy; the caller passes them in). `sign` overrides the
// orientation (the published tool takes it from all keys before subsampling). Throws
// std::invalid_argument on n_q < 1, n_k < 1 or dim < 1.
QueryModel fit_query_model(const PlasticityRows& rows, const std::vector<int64_t>& noise_ks_dims,
                           const std::vector<double>* sign = nullptr);

enum class PlasticityMode { published, thesis };

struct PlasticityOptions {
  PlasticityMode mode = PlasticityMode::thesis;
  int64_t pairs_per_cell = 256;
  uint64_t seed = 0;
  // Sliding window: key bucket floor(t_k / bucket_size) must be ≥ the query's bucket − lookback;
  // lookback = 0 means no window. Published mode reads buckets from the rows; thesis mode derives
  // them with bucket_size.
  int64_t lookback = 0;
  int64_t bucket_size = 1;
  // thesis mode only
  double grid_width = 1.0;          // query grid cell width in tokens
  bool grid_midpoint = true;        // τ_g = (g + ½)·grid_width, else the mean query position
  int64_t min_queries = 2;          // cells with fewer queries get no draws
  bool full_covariance = false;     // Σ_g + 1e-12·I instead of diag(σ_g²)
};

struct PlasticityCell {
  int64_t q_cell = 0;     // published: query bucket j; thesis: grid index g
  int64_t k_bucket = -1;  // published: key bucket c; thesis: -1
  double tau = 0.0;       // representative query position
  int64_t n_queries = 0;
  double n_eligible_pairs = 0.0;  // unordered same-example pairs the draws are taken from
  int64_t n_draws = 0;
  int64_t n_pairs = 0;    // draws that entered the mean
  double ap = 0.0;        // mean PP, NaN without pairs
};

struct PlasticityPairs {
  std::vector<int64_t> cell, first, second;  // cell index, K rows (k1, k2)
  std::vector<double> m, v, pp;
  std::vector<uint8_t> used;  // 0: a skipped draw (published v ≤ 0)
};

struct PlasticityResult {
  std::vector<PlasticityCell> cells;
  PlasticityPairs pairs;
};

// The cells of `options.mode` (no pairs drawn yet; ap is NaN).
std::vector<PlasticityCell> plasticity_cells(const PlasticityRows& rows, const PlasticityOptions& options);

// Draws options.pairs_per_cell pairs per cell (fewer when fewer exist), uniformly over the ordered
// pairs of distinct same-example eligible keys, with replacement across draws.
PlasticityPairs draw_plasticity_pairs(const PlasticityRows& rows, const std::vector<PlasticityCell>& cells,
                                      const PlasticityOptions& options);

// Evaluates the given pairs (drawn, or injected by a caller) under the model and fills each cell's
// n_draws, n_pairs and ap.
PlasticityResult evaluate_plasticity_pairs(const PlasticityRows& rows, const QueryModel& model,
                                           std::vector<PlasticityCell> cells, PlasticityPairs pairs,
                                           const PlasticityOptions& options);

}  // namespace spectra
