// pybind11 face of the position sampler (spectra._core.PositionSampler): which token positions a
// capture keeps. The HookRegistry (cpp/registry/) takes one.
#include <torch/extension.h>

#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "spectra/position_sampler.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

PositionSampler make_sampler(const std::string& kind, int64_t bucket_size, double base_rate, uint64_t seed,
                             std::vector<int64_t> positions) {
  try {
    return PositionSampler(sampler_kind_from_name(kind), bucket_size, base_rate, seed, std::move(positions));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, "PositionSampler: ", e.what());
  }
}

}  // namespace

void bind_position_sampler(py::module_& m) {
  py::class_<PositionSampler>(m, "PositionSampler", R"doc(
Which token positions a capture keeps, and their bucket ids (qk-sniffer's samplers).

kind is one of all, uniform, log_uniform, explicit. uniform keeps each position with probability
min(1, base_rate / bucket_size); log_uniform with min(1, base_rate / 2**bucket). The draws are
deterministic in (seed, example id, layer, kind) and, with seed 0, bit-compatible with qk-sniffer.

>>> import torch, spectra
>>> s = spectra.PositionSampler("log_uniform", bucket_size=4)
>>> s.bucket(torch.tensor([0, 3, 7, 8, 100])).tolist()
[2, 2, 3, 3, 6]
)doc")
      .def(py::init(&make_sampler), py::arg("kind"), py::arg("bucket_size") = 1, py::arg("base_rate") = 1.0,
           py::arg("seed") = 0, py::arg("positions") = std::vector<int64_t>{})
      .def_property_readonly("kind", [](const PositionSampler& s) { return std::string(sampler_kind_name(s.kind())); })
      .def_property_readonly("bucket_size", &PositionSampler::bucket_size)
      .def_property_readonly("base_rate", &PositionSampler::base_rate)
      .def_property_readonly("seed", &PositionSampler::seed)
      .def_property_readonly("positions", &PositionSampler::positions)
      .def(
          "bucket",
          [](const PositionSampler& s, const at::Tensor& positions) {
            at::Tensor p = positions.to(at::kLong).contiguous();
            at::Tensor out = at::empty_like(p);
            const auto* in = p.const_data_ptr<int64_t>();
            auto* o = out.mutable_data_ptr<int64_t>();
            for (int64_t i = 0; i < p.numel(); ++i) {
              TORCH_CHECK_VALUE(in[i] >= 0, "positions must be >= 0; got ", in[i]);
              o[i] = s.bucket(in[i]);
            }
            return out;
          },
          py::arg("positions"), "Bucket id of each position.")
      .def("keep_probability", &PositionSampler::keep_probability, py::arg("bucket"),
           "Probability that a position of this bucket is kept.")
      .def("__repr__", [](const PositionSampler& s) {
        std::string r = std::string("PositionSampler('") + sampler_kind_name(s.kind()) +
                        "', bucket_size=" + std::to_string(s.bucket_size());
        if (s.is_random()) r += ", base_rate=" + std::to_string(s.base_rate()) + ", seed=" + std::to_string(s.seed());
        if (s.kind() == SamplerKind::explicit_positions) r += ", positions=<" + std::to_string(s.positions().size()) + ">";
        return r + ")";
      });
}

}  // namespace spectra::bindings
