// The device rule of the tensor ops' argument checks. Each op's checks and output allocation
// (ops/<op>.hpp) serve its CPU (<op>_cpu.cpp) and CUDA (<op>_cuda.cu) implementations alike, so both
// backends accept the same inputs and refuse the rest with the same messages; only this rule differs.
#pragma once

#include <ATen/core/Tensor.h>

namespace spectra::bindings {

enum class Backend { kCpu, kCuda };

// Whether x lives where the op runs: the CPU, or the CUDA device of the op's first tensor.
inline bool on_backend(Backend backend, const at::Tensor& first, const at::Tensor& x) {
  return backend == Backend::kCpu ? x.device().is_cpu() : first.device().is_cuda() && x.device() == first.device();
}

inline const char* backend_place(Backend backend) {
  return backend == Backend::kCpu ? "on the CPU here" : "on the same CUDA device here";
}

}  // namespace spectra::bindings
