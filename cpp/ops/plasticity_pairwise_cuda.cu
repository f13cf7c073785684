// CUDA implementation of torch.ops.spectra.plasticity_pairwise: the ATen layer over the torch-free
// kernels (cpp/kernels/plasticity_pairwise.cu). Same checks, dtype promotion, outputs and definitions
// as the CPU op; a negative variance on Σ's diagonal is an error naming its index, raised before
// anything is computed.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "ops/op_checks.hpp"
#include "ops/plasticity_pairwise.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/cuda/plasticity_pairwise.cuh"
#include "spectra/plasticity_pairwise.hpp"

namespace spectra::bindings {

PlasticityPairwiseResult plasticity_pairwise_cuda(const at::Tensor& w_in, const at::Tensor& mean_in,
                                                  const at::Tensor& var_in) {
  const PlasticityPairwiseTensors t = plasticity_pairwise_outputs(Backend::kCuda, w_in, mean_in, var_in);
  const c10::cuda::OptionalCUDAGuard guard(w_in.device());
  const int64_t pairs = t.w.size(0), dim = t.w.size(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  dispatch_float_types(t.dtype, [&](auto in, auto /*out*/) {
    using In = decltype(in);
    const PlasticityPairsView<In> view = pairs_view<In>(t.w, t.mean, t.var);
    at::Tensor first_bad = at::empty({1}, t.w.options().dtype(at::kLong));
    C10_CUDA_CHECK(
        cuda_kernels::launch_first_negative_variance<In>(view, first_bad.mutable_data_ptr<int64_t>(), stream));
    const int64_t bad = first_bad.item<int64_t>();  // synchronises: the error must come before any output
    if (bad < dim) raise_negative_variance(t.var, bad);
    if (pairs == 0) return;
    C10_CUDA_CHECK(cuda_kernels::launch_plasticity_pairwise<In>(view, t.outputs(), stream));
  });
  return t.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CUDA, m) {
  m.impl("plasticity_pairwise", &spectra::bindings::plasticity_pairwise_cuda);
}
