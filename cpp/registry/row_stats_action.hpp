// A HookRegistry action that measures attention rows inside the model's forward: for its layer's
// selected query heads, attn_row_stats over the keys each query may see (the batch's padding, the
// module's causality and sliding window) plus the q and k norms of every token, kept as tidy
// per-(example, head, token) columns until drained.
//
// The forward only queues device work: one attn_row_stats and one vec_stats per operand (q, k) per
// layer, whose (batch, heads, tokens) outputs stay on the activations' device. Moving them to the
// host, dropping padding and building the columns happen in drain(), so a CUDA forward never waits
// for the host. Drain after each forward (as profile() does) to hold one forward's outputs at most.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
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

// Which implementation of the spectra ops the action calls (SPECTRA_BACKEND, resolved in Python):
// automatic calls the ops' default overloads (the dispatcher picks the native CPU kernel, a linked CUDA
// kernel, or the torch path Python registers for CUDA); native does too, but first insists that a native
// kernel is linked for the activations' device; torch calls the `.torch` overloads Python defines.
enum class OpsBackend { automatic, native, torch };
OpsBackend ops_backend_from_name(const std::string& name);
const char* ops_backend_name(OpsBackend backend);

class RowStatsAction final : public Action {
 public:
  // `heads` are query heads; they are kept sorted and unique, the order of the drained columns.
  RowStatsAction(int64_t layer, std::vector<int64_t> heads, int64_t n_heads, int64_t n_kv_heads, double threshold,
                 int64_t n_sink, const std::string& backend = "auto");
  ~RowStatsAction() override;
  int64_t layer() const override { return layer_; }
  const std::vector<int64_t>& heads() const { return heads_; }
  double threshold() const { return threshold_; }
  int64_t n_sink() const { return n_sink_; }
  const char* backend() const { return ops_backend_name(backend_); }

  void on_attention(HookRegistry& registry, AttentionCall& call) override;
  void on_begin_batch() override { batch_mark_ = chunks_.size(); }
  void on_end_batch(bool discard) override;

  // Rows recorded since the last drain, then released.
  RowStatsColumns drain();

 private:
  // One forward's outputs: the batch's metadata (host) and (B, H_sel, T) stats on the device.
  struct Chunk {
    at::Tensor example_ids, positions, valid;  // (B,), (B, T), (B, T), copied from the batch
    // entropy, entropy_normalized, max_attn, sink_mass, sink_mass_n, q_norm, k_norm (the op's dtype)
    std::array<at::Tensor, 7> reals;
    std::array<at::Tensor, 3> counts;  // argmax, k_eff, n_visible (int64)
  };
  // Index tensors on the device the layer ran on last, built once per device.
  struct DeviceIndex {
    std::optional<c10::Device> device;
    at::Tensor q_heads;    // query heads of every KV group with a selected head, ascending
    at::Tensor kv_heads;   // those KV groups, ascending
    at::Tensor keep;       // position of each selected head within q_heads
    at::Tensor keep_kv;    // position of each selected head's KV head within kv_heads
  };
  struct Ops;  // the dispatcher handles the backend calls, looked up at first use

  const DeviceIndex& index_on(const c10::Device& device);
  void check_native(const c10::Device& device) const;
  RowStatsColumns columns(const Chunk& chunk) const;

  int64_t layer_;
  std::vector<int64_t> heads_;
  int64_t n_heads_, n_kv_heads_, group_;
  double threshold_;
  int64_t n_sink_;
  OpsBackend backend_;
  // The index lists behind DeviceIndex (host), and which selections are no-ops.
  std::vector<int64_t> q_heads_, kv_heads_, keep_, keep_kv_;
  bool select_inputs_, select_outputs_, select_kv_outputs_;
  at::Tensor head_ids_;  // heads_ as an int64 host tensor, for the head column
  DeviceIndex index_;
  std::unique_ptr<Ops> ops_;
  std::vector<Chunk> chunks_;
  size_t batch_mark_ = 0;
};

}  // namespace spectra::bindings
