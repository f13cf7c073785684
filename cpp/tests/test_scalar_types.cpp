#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "spectra/scalar_types.hpp"

using spectra::bfloat16_t;
using spectra::float16_t;
using spectra::to_float;

TEST_CASE("float16 decodes normals, subnormals, zeros, inf and NaN exactly", "[scalar_types]") {
  CHECK(to_float(float16_t{0x3C00}) == 1.0f);
  CHECK(to_float(float16_t{0xC000}) == -2.0f);
  CHECK(to_float(float16_t{0x7BFF}) == 65504.0f);                    // largest finite half
  CHECK(to_float(float16_t{0x0001}) == std::ldexp(1.0f, -24));       // smallest subnormal
  CHECK(to_float(float16_t{0x03FF}) == std::ldexp(1023.0f, -24));    // largest subnormal
  CHECK(to_float(float16_t{0x0400}) == std::ldexp(1.0f, -14));       // smallest normal
  CHECK(to_float(float16_t{0x3555}) == Approx(0.333251953125f).epsilon(0));
  const float neg_zero = to_float(float16_t{0x8000});
  CHECK(neg_zero == 0.0f);
  CHECK(std::signbit(neg_zero));
  CHECK(to_float(float16_t{0x7C00}) == std::numeric_limits<float>::infinity());
  CHECK(to_float(float16_t{0xFC00}) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(to_float(float16_t{0x7E00})));
}

TEST_CASE("bfloat16 round-trips through float with round-to-nearest-even", "[scalar_types]") {
  CHECK(to_float(bfloat16_t{0x3F80}) == 1.0f);
  CHECK(to_float(spectra::to_bfloat16(3.0f)) == 3.0f);
  // 1 + 2^-8 is halfway between two bfloat16 values and rounds to the even one (1.0).
  CHECK(to_float(spectra::to_bfloat16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  CHECK(to_float(spectra::to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(std::isnan(to_float(spectra::to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
}
