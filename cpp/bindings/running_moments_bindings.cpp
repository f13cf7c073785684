// pybind11 face of the streaming per-group moments (spectra._core.RunningMoments).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ops/tensor_views.hpp"
#include "spectra/running_moments.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

void running_moments_update(RunningMoments& self, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == self.n_groups(), "RunningMoments.update: x must have shape (..., ",
                    self.n_groups(), ") (one column per group); got shape ", x.sizes());
  check_float_dtype(x, "RunningMoments.update", "x");
  TORCH_CHECK_VALUE(x.device().is_cpu(), "RunningMoments.update: x must be on the CPU; got device ", x.device());
  const Rows x_rows(x);
  if (x_rows.rows() == 0) return;
  py::gil_scoped_release no_gil;
  dispatch_float_types(x.scalar_type(), [&](auto in, auto) {
    using In = decltype(in);
    const RowsView<In> view = x_rows.view<In>();
    // Groups are independent, so disjoint group ranges update in parallel without locks.
    at::parallel_for(0, self.n_groups(), 1, [&](int64_t begin, int64_t end) { self.update(view, begin, end); });
  });
}

template <typename Getter>
at::Tensor per_group(const RunningMoments& self, at::ScalarType dtype, Getter get) {
  at::Tensor out = at::empty({self.n_groups()}, at::TensorOptions().dtype(dtype));
  if (dtype == at::kLong) {
    auto* p = out.mutable_data_ptr<int64_t>();
    for (int64_t g = 0; g < self.n_groups(); ++g) p[g] = static_cast<int64_t>(get(g));
  } else {
    auto* p = out.mutable_data_ptr<double>();
    for (int64_t g = 0; g < self.n_groups(); ++g) p[g] = static_cast<double>(get(g));
  }
  return out;
}

}  // namespace

void bind_running_moments(py::module_& m) {
  py::class_<RunningMoments>(m, "RunningMoments", R"doc(
Streaming per-group count, mean, variance, min and max, in float64, NaNs counted apart.

Feed it batches of shape (..., n_groups); it keeps O(n_groups) state, so per-(layer, head) means over
a whole corpus never hold the activations. Two accumulators over disjoint data merge exactly, and
accumulators pickle, so shards computed in other processes merge too.

>>> import torch, spectra
>>> acc = spectra.RunningMoments(2)
>>> acc.update(torch.tensor([[1.0, 10.0], [3.0, float("nan")]]))
>>> acc.mean().tolist(), acc.count().tolist(), acc.nan_count().tolist()
([2.0, 10.0], [2, 1], [0, 1])
)doc")
      .def(py::init([](int64_t n_groups) {
             TORCH_CHECK_VALUE(n_groups >= 1, "RunningMoments: n_groups must be >= 1; got ", n_groups);
             return RunningMoments(n_groups);
           }),
           py::arg("n_groups"))
      .def_property_readonly("n_groups", &RunningMoments::n_groups)
      .def("update", &running_moments_update, py::arg("x"),
           "Adds each row of x (..., n_groups) as one sample per group; NaNs are counted, not averaged.")
      .def(
          "merge",
          [](RunningMoments& self, const RunningMoments& other) {
            TORCH_CHECK_VALUE(other.n_groups() == self.n_groups(), "RunningMoments.merge: other has ",
                              other.n_groups(), " groups; this accumulator has ", self.n_groups());
            self.merge(other);
          },
          py::arg("other"), "Folds another accumulator over disjoint data into this one (exact).")
      .def("reset", &RunningMoments::reset)
      .def("count", [](const RunningMoments& s) { return per_group(s, at::kLong, [&](int64_t g) { return s.count(g); }); })
      .def("nan_count",
           [](const RunningMoments& s) { return per_group(s, at::kLong, [&](int64_t g) { return s.nan_count(g); }); })
      .def("mean", [](const RunningMoments& s) { return per_group(s, at::kDouble, [&](int64_t g) { return s.mean(g); }); })
      .def(
          "variance",
          [](const RunningMoments& s, int64_t ddof) {
            TORCH_CHECK_VALUE(ddof == 0 || ddof == 1, "RunningMoments.variance: ddof must be 0 or 1; got ", ddof);
            return per_group(s, at::kDouble, [&](int64_t g) { return s.variance(g, ddof); });
          },
          py::arg("ddof") = 0)
      .def("min", [](const RunningMoments& s) { return per_group(s, at::kDouble, [&](int64_t g) { return s.min(g); }); })
      .def("max", [](const RunningMoments& s) { return per_group(s, at::kDouble, [&](int64_t g) { return s.max(g); }); })
      .def(py::pickle(
          // A versioned tuple of plain lists: shards pickled by one process (a Ray worker, a
          // resumed job) merge in another, with no tensor or buffer ABI involved.
          [](const RunningMoments& s) {
            const RunningMoments::State& st = s.state();
            return py::make_tuple(1, st.count, st.nan_count, st.mean, st.m2, st.min, st.max);
          },
          [](const py::tuple& t) {
            TORCH_CHECK_VALUE(t.size() == 7 && t[0].cast<int>() == 1,
                              "RunningMoments: unsupported pickled state (expected format version 1)");
            RunningMoments::State st{t[1].cast<std::vector<int64_t>>(), t[2].cast<std::vector<int64_t>>(),
                                     t[3].cast<std::vector<double>>(),  t[4].cast<std::vector<double>>(),
                                     t[5].cast<std::vector<double>>(),  t[6].cast<std::vector<double>>()};
            try {
              return RunningMoments(std::move(st));
            } catch (const std::invalid_argument& e) {
              TORCH_CHECK_VALUE(false, "RunningMoments: corrupt pickled state: ", e.what());
            }
          }))
      .def("__repr__", [](const RunningMoments& s) {
        return "RunningMoments(n_groups=" + std::to_string(s.n_groups()) + ")";
      });
}

}  // namespace spectra::bindings
