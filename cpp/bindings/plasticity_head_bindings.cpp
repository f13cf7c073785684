// pybind11 face of one head's attention plasticity (spectra._core.plasticity_head, key_orientation);
// spectra.plasticity.analyze drives it head by head.
#include <ATen/ATen.h>
#include <torch/extension.h>

#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "spectra/plasticity_head.hpp"

namespace py = pybind11;

namespace spectra::bindings {
namespace {

at::Tensor as_contiguous(const at::Tensor& x, at::ScalarType dtype, const char* name, int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() == dim, name, dim == 2 ? " must have shape (rows, head_dim); got shape "
                                                   : " must be a 1-D tensor, one value per row; got shape ",
                    x.sizes());
  return x.detach().to(at::TensorOptions().dtype(dtype).device(at::kCPU)).contiguous();
}

template <typename T>
at::Tensor tensor_of(const std::vector<T>& v, at::ScalarType dtype) {
  at::Tensor out = at::empty({static_cast<int64_t>(v.size())}, at::TensorOptions().dtype(dtype));
  std::copy(v.begin(), v.end(), out.mutable_data_ptr<T>());
  return out;
}

std::vector<int64_t> int_vector(const at::Tensor& x, const char* name) {
  const at::Tensor c = as_contiguous(x, at::kLong, name, 1);
  return {c.const_data_ptr<int64_t>(), c.const_data_ptr<int64_t>() + c.numel()};
}

struct HeadTensors {
  at::Tensor q, q_pos, q_bucket, k, k_pos, k_bucket, k_example;
  PlasticityRows rows() const {
    return {q.const_data_ptr<double>(),       q_pos.const_data_ptr<double>(),     q_bucket.const_data_ptr<int64_t>(),
            q.size(0),                        k.const_data_ptr<double>(),         k_pos.const_data_ptr<double>(),
            k_bucket.const_data_ptr<int64_t>(), k_example.const_data_ptr<int64_t>(), k.size(0),
            q.size(1)};
  }
};

HeadTensors head_tensors(const at::Tensor& q, const at::Tensor& q_pos, const at::Tensor& q_bucket, const at::Tensor& k,
                         const at::Tensor& k_pos, const at::Tensor& k_bucket, const at::Tensor& k_example) {
  HeadTensors h{as_contiguous(q, at::kDouble, "q", 2),        as_contiguous(q_pos, at::kDouble, "q_pos", 1),
                as_contiguous(q_bucket, at::kLong, "q_bucket", 1), as_contiguous(k, at::kDouble, "k", 2),
                as_contiguous(k_pos, at::kDouble, "k_pos", 1),     as_contiguous(k_bucket, at::kLong, "k_bucket", 1),
                as_contiguous(k_example, at::kLong, "k_example", 1)};
  TORCH_CHECK_VALUE(h.q.size(1) == h.k.size(1), "q and k must have the same head_dim d; got d = ", h.q.size(1),
                    " for q and ", h.k.size(1), " for k");
  TORCH_CHECK_VALUE(h.q.size(0) >= 1 && h.k.size(0) >= 1, "q and k need at least one row each; got ", h.q.size(0),
                    " and ", h.k.size(0));
  TORCH_CHECK_VALUE(h.q_pos.size(0) == h.q.size(0) && h.q_bucket.size(0) == h.q.size(0),
                    "q_pos and q_bucket must have one entry per q row (", h.q.size(0), "); got ", h.q_pos.size(0),
                    " and ", h.q_bucket.size(0));
  TORCH_CHECK_VALUE(h.k_pos.size(0) == h.k.size(0) && h.k_bucket.size(0) == h.k.size(0) &&
                        h.k_example.size(0) == h.k.size(0),
                    "k_pos, k_bucket and k_example must have one entry per k row (", h.k.size(0), ")");
  return h;
}

PlasticityMode mode_of(const std::string& mode) {
  if (mode == "published") return PlasticityMode::published;
  if (mode == "thesis") return PlasticityMode::thesis;
  throw py::value_error("mode must be 'thesis' or 'published'; got '" + mode + "'");
}

py::dict model_dict(const QueryModel& m) {
  py::dict d;
  d["sign"] = tensor_of(m.sign, at::kDouble);
  d["alpha"] = tensor_of(m.alpha, at::kDouble);
  d["beta"] = tensor_of(m.beta, at::kDouble);
  d["r2"] = tensor_of(m.r2, at::kDouble);
  d["r2_pos"] = m.r2_pos;
  d["beta_norm"] = m.beta_norm;
  d["r2_scalar"] = m.r2_scalar;
  d["mae_baseline"] = m.mae_baseline;
  d["mae_proj"] = m.mae_proj;
  d["householder"] = tensor_of(m.householder, at::kDouble);
  d["alpha_rot"] = tensor_of(m.alpha_rot, at::kDouble);
  d["beta_rot"] = tensor_of(m.beta_rot, at::kDouble);
  d["resid_var"] = tensor_of(m.resid_var, at::kDouble);
  d["resid0_skew"] = m.resid0_skew;
  d["resid0_kurt"] = m.resid0_kurt;
  d["resid0_ks_statistic"] = m.resid0_ks.statistic;
  d["resid0_ks_p"] = m.resid0_ks.pvalue;
  d["noise_med_abs_skew"] = m.noise_med_abs_skew;
  d["noise_med_abs_kurt"] = m.noise_med_abs_kurt;
  std::vector<double> stat, p;
  for (const KsResult& r : m.noise_ks) {
    stat.push_back(r.statistic);
    p.push_back(r.pvalue);
  }
  d["noise_ks_statistic"] = tensor_of(stat, at::kDouble);
  d["noise_ks_p"] = tensor_of(p, at::kDouble);
  return d;
}

py::dict cells_dict(const std::vector<PlasticityCell>& cells) {
  std::vector<int64_t> q_cell, k_bucket, n_queries, n_draws, n_pairs;
  std::vector<double> tau, eligible, ap;
  for (const PlasticityCell& c : cells) {
    q_cell.push_back(c.q_cell);
    k_bucket.push_back(c.k_bucket);
    tau.push_back(c.tau);
    n_queries.push_back(c.n_queries);
    eligible.push_back(c.n_eligible_pairs);
    n_draws.push_back(c.n_draws);
    n_pairs.push_back(c.n_pairs);
    ap.push_back(c.ap);
  }
  py::dict d;
  d["q_cell"] = tensor_of(q_cell, at::kLong);
  d["k_bucket"] = tensor_of(k_bucket, at::kLong);
  d["tau"] = tensor_of(tau, at::kDouble);
  d["n_queries"] = tensor_of(n_queries, at::kLong);
  d["n_eligible_pairs"] = tensor_of(eligible, at::kDouble);
  d["n_draws"] = tensor_of(n_draws, at::kLong);
  d["n_pairs"] = tensor_of(n_pairs, at::kLong);
  d["ap"] = tensor_of(ap, at::kDouble);
  return d;
}

py::dict pairs_dict(const PlasticityPairs& p) {
  py::dict d;
  d["cell"] = tensor_of(p.cell, at::kLong);
  d["first"] = tensor_of(p.first, at::kLong);
  d["second"] = tensor_of(p.second, at::kLong);
  d["m"] = tensor_of(p.m, at::kDouble);
  d["v"] = tensor_of(p.v, at::kDouble);
  d["pp"] = tensor_of(p.pp, at::kDouble);
  std::vector<bool> used(p.used.begin(), p.used.end());
  at::Tensor u = at::empty({static_cast<int64_t>(used.size())}, at::TensorOptions().dtype(at::kBool));
  for (size_t i = 0; i < used.size(); ++i) u.mutable_data_ptr<bool>()[i] = used[i];
  d["used"] = u;
  return d;
}

py::dict plasticity_head(const at::Tensor& q, const at::Tensor& q_pos, const at::Tensor& q_bucket, const at::Tensor& k,
                         const at::Tensor& k_pos, const at::Tensor& k_bucket, const at::Tensor& k_example,
                         const std::string& mode, int64_t pairs_per_cell, uint64_t seed, int64_t lookback,
                         int64_t bucket_size, double grid_width, bool grid_midpoint, int64_t min_queries,
                         bool full_covariance, const std::vector<int64_t>& noise_ks_dims,
                         const std::optional<at::Tensor>& sign, const std::optional<py::tuple>& pairs) {
  const HeadTensors h = head_tensors(q, q_pos, q_bucket, k, k_pos, k_bucket, k_example);
  PlasticityOptions options;
  options.mode = mode_of(mode);
  TORCH_CHECK_VALUE(pairs_per_cell >= 1, "pairs_per_cell must be >= 1; got ", pairs_per_cell);
  TORCH_CHECK_VALUE(lookback >= 0, "lookback must be >= 0 (0: no window); got ", lookback);
  TORCH_CHECK_VALUE(bucket_size >= 1, "bucket_size must be >= 1; got ", bucket_size);
  TORCH_CHECK_VALUE(grid_width > 0, "grid_width must be > 0; got ", grid_width);
  TORCH_CHECK_VALUE(min_queries >= 2, "min_queries must be >= 2 (a variance needs two queries); got ", min_queries);
  options.pairs_per_cell = pairs_per_cell;
  options.seed = seed;
  options.lookback = lookback;
  options.bucket_size = bucket_size;
  options.grid_width = grid_width;
  options.grid_midpoint = grid_midpoint;
  options.min_queries = min_queries;
  options.full_covariance = full_covariance;
  std::optional<std::vector<double>> sign_values;
  if (sign) {
    const at::Tensor s = as_contiguous(*sign, at::kDouble, "sign", 1);
    TORCH_CHECK_VALUE(s.size(0) == h.q.size(1), "sign must have head_dim = ", h.q.size(1), " entries; got ", s.size(0));
    sign_values.emplace(s.const_data_ptr<double>(), s.const_data_ptr<double>() + s.numel());
  }
  PlasticityPairs injected;
  if (pairs) {
    TORCH_CHECK_VALUE(pairs->size() == 3, "pairs must be a tuple (cell, first, second) of 1-D index tensors");
    injected.cell = int_vector((*pairs)[0].cast<at::Tensor>(), "pairs[0] (cell)");
    injected.first = int_vector((*pairs)[1].cast<at::Tensor>(), "pairs[1] (first)");
    injected.second = int_vector((*pairs)[2].cast<at::Tensor>(), "pairs[2] (second)");
  }
  QueryModel model;
  PlasticityResult result;
  {
    py::gil_scoped_release no_gil;
    const PlasticityRows rows = h.rows();
    try {
      model = fit_query_model(rows, noise_ks_dims, sign_values ? &*sign_values : nullptr);
      std::vector<PlasticityCell> cells = plasticity_cells(rows, options);
      PlasticityPairs drawn = pairs ? std::move(injected) : draw_plasticity_pairs(rows, cells, options);
      result = evaluate_plasticity_pairs(rows, model, std::move(cells), std::move(drawn), options);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(std::string("plasticity_head: ") + e.what());
    }
  }
  py::dict out;
  out["model"] = model_dict(model);
  out["cells"] = cells_dict(result.cells);
  out["pairs"] = pairs_dict(result.pairs);
  return out;
}

at::Tensor key_orientation_py(const at::Tensor& k, const at::Tensor& k_bucket) {
  const at::Tensor kk = as_contiguous(k, at::kDouble, "k", 2);
  const at::Tensor b = as_contiguous(k_bucket, at::kLong, "k_bucket", 1);
  TORCH_CHECK_VALUE(b.size(0) == kk.size(0) && kk.size(0) >= 1, "k_bucket must have one entry per k row (",
                    kk.size(0), ") and k at least one row");
  return tensor_of(key_orientation(kk.const_data_ptr<double>(), b.const_data_ptr<int64_t>(), kk.size(0), kk.size(1)),
                   at::kDouble);
}

}  // namespace

void bind_plasticity_head(py::module_& m) {
  m.def("plasticity_head", &plasticity_head, py::arg("q"), py::arg("q_pos"), py::arg("q_bucket"), py::arg("k"),
        py::arg("k_pos"), py::arg("k_bucket"), py::arg("k_example"), py::kw_only(), py::arg("mode"),
        py::arg("pairs_per_cell"), py::arg("seed"), py::arg("lookback"), py::arg("bucket_size"),
        py::arg("grid_width"), py::arg("grid_midpoint"), py::arg("min_queries"), py::arg("full_covariance"),
        py::arg("noise_ks_dims"), py::arg("sign") = py::none(), py::arg("pairs") = py::none(),
        "One head's query model, cells and key pairs (see spectra.plasticity.analyze).");
  m.def("key_orientation", &key_orientation_py, py::arg("k"), py::arg("k_bucket"),
        "Signs of the mean of the per-bucket key means (0 -> +1).");
}

}  // namespace spectra::bindings
