// pybind11 face of the per-head QK geometry (spectra._core.combined_pca, planar_rotation, qk_geometry,
// qk_geometry_batch, kind_pca).
#include <ATen/ATen.h>
#include <torch/extension.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "spectra/qk_geometry.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

// float64, CPU, contiguous: a no-op for such tensors (read in place), one conversion otherwise.
at::Tensor as_float64(const at::Tensor& x, const char* name, int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() == dim, name, dim == 2 ? " must have shape (rows, head_dim); got " : " must be a 1-D tensor of positions; got ", x.sizes());
  TORCH_CHECK_VALUE(dim == 1 || x.is_floating_point(), name, " must be a floating tensor; got ", x.scalar_type());
  return x.detach().to(at::TensorOptions().dtype(at::kDouble).device(at::kCPU)).contiguous();
}

at::Tensor matrix_tensor(const RowMatrix& m) {
  at::Tensor out = at::empty({m.rows(), m.cols()}, at::TensorOptions().dtype(at::kDouble));
  Eigen::Map<RowMatrix>(out.mutable_data_ptr<double>(), m.rows(), m.cols()) = m;
  return out;
}

at::Tensor tensor_of(const Eigen::VectorXd& v) {
  at::Tensor out = at::empty({v.size()}, at::TensorOptions().dtype(at::kDouble));
  Eigen::Map<Eigen::VectorXd>(out.mutable_data_ptr<double>(), v.size()) = v;
  return out;
}

Eigen::Map<const RowMatrix> matrix_view(const at::Tensor& x) {
  return {x.const_data_ptr<double>(), x.size(0), x.size(1)};
}

Eigen::Map<const Eigen::VectorXd> vector_view(const at::Tensor& x) { return {x.const_data_ptr<double>(), x.size(0)}; }

// rows × basis with torch's BLAS (vectorised for the machine at run time, unlike a portable build of
// Eigen's product); the rows are read in place.
RowMatrix blas_product(const Eigen::Ref<const RowMatrix>& x, const Eigen::MatrixXd& basis) {
  const at::Tensor rows = at::from_blob(const_cast<double*>(x.data()), {x.rows(), x.cols()}, {x.outerStride(), 1},
                                        at::TensorOptions().dtype(at::kDouble));
  const at::Tensor b = at::from_blob(const_cast<double*>(basis.data()), {basis.rows(), basis.cols()},
                                     {1, basis.rows()}, at::TensorOptions().dtype(at::kDouble));
  RowMatrix out(x.rows(), basis.cols());
  at::Tensor result = at::from_blob(out.data(), {out.rows(), out.cols()}, at::TensorOptions().dtype(at::kDouble));
  at::mm_out(result, rows, b);
  return out;
}

// One head's inputs as float64 CPU tensors that outlive the Eigen views on them.
struct HeadInputs {
  at::Tensor q, t_q, k, t_k;
  HeadInputs(const at::Tensor& q_in, const at::Tensor& t_q_in, const at::Tensor& k_in, const at::Tensor& t_k_in)
      : q(as_float64(q_in, "q", 2)), t_q(as_float64(t_q_in, "q_pos", 1)), k(as_float64(k_in, "k", 2)),
        t_k(as_float64(t_k_in, "k_pos", 1)) {}
  QKRows rows() const { return {matrix_view(q), vector_view(t_q), matrix_view(k), vector_view(t_k)}; }
};

template <typename F>
auto with_inputs(const at::Tensor& q_in, const at::Tensor& t_q_in, const at::Tensor& k_in, const at::Tensor& t_k_in, F f) {
  const HeadInputs inputs(q_in, t_q_in, k_in, t_k_in);
  const at::Tensor &q = inputs.q, &k = inputs.k;
  py::gil_scoped_release no_gil;
  // The two d × d Gram matrices are the only large products: torch's BLAS does them.
  const bool same_dim = q.size(1) == k.size(1);
  const at::Tensor gram_q = same_dim ? at::mm(q.t(), q).contiguous() : at::Tensor();
  const at::Tensor gram_k = same_dim ? at::mm(k.t(), k).contiguous() : at::Tensor();
  try {
    QKRows rows = inputs.rows();
    rows.project = blas_product;
    if (same_dim) {
      rows.gram_q = gram_q.const_data_ptr<double>();
      rows.gram_k = gram_k.const_data_ptr<double>();
    }
    return f(rows);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
}

py::dict pca_dict(const CombinedPca& r) {
  py::dict out;
  out["mean"] = tensor_of(r.mean);
  out["components"] = matrix_tensor(r.components);
  out["explained_variance"] = tensor_of(r.explained_variance);
  out["r_q"] = tensor_of(r.r_q);
  out["r_k"] = tensor_of(r.r_k);
  out["p_q"] = r.p_q;
  out["p_k"] = r.p_k;
  out["fisher_pc0"] = r.fisher_pc0;
  out["accuracy_pc01"] = r.accuracy_pc01;
  return out;
}

py::dict rotation_dict(const Rotation& r) {
  py::dict out;
  out["a"] = tensor_of(r.a);
  out["b"] = tensor_of(r.b);
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"mu_q_a", r.mu_q_a}, {"mu_k_a", r.mu_k_a}, {"mu_q_b", r.mu_q_b},
        {"mu_k_b", r.mu_k_b}, {"intercept_q_a", r.intercept_q_a}, {"intercept_k_a", r.intercept_k_a},
        {"alpha_q", r.alpha_q}, {"alpha_k", r.alpha_k}, {"r_q_a", r.r_q_a}, {"r_k_a", r.r_k_a},
        {"position_r", r.position_r}, {"bias_strength", r.bias_strength},
        {"separation_strength", r.separation_strength}, {"var_frac_a", r.var_frac_a},
        {"var_frac_b", r.var_frac_b}, {"plane_var_fraction", r.plane_var_fraction},
        {"content_var_b", r.content_var_b}, {"residual_pos_r", r.residual_pos_r}, {"drift_norm", r.drift_norm},
        {"complement_var_fraction", r.complement_var_fraction}, {"active_var_fraction", r.active_var_fraction}})
    out[name] = value;
  out["n_active_planes"] = r.n_active_planes;
  const int64_t n = static_cast<int64_t>(r.planes.size());
  at::Tensor var = at::empty({n}, at::kDouble), angle = at::empty({n}, at::kDouble), acc = at::empty({n}, at::kDouble);
  at::Tensor omega = at::empty({n}, at::kDouble);
  at::Tensor active = at::empty({n}, at::kBool);
  for (int64_t i = 0; i < n; ++i) {
    var[i] = r.planes[i].var_fraction;
    angle[i] = r.planes[i].angle_r;
    omega[i] = r.planes[i].omega;
    acc[i] = r.planes[i].accuracy;
    active[i] = r.planes[i].active;
  }
  out["plane_var"] = var;
  out["plane_angle_r"] = angle;
  out["plane_omega"] = omega;
  out["plane_accuracy"] = acc;
  out["plane_active"] = active;
  return out;
}

PlaneOptions plane_options(int64_t n_planes, double active_threshold) {
  TORCH_CHECK_VALUE(n_planes >= 0, "n_planes must be >= 0; got ", n_planes);
  TORCH_CHECK_VALUE(active_threshold >= 0.0 && active_threshold <= 1.0,
                    "active_threshold must lie in [0, 1]; got ", active_threshold);
  return {n_planes, active_threshold};
}

AxisB axis_of(const std::string& axis_b) {
  TORCH_CHECK_VALUE(axis_b == "centroid" || axis_b == "eigen", "axis_b: unknown '", axis_b,
                    "'; allowed are centroid, eigen");
  return axis_b == "centroid" ? AxisB::centroid : AxisB::eigen;
}

}  // namespace

void bind_qk_geometry(py::module_& m) {
  m.def(
      "combined_pca",
      [](const at::Tensor& q, const at::Tensor& q_pos, const at::Tensor& k, const at::Tensor& k_pos,
         int64_t n_components, double anchor_tolerance) {
        return pca_dict(with_inputs(q, q_pos, k, k_pos, [&](const QKRows& rows) {
          return combined_pca(rows, n_components, anchor_tolerance);
        }));
      },
      py::arg("q"), py::arg("q_pos"), py::arg("k"), py::arg("k_pos"), py::arg("n_components") = 10,
      py::arg("anchor_tolerance") = 0.05,
      "Pooled, centred Q+K PCA of one head (docs/geometry.md): components, explained variance, r_q, r_k, "
      "P_Q, P_K, PC0 Fisher ratio.");
  m.def(
      "planar_rotation",
      [](const at::Tensor& q, const at::Tensor& q_pos, const at::Tensor& k, const at::Tensor& k_pos,
         const std::string& axis_b, int64_t n_planes, double active_threshold) {
        const AxisB axis = axis_of(axis_b);
        const PlaneOptions planes = plane_options(n_planes, active_threshold);
        return rotation_dict(with_inputs(q, q_pos, k, k_pos, [&](const QKRows& rows) {
          return planar_rotation(rows, axis, planes);
        }));
      },
      py::arg("q"), py::arg("q_pos"), py::arg("k"), py::arg("k_pos"), py::arg("axis_b") = "centroid",
      py::arg("n_planes") = 30, py::arg("active_threshold") = 0.3,
      "The planar rotation model of one head (docs/geometry.md): axes a, b and the per-head metrics.");
  m.def(
      "qk_geometry",
      [](const at::Tensor& q, const at::Tensor& q_pos, const at::Tensor& k, const at::Tensor& k_pos,
         int64_t n_components, const std::string& axis_b, double anchor_tolerance, int64_t n_planes,
         double active_threshold) {
        const AxisB axis = axis_of(axis_b);
        const PlaneOptions planes = plane_options(n_planes, active_threshold);
        const QKGeometry g = with_inputs(q, q_pos, k, k_pos, [&](const QKRows& rows) {
          return qk_geometry(rows, n_components, axis, anchor_tolerance, planes);
        });
        return py::make_tuple(pca_dict(g.pca), rotation_dict(g.rotation));
      },
      py::arg("q"), py::arg("q_pos"), py::arg("k"), py::arg("k_pos"), py::arg("n_components") = 10,
      py::arg("axis_b") = "centroid", py::arg("anchor_tolerance") = 0.05, py::arg("n_planes") = 30,
      py::arg("active_threshold") = 0.3,
      "(combined_pca, planar_rotation) of one head from one pass (they share the covariances).");
  m.def(
      "qk_geometry_batch",
      [](const std::vector<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>>& heads, int64_t n_components,
         const std::string& axis_b, double anchor_tolerance, int64_t n_planes, double active_threshold) {
        const AxisB axis = axis_of(axis_b);
        const PlaneOptions planes = plane_options(n_planes, active_threshold);
        TORCH_CHECK_VALUE(n_components >= 1, "n_components must be >= 1; got ", n_components);
        std::vector<HeadInputs> inputs;
        inputs.reserve(heads.size());
        for (const auto& [q, t_q, k, t_k] : heads) inputs.emplace_back(q, t_q, k, t_k);
        std::vector<QKRows> rows;
        rows.reserve(inputs.size());
        for (const auto& head : inputs) {
          rows.push_back(head.rows());
          rows.back().project = blas_product;
        }
        std::vector<std::string> errors;
        std::vector<QKGeometry> results;
        {
          py::gil_scoped_release no_gil;
          results = qk_geometry_batch(rows, n_components, axis, anchor_tolerance, planes, errors);
        }
        for (size_t i = 0; i < errors.size(); ++i)
          TORCH_CHECK_VALUE(errors[i].empty(), "heads[", i, "]: ", errors[i]);
        py::list out;
        for (const auto& g : results) out.append(py::make_tuple(pca_dict(g.pca), rotation_dict(g.rotation)));
        return out;
      },
      py::arg("heads"), py::arg("n_components") = 10, py::arg("axis_b") = "centroid", py::arg("anchor_tolerance") = 0.05,
      py::arg("n_planes") = 30, py::arg("active_threshold") = 0.3,
      "qk_geometry of many heads [(q, q_pos, k, k_pos), ...] in parallel over heads (OpenMP).");
  m.def(
      "kind_pca",
      [](const at::Tensor& x_in, const at::Tensor& t_in, int64_t n_components) {
        const at::Tensor x = as_float64(x_in, "x", 2), t = as_float64(t_in, "pos", 1);
        KindPca r;
        {
          py::gil_scoped_release no_gil;
          const at::Tensor gram = at::mm(x.t(), x).contiguous();
          try {
            r = kind_pca(matrix_view(x), vector_view(t), n_components, gram.const_data_ptr<double>());
          } catch (const std::invalid_argument& e) {
            TORCH_CHECK_VALUE(false, e.what());
          }
        }
        py::dict out;
        out["mean"] = tensor_of(r.mean);
        out["components"] = matrix_tensor(r.components);
        out["explained_variance"] = tensor_of(r.explained_variance);
        out["r"] = tensor_of(r.r);
        return out;
      },
      py::arg("x"), py::arg("pos"), py::arg("n_components") = 10,
      "The published tool's PCA of one kind: components (signed as scikit-learn), "
      "explained variance ratio, Pearson r of each component with position.");
}

}  // namespace spectra::bindings
