// 16-bit float storage types that the kernels can read without PyTorch.
//
// The op layer (cpp/ops) reinterprets PyTorch's Half / BFloat16 buffers as these (same bits, same
// size), so every kernel in cpp/kernels stays free of PyTorch and testable from Catch2 with half
// inputs.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace spectra {

struct float16_t {
  uint16_t bits;
};

struct bfloat16_t {
  uint16_t bits;
};

static_assert(sizeof(float16_t) == 2 && sizeof(bfloat16_t) == 2);

// IEEE 754 binary16 -> binary32, exact for every input (subnormals, inf, NaN payload).
inline float to_float(float16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  uint32_t exponent = (h.bits >> 10) & 0x1Fu;
  uint32_t mantissa = h.bits & 0x3FFu;
  uint32_t out;
  if (exponent == 0x1Fu) {
    out = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {
    // Subnormal half: renormalise so it becomes a normal float.
    exponent = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    out = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(out);
}

inline float to_float(bfloat16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b.bits) << 16); }
inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }

// Round-to-nearest-even float -> 16-bit, used by tests to build half fixtures.
inline bfloat16_t to_bfloat16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bfloat16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7FFFu + ((u >> 16) & 1u);
  return bfloat16_t{static_cast<uint16_t>(u >> 16)};
}

}  // namespace spectra
