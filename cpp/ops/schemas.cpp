// Schemas of every tensor op, defined once; backends register implementations with
// TORCH_LIBRARY_IMPL in their own files (<op>_cpu.cpp for CPU, <op>_cuda.cu for CUDA, in this folder).
#include <torch/library.h>

TORCH_LIBRARY(spectra, m) {
  m.def("vec_stats(Tensor x) -> (Tensor norm, Tensor max_abs, Tensor participation_ratio)");
  m.def(
      "attn_row_stats(Tensor q, Tensor k, float scaling, Tensor? key_valid=None, bool causal=True, "
      "int sliding_window=0, int? query_offset=None, float threshold=0.9, int n_sink=4, float softcap=0.0, "
      "Tensor? sinks=None, Tensor? visible=None) -> "
      "(Tensor entropy, Tensor entropy_normalized, Tensor max_attn, Tensor argmax, Tensor k_eff, Tensor sink_mass, "
      "Tensor sink_mass_n, Tensor n_visible, Tensor logit_var)");
  m.def("plasticity_pairwise(Tensor w, Tensor mean, Tensor var) -> (Tensor m, Tensor v, Tensor p, Tensor pp)");
}
