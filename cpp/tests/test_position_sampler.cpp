// Seeds and buckets of the capture samplers. Expected seeds were computed from qk-sniffer's seed
// formula (SplitMix64's finaliser and a boost-style combine, see spectra/position_sampler.hpp) with
// Python big integers masked to 64 bits (an independent implementation), so they also pin
// compatibility with qk-sniffer.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>

#include "spectra/position_sampler.hpp"

using spectra::PositionSampler;
using spectra::SamplerKind;

TEST_CASE("mix64 and batch_seed match the reference tool's formula", "[position_sampler]") {
  CHECK(spectra::mix64(0) == 0);
  CHECK(spectra::mix64(1) == 0x5692161d100b05e5ULL);
  CHECK(spectra::batch_seed(0, 0, 'q', 0) == 0x65f4a1634b12b156ULL);
  CHECK(spectra::batch_seed(3, 17, 'k', 0) == 0x1219192e6c9122fdULL);
  // Negative ids wrap mod 2^64 exactly as Python's `& (2**64 - 1)` does.
  CHECK(spectra::batch_seed(-1, 2, 'q', 0) == 0x31ce9e0ceaca2a41ULL);
  // A non-zero sampler seed gives another stream; kinds and layers never collide here.
  CHECK(spectra::batch_seed(3, 17, 'k', 1) != spectra::batch_seed(3, 17, 'k', 0));
  CHECK(spectra::batch_seed(3, 17, 'q', 0) != spectra::batch_seed(3, 17, 'k', 0));
  CHECK(spectra::batch_seed(3, 16, 'k', 0) != spectra::batch_seed(3, 17, 'k', 0));
}

TEST_CASE("uniform buckets are floor(t / B) and keep with probability base_rate / B", "[position_sampler]") {
  const PositionSampler s(SamplerKind::uniform, 8, 1.0, 0);
  CHECK(s.bucket(0) == 0);
  CHECK(s.bucket(7) == 0);
  CHECK(s.bucket(8) == 1);
  CHECK(s.bucket(8191) == 1023);
  CHECK(s.keep_probability(0) == Approx(0.125));
  CHECK(PositionSampler(SamplerKind::uniform, 8, 16.0, 0).keep_probability(3) == 1.0);  // capped at 1
  CHECK(s.keep(5, 0.124f));
  CHECK_FALSE(s.keep(5, 0.125f));  // strict <, as torch.rand(...) < p
}

TEST_CASE("log buckets round the smallest bucket up to a power of two", "[position_sampler]") {
  const PositionSampler s(SamplerKind::log_uniform, 5, 1.0, 0);  // m = ceil(log2 5) = 3
  CHECK(s.bucket(0) == 3);
  CHECK(s.bucket(14) == 3);   // floor(log2 15) = 3
  CHECK(s.bucket(15) == 4);   // floor(log2 16) = 4
  CHECK(s.bucket(1023) == 10);
  CHECK(s.bucket((int64_t{1} << 40) - 1) == 40);  // exact at large t, no floating-point log
  CHECK(s.keep_probability(4) == Approx(1.0 / 16));
  CHECK(PositionSampler(SamplerKind::log_uniform, 1, 1.0, 0).bucket(0) == 0);
}

TEST_CASE("all and explicit samplers are deterministic", "[position_sampler]") {
  const PositionSampler all(SamplerKind::all, 4, 1.0, 0);
  CHECK_FALSE(all.is_random());
  CHECK(all.keep(123, 0.99f));
  CHECK(all.bucket(9) == 2);
  const PositionSampler listed(SamplerKind::explicit_positions, 1, 1.0, 0, {9, 2, 2, 5});
  CHECK(listed.positions() == std::vector<int64_t>{2, 5, 9});
  CHECK(listed.keep(5, 0.0f));
  CHECK_FALSE(listed.keep(4, 0.0f));
}

TEST_CASE("bad sampler arguments name the argument", "[position_sampler]") {
  CHECK_THROWS_WITH(PositionSampler(SamplerKind::uniform, 0, 1.0, 0), Catch::Contains("bucket_size"));
  CHECK_THROWS_WITH(PositionSampler(SamplerKind::uniform, 4, 0.0, 0), Catch::Contains("base_rate"));
  CHECK_THROWS_WITH(PositionSampler(SamplerKind::explicit_positions, 1, 1.0, 0, {-1}), Catch::Contains("positions"));
  CHECK_THROWS_WITH(PositionSampler(SamplerKind::all, 1, 1.0, 0, {3}), Catch::Contains("explicit"));
  CHECK_THROWS_WITH(spectra::sampler_kind_from_name("random"), Catch::Contains("allowed samplers"));
}
