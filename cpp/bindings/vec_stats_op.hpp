#pragma once

#include <ATen/core/Tensor.h>

namespace spectra::bindings {
// Argument checks shared by every backend of torch.ops.spectra.vec_stats.
void check_vec_stats_args(const at::Tensor& x);
}  // namespace spectra::bindings
