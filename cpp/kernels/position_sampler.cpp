#include "spectra/position_sampler.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace spectra {

uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

uint64_t combine_seed(uint64_t seed, uint64_t value) {
  seed ^= value;
  seed *= 0x9E3779B97F4A7C15ULL;
  seed ^= seed >> 32;
  return seed;
}

uint64_t batch_seed(int64_t example_id, int64_t layer, char kind, uint64_t sampler_seed) {
  uint64_t s = 0x243F6A8885A308D3ULL;
  s = combine_seed(s, mix64(static_cast<uint64_t>(example_id)));
  s = combine_seed(s, mix64(static_cast<uint64_t>(layer)));
  s = combine_seed(s, mix64(static_cast<uint64_t>(static_cast<unsigned char>(kind)) & 0xFFu));
  if (sampler_seed != 0) s = combine_seed(s, mix64(sampler_seed));
  return s;
}

SamplerKind sampler_kind_from_name(const std::string& name) {
  if (name == "all") return SamplerKind::all;
  if (name == "uniform") return SamplerKind::uniform;
  if (name == "log_uniform") return SamplerKind::log_uniform;
  if (name == "explicit") return SamplerKind::explicit_positions;
  throw std::invalid_argument("positions: unknown sampler '" + name +
                              "'; allowed samplers are all, uniform, log_uniform, explicit");
}

const char* sampler_kind_name(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::all: return "all";
    case SamplerKind::uniform: return "uniform";
    case SamplerKind::log_uniform: return "log_uniform";
    case SamplerKind::explicit_positions: return "explicit";
  }
  return "?";
}

PositionSampler::PositionSampler(SamplerKind kind, int64_t bucket_size, double base_rate, uint64_t seed,
                                 std::vector<int64_t> positions)
    : kind_(kind), bucket_size_(bucket_size), base_rate_(base_rate), seed_(seed), positions_(std::move(positions)) {
  if (bucket_size_ < 1) throw std::invalid_argument("bucket_size must be >= 1; got " + std::to_string(bucket_size_));
  if (!(base_rate_ > 0.0) || !std::isfinite(base_rate_))
    throw std::invalid_argument("base_rate must be a finite number > 0; got " + std::to_string(base_rate_));
  if (kind_ == SamplerKind::explicit_positions) {
    std::sort(positions_.begin(), positions_.end());
    positions_.erase(std::unique(positions_.begin(), positions_.end()), positions_.end());
    if (!positions_.empty() && positions_.front() < 0)
      throw std::invalid_argument("positions must be >= 0; got " + std::to_string(positions_.front()));
  } else if (!positions_.empty()) {
    throw std::invalid_argument(std::string("positions: a list of positions needs the explicit sampler, not ") +
                                sampler_kind_name(kind_));
  }
  // ceil(log2(bucket_size)); 0 for a bucket size of 1.
  log_min_bucket_ = bucket_size_ <= 1 ? 0 : static_cast<int64_t>(std::bit_width(static_cast<uint64_t>(bucket_size_ - 1)));
}

int64_t PositionSampler::bucket(int64_t position) const {
  if (kind_ == SamplerKind::log_uniform) {
    // floor(log2(t + 1)) exactly, without floating-point log.
    const int64_t octave = static_cast<int64_t>(std::bit_width(static_cast<uint64_t>(position) + 1)) - 1;
    return std::max(log_min_bucket_, octave);
  }
  return position / bucket_size_;
}

double PositionSampler::keep_probability(int64_t bucket) const {
  switch (kind_) {
    case SamplerKind::uniform: return std::min(1.0, base_rate_ / static_cast<double>(bucket_size_));
    case SamplerKind::log_uniform: return std::min(1.0, base_rate_ / std::ldexp(1.0, static_cast<int>(bucket)));
    default: return 1.0;
  }
}

bool PositionSampler::is_listed(int64_t position) const {
  if (kind_ != SamplerKind::explicit_positions) return true;
  return std::binary_search(positions_.begin(), positions_.end(), position);
}

bool PositionSampler::keep(int64_t position, float u) const {
  if (!is_random()) return is_listed(position);
  // The reference compares a float32 draw with a float32 probability.
  return u < static_cast<float>(keep_probability(bucket(position)));
}

}  // namespace spectra
