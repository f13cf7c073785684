// Schemas of every tensor op, defined once; backends register implementations with
// TORCH_LIBRARY_IMPL in their own files (vec_stats_op.cpp for CPU, cpp/src/cuda/*.cu for CUDA).
#include <torch/library.h>

TORCH_LIBRARY(spectra, m) {
  m.def("vec_stats(Tensor x) -> (Tensor norm, Tensor max_abs, Tensor participation_ratio)");
}
