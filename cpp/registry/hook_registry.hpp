// The native half of a Probe: which (layer, kind, stage, heads) to act on and what to do there.
//
// Python's attention function and pre-RoPE hooks only forward tensors here; the registry owns the
// per-layer action lists, the batch's position bookkeeping and the captured data. Actions are
// polymorphic so metrics and interventions (later issues) hang off the same layer lists as
// captures, several per layer, in registration order.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "spectra/position_sampler.hpp"

namespace spectra::bindings {

enum class Stage { pre_rope = 0, post_rope = 1 };
Stage stage_from_name(const std::string& name);
const char* stage_name(Stage stage);
// 'q', 'k' or 'v'; anything else is a ValueError naming `kind`.
char kind_from_name(const std::string& name);

// What the model's backbone was called with, for the forward now running.
struct Batch {
  at::Tensor example_ids;  // (B,) int64
  at::Tensor positions;    // (B, T) int64: the position id of every token (what RoPE used)
  at::Tensor valid;        // (B, T) bool: false on padding
};

// Rows a sampler kept for one (layer, kind) of the current batch, shared by all its heads/stages.
struct Selection {
  at::Tensor flat_index;   // (N,) int64 into the (B*T) token grid, batch-major then position
  at::Tensor positions;    // (N,) int32
  at::Tensor example_ids;  // (N,) int32 (wrapping cast, as the reference tool stores them)
  at::Tensor buckets;      // (N,) int32
};

// The rows of one capture: vectors (N, heads, D) float32 on the CPU, with per-row metadata.
struct CapturedRows {
  at::Tensor vectors, positions, example_ids, buckets;
};

class HookRegistry;

// How a layer's queries may see keys, as far as the model tells the attention function.
struct MaskInfo {
  std::optional<at::Tensor> attention_mask;  // as built for the delegate: bool (True = attend) or additive float, (B, 1, Tq, Tk); None when the implementation relies on is_causal
  bool is_causal = true;                      // the module's is_causal (False for BERT-style encoders)
  std::optional<int64_t> sliding_window;      // tokens, when the layer is a sliding-window layer
};

// Arguments of one attention call as the model hands them over (post-RoPE, post-QK-norm, keys and
// values per KV head, not repeated).
struct AttentionCall {
  int64_t layer;
  at::Tensor q, k, v;
  std::optional<double> scaling;  // None when the model passes none (GPT-2); see the adapter's scaling()
  MaskInfo mask;
  std::optional<double> softcap;  // Gemma2's attn_logit_softcapping, when the model passes it
  std::optional<at::Tensor> sinks;  // (H,) learned attention-sink logits (gpt-oss's s_aux), when passed
  // (B or 1, H or 1, Tq, Tk) bool: the keys each query sees, when the model's mask is not causal /
  // bidirectional + window + padding (chunked attention, document masks); read from the call's mask.
  std::optional<at::Tensor> visible;
};

class Action {
 public:
  virtual ~Action() = default;
  virtual int64_t layer() const = 0;
  // Post-RoPE: the attention function's inputs. May replace call.q/k/v (interventions).
  virtual void on_attention(HookRegistry& registry, AttentionCall& call) {}
  // A stage reached outside the attention function (pre-RoPE hooks): x is (B, heads, T, D).
  virtual void on_stage(HookRegistry& registry, char kind, Stage stage, const at::Tensor& x) {}
  virtual bool wants_stage(char kind, Stage stage) const { return false; }
  // The attention function's output (B, T, H, D), before the output projection. May replace it.
  virtual void on_output(HookRegistry& registry, int64_t layer, at::Tensor& output) {}
  virtual bool wants_output() const { return false; }
  // Batch boundaries; a batch whose forward raised ends with discard = true.
  virtual void on_begin_batch() {}
  virtual void on_end_batch(bool discard) {}
};

class CaptureAction final : public Action {
 public:
  CaptureAction(int64_t layer, char kind, Stage stage, std::vector<int64_t> heads, bool keep, int64_t head_dim);
  int64_t layer() const override { return layer_; }
  char kind() const { return kind_; }
  Stage stage() const { return stage_; }
  const std::vector<int64_t>& heads() const { return heads_; }
  int64_t rows() const { return rows_; }

  void on_attention(HookRegistry& registry, AttentionCall& call) override;
  void on_stage(HookRegistry& registry, char kind, Stage stage, const at::Tensor& x) override;
  bool wants_stage(char kind, Stage stage) const override { return kind == kind_ && stage == stage_; }
  void on_begin_batch() override { batch_mark_ = chunks_.size(); }
  void on_end_batch(bool discard) override;

  // All rows so far (drain=false) or the rows since the last drain, which are then released.
  CapturedRows rows_since_drain(bool drain);
  CapturedRows all_rows() const;

 private:
  void record(HookRegistry& registry, const at::Tensor& x);

  int64_t layer_;
  char kind_;
  Stage stage_;
  std::vector<int64_t> heads_;
  at::Tensor head_index_;
  bool keep_;  // keep every row for captured() as well as handing them to drain()
  std::vector<CapturedRows> chunks_;  // one per recorded batch
  size_t drained_ = 0;                // chunks_[0, drained_) were handed out by a drain already
  size_t batch_mark_ = 0;             // chunks_.size() when the current batch began
  int64_t rows_ = 0;
  int64_t dim_;  // vector size (the model's head_dim until a tensor says otherwise)
};

class HookRegistry {
 public:
  HookRegistry(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, PositionSampler sampler);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_heads() const { return n_heads_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  const PositionSampler& sampler() const { return sampler_; }
  // Query head h reads KV head h / (n_heads / n_kv_heads).
  int64_t kv_head(int64_t head) const;

  std::shared_ptr<CaptureAction> add_capture(int64_t layer, const std::string& kind, const std::string& stage,
                                             std::vector<int64_t> heads, bool keep);
  void add_action(std::shared_ptr<Action> action);
  const std::vector<std::shared_ptr<Action>>& actions(int64_t layer) const;
  bool wants_stage(int64_t layer, char kind, Stage stage) const;
  std::vector<int64_t> layers_with_actions() const;

  void begin_batch(at::Tensor example_ids, at::Tensor positions, at::Tensor valid);
  void end_batch(bool discard = false);
  bool in_batch() const { return batch_.has_value(); }
  const Batch& batch() const;
  // The batch's valid mask on `device`: copied once per batch and device, without making the host
  // wait for the device (so actions of every layer share one copy and a CUDA forward never syncs).
  at::Tensor batch_valid_on(const c10::Device& device);

  // Runs the layer's actions; returns the (possibly replaced) q, k, v.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> on_attention(int64_t layer, at::Tensor q, at::Tensor k,
                                                               at::Tensor v, std::optional<double> scaling,
                                                               MaskInfo mask = {}, std::optional<double> softcap = {},
                                                               std::optional<at::Tensor> sinks = {},
                                                               std::optional<at::Tensor> visible = {});
  void on_stage(int64_t layer, const std::string& kind, const std::string& stage, const at::Tensor& x);
  // Runs the layer's output actions on the attention output (B, T, H, D); returns it, possibly replaced.
  at::Tensor on_output(int64_t layer, at::Tensor output);
  bool wants_output(int64_t layer) const;

  // The kept rows of a (layer, kind) in the current batch; drawn once, then shared.
  const Selection& selection(int64_t layer, char kind);
  // The same decision for an arbitrary grid, for tests and for callers that sample by themselves.
  at::Tensor sample_mask(int64_t layer, char kind, const at::Tensor& example_ids, const at::Tensor& positions,
                         const at::Tensor& valid) const;

  std::shared_ptr<CaptureAction> find_capture(int64_t layer, char kind, Stage stage, int64_t head) const;
  std::vector<std::shared_ptr<CaptureAction>> captures() const;

 private:
  void check_layer(int64_t layer, const char* arg) const;

  int64_t n_layers_, n_heads_, n_kv_heads_, head_dim_;
  PositionSampler sampler_;
  std::vector<std::vector<std::shared_ptr<Action>>> by_layer_;
  std::optional<Batch> batch_;
  std::vector<std::pair<c10::Device, at::Tensor>> valid_on_;  // batch_valid_on's copies of this batch
  std::map<std::pair<int64_t, char>, Selection> selections_;
};

}  // namespace spectra::bindings
