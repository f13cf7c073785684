// CPU implementation of torch.ops.spectra.plasticity_pairwise.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/op_checks.hpp"
#include "ops/plasticity_pairwise.hpp"
#include "ops/tensor_views.hpp"
#include "spectra/plasticity_pairwise.hpp"

namespace spectra::bindings {

PlasticityPairwiseResult plasticity_pairwise_cpu(const at::Tensor& w_in, const at::Tensor& mean_in,
                                                 const at::Tensor& var_in) {
  const PlasticityPairwiseTensors t = plasticity_pairwise_outputs(Backend::kCpu, w_in, mean_in, var_in);
  const int64_t pairs = t.w.size(0), dim = t.w.size(1);
  const bool full = t.var.dim() == 2;

  dispatch_float_types(t.dtype, [&](auto in, auto /*out*/) {
    using In = decltype(in);
    const PlasticityPairsView<In> view = pairs_view<In>(t.w, t.mean, t.var);
    const int64_t bad = first_negative_variance(view);
    if (bad >= 0) raise_negative_variance(t.var, bad);
    if (pairs == 0) return;
    const PlasticityOutputs outputs = t.outputs();
    const int64_t work_per_pair = full ? dim * (dim + 1) : 3 * dim;
    const int64_t grain = std::max<int64_t>(1, kElementsPerTask / work_per_pair);
    at::parallel_for(0, pairs, grain, [&](int64_t begin, int64_t end) {
      plasticity_pairwise(view, begin, end, outputs);
    });
  });
  return t.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("plasticity_pairwise", &spectra::bindings::plasticity_pairwise_cpu); }
