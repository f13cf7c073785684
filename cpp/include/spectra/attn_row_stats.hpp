// Per-query attention-row statistics without the T×T matrix: entropy, max weight, argmax key,
// k_eff(θ), sink mass, normalised entropy — the per-token metrics of docs/metrics.md, computed
// exactly (no epsilon in the entropy) from float32 logits (float64 for float64 inputs).
//
// Each task is a block of consecutive query rows of one (batch, query head). The block's logits
// against the keys it may see are written to a row buffer of O(T) floats per row — never a T×T
// matrix — and every statistic is an exact pass over that buffer: max and argmax; exp(s − max),
// Z and Σ e·(s − max) in float64 for the entropy H = ln Z − E[s − max]; and k_eff, the smallest
// number of keys whose mass reaches θ − 1e-6, found with one histogram pass over the weights plus
// a sort of the single histogram bin the threshold falls in. GQA reads KV head h / (H / Hkv)
// directly; K is never repeated.
#pragma once

#include <cstdint>

#include "spectra/scalar_types.hpp"

namespace spectra {

// A (batch, heads, seq, dim) tensor read in place through its strides (in elements).
template <typename T>
struct HeadsView {
  const T* data = nullptr;
  int64_t batch = 0, heads = 0, seq = 0, dim = 0;
  int64_t stride_batch = 0, stride_head = 0, stride_seq = 0, stride_dim = 1;

  const T* vec(int64_t b, int64_t h, int64_t t) const {
    return data + b * stride_batch + h * stride_head + t * stride_seq;
  }
};

// Which keys a query may see. Query row t sits at key index t + query_offset (query_offset =
// Tk − Tq when a cache holds earlier keys, else 0). Causal: keys j <= that index. A sliding
// window w > 0 also hides keys with index − j >= w (causal) or |index − j| >= w (bidirectional),
// as transformers' sliding-window masks do. key_valid, when given, hides padding keys.
struct AttnMaskSpec {
  const bool* key_valid = nullptr;  // (batch, key seq), row-major; nullptr: every key is real
  bool causal = true;
  int64_t sliding_window = 0;
  int64_t query_offset = 0;
  // A custom mask the model passes (chunked attention, document masks, per-head masks): query row t
  // of head h in batch b sees key j only where visible[b·sb + h·sh + t·sq + j·sk] is true, on top of
  // the rules above. Strides in elements; 0 broadcasts a dimension. nullptr: no custom mask.
  const bool* visible = nullptr;
  int64_t visible_stride_batch = 0, visible_stride_head = 0, visible_stride_query = 0, visible_stride_key = 0;
};

struct AttnRowStatsParams {
  double scaling = 1.0;     // logits = scaling · q·k (the model's own scaling)
  double softcap = 0.0;     // > 0: logits = softcap · tanh(logits / softcap) (Gemma2)
  double threshold = 0.9;   // k_eff's θ, in (0, 1]; compared as cumulative mass >= θ − 1e-6
  int64_t n_sink = 4;       // sink_mass_n is the mass on keys 0 .. n_sink − 1
  // Learned attention-sink logits, one per query head (gpt-oss's s_aux), or nullptr. A sink is one
  // more outcome of every row's softmax, with that logit as is (not scaled, not capped, never
  // masked) and no value: it takes mass from the keys. With sinks, every statistic is of the row's
  // whole distribution (keys and the sink) except max_attn and argmax, which stay on the keys;
  // sink_mass and sink_mass_n add the sink's mass; k_eff counts the sink as one outcome;
  // entropy_normalized divides by ln(n_visible + 1); logit_var is −dH/d ln α when the keys' logits
  // are scaled by α and the sink's is not (docs/metrics.md, "Learned attention sinks").
  const double* sinks = nullptr;
};

// Tolerance of the k_eff comparison: float32 cumulative sums of probabilities that should reach
// θ exactly (p = [0.6, 0.3, 0.1], θ = 0.9) land on either side of it.
inline constexpr double kKeffTolerance = 1e-6;

// Outputs, each (batch, heads, query seq) contiguous. A row with no visible key gets NaN
// statistics, argmax −1, k_eff 0 and n_visible 0. entropy_normalized = H / ln(n_visible) is NaN
// when fewer than two keys are visible.
template <typename Out>
struct AttnRowStatsOutputs {
  Out* entropy = nullptr;
  Out* entropy_normalized = nullptr;
  Out* max_attn = nullptr;
  Out* sink_mass = nullptr;    // weight on key 0 (0 when key 0 is hidden)
  Out* sink_mass_n = nullptr;  // weight on keys 0 .. n_sink − 1
  int64_t* argmax = nullptr;   // first key of maximal weight
  int64_t* k_eff = nullptr;
  int64_t* n_visible = nullptr;
  // Variance of the logits under the row's attention, Var_p(s): dH/d ln α = −Var_p(s) (at α = 1)
  // when all the row's logits are scaled by α, the closed form of the entropy's gain under a
  // scaling intervention. Optional (nullptr: not written).
  Out* logit_var = nullptr;
};

// Query rows per task: the block shares each converted key tile.
inline constexpr int64_t kAttnRowsPerBlock = 16;

inline int64_t attn_row_stats_tasks(int64_t batch, int64_t heads, int64_t query_seq) {
  return batch * heads * ((query_seq + kAttnRowsPerBlock - 1) / kAttnRowsPerBlock);
}

// Runs tasks [task_begin, task_end); disjoint task ranges write disjoint outputs, so ranges can run
// on different threads. q is (B, H, Tq, D), k is (B, Hkv, Tk, D) with H a multiple of Hkv.
// Out is float for float/half/bfloat16 inputs and double for double inputs.
template <typename In, typename Out>
void attn_row_stats(const HeadsView<In>& q, const HeadsView<In>& k, const AttnMaskSpec& mask,
                    const AttnRowStatsParams& params, const AttnRowStatsOutputs<Out>& out, int64_t task_begin,
                    int64_t task_end);

}  // namespace spectra
