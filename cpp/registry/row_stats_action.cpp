#include "registry/row_stats_action.hpp"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <map>
#include <string>
#include <tuple>

namespace spectra::bindings {
namespace {

using AttnRowStatsFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                              const std::optional<at::Tensor>&, bool, int64_t,
                                              std::optional<int64_t>, double, int64_t, double);
using VecStatsFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&);

// Through the dispatcher, so a CUDA kernel registered for the op is used for CUDA activations.
auto attn_row_stats_op() {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("spectra::attn_row_stats", "").typed<AttnRowStatsFn>();
  return op;
}

auto vec_stats_op() {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("spectra::vec_stats", "").typed<VecStatsFn>();
  return op;
}

}  // namespace

RowStatsAction::RowStatsAction(int64_t layer, std::vector<int64_t> heads, int64_t n_heads, int64_t n_kv_heads,
                               double threshold, int64_t n_sink)
    : layer_(layer), heads_(std::move(heads)), group_(n_heads / n_kv_heads), threshold_(threshold), n_sink_(n_sink) {
  TORCH_CHECK_VALUE(threshold > 0.0 && threshold <= 1.0, "threshold must lie in (0, 1]; got ", threshold);
  TORCH_CHECK_VALUE(n_sink >= 0, "n_sink must be >= 0; got ", n_sink);
  TORCH_CHECK_VALUE(!heads_.empty(), "heads: no heads selected for layer ", layer);
}

void RowStatsAction::on_attention(HookRegistry& registry, AttentionCall& call) {
  const Batch& batch = registry.batch();
  TORCH_CHECK_VALUE(call.scaling.has_value(), "metrics: layer ", layer_,
                    " passed no scaling to its attention function; the adapter must supply it");
  const int64_t batch_size = batch.positions.size(0), seq_len = batch.positions.size(1);
  const at::Tensor q = call.q.detach(), k = call.k.detach();
  const int64_t key_len = k.size(2);
  TORCH_CHECK_VALUE(q.size(2) == seq_len && key_len >= seq_len, "metrics: layer ", layer_, " got ", q.size(2),
                    " queries and ", key_len, " keys for a batch of ", seq_len, " tokens");
  // Padding keys come from the batch; keys from a cache (before this batch's tokens) are real.
  at::Tensor key_valid = batch.valid;
  if (key_len > seq_len)
    key_valid = at::cat({at::ones({batch_size, key_len - seq_len}, key_valid.options()), key_valid}, 1);
  key_valid = key_valid.to(q.device());
  const std::optional<at::Tensor> key_valid_arg = key_valid;

  // Query heads grouped by the KV head they read, so the kernel sees a plain (H', 1) GQA layout.
  std::map<int64_t, std::vector<int64_t>> by_kv;
  for (int64_t h : heads_) by_kv[h / group_].push_back(h);
  std::vector<at::Tensor> stats[8], q_norms, k_norms, head_ids;
  for (const auto& [kv, hs] : by_kv) {
    const at::Tensor index = at::tensor(hs, at::TensorOptions().dtype(at::kLong)).to(q.device());
    const at::Tensor q_sub = q.index_select(1, index);
    const at::Tensor k_sub = k.narrow(1, kv, 1);
    auto out = attn_row_stats_op().call(q_sub, k_sub, *call.scaling, key_valid_arg, call.mask.is_causal,
                                        call.mask.sliding_window.value_or(0), std::nullopt, threshold_, n_sink_,
                                        call.softcap.value_or(0.0));
    const at::Tensor parts[8] = {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out),
                                 std::get<4>(out), std::get<5>(out), std::get<6>(out), std::get<7>(out)};
    for (int i = 0; i < 8; ++i) stats[i].push_back(parts[i]);
    q_norms.push_back(std::get<0>(vec_stats_op().call(q_sub)));  // (B, H', T)
    const at::Tensor k_norm = std::get<0>(vec_stats_op().call(k_sub.narrow(2, key_len - seq_len, seq_len)));
    k_norms.push_back(k_norm.expand({batch_size, static_cast<int64_t>(hs.size()), seq_len}));
    head_ids.push_back(index.cpu());
  }
  // (B, H_sel, T) each, heads in the order grouped above; keep real tokens only.
  auto join = [&](std::vector<at::Tensor>& parts) { return at::cat(parts, 1).cpu(); };
  const at::Tensor heads = at::cat(head_ids);
  const int64_t n_sel = heads.size(0);
  const at::Tensor keep = batch.valid.unsqueeze(1).expand({batch_size, n_sel, seq_len}).reshape({-1});
  const at::Tensor rows = keep.nonzero().reshape({-1});
  auto pick = [&](const at::Tensor& t) { return t.reshape({-1}).index_select(0, rows); };
  RowStatsColumns c;
  c.example_id = pick(batch.example_ids.view({batch_size, 1, 1}).expand({batch_size, n_sel, seq_len}));
  c.head = pick(heads.view({1, n_sel, 1}).expand({batch_size, n_sel, seq_len}));
  c.position = pick(batch.positions.unsqueeze(1).expand({batch_size, n_sel, seq_len}));
  c.entropy = pick(join(stats[0]).to(at::kFloat));
  c.entropy_normalized = pick(join(stats[1]).to(at::kFloat));
  c.max_attn = pick(join(stats[2]).to(at::kFloat));
  c.argmax = pick(join(stats[3]));
  c.k_eff = pick(join(stats[4]));
  c.sink_mass = pick(join(stats[5]).to(at::kFloat));
  c.sink_mass_n = pick(join(stats[6]).to(at::kFloat));
  c.n_visible = pick(join(stats[7]));
  c.q_norm = pick(join(q_norms).to(at::kFloat));
  c.k_norm = pick(join(k_norms).to(at::kFloat));
  chunks_.push_back(std::move(c));
}

void RowStatsAction::on_end_batch(bool discard) {
  if (discard) chunks_.resize(std::min(batch_mark_, chunks_.size()));
}

RowStatsColumns RowStatsAction::drain() {
  // Column i of every chunk, concatenated (dtypes as on_attention builds them).
  if (chunks_.empty()) {
    RowStatsColumns typed;  // dtypes of an empty drain: ids and counts int64, metrics float32
    typed.for_each_column([](const char* name, at::Tensor& column) {
      const std::string n(name);
      const bool is_long = n == "example_id" || n == "head" || n == "position" || n == "argmax" || n == "k_eff" ||
                           n == "n_visible";
      column = at::empty({0}, at::TensorOptions().dtype(is_long ? at::kLong : at::kFloat));
    });
    return typed;
  }
  std::vector<std::vector<at::Tensor>> parts;
  for (auto& chunk : chunks_) {
    size_t i = 0;
    chunk.for_each_column([&](const char*, at::Tensor& column) {
      if (parts.size() <= i) parts.emplace_back();
      parts[i++].push_back(column);
    });
  }
  RowStatsColumns out;
  size_t i = 0;
  out.for_each_column([&](const char*, at::Tensor& column) {
    const auto& pieces = parts[i++];
    column = pieces.size() == 1 ? pieces.front() : at::cat(pieces);
  });
  chunks_.clear();
  batch_mark_ = 0;
  return out;
}

}  // namespace spectra::bindings
