// CPU implementation of torch.ops.spectra.vec_stats.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "op_checks.hpp"
#include "tensor_views.hpp"

namespace spectra::bindings {
std::tuple<at::Tensor, at::Tensor, at::Tensor> vec_stats_cpu(const at::Tensor& x) {
  check_vec_stats_args(x);
  const auto out_shape = x.sizes().slice(0, x.dim() - 1);
  const auto out_options = x.options().dtype(stats_dtype(x.scalar_type()));
  at::Tensor norm = at::empty(out_shape, out_options);
  at::Tensor max_abs = at::empty(out_shape, out_options);
  at::Tensor participation_ratio = at::empty(out_shape, out_options);
  const Rows x_rows(x);
  const int64_t rows = x_rows.rows();
  if (rows == 0) return {norm, max_abs, participation_ratio};
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / x_rows.dim());
  dispatch_float_types(x.scalar_type(), [&](auto in, auto out) {
    using In = decltype(in);
    using Out = decltype(out);
    const RowsView<In> view = x_rows.view<In>();
    Out* n = norm.mutable_data_ptr<Out>();
    Out* m = max_abs.mutable_data_ptr<Out>();
    Out* pr = participation_ratio.mutable_data_ptr<Out>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { vec_stats(view, begin, end, n, m, pr); });
  });
  return {norm, max_abs, participation_ratio};
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("vec_stats", &spectra::bindings::vec_stats_cpu); }
