#include "registry/row_stats_action.hpp"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "spectra/build_info.hpp"

namespace spectra::bindings {
namespace {

using AttnRowStatsFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                              const std::optional<at::Tensor>&, bool, int64_t,
                                              std::optional<int64_t>, double, int64_t, double,
                                              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&);
using VecStatsFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&);

// The `.torch` overloads are defined from Python (spectra.ops) after this module has loaded, so they
// are looked up when first needed, never at import.
template <typename Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name, const char* overload) {
  const auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
  TORCH_CHECK(handle.has_value(), "SPECTRA_BACKEND=torch: the operator ", name, ".", overload,
              " is not defined; spectra.ops was not imported (import spectra.ops, which defines the torch "
              "implementations, before running the model)");
  return handle->typed<Fn>();
}

bool is_identity(const std::vector<int64_t>& index, int64_t n) {
  if (static_cast<int64_t>(index.size()) != n) return false;
  for (int64_t i = 0; i < n; ++i)
    if (index[i] != i) return false;
  return true;
}

at::Tensor index_tensor(const std::vector<int64_t>& values, const c10::Device& device) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong)).to(device);
}

}  // namespace

OpsBackend ops_backend_from_name(const std::string& name) {
  if (name == "auto") return OpsBackend::automatic;
  if (name == "native") return OpsBackend::native;
  if (name == "torch") return OpsBackend::torch;
  TORCH_CHECK_VALUE(false, "backend: unknown backend '", name, "'; allowed backends are auto, native, torch");
}

const char* ops_backend_name(OpsBackend backend) {
  switch (backend) {
    case OpsBackend::native:
      return "native";
    case OpsBackend::torch:
      return "torch";
    default:
      return "auto";
  }
}

struct RowStatsAction::Ops {
  c10::TypedOperatorHandle<AttnRowStatsFn> attn_row_stats;
  c10::TypedOperatorHandle<VecStatsFn> vec_stats;
  // The torch path's entry, for the calls no CUDA kernel takes (learned sinks, a custom mask); found
  // when first needed.
  std::optional<c10::TypedOperatorHandle<AttnRowStatsFn>> attn_row_stats_torch;
};

RowStatsAction::RowStatsAction(int64_t layer, std::vector<int64_t> heads, int64_t n_heads, int64_t n_kv_heads,
                               double threshold, int64_t n_sink, const std::string& backend)
    : layer_(layer),
      heads_(std::move(heads)),
      n_heads_(n_heads),
      n_kv_heads_(n_kv_heads),
      group_(n_heads / n_kv_heads),
      threshold_(threshold),
      n_sink_(n_sink),
      backend_(ops_backend_from_name(backend)) {
  TORCH_CHECK_VALUE(threshold > 0.0 && threshold <= 1.0, "threshold must lie in (0, 1]; got ", threshold);
  TORCH_CHECK_VALUE(n_sink >= 0, "n_sink must be >= 0; got ", n_sink);
  TORCH_CHECK_VALUE(!heads_.empty(), "heads: no heads selected for layer ", layer);
  std::sort(heads_.begin(), heads_.end());
  heads_.erase(std::unique(heads_.begin(), heads_.end()), heads_.end());
  // attn_row_stats reads KV head h / (H' / Hkv') for query head h of its input, so it gets whole KV
  // groups: every query head of each KV group that has a selected head, with those KV heads.
  for (int64_t h : heads_)
    if (kv_heads_.empty() || kv_heads_.back() != h / group_) kv_heads_.push_back(h / group_);
  for (int64_t kv : kv_heads_)
    for (int64_t j = 0; j < group_; ++j) q_heads_.push_back(kv * group_ + j);
  for (int64_t h : heads_) {
    const int64_t rank = std::lower_bound(kv_heads_.begin(), kv_heads_.end(), h / group_) - kv_heads_.begin();
    keep_.push_back(rank * group_ + h % group_);
    keep_kv_.push_back(rank);
  }
  select_inputs_ = !is_identity(q_heads_, n_heads_);
  select_outputs_ = !is_identity(keep_, static_cast<int64_t>(q_heads_.size()));
  select_kv_outputs_ = !is_identity(keep_kv_, static_cast<int64_t>(kv_heads_.size()));
  head_ids_ = at::tensor(heads_, at::TensorOptions().dtype(at::kLong));
}

RowStatsAction::~RowStatsAction() = default;

const RowStatsAction::DeviceIndex& RowStatsAction::index_on(const c10::Device& device) {
  if (index_.device != device) {
    index_.q_heads = select_inputs_ ? index_tensor(q_heads_, device) : at::Tensor();
    index_.kv_heads = select_inputs_ ? index_tensor(kv_heads_, device) : at::Tensor();
    index_.keep = select_outputs_ ? index_tensor(keep_, device) : at::Tensor();
    index_.keep_kv = select_kv_outputs_ ? index_tensor(keep_kv_, device) : at::Tensor();
    index_.device = device;
  }
  return index_;
}

void RowStatsAction::check_native(const c10::Device& device) const {
  if (device.is_cpu()) return;  // every op has its CPU kernel
  const bool cuda = device.is_cuda();
  for (const char* op : {"attn_row_stats", "vec_stats"}) {
    TORCH_CHECK_VALUE(cuda && build_info::cuda_kernel_linked(op), "SPECTRA_BACKEND=native: layer ", layer_,
                      " runs on ", device, " but this build of spectra links no native ", device.type(),
                      " kernel of ", op, " (native CUDA kernels linked: ", build_info::cuda_kernels_text,
                      "); allowed backends here are auto and torch (SPECTRA_BACKEND=auto|torch, or "
                      "spectra.backend(\"torch\"))");
  }
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
  TORCH_CHECK_VALUE(q.size(1) == n_heads_ && k.size(1) == n_kv_heads_, "metrics: layer ", layer_, " got ",
                    q.size(1), " query and ", k.size(1), " KV heads; the model has ", n_heads_, " and ",
                    n_kv_heads_);
  const c10::Device device = q.device();
  if (!ops_) {
    if (backend_ == OpsBackend::torch)
      ops_ = std::make_unique<Ops>(Ops{find_op<AttnRowStatsFn>("spectra::attn_row_stats", "torch"),
                                       find_op<VecStatsFn>("spectra::vec_stats", "torch")});
    else  // through the dispatcher, so a CUDA kernel (or the torch path) registered for the op is used
      ops_ = std::make_unique<Ops>(
          Ops{c10::Dispatcher::singleton().findSchemaOrThrow("spectra::attn_row_stats", "").typed<AttnRowStatsFn>(),
              c10::Dispatcher::singleton().findSchemaOrThrow("spectra::vec_stats", "").typed<VecStatsFn>()});
  }
  if (backend_ == OpsBackend::native) check_native(device);
  const DeviceIndex& index = index_on(device);

  // Padding keys come from the batch; keys from a cache (before this batch's tokens) are real.
  at::Tensor key_valid = registry.batch_valid_on(device);
  if (key_len > seq_len)
    key_valid = at::cat({at::ones({batch_size, key_len - seq_len}, key_valid.options()), key_valid}, 1);
  const std::optional<at::Tensor> key_valid_arg = key_valid;

  const at::Tensor q_in = select_inputs_ ? q.index_select(1, index.q_heads) : q;
  const at::Tensor k_in = select_inputs_ ? k.index_select(1, index.kv_heads) : k;
  std::optional<at::Tensor> sinks;  // the selected query heads' sink logits, on q's device
  if (call.sinks.has_value()) {
    const at::Tensor all = call.sinks->detach().reshape({-1}).to(device);
    TORCH_CHECK_VALUE(all.size(0) == n_heads_, "metrics: layer ", layer_, " passed ", all.size(0),
                      " sink logits for ", n_heads_, " heads");
    sinks = select_inputs_ ? all.index_select(0, index.q_heads) : all;
  }

  // Left padding. attn_row_stats puts the sink on key 0 (and n_sink keys from there) and reports
  // argmax as a key index, so on a row whose real tokens start at column s > 0 the sink would be a
  // pad. Rather than teach every kernel a per-row start, such a row is handed to the op rotated left
  // by s: its real tokens from column 0, its pads after them, i.e. the same row right-padded. The
  // causal order, sliding-window distances and the key mask rotate with it, so every statistic is
  // the one of the unpadded text (sink = first real key, argmax = offset from the first real token),
  // and the outputs are rotated back to the batch's columns. Exact; nothing is done for batches
  // without leading pads. With a KV cache (keys beyond this batch's tokens) rows are left as they are.
  at::Tensor rotate_in, rotate_out;  // (B, T) column indices on the device, defined when some row is rotated
  if (key_len == seq_len) {
    const at::Tensor lead = (batch.valid.to(at::kLong).cumsum(1) == 0).sum(1).remainder(seq_len);  // (B,)
    if (lead.gt(0).any().item<bool>()) {
      const at::Tensor cols = at::arange(seq_len, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
      rotate_in = (cols + lead.unsqueeze(1)).remainder(seq_len).to(device);   // column j reads column j + s
      rotate_out = (cols - lead.unsqueeze(1)).remainder(seq_len).to(device);  // column i reads column i - s
    }
  }
  auto rotate = [&](const at::Tensor& t, const at::Tensor& columns) {  // t (B, H, T[, D]) along dim 2
    std::vector<int64_t> shape{columns.size(0), 1, columns.size(1)};
    if (t.dim() == 4) shape.push_back(1);
    return t.gather(2, columns.view(shape).expand(t.sizes()));
  };
  const bool rotated = rotate_in.defined();
  const std::optional<at::Tensor> op_key_valid =
      rotated ? std::optional<at::Tensor>(key_valid.gather(1, rotate_in)) : key_valid_arg;
  // A custom mask: the selected heads' rows (when it differs per head), rotated in both its query
  // rows and its key columns like q and k.
  std::optional<at::Tensor> visible;
  if (call.visible.has_value()) {
    at::Tensor v = call.visible->to(device);
    if (v.size(1) != 1 && select_inputs_) v = v.index_select(1, index.q_heads);
    if (rotated) {
      v = v.expand({batch_size, v.size(1), v.size(2), v.size(3)});
      const at::Tensor rows = rotate_in.view({batch_size, 1, seq_len, 1}).expand(v.sizes());
      const at::Tensor cols = rotate_in.view({batch_size, 1, 1, seq_len}).expand(v.sizes());
      v = v.gather(2, rows).gather(3, cols);
    }
    visible = v;
  }
  // Only the CPU kernel takes learned sinks and custom masks: elsewhere they go to the torch path
  // (as spectra.attn_row_stats sends them), never to a CUDA kernel that would refuse them.
  const bool torch_only = (sinks.has_value() || visible.has_value()) && !device.is_cpu();
  if (torch_only && !ops_->attn_row_stats_torch)
    ops_->attn_row_stats_torch = find_op<AttnRowStatsFn>("spectra::attn_row_stats", "torch");
  const auto& attn_op = torch_only ? *ops_->attn_row_stats_torch : ops_->attn_row_stats;
  auto out = attn_op.call(rotated ? rotate(q_in, rotate_in) : q_in, rotated ? rotate(k_in, rotate_in) : k_in,
                          *call.scaling, op_key_valid, call.mask.is_causal, call.mask.sliding_window.value_or(0),
                          std::nullopt, threshold_, n_sink_, call.softcap.value_or(0.0), sinks, visible);
  if (rotated) {
    std::get<0>(out) = rotate(std::get<0>(out), rotate_out);
    std::get<1>(out) = rotate(std::get<1>(out), rotate_out);
    std::get<2>(out) = rotate(std::get<2>(out), rotate_out);
    std::get<3>(out) = rotate(std::get<3>(out), rotate_out);
    std::get<4>(out) = rotate(std::get<4>(out), rotate_out);
    std::get<5>(out) = rotate(std::get<5>(out), rotate_out);
    std::get<6>(out) = rotate(std::get<6>(out), rotate_out);
    std::get<7>(out) = rotate(std::get<7>(out), rotate_out);
  }
  const at::Tensor q_norm = std::get<0>(ops_->vec_stats.call(q_in));                                  // (B, H', T)
  const at::Tensor k_norm = std::get<0>(ops_->vec_stats.call(k_in.narrow(2, key_len - seq_len, seq_len)));  // (B, Hkv', T)
  // (B, H_sel, T): the selected heads, ascending; k_norm is each one's KV head's.
  auto keep = [&](const at::Tensor& t) { return select_outputs_ ? t.index_select(1, index.keep) : t; };
  Chunk c;
  // Host copies: the batch's tensors may be the caller's, reused after this forward.
  c.example_ids = batch.example_ids.clone();
  c.positions = batch.positions.clone();
  c.valid = batch.valid.clone();
  c.reals = {keep(std::get<0>(out)), keep(std::get<1>(out)), keep(std::get<2>(out)), keep(std::get<5>(out)),
             keep(std::get<6>(out)), keep(q_norm),
             select_kv_outputs_ ? k_norm.index_select(1, index.keep_kv) : k_norm};
  c.counts = {keep(std::get<3>(out)), keep(std::get<4>(out)), keep(std::get<7>(out))};
  chunks_.push_back(std::move(c));
}

void RowStatsAction::on_end_batch(bool discard) {
  if (discard) chunks_.resize(std::min(batch_mark_, chunks_.size()));
}

RowStatsColumns RowStatsAction::columns(const Chunk& chunk) const {
  const int64_t batch_size = chunk.positions.size(0), seq_len = chunk.positions.size(1);
  const int64_t n_sel = head_ids_.size(0);
  const std::vector<int64_t> grid{batch_size, n_sel, seq_len};
  // Two transfers per forward: the float32 metrics stacked, and the counts stacked.
  const at::Tensor reals = at::stack(std::vector<at::Tensor>(chunk.reals.begin(), chunk.reals.end()))
                               .to(at::kFloat)
                               .to(at::kCPU);
  const at::Tensor counts =
      at::stack(std::vector<at::Tensor>(chunk.counts.begin(), chunk.counts.end())).to(at::kCPU);
  // One row per (example, head, real token), example-major, then head, then position.
  const at::Tensor keep = chunk.valid.unsqueeze(1).expand(grid).reshape({-1});
  const at::Tensor rows = keep.nonzero().reshape({-1});
  auto pick = [&](const at::Tensor& t) { return t.reshape({-1}).index_select(0, rows); };
  RowStatsColumns c;
  c.example_id = pick(chunk.example_ids.view({batch_size, 1, 1}).expand(grid));
  c.head = pick(head_ids_.view({1, n_sel, 1}).expand(grid));
  c.position = pick(chunk.positions.unsqueeze(1).expand(grid));
  c.entropy = pick(reals[0]);
  c.entropy_normalized = pick(reals[1]);
  c.max_attn = pick(reals[2]);
  c.sink_mass = pick(reals[3]);
  c.sink_mass_n = pick(reals[4]);
  c.q_norm = pick(reals[5]);
  c.k_norm = pick(reals[6]);
  c.argmax = pick(counts[0]);
  c.k_eff = pick(counts[1]);
  c.n_visible = pick(counts[2]);
  return c;
}

RowStatsColumns RowStatsAction::drain() {
  // Column i of every chunk, concatenated (float32 metrics, int64 ids and counts).
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
  for (const auto& chunk : chunks_) {
    RowStatsColumns c = columns(chunk);
    size_t i = 0;
    c.for_each_column([&](const char*, at::Tensor& column) {
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
