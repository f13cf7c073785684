// CUDA implementation of torch.ops.spectra.vec_stats: the ATen layer over the torch-free kernel
// (cpp/kernels/vec_stats.cu). Same checks, outputs and definitions as the CPU op.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "ops/tensor_views.hpp"
#include "ops/vec_stats.hpp"
#include "spectra/cuda/vec_stats.cuh"

namespace spectra::bindings {

VecStatsResult vec_stats_cuda(const at::Tensor& x_in) {
  const VecStatsTensors out = vec_stats_outputs(x_in);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const int64_t rows = out.norm.numel();
  if (rows == 0) return out.result();

  cuda_kernels::LeadDims lead;
  at::Tensor x = x_in;
  if (!cuda_kernels::coalesce_leading_dims(x.sizes().data(), x.strides().data(), x.dim(), lead)) {
    x = x_in.contiguous();  // more than 8 non-collapsing leading dims: read a copy
    lead.ndim = 1;
    lead.size[0] = rows;
    lead.stride[0] = x.size(-1);
  }
  const int64_t dim = x.size(-1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float_types(x.scalar_type(), [&](auto in, auto out_type) {
    using In = decltype(in);
    using Out = decltype(out_type);
    C10_CUDA_CHECK((cuda_kernels::launch_vec_stats<In, Out>(
        reinterpret_cast<const In*>(x.const_data_ptr()), lead, rows, dim, x.stride(-1),
        out.norm.mutable_data_ptr<Out>(), out.max_abs.mutable_data_ptr<Out>(),
        out.participation_ratio.mutable_data_ptr<Out>(), stream)));
  });
  return out.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CUDA, m) { m.impl("vec_stats", &spectra::bindings::vec_stats_cuda); }
