// CPU implementation of torch.ops.spectra.vec_stats.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/tensor_views.hpp"
#include "ops/vec_stats.hpp"
#include "spectra/vec_stats.hpp"

namespace spectra::bindings {

VecStatsResult vec_stats_cpu(const at::Tensor& x) {
  const VecStatsTensors out = vec_stats_outputs(x);
  const Rows x_rows(x);
  const int64_t rows = x_rows.rows();
  if (rows == 0) return out.result();
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / x_rows.dim());
  dispatch_float_types(x.scalar_type(), [&](auto in, auto out_type) {
    using In = decltype(in);
    using Out = decltype(out_type);
    const RowsView<In> view = x_rows.view<In>();
    Out* n = out.norm.mutable_data_ptr<Out>();
    Out* m = out.max_abs.mutable_data_ptr<Out>();
    Out* pr = out.participation_ratio.mutable_data_ptr<Out>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { vec_stats(view, begin, end, n, m, pr); });
  });
  return out.result();
}

}  // namespace spectra::bindings

TORCH_LIBRARY_IMPL(spectra, CPU, m) { m.impl("vec_stats", &spectra::bindings::vec_stats_cpu); }
