// A HookRegistry action that measures attention rows inside the model's forward: for its layer's
// selected query heads, attn_row_stats over the keys each query may see (the batch's padding, the
// module's causality and sliding window) plus the q and k norms of every token, kept as tidy
// per-(example, head, token) columns until drained.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "registry/hook_registry.hpp"

namespace spectra::bindings {

struct RowStatsColumns {
  // One entry per (example, head, real token), example-major, then head, then position.
  at::Tensor example_id, head, position;                                     // int64
  at::Tensor entropy, entropy_normalized, max_attn, sink_mass, sink_mass_n;  // float32
  at::Tensor argmax, k_eff, n_visible;                                       // int64
  at::Tensor q_norm, k_norm;                                                 // float32

  // Calls f(name, column) for every column in the order above: the one list of names that the
  // drain and the Python binding share.
  template <typename F>
  void for_each_column(F&& f) {
    f("example_id", example_id);
    f("head", head);
    f("position", position);
    f("entropy", entropy);
    f("entropy_normalized", entropy_normalized);
    f("max_attn", max_attn);
    f("sink_mass", sink_mass);
    f("sink_mass_n", sink_mass_n);
    f("argmax", argmax);
    f("k_eff", k_eff);
    f("n_visible", n_visible);
    f("q_norm", q_norm);
    f("k_norm", k_norm);
  }
};

class RowStatsAction final : public Action {
 public:
  RowStatsAction(int64_t layer, std::vector<int64_t> heads, int64_t n_heads, int64_t n_kv_heads, double threshold,
                 int64_t n_sink);
  int64_t layer() const override { return layer_; }
  const std::vector<int64_t>& heads() const { return heads_; }
  double threshold() const { return threshold_; }
  int64_t n_sink() const { return n_sink_; }

  void on_attention(HookRegistry& registry, AttentionCall& call) override;
  void on_begin_batch() override { batch_mark_ = chunks_.size(); }
  void on_end_batch(bool discard) override;

  // Rows recorded since the last drain, then released.
  RowStatsColumns drain();

 private:
  int64_t layer_;
  std::vector<int64_t> heads_;
  int64_t group_;
  double threshold_;
  int64_t n_sink_;
  std::vector<RowStatsColumns> chunks_;
  size_t batch_mark_ = 0;
};

}  // namespace spectra::bindings
