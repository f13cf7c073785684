// torch.ops.spectra.plasticity_pairwise, the part its CPU (plasticity_pairwise_cpu.cpp) and CUDA
// (plasticity_pairwise_cuda.cu) implementations share: the argument checks, the promotion of the
// inputs to one dtype, the output tensors, the kernels' view of the pairs and the negative-variance
// error.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>

#include "ops/op_checks.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/plasticity_pairwise.hpp"

namespace spectra::bindings {

using PlasticityPairwiseResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The inputs, promoted to one dtype, and the outputs.
struct PlasticityPairwiseTensors {
  at::ScalarType dtype;
  at::Tensor w, mean, var;
  at::Tensor m, v, p, pp;

  PlasticityPairwiseResult result() const { return {m, v, p, pp}; }
  PlasticityOutputs outputs() const {
    return {m.mutable_data_ptr<double>(), v.mutable_data_ptr<double>(), p.mutable_data_ptr<double>(),
            pp.mutable_data_ptr<double>()};
  }
};

// Checks the arguments, promotes mixed float dtypes to one for the kernel (a copy only of the ones
// that differ) and allocates the outputs: (P,) float64 each, on w's device.
inline PlasticityPairwiseTensors plasticity_pairwise_outputs(Backend backend, const at::Tensor& w_in,
                                                             const at::Tensor& mean_in, const at::Tensor& var_in) {
  constexpr const char* op = "plasticity_pairwise";
  TORCH_CHECK_VALUE(w_in.dim() == 2, op,
                    ": w must have shape (P, d), one key difference k1 - k2 per row; got shape ", w_in.sizes());
  const int64_t pairs = w_in.size(0), dim = w_in.size(1);
  TORCH_CHECK_VALUE(dim >= 1, op, ": w's dimension d must be >= 1; got shape ", w_in.sizes());
  check_float_dtype(w_in, op, "w");
  check_float_dtype(mean_in, op, "mean");
  check_float_dtype(var_in, op, "var");
  TORCH_CHECK_VALUE(on_backend(backend, w_in, w_in) && on_backend(backend, w_in, mean_in) &&
                        on_backend(backend, w_in, var_in),
                    op, ": w, mean and var must be ", backend_place(backend), "; got ", w_in.device(), ", ",
                    mean_in.device(), " and ", var_in.device());
  const bool mean_ok = (mean_in.dim() == 1 && mean_in.size(0) == dim) ||
                       (mean_in.dim() == 2 && mean_in.size(0) == pairs && mean_in.size(1) == dim);
  TORCH_CHECK_VALUE(mean_ok, op, ": mean must have shape (d,) = (", dim, ",) shared by all pairs or (P, d) = (",
                    pairs, ", ", dim, ") one per pair; got shape ", mean_in.sizes());
  const bool var_ok = (var_in.dim() == 1 && var_in.size(0) == dim) ||
                      (var_in.dim() == 2 && var_in.size(0) == dim && var_in.size(1) == dim);
  TORCH_CHECK_VALUE(var_ok, op, ": var must have shape (d,) = (", dim, ",) for diagonal variances or (d, d) = (",
                    dim, ", ", dim, ") for a full covariance; got shape ", var_in.sizes());

  const at::ScalarType dtype = c10::promoteTypes(c10::promoteTypes(w_in.scalar_type(), mean_in.scalar_type()),
                                                 var_in.scalar_type());
  const auto out_options = w_in.options().dtype(at::kDouble);
  return {dtype,
          w_in.scalar_type() == dtype ? w_in : w_in.to(dtype),
          mean_in.scalar_type() == dtype ? mean_in : mean_in.to(dtype),
          var_in.scalar_type() == dtype ? var_in : var_in.to(dtype),
          at::empty({pairs}, out_options),
          at::empty({pairs}, out_options),
          at::empty({pairs}, out_options),
          at::empty({pairs}, out_options)};
}

// The pairs as the kernels' strided view (mean per pair or shared; var diagonal or full).
template <typename T>
PlasticityPairsView<T> pairs_view(const at::Tensor& w, const at::Tensor& mean, const at::Tensor& var) {
  const bool per_pair_mean = mean.dim() == 2;
  const bool full = var.dim() == 2;
  return {reinterpret_cast<const T*>(w.const_data_ptr()),
          w.size(0),
          w.size(1),
          w.stride(0),
          w.stride(1),
          reinterpret_cast<const T*>(mean.const_data_ptr()),
          per_pair_mean ? mean.stride(0) : 0,
          mean.stride(-1),
          reinterpret_cast<const T*>(var.const_data_ptr()),
          full,
          full ? var.stride(0) : 0,
          var.stride(-1)};
}

// Raises the error for the negative variance at index `bad` of var's diagonal (var (d,) or (d, d)).
inline void raise_negative_variance(const at::Tensor& var, int64_t bad) {
  constexpr const char* op = "plasticity_pairwise";
  const bool full = var.dim() == 2;
  const double value = (full ? var[bad][bad] : var[bad]).item<double>();
  if (full) {
    TORCH_CHECK_VALUE(false, op, ": var is a covariance with a negative variance ", value, " on its diagonal at (",
                      bad, ", ", bad, "); variances must be >= 0");
  }
  TORCH_CHECK_VALUE(false, op, ": var has a negative variance ", value, " at index ", bad,
                    "; variances must be >= 0");
}

}  // namespace spectra::bindings
