// Device loads of the kernels' element types as float64 (spectra's 16-bit types hold raw bits).
// CUDA translation units only.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "spectra/scalar_types.hpp"

namespace spectra::cuda_kernels {

__device__ __forceinline__ double load_double(const float* p) { return static_cast<double>(*p); }
__device__ __forceinline__ double load_double(const double* p) { return *p; }
__device__ __forceinline__ double load_double(const float16_t* p) {
  return static_cast<double>(__half2float(__ushort_as_half(p->bits)));
}
__device__ __forceinline__ double load_double(const bfloat16_t* p) {
  return static_cast<double>(__uint_as_float(static_cast<uint32_t>(p->bits) << 16));
}

}  // namespace spectra::cuda_kernels
