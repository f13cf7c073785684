// Streaming per-group moments: count, mean, variance, min, max and a NaN count.
//
// Long jobs see activations batch by batch and must not keep them; this accumulator keeps O(groups)
// state, merges exactly across batches and shards (Chan et al.'s pairwise update, in double), and
// counts NaNs apart instead of letting one poison a mean (positions t < ignore_first are NaN by design).
#pragma once

#include <cstdint>
#include <vector>

#include "spectra/vec_stats.hpp"

namespace spectra {

class RunningMoments {
 public:
  // Everything the accumulator knows, for serialising shards and merging them elsewhere.
  struct State {
    std::vector<int64_t> count, nan_count;
    std::vector<double> mean, m2, min, max;
  };

  explicit RunningMoments(int64_t n_groups);
  // Throws std::invalid_argument unless all vectors have the same, non-zero length.
  explicit RunningMoments(State state);

  const State& state() const { return s_; }

  int64_t n_groups() const { return static_cast<int64_t>(s_.count.size()); }

  // Adds every row of `x` (rows, n_groups) as one sample per group, for groups
  // [group_begin, group_end). Disjoint group ranges may be updated from different threads.
  template <typename In>
  void update(const RowsView<In>& x, int64_t group_begin, int64_t group_end);

  // Folds another accumulator with the same number of groups into this one.
  void merge(const RunningMoments& other);

  void reset();

  int64_t count(int64_t g) const { return s_.count[g]; }
  int64_t nan_count(int64_t g) const { return s_.nan_count[g]; }
  // NaN when the group has no finite sample yet.
  double mean(int64_t g) const;
  // ddof = 0 gives the population variance, 1 the sample variance; NaN when count <= ddof.
  double variance(int64_t g, int64_t ddof) const;
  double min(int64_t g) const;
  double max(int64_t g) const;

 private:
  void merge_group(int64_t g, int64_t n_b, double mean_b, double m2_b, double min_b, double max_b);

  State s_;
};

}  // namespace spectra
