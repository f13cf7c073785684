// pybind11 face of spectra::SecondMoments (spectra._core.SecondMoments).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <stdexcept>

#include "spectra/second_moments.hpp"
#include "ops/tensor_views.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

void second_moments_update(SecondMoments& self, const at::Tensor& x_in) {
  TORCH_CHECK_VALUE(x_in.dim() >= 2 && x_in.size(-2) == self.n_groups() && x_in.size(-1) == self.dim(),
                    "SecondMoments.update: x must have shape (..., ", self.n_groups(), ", ", self.dim(),
                    ") (n_groups, dim); got shape ", x_in.sizes());
  check_float_dtype(x_in, "SecondMoments.update", "x");
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), "SecondMoments.update: x must be on the CPU; got device ", x_in.device());
  const at::Tensor x = x_in.detach().reshape({-1, self.n_groups(), self.dim()});
  if (x.size(0) == 0) return;
  py::gil_scoped_release no_gil;
  dispatch_float_types(x.scalar_type(), [&](auto in, auto) {
    using In = decltype(in);
    const In* data = reinterpret_cast<const In*>(x.const_data_ptr());
    at::parallel_for(0, self.n_groups(), 1, [&](int64_t begin, int64_t end) {
      self.update(data, x.size(0), x.stride(0), x.stride(1), x.stride(2), begin, end);
    });
  });
}

template <typename F>
at::Tensor per_group(const SecondMoments& s, F f) {
  at::Tensor out = at::empty({s.n_groups()}, at::TensorOptions().dtype(at::kDouble));
  auto* p = out.mutable_data_ptr<double>();
  for (int64_t g = 0; g < s.n_groups(); ++g) p[g] = f(g);
  return out;
}

}  // namespace

void bind_second_moments(py::module_& m) {
  py::class_<SecondMoments>(m, "SecondMoments", R"doc(
Streaming per-group count, Σx and Σxxᵀ of D-dim vectors in float64, and each group's effective rank.

Feed batches of shape (..., n_groups, dim), e.g. a layer's keys (B, T, Hkv, D); state is
O(n_groups · dim²). spectral_pr is (Σλ)²/Σλ² of the eigenvalues of the covariance, entropy_rank is
exp(−Σ σ̂ ln σ̂) of the normalised singular values (Roy & Vetterli); centered=False uses Σxxᵀ/n.

>>> import torch, spectra
>>> acc = spectra.SecondMoments(n_groups=1, dim=3)
>>> acc.update(torch.eye(3).repeat(4, 1)[:, None, :])   # the three axes, equally often
>>> acc.spectral_pr(centered=False).tolist(), [round(v, 6) for v in acc.entropy_rank(centered=False).tolist()]
([3.0], [3.0])
)doc")
      .def(py::init([](int64_t n_groups, int64_t dim) {
             TORCH_CHECK_VALUE(n_groups >= 1 && dim >= 1, "SecondMoments: n_groups and dim must be >= 1; got ",
                               n_groups, ", ", dim);
             return SecondMoments(n_groups, dim);
           }),
           py::arg("n_groups"), py::arg("dim"))
      .def_property_readonly("n_groups", &SecondMoments::n_groups)
      .def_property_readonly("dim", &SecondMoments::dim)
      .def("update", &second_moments_update, py::arg("x"),
           "Adds every vector of x (..., n_groups, dim); vectors with NaN or inf are counted apart and skipped.")
      .def(
          "merge",
          [](SecondMoments& self, const SecondMoments& other) {
            TORCH_CHECK_VALUE(other.n_groups() == self.n_groups() && other.dim() == self.dim(),
                              "SecondMoments.merge: other has shape (", other.n_groups(), ", ", other.dim(),
                              "); this accumulator has (", self.n_groups(), ", ", self.dim(), ")");
            self.merge(other);
          },
          py::arg("other"), "Folds another accumulator over disjoint data into this one (exact).")
      .def("count",
           [](const SecondMoments& s) {
             at::Tensor out = at::empty({s.n_groups()}, at::TensorOptions().dtype(at::kLong));
             for (int64_t g = 0; g < s.n_groups(); ++g) out.mutable_data_ptr<int64_t>()[g] = s.count(g);
             return out;
           })
      .def(
          "matrix",
          [](const SecondMoments& s, bool centered) {
            at::Tensor out = at::empty({s.n_groups(), s.dim(), s.dim()}, at::TensorOptions().dtype(at::kDouble));
            for (int64_t g = 0; g < s.n_groups(); ++g) {
              const Eigen::MatrixXd mg = s.matrix(g, centered);
              auto* p = out.mutable_data_ptr<double>() + g * s.dim() * s.dim();
              for (int64_t i = 0; i < s.dim(); ++i)
                for (int64_t j = 0; j < s.dim(); ++j) p[i * s.dim() + j] = mg(i, j);
            }
            return out;
          },
          py::arg("centered") = true, "(n_groups, dim, dim) covariance (centered) or Σxxᵀ/n.")
      .def(
          "eigenvalues",
          [](const SecondMoments& s, bool centered) {
            at::Tensor out = at::empty({s.n_groups(), s.dim()}, at::TensorOptions().dtype(at::kDouble));
            for (int64_t g = 0; g < s.n_groups(); ++g) {
              const Eigen::VectorXd v = s.eigenvalues(g, centered);
              for (int64_t i = 0; i < s.dim(); ++i) out.mutable_data_ptr<double>()[g * s.dim() + i] = v[i];
            }
            return out;
          },
          py::arg("centered") = true, "(n_groups, dim) eigenvalues of matrix(centered), descending.")
      .def(
          "spectral_pr",
          [](const SecondMoments& s, bool centered) {
            return per_group(s, [&](int64_t g) { return s.spectral_pr(g, centered); });
          },
          py::arg("centered") = true)
      .def(
          "entropy_rank",
          [](const SecondMoments& s, bool centered) {
            return per_group(s, [&](int64_t g) { return s.entropy_rank(g, centered); });
          },
          py::arg("centered") = true)
      .def("__repr__", [](const SecondMoments& s) {
        return "SecondMoments(n_groups=" + std::to_string(s.n_groups()) + ", dim=" + std::to_string(s.dim()) + ")";
      });
}

}  // namespace spectra::bindings
