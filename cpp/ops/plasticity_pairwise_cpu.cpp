// CPU implementation of torch.ops.spectra.plasticity_pairwise.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "spectra/plasticity_pairwise.hpp"
#include "op_checks.hpp"
#include "tensor_views.hpp"

namespace spectra::bindings {
namespace {

using PlasticityResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr const char* kOp = "plasticity_pairwise";

}  // namespace

PlasticityResult plasticity_pairwise_cpu(const at::Tensor& w_in, const at::Tensor& mean_in, const at::Tensor& var_in) {
  check_plasticity_pairwise_args(Backend::kCpu, w_in, mean_in, var_in);
  // One element type for the kernel: mixed float dtypes are promoted (a copy only of the ones that differ).
  const at::ScalarType dtype = c10::promoteTypes(c10::promoteTypes(w_in.scalar_type(), mean_in.scalar_type()),
                                                 var_in.scalar_type());
  const at::Tensor w = w_in.scalar_type() == dtype ? w_in : w_in.to(dtype);
  const at::Tensor mean = mean_in.scalar_type() == dtype ? mean_in : mean_in.to(dtype);
  const at::Tensor var = var_in.scalar_type() == dtype ? var_in : var_in.to(dtype);

  const int64_t pairs = w.size(0), dim = w.size(1);
  const auto out_options = w.options().dtype(at::kDouble);
  at::Tensor m = at::empty({pairs}, out_options);
  at::Tensor v = at::empty({pairs}, out_options);
  at::Tensor p = at::empty({pairs}, out_options);
  at::Tensor pp = at::empty({pairs}, out_options);
  const bool full = var.dim() == 2;

  dispatch_float_types(dtype, [&](auto in, auto /*out*/) {
    using In = decltype(in);
    const PlasticityPairsView<In> view = pairs_view<In>(w, mean, var);
    const int64_t bad = first_negative_variance(view);
    if (bad >= 0) {
      const double value = (full ? var[bad][bad] : var[bad]).item<double>();
      if (full) {
        TORCH_CHECK_VALUE(false, kOp, ": var is a covariance with a negative variance ", value, " on its diagonal at (",
                          bad, ", ", bad, "); variances must be >= 0");
      }
      TORCH_CHECK_VALUE(false, kOp, ": var has a negative variance ", value, " at index ", bad,
                        "; variances must be >= 0");
    }
    if (pairs == 0) return;
    const PlasticityOutputs outputs{m.mutable_data_ptr<double>(), v.mutable_data_ptr<double>(),
                                    p.mutable_data_ptr<double>(), pp.mutable_data_ptr<double>()};
    const int64_t work_per_pair = full ? dim * (dim + 1) : 3 * dim;
    const int64_t grain = std::max<int64_t>(1, kElementsPerTask / work_per_pair);
    at::parallel_for(0, pairs, grain, [&](int64_t begin, int64_t end) {
      plasticity_pairwise(view, begin, end, outputs);
    });
  });
  return {m, v, p, pp};
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("plasticity_pairwise", &spectra::bindings::plasticity_pairwise_cpu); }
