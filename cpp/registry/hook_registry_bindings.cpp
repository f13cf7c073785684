// pybind11 face of the hook registry and its actions (spectra._core.HookRegistry, Capture, RowStats,
// ...). Python's Probe owns the hooks; this owns the decisions and data. PositionSampler, which the
// registry takes, is bound in cpp/bindings/position_sampler_bindings.cpp.
#include <torch/extension.h>

#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "registry/hook_registry.hpp"
#include "registry/intervention_actions.hpp"
#include "registry/row_stats_action.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

void check_head(const HookRegistry& r, int64_t layer, int64_t head, bool kv, const char* arg) {
  TORCH_CHECK_VALUE(layer >= 0 && layer < r.n_layers(), "layer: ", layer,
                    " is not a layer of this model; allowed layers are 0..", r.n_layers() - 1);
  const int64_t limit = kv ? r.n_kv_heads() : r.n_heads();
  TORCH_CHECK_VALUE(head >= 0 && head < limit, arg, ": ", head, " is not a ", kv ? "KV" : "query",
                    " head of this model; allowed are 0..", limit - 1);
}

HeadOutputMode head_output_mode(const std::string& name) {
  if (name == "zero") return HeadOutputMode::zero;
  if (name == "mean") return HeadOutputMode::mean;
  if (name == "patch") return HeadOutputMode::patch;
  TORCH_CHECK_VALUE(false, "mode: unknown mode '", name, "'; allowed modes are zero, mean, patch");
}

py::tuple rows_tuple(const CapturedRows& r) { return py::make_tuple(r.vectors, r.positions, r.example_ids, r.buckets); }

}  // namespace

void bind_hook_registry(py::module_& m) {
  py::class_<CaptureAction, std::shared_ptr<CaptureAction>>(m, "Capture",
                                                             "One (layer, kind, stage) capture held by a HookRegistry.")
      .def_property_readonly("layer", &CaptureAction::layer)
      .def_property_readonly("kind", [](const CaptureAction& c) { return std::string(1, c.kind()); })
      .def_property_readonly("stage", [](const CaptureAction& c) { return std::string(stage_name(c.stage())); })
      .def_property_readonly("heads", &CaptureAction::heads)
      .def_property_readonly("rows", &CaptureAction::rows, "Rows recorded so far (over all batches).")
      .def(
          "drain", [](CaptureAction& c) { return rows_tuple(c.rows_since_drain(true)); },
          "Rows recorded since the last drain as (vectors (N, heads, D) float32, positions, example_ids, buckets).")
      .def(
          "all_rows", [](const CaptureAction& c) { return rows_tuple(c.all_rows()); },
          "Every row kept in memory, same layout as drain().");

  py::class_<RowStatsAction, std::shared_ptr<RowStatsAction>>(
      m, "RowStats", "Per-token attention metrics of one layer's heads, measured inside the forward.")
      .def_property_readonly("layer", &RowStatsAction::layer)
      .def_property_readonly("heads", &RowStatsAction::heads)
      .def_property_readonly("threshold", &RowStatsAction::threshold)
      .def_property_readonly("n_sink", &RowStatsAction::n_sink)
      .def_property_readonly("backend", [](const RowStatsAction& a) { return std::string(a.backend()); })
      .def(
          "drain",
          [](RowStatsAction& a) {
            RowStatsColumns c;
            {
              py::gil_scoped_release no_gil;
              c = a.drain();
            }
            py::dict d;
            c.for_each_column([&](const char* name, at::Tensor& column) { d[name] = column; });
            return d;
          },
          "Columns of the rows recorded since the last drain (one per example, head, real token), then releases them.");

  py::class_<ScaleHeadsAction, std::shared_ptr<ScaleHeadsAction>>(
      m, "ScaleHeads", "Scales some query heads' q (kind 'q') or KV heads' k (kind 'k') inside the forward.")
      .def_property_readonly("layer", &ScaleHeadsAction::layer)
      .def_property_readonly("kind", [](const ScaleHeadsAction& a) { return std::string(1, a.kind()); })
      .def_property_readonly("heads", &ScaleHeadsAction::heads)
      .def_property_readonly("factor", &ScaleHeadsAction::factor)
      .def_property_readonly("applied", &ScaleHeadsAction::applied, "Attention calls it has changed so far.")
      .def_property_readonly("applied_this_batch", &ScaleHeadsAction::applied_this_batch);

  py::class_<HeadOutputAction, std::shared_ptr<HeadOutputAction>>(
      m, "HeadOutput", "Replaces one head's attention output before the output projection (zero, mean or patch).")
      .def_property_readonly("layer", &HeadOutputAction::layer)
      .def_property_readonly("head", &HeadOutputAction::head)
      .def_property_readonly("applied", &HeadOutputAction::applied)
      .def_property_readonly("applied_this_batch", &HeadOutputAction::applied_this_batch);

  py::class_<HeadOutputRecorder, std::shared_ptr<HeadOutputRecorder>>(
      m, "HeadOutputRecorder", "Copies some heads' attention output (before the output projection) per forward.")
      .def_property_readonly("layer", &HeadOutputRecorder::layer)
      .def_property_readonly("heads", &HeadOutputRecorder::heads)
      .def_property_readonly("applied", &HeadOutputRecorder::applied)
      .def_property_readonly("applied_this_batch", &HeadOutputRecorder::applied_this_batch)
      .def_property_readonly("outputs", &HeadOutputRecorder::outputs,
                             "One (batch, seq_len, len(heads), head_dim) tensor per completed forward.");

  py::class_<HookRegistry, std::shared_ptr<HookRegistry>>(m, "HookRegistry", R"doc(
Native per-layer action lists of a Probe: captures now, metrics and interventions later.

The Python attention function forwards each layer's (q, k, v, scaling) to on_attention(); the
registry runs that layer's actions in order and returns the (possibly replaced) q, k, v.

>>> import torch, spectra
>>> reg = spectra.HookRegistry(2, 4, 2, 8, spectra.PositionSampler("all"))
>>> [reg.kv_head(h) for h in range(4)]
[0, 0, 1, 1]
>>> _ = reg.add_capture(0, "q", "post_rope", [1, 3])
>>> reg.begin_batch(torch.tensor([7]), torch.arange(5)[None], torch.ones(1, 5, dtype=torch.bool))
>>> _ = reg.on_attention(0, torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), None)
>>> reg.end_batch()
>>> vectors, positions, example_ids, buckets = reg.captured(0, 3, "q", "post_rope")
>>> tuple(vectors.shape), positions.tolist(), example_ids.tolist()
((5, 8), [0, 1, 2, 3, 4], [7, 7, 7, 7, 7])
)doc")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, PositionSampler>(), py::arg("n_layers"), py::arg("n_heads"),
           py::arg("n_kv_heads"), py::arg("head_dim"), py::arg("sampler"))
      .def_property_readonly("n_layers", &HookRegistry::n_layers)
      .def_property_readonly("n_heads", &HookRegistry::n_heads)
      .def_property_readonly("n_kv_heads", &HookRegistry::n_kv_heads)
      .def_property_readonly("head_dim", &HookRegistry::head_dim)
      .def_property_readonly("sampler", &HookRegistry::sampler)
      .def("kv_head", &HookRegistry::kv_head, py::arg("head"), "KV head read by query head `head`: h // (H / Hkv).")
      .def("add_capture", &HookRegistry::add_capture, py::arg("layer"), py::arg("kind"), py::arg("stage"),
           py::arg("heads"), py::arg("keep_in_memory") = true,
           "Records `kind` at `stage` for `heads` (query heads for q, KV heads for k and v) of `layer`.")
      .def(
          "add_row_stats",
          [](HookRegistry& r, int64_t layer, std::vector<int64_t> heads, double threshold, int64_t n_sink,
             const std::string& backend) {
            TORCH_CHECK_VALUE(layer >= 0 && layer < r.n_layers(), "layer: ", layer,
                              " is not a layer of this model; allowed layers are 0..", r.n_layers() - 1);
            for (int64_t h : heads)
              TORCH_CHECK_VALUE(h >= 0 && h < r.n_heads(), "heads: ", h,
                                " is not a query head; allowed heads are 0..", r.n_heads() - 1);
            std::sort(heads.begin(), heads.end());
            heads.erase(std::unique(heads.begin(), heads.end()), heads.end());
            auto action = std::make_shared<RowStatsAction>(layer, std::move(heads), r.n_heads(), r.n_kv_heads(),
                                                           threshold, n_sink, backend);
            r.add_action(action);
            return action;
          },
          py::arg("layer"), py::arg("heads"), py::arg("threshold") = 0.9, py::arg("n_sink") = 4,
          py::arg("backend") = "auto",
          "Measures attention rows (entropy, max_attn, k_eff, sink mass, ...) and q/k norms of `heads` of `layer`; "
          "backend auto | native | torch picks the ops' implementation (SPECTRA_BACKEND).")
      .def(
          "add_scale",
          [](HookRegistry& r, int64_t layer, const std::string& kind, std::vector<int64_t> heads, double factor) {
            const char k = kind_from_name(kind);
            TORCH_CHECK_VALUE(k != 'v', "kind: add_scale scales q or k; got 'v'");
            for (int64_t h : heads) check_head(r, layer, h, k == 'k', k == 'k' ? "kv_head" : "head");
            auto action = std::make_shared<ScaleHeadsAction>(layer, k, std::move(heads), factor);
            r.add_action(action);
            return action;
          },
          py::arg("layer"), py::arg("kind"), py::arg("heads"), py::arg("factor"),
          "Multiplies q[:, heads] (kind 'q') or k[:, kv heads] (kind 'k') of `layer` by `factor` in every forward.")
      .def(
          "add_head_output",
          [](HookRegistry& r, int64_t layer, int64_t head, const std::string& mode, std::optional<at::Tensor> value,
             std::optional<at::Tensor> columns) {
            check_head(r, layer, head, false, "head");
            auto action = std::make_shared<HeadOutputAction>(layer, head, head_output_mode(mode), std::move(value),
                                                             std::move(columns));
            r.add_action(action);
            return action;
          },
          py::arg("layer"), py::arg("head"), py::arg("mode"), py::arg("value") = py::none(),
          py::arg("columns") = py::none(),
          "Replaces head `head`'s attention output of `layer`: mode zero, mean (value: a (head_dim,) mean, or the "
          "batch's mean over real tokens) or patch (value: the source (B, T, D) or (T, D); columns: token columns).")
      .def(
          "add_head_output_recorder",
          [](HookRegistry& r, int64_t layer, std::vector<int64_t> heads) {
            for (int64_t h : heads) check_head(r, layer, h, false, "heads");
            auto action = std::make_shared<HeadOutputRecorder>(layer, std::move(heads));
            r.add_action(action);
            return action;
          },
          py::arg("layer"), py::arg("heads"), "Records the attention output of `heads` of `layer` in every forward.")
      .def("wants_output", &HookRegistry::wants_output, py::arg("layer"))
      .def(
          "on_output",
          [](HookRegistry& r, int64_t layer, at::Tensor output) {
            py::gil_scoped_release no_gil;
            return r.on_output(layer, std::move(output));
          },
          py::arg("layer"), py::arg("output"),
          "Runs the layer's output actions on the attention output (B, T, H, D); returns it, possibly replaced.")
      .def("captures", &HookRegistry::captures)
      .def("layers_with_actions", &HookRegistry::layers_with_actions)
      .def(
          "wants_stage",
          [](const HookRegistry& r, int64_t layer, const std::string& kind, const std::string& stage) {
            return r.wants_stage(layer, kind_from_name(kind), stage_from_name(stage));
          },
          py::arg("layer"), py::arg("kind"), py::arg("stage"))
      .def("begin_batch", &HookRegistry::begin_batch, py::arg("example_ids"), py::arg("positions"), py::arg("valid"),
           "Starts a forward: example id per row, position id per token, and which tokens are real.")
      .def("end_batch", &HookRegistry::end_batch, py::arg("discard") = false,
           "Ends the forward; discard=True drops the rows the failed forward had recorded.")
      .def_property_readonly("in_batch", &HookRegistry::in_batch)
      .def(
          "on_attention",
          [](HookRegistry& r, int64_t layer, at::Tensor q, at::Tensor k, at::Tensor v, std::optional<double> scaling,
             std::optional<at::Tensor> attention_mask, bool is_causal, std::optional<int64_t> sliding_window,
             std::optional<double> softcap, std::optional<at::Tensor> sinks, std::optional<at::Tensor> visible) {
            py::gil_scoped_release no_gil;
            return r.on_attention(layer, std::move(q), std::move(k), std::move(v), scaling,
                                  MaskInfo{std::move(attention_mask), is_causal, sliding_window}, softcap,
                                  std::move(sinks), std::move(visible));
          },
          py::arg("layer"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scaling"),
          py::arg("attention_mask") = py::none(), py::arg("is_causal") = true, py::arg("sliding_window") = py::none(),
          py::arg("softcap") = py::none(), py::arg("sinks") = py::none(), py::arg("visible") = py::none(),
          "Runs the layer's actions on its attention inputs (post-RoPE q (B, H, T, D), k and v (B, Hkv, T, D)), "
          "the mask information the model gave, its learned sink logits (H,) and a custom visibility mask "
          "(B or 1, H or 1, T, Tk) bool, if any; returns the (possibly replaced) q, k, v.")
      .def(
          "on_stage",
          [](HookRegistry& r, int64_t layer, const std::string& kind, const std::string& stage, const at::Tensor& x) {
            py::gil_scoped_release no_gil;
            r.on_stage(layer, kind, stage, x);
          },
          py::arg("layer"), py::arg("kind"), py::arg("stage"), py::arg("x"),
          "Hands a stage reached outside the attention function (pre-RoPE): x is (B, heads, T, D).")
      .def(
          "sample_mask",
          [](const HookRegistry& r, int64_t layer, const std::string& kind, const at::Tensor& example_ids,
             const at::Tensor& positions, const at::Tensor& valid) {
            return r.sample_mask(layer, kind_from_name(kind), example_ids, positions, valid);
          },
          py::arg("layer"), py::arg("kind"), py::arg("example_ids"), py::arg("positions"), py::arg("valid"),
          "The (B, T) keep mask the sampler draws for these rows of `layer` and `kind`.")
      .def(
          "captured",
          [](const HookRegistry& r, int64_t layer, int64_t head, const std::string& kind, const std::string& stage) {
            const char k = kind_from_name(kind);
            const Stage s = stage_from_name(stage);
            auto capture = r.find_capture(layer, k, s, head);
            TORCH_CHECK_VALUE(capture != nullptr, "captured: layer ", layer, " ", k == 'q' ? "query" : "KV", " head ",
                              head, " kind ", kind, " stage ", stage, " was not captured");
            CapturedRows rows = capture->all_rows();
            const auto& heads = capture->heads();
            const int64_t column = std::lower_bound(heads.begin(), heads.end(), head) - heads.begin();
            return py::make_tuple(rows.vectors.select(1, column), rows.positions, rows.example_ids, rows.buckets);
          },
          py::arg("layer"), py::arg("head"), py::arg("kind"), py::arg("stage"),
          "(vectors (N, D), positions, example_ids, buckets) of one head; `head` is a KV head for k and v.");
}

}  // namespace spectra::bindings
