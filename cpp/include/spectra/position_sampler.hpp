// Which token positions a capture keeps: the samplers of qk-sniffer (the Q/K capture tool whose
// layout Spectra's captures share), with their bucket ids and per-(example, layer, kind) seeds.
//
// Long contexts cannot keep every vector, so each position is kept by an independent Bernoulli
// trial whose probability depends on its bucket; one draw per (example, layer, kind) is shared by
// every head and stage of that layer and kind, so Q heads of a layer (and pre/post-RoPE stages)
// line up row for row. The uniform draws themselves come from PyTorch's CPU generator (binding
// side), which keeps masks bit-compatible with qk-sniffer's `rand(S, generator=...) < p` in PyTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spectra {

// SplitMix64's finaliser and the boost-style combine the reference tool folds seeds with (mod 2^64).
uint64_t mix64(uint64_t x);
uint64_t combine_seed(uint64_t seed, uint64_t value);

// Seed of the draw for one example, layer and kind ('q', 'k' or 'v'). With sampler_seed == 0 this
// is exactly qk-sniffer's batch_seed; another sampler_seed folds in one more mixed word.
uint64_t batch_seed(int64_t example_id, int64_t layer, char kind, uint64_t sampler_seed);

enum class SamplerKind { all, uniform, log_uniform, explicit_positions };

SamplerKind sampler_kind_from_name(const std::string& name);  // throws std::invalid_argument
const char* sampler_kind_name(SamplerKind kind);

class PositionSampler {
 public:
  // bucket_size >= 1; base_rate > 0; explicit positions >= 0 (sorted and deduplicated here).
  // Throws std::invalid_argument naming the offending argument.
  PositionSampler(SamplerKind kind, int64_t bucket_size, double base_rate, uint64_t seed,
                  std::vector<int64_t> positions = {});

  SamplerKind kind() const { return kind_; }
  int64_t bucket_size() const { return bucket_size_; }
  double base_rate() const { return base_rate_; }
  uint64_t seed() const { return seed_; }
  const std::vector<int64_t>& positions() const { return positions_; }

  // all / uniform / explicit: floor(t / bucket_size). log_uniform: max(m, floor(log2(t + 1))) with
  // m = ceil(log2(bucket_size)), so the smallest bucket is rounded up to 2^m tokens.
  int64_t bucket(int64_t position) const;
  // Probability that a position of this bucket is kept: 1 for all/explicit,
  // min(1, base_rate / bucket_size) for uniform, min(1, base_rate / 2^bucket) for log_uniform.
  double keep_probability(int64_t bucket) const;
  // Whether keeping needs uniform draws at all (uniform and log_uniform do).
  bool is_random() const { return kind_ == SamplerKind::uniform || kind_ == SamplerKind::log_uniform; }
  // For explicit samplers: whether the position is listed. Others: always true.
  bool is_listed(int64_t position) const;
  // Decision for one position given its uniform draw u in [0, 1) (ignored unless is_random()).
  bool keep(int64_t position, float u) const;

 private:
  SamplerKind kind_;
  int64_t bucket_size_;
  double base_rate_;
  uint64_t seed_;
  std::vector<int64_t> positions_;
  int64_t log_min_bucket_ = 0;
};

}  // namespace spectra
