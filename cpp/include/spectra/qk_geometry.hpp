// Geometry of one attention head's captured queries and keys (see docs/geometry.md): the combined
// Q+K PCA and the planar rotation model, in float64 with Eigen.
//
// Inputs are the head's query rows Q (n_q × d) with positions t_q and its KV head's key rows
// K (n_k × d) with positions t_k, post-RoPE, as the Probe captures them. Everything is a handful of
// d × d covariances, d-vectors and one symmetric eigenproblem, so a head of 16k + 16k rows at
// d = 128 costs a few matrix products.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace spectra {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct QKRows {
  Eigen::Ref<const RowMatrix> q;
  Eigen::Ref<const Eigen::VectorXd> t_q;
  Eigen::Ref<const RowMatrix> k;
  Eigen::Ref<const Eigen::VectorXd> t_k;
  // Optional QᵀQ and KᵀK (d × d), when the caller has a faster matrix product at hand (the Python
  // binding uses PyTorch's BLAS); computed here with Eigen otherwise.
  const double* gram_q = nullptr;
  const double* gram_k = nullptr;
  // Optional rows × basis product (n × d times d × m, the complement planes' coordinates), for the
  // same reason; Eigen's product otherwise.
  std::function<RowMatrix(const Eigen::Ref<const RowMatrix>&, const Eigen::MatrixXd&)> project;
};

// Pooled, centred PCA of [Q; K]. Components are rows of `components`, ordered by decreasing
// eigenvalue; `explained_variance` is λ_j / tr(Cov). r_q / r_k are Pearson correlations of each
// component's projections with the raw positions on the Q rows and on the K rows. Sign rule
// (docs/geometry.md): flip so that r_q >= 0, or, when |r_q| < anchor_tolerance, so that r_k >= 0.
// P_Q = Σ_j EV_j r_q², P_K likewise. Fisher ratio on PC0: (z̄_Q − z̄_K)² / (s_Q² + s_K²).
struct CombinedPca {
  Eigen::VectorXd mean;                 // (d,) pooled mean
  RowMatrix components;                 // (n_components, d)
  Eigen::VectorXd explained_variance;   // (n_components,)
  Eigen::VectorXd r_q, r_k;             // (n_components,)
  double p_q = 0.0, p_k = 0.0;          // position-linear variance shares
  double fisher_pc0 = 0.0;              // Q/K separability on PC0
  // Training accuracy of the equal-prior linear discriminant (pooled within-kind covariance
  // ½(S_Q + S_K), threshold at the midpoint of the two kinds' means) on the rows' (PC0, PC1)
  // coordinates: Spectra's definition of a "Q/K classification accuracy", which the method names
  // without defining.
  double accuracy_pc01 = 0.0;
};

CombinedPca combined_pca(const QKRows& rows, int64_t n_components, double anchor_tolerance = 0.05);

// The published tool's PCA of one kind alone: centred rows, components ordered by decreasing
// eigenvalue and signed as scikit-learn signs them (the largest-magnitude loading positive), EVR =
// λ_j / tr(Cov), r_j = Pearson(zⱼ, t) (0 when either side is constant). No sign canonicalisation.
struct KindPca {
  Eigen::VectorXd mean;
  RowMatrix components;
  Eigen::VectorXd explained_variance, r;
};
KindPca kind_pca(const Eigen::Ref<const RowMatrix>& x, const Eigen::Ref<const Eigen::VectorXd>& t,
                 int64_t n_components, const double* gram = nullptr);

enum class AxisB { centroid, eigen };

// One plane of the complement of {a, b}: the centred complement's principal directions paired as
// (2i, 2i+1). Each row's angle in the plane is θ = atan2(z_{2i+1}, z_{2i}). The method leaves the
// plane statistics undefined; these are Spectra's definitions (docs/geometry.md). omega (radians per token) and
// angle_r ∈ [0, 1]: the rate at which the angles turn with position and its phase coherence
// max_{ω≠0} |Σ u_j e^{−iωt_j}| / Σ |u_j| with u_j = e^{iθ_j} − mean(e^{iθ}) (1 for a perfect rotation,
// ≈ sqrt(ln M / n) for angles unrelated to position); var_fraction: the plane's share of the
// complement's variance; accuracy: the equal-prior linear discriminant's Q/K training accuracy on the
// plane's coordinates; active: angle_r above the threshold.
struct ComplementPlane {
  double var_fraction = 0, omega = 0, angle_r = 0, accuracy = 0;
  bool active = false;
};

struct PlaneOptions {
  int64_t n_planes = 30;             // pairs (2i, 2i+1) for i < n_planes (fewer when d − 2 is smaller)
  double active_threshold = 0.3;     // angle_r above this makes a plane "active"
};

// The planar rotation model. Axis a = Cov(X, t)/‖·‖ over the pooled rows; axis b ⊥ a is the
// projected centroid difference P(μ_Q − μ_K) (AxisB::centroid, the method's formula) or the top
// eigenvector of P C_δ P with C_δ = S_Q + S_K + ΔμΔμᵀ (AxisB::eigen: δ = q − k over independent
// draws), signed so that bᵀΔμ >= 0. Projections are uncentred so that q·k = q_a k_a + q_b k_b +
// q_⊥·k_⊥ exactly.
struct Rotation {
  Eigen::VectorXd a, b;                 // (d,) unit, a ⊥ b
  double mu_q_a = 0, mu_k_a = 0, mu_q_b = 0, mu_k_b = 0;
  double intercept_q_a = 0, intercept_k_a = 0;  // OLS intercepts of q_a on t_q, k_a on t_k
  double alpha_q = 0, alpha_k = 0;      // OLS slopes
  double r_q_a = 0, r_k_a = 0;          // Pearson (signed)
  double position_r = 0;                // |corr(aᵀx, t)| over the pooled rows
  double bias_strength = 0;             // mu_q_a · alpha_k
  double separation_strength = 0;       // E[(bᵀδ)²] / E[‖δ‖²], δ = q − k over independent draws
  double var_frac_a = 0, var_frac_b = 0, plane_var_fraction = 0;
  double complement_var_fraction = 0;   // tr of the complement's covariance / tr Cov: 1 − plane_var_fraction
  double content_var_b = 0;             // ½(Var(q_b) + Var(k_b))
  double residual_pos_r = 0;            // max |corr(vᵀx, t)| over the complement's SVD basis (analytically 0)
  double drift_norm = 0;                // ‖Cov(X, t)‖; 0 means no axis a (all metrics NaN)
  std::vector<ComplementPlane> planes;  // the complement's rotation planes, by decreasing variance
  int64_t n_active_planes = 0;
  double active_var_fraction = 0;       // share of the complement's variance in active planes
};

Rotation planar_rotation(const QKRows& rows, AxisB axis_b = AxisB::centroid, const PlaneOptions& planes = {});

// Both analyses from one pass over the rows (they share the covariances).
struct QKGeometry {
  CombinedPca pca;
  Rotation rotation;
};
QKGeometry qk_geometry(const QKRows& rows, int64_t n_components = 10, AxisB axis_b = AxisB::centroid,
                       double anchor_tolerance = 0.05, const PlaneOptions& planes = {});

// Many heads at once, in parallel over heads (OpenMP; each head's products then run on one
// thread). A head that fails leaves its error message in `errors` (empty when it succeeded).
std::vector<QKGeometry> qk_geometry_batch(const std::vector<QKRows>& heads, int64_t n_components, AxisB axis_b,
                                          double anchor_tolerance, const PlaneOptions& planes,
                                          std::vector<std::string>& errors);

}  // namespace spectra
