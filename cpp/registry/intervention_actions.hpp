// HookRegistry actions that change the model's own forward pass: scale one head's queries or one
// KV head's keys inside the attention function (after QK-norm and RoPE, so neither can undo the
// scale), and replace one head's output before the output projection (zero, mean, or a patch from
// another run). They never modify the tensors they are handed: a KV cache may hold those keys.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "registry/hook_registry.hpp"

namespace spectra::bindings {

// Counts how often an action ran, so a caller can verify it was reached in every forward.
class CountedAction : public Action {
 public:
  int64_t applied() const { return applied_; }
  int64_t applied_this_batch() const { return applied_ - batch_mark_; }
  void on_begin_batch() override { batch_mark_ = applied_; }

 protected:
  int64_t applied_ = 0;
  int64_t batch_mark_ = 0;
};

// Multiplies q[:, head] (kind 'q', query heads) or k[:, kv_head] (kind 'k', KV heads) by `factor`.
class ScaleHeadsAction final : public CountedAction {
 public:
  ScaleHeadsAction(int64_t layer, char kind, std::vector<int64_t> heads, double factor);
  int64_t layer() const override { return layer_; }
  char kind() const { return kind_; }
  const std::vector<int64_t>& heads() const { return heads_; }
  double factor() const { return factor_; }
  void on_attention(HookRegistry& registry, AttentionCall& call) override;

 private:
  int64_t layer_;
  char kind_;
  std::vector<int64_t> heads_;
  double factor_;
};

enum class HeadOutputMode { zero, mean, patch };

// Replaces attention output (B, T, H, D)[:, :, head] before the output projection:
// zero; mean (a given (D,) vector, or the mean over the batch's real tokens); or patch (a source
// (B, T, D) or (T, D), optionally only at the given token columns).
class HeadOutputAction final : public CountedAction {
 public:
  HeadOutputAction(int64_t layer, int64_t head, HeadOutputMode mode, std::optional<at::Tensor> value,
                   std::optional<at::Tensor> columns);
  int64_t layer() const override { return layer_; }
  int64_t head() const { return head_; }
  HeadOutputMode mode() const { return mode_; }
  bool wants_output() const override { return true; }
  void on_output(HookRegistry& registry, int64_t layer, at::Tensor& output) override;

 private:
  int64_t layer_, head_;
  HeadOutputMode mode_;
  std::optional<at::Tensor> value_;    // mean (D,) or patch source (B, T, D) / (T, D)
  std::optional<at::Tensor> columns_;  // int64 token columns to patch; all when absent
};

// Keeps a copy of the attention output of some heads, batch by batch: (B, T, H', D) per forward.
class HeadOutputRecorder final : public CountedAction {
 public:
  HeadOutputRecorder(int64_t layer, std::vector<int64_t> heads);
  int64_t layer() const override { return layer_; }
  const std::vector<int64_t>& heads() const { return heads_; }
  bool wants_output() const override { return true; }
  void on_output(HookRegistry& registry, int64_t layer, at::Tensor& output) override;
  void on_begin_batch() override;
  void on_end_batch(bool discard) override;
  // One (B, T, H', D) tensor per completed forward, in order.
  const std::vector<at::Tensor>& outputs() const { return outputs_; }

 private:
  int64_t layer_;
  std::vector<int64_t> heads_;
  std::vector<at::Tensor> outputs_;
  size_t batch_mark_outputs_ = 0;
};

}  // namespace spectra::bindings
