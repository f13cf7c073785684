// torch.ops.spectra.vec_stats, the part its CPU (vec_stats_cpu.cpp) and CUDA (vec_stats_cuda.cu)
// implementations share: the argument checks and the output tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <tuple>

#include "ops/tensor_views.hpp"

namespace spectra::bindings {

using VecStatsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

struct VecStatsTensors {
  at::Tensor norm, max_abs, participation_ratio;

  VecStatsResult result() const { return {norm, max_abs, participation_ratio}; }
};

// Checks x (..., D) and allocates the outputs: shape (...), float64 for float64 x and float32
// otherwise, on x's device.
inline VecStatsTensors vec_stats_outputs(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "vec_stats: x must have shape (..., D) with at least 1 dimension; got a 0-d tensor");
  check_float_dtype(x, "vec_stats", "x");
  TORCH_CHECK_VALUE(x.size(-1) >= 1, "vec_stats: x's last dimension D must be >= 1; got shape ", x.sizes());
  const auto out_shape = x.sizes().slice(0, x.dim() - 1);
  const auto out_options = x.options().dtype(stats_dtype(x.scalar_type()));
  return {at::empty(out_shape, out_options), at::empty(out_shape, out_options), at::empty(out_shape, out_options)};
}

}  // namespace spectra::bindings
