#include "registry/hook_registry.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <stdexcept>

namespace spectra::bindings {

Stage stage_from_name(const std::string& name) {
  if (name == "pre_rope") return Stage::pre_rope;
  if (name == "post_rope") return Stage::post_rope;
  TORCH_CHECK_VALUE(false, "stage: unknown stage '", name, "'; allowed stages are pre_rope, post_rope");
}

const char* stage_name(Stage stage) { return stage == Stage::pre_rope ? "pre_rope" : "post_rope"; }

char kind_from_name(const std::string& name) {
  TORCH_CHECK_VALUE(name == "q" || name == "k" || name == "v", "kind: unknown kind '", name,
                    "'; allowed kinds are q, k, v");
  return name[0];
}

namespace {

CapturedRows concat(const std::vector<CapturedRows>& chunks, size_t begin, int64_t n_heads, int64_t dim) {
  if (begin >= chunks.size()) {
    const auto i32 = at::TensorOptions().dtype(at::kInt);
    return {at::empty({0, n_heads, dim}, at::TensorOptions().dtype(at::kFloat)), at::empty({0}, i32),
            at::empty({0}, i32), at::empty({0}, i32)};
  }
  std::vector<at::Tensor> v, p, e, b;
  for (size_t i = begin; i < chunks.size(); ++i) {
    v.push_back(chunks[i].vectors);
    p.push_back(chunks[i].positions);
    e.push_back(chunks[i].example_ids);
    b.push_back(chunks[i].buckets);
  }
  if (v.size() == 1) return {v[0], p[0], e[0], b[0]};
  return {at::cat(v), at::cat(p), at::cat(e), at::cat(b)};
}

}  // namespace

// ---- CaptureAction ----

CaptureAction::CaptureAction(int64_t layer, char kind, Stage stage, std::vector<int64_t> heads, bool keep,
                             int64_t head_dim)
    : layer_(layer), kind_(kind), stage_(stage), heads_(std::move(heads)), keep_(keep), dim_(head_dim) {
  head_index_ = at::tensor(heads_, at::TensorOptions().dtype(at::kLong));
}

void CaptureAction::on_attention(HookRegistry& registry, AttentionCall& call) {
  if (stage_ != Stage::post_rope) return;
  record(registry, kind_ == 'q' ? call.q : kind_ == 'k' ? call.k : call.v);
}

void CaptureAction::on_stage(HookRegistry& registry, char kind, Stage stage, const at::Tensor& x) {
  if (kind == kind_ && stage == stage_) record(registry, x);
}

void CaptureAction::record(HookRegistry& registry, const at::Tensor& x_in) {
  const Batch& batch = registry.batch();
  const int64_t batch_size = batch.positions.size(0), seq_len = batch.positions.size(1);
  const int64_t expected_heads = kind_ == 'q' ? registry.n_heads() : registry.n_kv_heads();
  TORCH_CHECK_VALUE(x_in.dim() == 4 && x_in.size(0) == batch_size && x_in.size(1) == expected_heads &&
                        x_in.size(2) >= seq_len,
                    "HookRegistry: layer ", layer_, " ", kind_, " (", stage_name(stage_), ") has shape ", x_in.sizes(),
                    "; expected (", batch_size, ", ", expected_heads, ", >=", seq_len, ", head_dim) for the batch the ",
                    "model was called with");
  // detach(): captured rows never join the autograd graph.
  // With a KV cache the keys carry earlier tokens first; this batch's tokens are the last seq_len.
  at::Tensor x = x_in.detach().narrow(2, x_in.size(2) - seq_len, seq_len);
  const Selection& sel = registry.selection(layer_, kind_);
  at::Tensor rows;
  if (sel.flat_index.numel() == 0) {
    rows = at::empty({0, static_cast<int64_t>(heads_.size()), x.size(3)}, at::TensorOptions().dtype(at::kFloat));
  } else {
    const at::Tensor flat = sel.flat_index.to(x.device());
    const at::Tensor b = at::floor_divide(flat, seq_len), t = at::remainder(flat, seq_len);
    // (B, T, H, D)[b, t] -> (N, H, D): gathers only the kept rows, never a copy of the whole tensor.
    rows = x.transpose(1, 2).index({b, t}).index_select(1, head_index_.to(x.device()));
    rows = rows.to(at::TensorOptions().dtype(at::kFloat).device(at::kCPU)).contiguous();
  }
  dim_ = x.size(3);
  chunks_.push_back({rows, sel.positions, sel.example_ids, sel.buckets});
  rows_ += rows.size(0);
}

void CaptureAction::on_end_batch(bool discard) {
  if (!discard) return;
  // A forward that raised leaves no rows behind (some layers may already have recorded).
  for (size_t i = batch_mark_; i < chunks_.size(); ++i) rows_ -= chunks_[i].vectors.size(0);
  chunks_.resize(std::min(batch_mark_, chunks_.size()));
}

CapturedRows CaptureAction::rows_since_drain(bool drain) {
  CapturedRows out = concat(chunks_, drained_, static_cast<int64_t>(heads_.size()), dim_);
  if (drain) {
    if (keep_) {
      drained_ = chunks_.size();
    } else {
      chunks_.clear();
      drained_ = 0;
    }
  }
  return out;
}

CapturedRows CaptureAction::all_rows() const {
  TORCH_CHECK(keep_,
              "captured(): this capture streams to disk and does not keep rows in memory; pass "
              "keep_in_memory=True to the Probe to read them back here");
  return concat(chunks_, 0, static_cast<int64_t>(heads_.size()), dim_);
}

// ---- HookRegistry ----

HookRegistry::HookRegistry(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                           PositionSampler sampler)
    : n_layers_(n_layers), n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_dim_(head_dim), sampler_(std::move(sampler)) {
  TORCH_CHECK_VALUE(n_layers >= 1, "HookRegistry: n_layers must be >= 1; got ", n_layers);
  TORCH_CHECK_VALUE(n_heads >= 1 && n_kv_heads >= 1 && n_heads % n_kv_heads == 0,
                    "HookRegistry: n_heads (", n_heads, ") must be a positive multiple of n_kv_heads (", n_kv_heads, ")");
  TORCH_CHECK_VALUE(head_dim >= 1, "HookRegistry: head_dim must be >= 1; got ", head_dim);
  by_layer_.resize(static_cast<size_t>(n_layers));
}

int64_t HookRegistry::kv_head(int64_t head) const {
  TORCH_CHECK_VALUE(head >= 0 && head < n_heads_, "head: ", head, " is not a query head; allowed heads are 0..",
                    n_heads_ - 1);
  return head / (n_heads_ / n_kv_heads_);
}

void HookRegistry::check_layer(int64_t layer, const char* arg) const {
  TORCH_CHECK_VALUE(layer >= 0 && layer < n_layers_, arg, ": ", layer, " is not a layer of this model; allowed layers are 0..",
                    n_layers_ - 1);
}

std::shared_ptr<CaptureAction> HookRegistry::add_capture(int64_t layer, const std::string& kind_name,
                                                         const std::string& stage_name_, std::vector<int64_t> heads,
                                                         bool keep) {
  check_layer(layer, "layer");
  const char kind = kind_from_name(kind_name);
  const Stage stage = stage_from_name(stage_name_);
  const int64_t limit = kind == 'q' ? n_heads_ : n_kv_heads_;
  TORCH_CHECK_VALUE(!heads.empty(), "heads: no heads to capture for layer ", layer, " kind ", kind);
  for (int64_t h : heads)
    TORCH_CHECK_VALUE(h >= 0 && h < limit, "heads: ", h, " is not a ", kind == 'q' ? "query" : "KV", " head; allowed ",
                      kind_name, " heads are 0..", limit - 1);
  std::sort(heads.begin(), heads.end());
  heads.erase(std::unique(heads.begin(), heads.end()), heads.end());
  for (const auto& existing : captures())
    TORCH_CHECK_VALUE(!(existing->layer() == layer && existing->kind() == kind && existing->stage() == stage),
                      "HookRegistry: layer ", layer, " ", kind, " ", stage_name(stage), " is already captured");
  auto action = std::make_shared<CaptureAction>(layer, kind, stage, std::move(heads), keep, head_dim_);
  add_action(action);
  return action;
}

void HookRegistry::add_action(std::shared_ptr<Action> action) {
  check_layer(action->layer(), "layer");
  by_layer_[static_cast<size_t>(action->layer())].push_back(std::move(action));
}

const std::vector<std::shared_ptr<Action>>& HookRegistry::actions(int64_t layer) const {
  check_layer(layer, "layer");
  return by_layer_[static_cast<size_t>(layer)];
}

bool HookRegistry::wants_stage(int64_t layer, char kind, Stage stage) const {
  for (const auto& a : actions(layer))
    if (a->wants_stage(kind, stage)) return true;
  return false;
}

std::vector<int64_t> HookRegistry::layers_with_actions() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < n_layers_; ++l)
    if (!by_layer_[static_cast<size_t>(l)].empty()) out.push_back(l);
  return out;
}

void HookRegistry::begin_batch(at::Tensor example_ids, at::Tensor positions, at::Tensor valid) {
  TORCH_CHECK_VALUE(positions.dim() == 2 && positions.numel() > 0,
                    "HookRegistry.begin_batch: positions must be a non-empty (batch, seq_len) tensor; got shape ",
                    positions.sizes());
  TORCH_CHECK_VALUE(example_ids.dim() == 1 && example_ids.size(0) == positions.size(0),
                    "HookRegistry.begin_batch: example_ids must have shape (", positions.size(0), ",); got ",
                    example_ids.sizes());
  TORCH_CHECK_VALUE(valid.sizes() == positions.sizes(), "HookRegistry.begin_batch: valid must have shape ",
                    positions.sizes(), "; got ", valid.sizes());
  at::Tensor pos = positions.to(at::TensorOptions().dtype(at::kLong).device(at::kCPU)).contiguous();
  TORCH_CHECK_VALUE(pos.min().item<int64_t>() >= 0, "position_ids must be >= 0");
  batch_ = Batch{example_ids.to(at::TensorOptions().dtype(at::kLong).device(at::kCPU)).contiguous(), pos,
                 valid.to(at::TensorOptions().dtype(at::kBool).device(at::kCPU)).contiguous()};
  selections_.clear();
  valid_on_.clear();
  for (const auto& layer_actions : by_layer_)
    for (const auto& a : layer_actions) a->on_begin_batch();
}

void HookRegistry::end_batch(bool discard) {
  for (const auto& layer_actions : by_layer_)
    for (const auto& a : layer_actions) a->on_end_batch(discard);
  batch_.reset();
  selections_.clear();
  valid_on_.clear();
}

const Batch& HookRegistry::batch() const {
  TORCH_CHECK(batch_.has_value(),
              "HookRegistry: attention ran outside a model forward (no batch was begun); call the model, not a "
              "single layer, inside the Probe");
  return *batch_;
}

at::Tensor HookRegistry::batch_valid_on(const c10::Device& device) {
  const Batch& b = batch();
  if (device.is_cpu()) return b.valid;
  for (const auto& [d, valid] : valid_on_)
    if (d == device) return valid;
  // From pinned memory a non-blocking copy is queued on the current stream and the host goes on; the
  // caching host allocator keeps the pinned block until the copy has run.
  at::Tensor copy = device.is_cuda() ? b.valid.pin_memory().to(device, /*non_blocking=*/true) : b.valid.to(device);
  valid_on_.emplace_back(device, copy);
  return copy;
}

at::Tensor HookRegistry::sample_mask(int64_t layer, char kind, const at::Tensor& example_ids_in,
                                     const at::Tensor& positions_in, const at::Tensor& valid_in) const {
  const at::Tensor example_ids = example_ids_in.to(at::kLong).contiguous();
  const at::Tensor positions = positions_in.to(at::kLong).contiguous();
  const at::Tensor valid = valid_in.to(at::kBool).contiguous();
  const int64_t batch_size = positions.size(0), seq_len = positions.size(1);
  at::Tensor mask = at::zeros({batch_size, seq_len}, at::TensorOptions().dtype(at::kBool));
  const auto* ex = example_ids.const_data_ptr<int64_t>();
  const auto* pos = positions.const_data_ptr<int64_t>();
  const auto* ok = valid.const_data_ptr<bool>();
  auto* out = mask.mutable_data_ptr<bool>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t* row_pos = pos + b * seq_len;
    at::Tensor draws;
    const float* u = nullptr;
    if (sampler_.is_random()) {
      // Draws are indexed by position, not by column, so a left-padded row samples the same
      // positions as the same text unpadded.
      const int64_t n_draws = *std::max_element(row_pos, row_pos + seq_len) + 1;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(batch_seed(ex[b], layer, kind, sampler_.seed()));
      draws = at::rand({n_draws}, gen, at::TensorOptions().dtype(at::kFloat));
      u = draws.const_data_ptr<float>();
    }
    for (int64_t t = 0; t < seq_len; ++t) {
      const int64_t p = row_pos[t];
      out[b * seq_len + t] = ok[b * seq_len + t] && sampler_.keep(p, u ? u[p] : 0.0f);
    }
  }
  return mask;
}

const Selection& HookRegistry::selection(int64_t layer, char kind) {
  const auto key = std::make_pair(layer, kind);
  if (auto it = selections_.find(key); it != selections_.end()) return it->second;
  const Batch& b = batch();
  const at::Tensor mask = sample_mask(layer, kind, b.example_ids, b.positions, b.valid);
  const at::Tensor flat = mask.reshape({-1}).nonzero().reshape({-1});
  const int64_t seq_len = b.positions.size(1);
  const at::Tensor positions = b.positions.reshape({-1}).index_select(0, flat);
  const at::Tensor examples = b.example_ids.index_select(0, at::floor_divide(flat, seq_len));
  at::Tensor buckets = at::empty_like(positions);
  {
    const auto* p = positions.const_data_ptr<int64_t>();
    auto* out = buckets.mutable_data_ptr<int64_t>();
    for (int64_t i = 0; i < positions.numel(); ++i) out[i] = sampler_.bucket(p[i]);
  }
  Selection sel{flat, positions.to(at::kInt), examples.to(at::kInt), buckets.to(at::kInt)};
  return selections_.emplace(key, std::move(sel)).first->second;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> HookRegistry::on_attention(int64_t layer, at::Tensor q, at::Tensor k,
                                                                           at::Tensor v, std::optional<double> scaling,
                                                                           MaskInfo mask, std::optional<double> softcap,
                                                                           std::optional<at::Tensor> sinks,
                                                                           std::optional<at::Tensor> visible) {
  check_layer(layer, "layer");
  AttentionCall call{layer,           std::move(q), std::move(k),     std::move(v),      scaling,
                     std::move(mask), softcap,      std::move(sinks), std::move(visible)};
  for (const auto& action : by_layer_[static_cast<size_t>(layer)]) action->on_attention(*this, call);
  return {std::move(call.q), std::move(call.k), std::move(call.v)};
}

void HookRegistry::on_stage(int64_t layer, const std::string& kind_name, const std::string& stage_name_,
                            const at::Tensor& x) {
  check_layer(layer, "layer");
  const char kind = kind_from_name(kind_name);
  const Stage stage = stage_from_name(stage_name_);
  for (const auto& action : by_layer_[static_cast<size_t>(layer)]) action->on_stage(*this, kind, stage, x);
}

at::Tensor HookRegistry::on_output(int64_t layer, at::Tensor output) {
  check_layer(layer, "layer");
  TORCH_CHECK_VALUE(output.dim() == 4 && output.size(2) == n_heads_,
                    "HookRegistry: layer ", layer, " attention output has shape ", output.sizes(),
                    "; expected (batch, seq_len, ", n_heads_, ", head_dim)");
  for (const auto& action : by_layer_[static_cast<size_t>(layer)])
    if (action->wants_output()) action->on_output(*this, layer, output);
  return output;
}

bool HookRegistry::wants_output(int64_t layer) const {
  for (const auto& a : actions(layer))
    if (a->wants_output()) return true;
  return false;
}

std::shared_ptr<CaptureAction> HookRegistry::find_capture(int64_t layer, char kind, Stage stage, int64_t head) const {
  for (const auto& c : captures())
    if (c->layer() == layer && c->kind() == kind && c->stage() == stage &&
        std::binary_search(c->heads().begin(), c->heads().end(), head))
      return c;
  return nullptr;
}

std::vector<std::shared_ptr<CaptureAction>> HookRegistry::captures() const {
  std::vector<std::shared_ptr<CaptureAction>> out;
  for (const auto& layer_actions : by_layer_)
    for (const auto& a : layer_actions)
      if (auto c = std::dynamic_pointer_cast<CaptureAction>(a)) out.push_back(c);
  return out;
}

}  // namespace spectra::bindings
