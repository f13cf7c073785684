// Streaming per-group second moments of D-dimensional vectors, and the effective rank of each
// group's matrix (a matrix rank, unlike the per-vector participation ratio of vec_stats).
//
// A head's keys over a corpus form a (tokens × D) matrix that never fits in memory for long runs;
// its rank structure only needs the count, Σx and Σxxᵀ, kept here in float64 per group (one group
// per KV head) and merged exactly across batches and shards. From them:
//   spectral participation ratio  (Σλ)² / Σλ²  of the covariance's eigenvalues λ — computed as
//                                 tr(C)² / ‖C‖_F², no decomposition needed;
//   entropy rank (Roy & Vetterli) exp(−Σ σ̂ ln σ̂), σ̂ = σ / Σσ, σ the singular values of the
//                                 (centered) matrix, i.e. the square roots of n·λ.
// centered = true uses the covariance (a constant offset, e.g. a sink's golden dimension, is not a
// direction of variation); centered = false uses Σxxᵀ / n, the uncentered matrix itself.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <vector>

namespace spectra {

class SecondMoments {
 public:
  SecondMoments(int64_t n_groups, int64_t dim);

  int64_t n_groups() const { return static_cast<int64_t>(count_.size()); }
  int64_t dim() const { return dim_; }

  // Adds `rows` vectors per group from x[r, g, d] = x + r·stride_row + g·stride_group + d·stride_dim,
  // for groups [group_begin, group_end). A vector with a non-finite entry is skipped and counted
  // in nan_count. Disjoint group ranges may be updated from different threads.
  template <typename In>
  void update(const In* x, int64_t rows, int64_t stride_row, int64_t stride_group, int64_t stride_dim,
              int64_t group_begin, int64_t group_end);

  // Folds another accumulator of the same shape into this one. Throws std::invalid_argument otherwise.
  void merge(const SecondMoments& other);

  int64_t count(int64_t g) const { return count_[g]; }
  int64_t nan_count(int64_t g) const { return nan_count_[g]; }
  // Covariance (centered, divided by n) or Σxxᵀ / n; all NaN when the group has no vector.
  Eigen::MatrixXd matrix(int64_t g, bool centered) const;
  // Eigenvalues of matrix(g, centered), descending, negatives from rounding clamped to 0.
  Eigen::VectorXd eigenvalues(int64_t g, bool centered) const;
  // NaN for an empty group or a zero matrix.
  double spectral_pr(int64_t g, bool centered) const;
  double entropy_rank(int64_t g, bool centered) const;

 private:
  int64_t dim_;
  std::vector<int64_t> count_, nan_count_;
  std::vector<Eigen::VectorXd> sum_;
  std::vector<Eigen::MatrixXd> outer_;  // lower triangle holds Σxxᵀ
};

}  // namespace spectra
