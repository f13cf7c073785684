#include "registry/intervention_actions.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace spectra::bindings {

ScaleHeadsAction::ScaleHeadsAction(int64_t layer, char kind, std::vector<int64_t> heads, double factor)
    : layer_(layer), kind_(kind), heads_(std::move(heads)), factor_(factor) {
  TORCH_CHECK_VALUE(kind == 'q' || kind == 'k', "kind: ScaleHeads scales 'q' or 'k'; got '", kind, "'");
  TORCH_CHECK_VALUE(std::isfinite(factor) && factor > 0.0, "alpha: the scale must be a finite number > 0; got ",
                    factor);
  TORCH_CHECK_VALUE(!heads_.empty(), "heads: nothing to scale");
}

void ScaleHeadsAction::on_attention(HookRegistry& registry, AttentionCall& call) {
  at::Tensor& x = kind_ == 'q' ? call.q : call.k;
  for (int64_t h : heads_)
    TORCH_CHECK_VALUE(h < x.size(1), "Scale", kind_ == 'q' ? "Query" : "Key", ": layer ", layer_, " has ", x.size(1),
                      kind_ == 'q' ? " query" : " KV", " heads; head ", h, " does not exist");
  // A copy, never in place: the model may hold these tensors (a KV cache keeps the keys), and the
  // other heads must stay bitwise what the model computed.
  at::Tensor out = x.clone(at::MemoryFormat::Preserve);
  for (int64_t h : heads_) out.select(1, h).mul_(factor_);
  x = std::move(out);
  ++applied_;
}

HeadOutputAction::HeadOutputAction(int64_t layer, int64_t head, HeadOutputMode mode, std::optional<at::Tensor> value,
                                   std::optional<at::Tensor> columns)
    : layer_(layer), head_(head), mode_(mode), value_(std::move(value)), columns_(std::move(columns)) {
  if (mode_ == HeadOutputMode::patch)
    TORCH_CHECK_VALUE(value_.has_value() && (value_->dim() == 2 || value_->dim() == 3),
                      "source: PatchHead needs the head's output from another run, shaped (batch, seq_len, head_dim) "
                      "or (seq_len, head_dim)");
  if (mode_ == HeadOutputMode::mean && value_.has_value())
    TORCH_CHECK_VALUE(value_->dim() == 1, "mean: AblateHead(mode='mean') takes a (head_dim,) vector; got shape ",
                      value_->sizes());
  if (value_.has_value()) value_ = value_->detach();
  if (columns_.has_value()) columns_ = columns_->to(at::kLong);
}

void HeadOutputAction::on_output(HookRegistry& registry, int64_t layer, at::Tensor& output) {
  const char* name = mode_ == HeadOutputMode::patch ? "PatchHead" : "AblateHead";
  TORCH_CHECK_VALUE(head_ < output.size(2), name, ": layer ", layer_, " has ", output.size(2), " heads; head ", head_,
                    " does not exist");
  at::Tensor out = output.clone(at::MemoryFormat::Preserve);
  at::Tensor slot = out.select(2, head_);  // (B, T, D), a view into out
  const auto dims = slot.sizes();
  switch (mode_) {
    case HeadOutputMode::zero:
      slot.zero_();
      break;
    case HeadOutputMode::mean: {
      if (value_.has_value()) {
        TORCH_CHECK_VALUE(value_->size(0) == dims[2], name, "(mode='mean'): mean has ", value_->size(0),
                          " entries but the head's output has head_dim ", dims[2]);
        slot.copy_(value_->to(out.options()).expand(dims));
      } else {
        // The mean over this batch's real tokens (padding excluded), in float32 or better.
        const Batch& batch = registry.batch();
        TORCH_CHECK_VALUE(batch.valid.size(0) == dims[0] && batch.valid.size(1) == dims[1], name,
                          "(mode='mean'): the attention output covers ", dims[0], "x", dims[1],
                          " tokens but the model was called with ", batch.valid.sizes());
        const auto acc = out.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
        const at::Tensor valid = batch.valid.to(out.device()).unsqueeze(-1).to(acc);
        const at::Tensor total = valid.sum();
        const at::Tensor mean = (slot.to(acc) * valid).sum({0, 1}) / total.clamp_min(1);
        slot.copy_(mean.to(out.scalar_type()).expand(dims));
      }
      break;
    }
    case HeadOutputMode::patch: {
      at::Tensor source = value_->to(out.options());
      if (source.dim() == 2) source = source.unsqueeze(0).expand({dims[0], source.size(0), source.size(1)});
      TORCH_CHECK_VALUE(source.sizes() == dims, name, "(layer=", layer_, ", head=", head_, "): source has shape ",
                        value_->sizes(), " but the head's output in this forward has shape ", dims,
                        " (batch, seq_len, head_dim); record the source on inputs of the same shape");
      if (columns_.has_value()) {
        const at::Tensor idx = columns_->to(out.device());
        TORCH_CHECK_VALUE(idx.numel() == 0 || (idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < dims[1]),
                          name, ": positions must lie in 0..", dims[1] - 1);
        slot.index_copy_(1, idx, source.index_select(1, idx));
      } else {
        slot.copy_(source);
      }
      break;
    }
  }
  output = std::move(out);
  ++applied_;
}

HeadOutputRecorder::HeadOutputRecorder(int64_t layer, std::vector<int64_t> heads)
    : layer_(layer), heads_(std::move(heads)) {
  TORCH_CHECK_VALUE(!heads_.empty(), "heads: nothing to record");
}

void HeadOutputRecorder::on_output(HookRegistry& registry, int64_t layer, at::Tensor& output) {
  const at::Tensor index = at::tensor(heads_, at::TensorOptions().dtype(at::kLong)).to(output.device());
  outputs_.push_back(output.detach().index_select(2, index));  // a copy of only these heads
  ++applied_;
}

void HeadOutputRecorder::on_begin_batch() {
  CountedAction::on_begin_batch();
  batch_mark_outputs_ = outputs_.size();
}

void HeadOutputRecorder::on_end_batch(bool discard) {
  if (discard) outputs_.resize(std::min(batch_mark_outputs_, outputs_.size()));
}

}  // namespace spectra::bindings
