// attn_row_stats on hand-computable rows (entropy, max, k_eff and its θ − 1e-6 tie rule, as defined
// in docs/metrics.md) and against a naive materialise-and-sort loop written here, independently of
// the kernel.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "spectra/attn_row_stats.hpp"

using spectra::AttnMaskSpec;
using spectra::AttnRowStatsOutputs;
using spectra::AttnRowStatsParams;
using spectra::HeadsView;

namespace {

struct Result {
  std::vector<double> entropy, entropy_normalized, max_attn, sink_mass, sink_mass_n, logit_var;
  std::vector<int64_t> argmax, k_eff, n_visible;
};

// q (B, H, Tq, D) and k (B, Hkv, Tk, D), contiguous.
template <typename T>
Result run(const std::vector<T>& q, const std::vector<T>& k, int64_t B, int64_t H, int64_t Hkv, int64_t Tq,
           int64_t Tk, int64_t D, const AttnMaskSpec& mask, const AttnRowStatsParams& params) {
  const HeadsView<T> qv{q.data(), B, H, Tq, D, H * Tq * D, Tq * D, D, 1};
  const HeadsView<T> kv{k.data(), B, Hkv, Tk, D, Hkv * Tk * D, Tk * D, D, 1};
  using Out = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const size_t n = static_cast<size_t>(B * H * Tq);
  std::vector<Out> e(n), en(n), ma(n), sm(n), smn(n), lv(n);
  Result r;
  r.argmax.resize(n);
  r.k_eff.resize(n);
  r.n_visible.resize(n);
  const AttnRowStatsOutputs<Out> out{e.data(), en.data(), ma.data(), sm.data(), smn.data(),
                                       r.argmax.data(), r.k_eff.data(), r.n_visible.data(), lv.data()};
  spectra::attn_row_stats(qv, kv, mask, params, out, 0, spectra::attn_row_stats_tasks(B, H, Tq));
  r.entropy.assign(e.begin(), e.end());
  r.entropy_normalized.assign(en.begin(), en.end());
  r.max_attn.assign(ma.begin(), ma.end());
  r.sink_mass.assign(sm.begin(), sm.end());
  r.sink_mass_n.assign(smn.begin(), smn.end());
  r.logit_var.assign(lv.begin(), lv.end());
  return r;
}

// One query against keys whose logits (D = 1, q = 1, scaling 1) are exactly `logits`.
Result one_row(const std::vector<float>& logits, double threshold = 0.9) {
  const int64_t tk = static_cast<int64_t>(logits.size());
  AttnMaskSpec mask;
  mask.causal = false;
  AttnRowStatsParams params;
  params.threshold = threshold;
  return run<float>({1.0f}, logits, 1, 1, 1, 1, tk, 1, mask, params);
}

}  // namespace

TEST_CASE("entropy, max and k_eff of a peaked row", "[attn_row_stats]") {
  const Result r = one_row({2.0f, 1.0f, 0.0f});
  CHECK(r.entropy[0] == Approx(0.8323955818).epsilon(1e-6));
  CHECK(r.max_attn[0] == Approx(0.6652409558).epsilon(1e-6));
  CHECK(r.argmax[0] == 0);
  CHECK(r.k_eff[0] == 2);
  CHECK(one_row({2.0f, 1.0f, 0.0f}, 0.5).k_eff[0] == 1);
  CHECK(r.sink_mass[0] == Approx(0.6652409558).epsilon(1e-6));
  CHECK(r.entropy_normalized[0] == Approx(0.8323955818 / std::log(3.0)).epsilon(1e-6));
  // Var_p(s) for p = softmax([2, 1, 0]): E[s²] − E[s]², which is −dH/d ln α when the logits are
  // scaled by α.
  const double p0 = 0.6652409558, p1 = 0.2447284711;
  const double mean = 2 * p0 + p1, second = 4 * p0 + p1;
  CHECK(r.logit_var[0] == Approx(second - mean * mean).epsilon(1e-6));
  // p = [0.5, 0.25, 0.25] -> 1.5 ln 2
  CHECK(one_row({std::log(2.0f), 0.0f, 0.0f}).entropy[0] == Approx(1.5 * std::log(2.0)).epsilon(1e-6));
}

TEST_CASE("a learned sink is one more outcome of the row", "[attn_row_stats]") {
  // Logits [ln 2, 0] and a sink logit 0: weights 2/4 and 1/4 on the keys, 1/4 on the sink.
  AttnMaskSpec mask;
  mask.causal = false;
  AttnRowStatsParams params;
  params.threshold = 0.7;
  const double sink = 0.0;
  params.sinks = &sink;
  const Result r = run<float>({1.0f}, {std::log(2.0f), 0.0f}, 1, 1, 1, 1, 2, 1, mask, params);
  const double entropy = -(0.5 * std::log(0.5) + 2 * 0.25 * std::log(0.25));
  CHECK(r.entropy[0] == Approx(entropy).epsilon(1e-6));
  CHECK(r.entropy_normalized[0] == Approx(entropy / std::log(3.0)).epsilon(1e-6));
  CHECK(r.max_attn[0] == Approx(0.5).epsilon(1e-6));  // keys only
  CHECK(r.argmax[0] == 0);
  CHECK(r.sink_mass[0] == Approx(0.75).epsilon(1e-6));  // key 0 and the sink
  CHECK(r.k_eff[0] == 2);                                // 0.5 + 0.25 >= 0.7
  CHECK(r.n_visible[0] == 2);
  // −dH/d ln α with the keys scaled and the sink fixed: Σ_keys p_j s_j (s_j − E_p[s]).
  const double s0 = std::log(2.0), mean = 0.5 * s0;
  CHECK(r.logit_var[0] == Approx(0.5 * s0 * (s0 - mean)).epsilon(1e-6));
  // A sink far above the keys holds the whole row: one outcome reaches any θ.
  const double big = 50.0;
  params.sinks = &big;
  params.threshold = 0.9;
  const Result held = run<float>({1.0f}, {std::log(2.0f), 0.0f}, 1, 1, 1, 1, 2, 1, mask, params);
  CHECK(held.k_eff[0] == 1);
  CHECK(held.sink_mass[0] == Approx(1.0).epsilon(1e-9));
  CHECK(held.max_attn[0] < 1e-20);
}

TEST_CASE("causal uniform rows", "[attn_row_stats]") {
  // All logits equal: q = 0.
  const std::vector<float> q(4 * 2, 0.0f), k = {1, 2, 3, 4, 5, 6, 7, 8};
  const Result r = run<float>(q, k, 1, 1, 1, 4, 4, 2, AttnMaskSpec{}, AttnRowStatsParams{});
  const double expected[] = {0.0, 0.6931471806, 1.0986122887, 1.3862943611};
  for (int t = 0; t < 4; ++t) {
    CHECK(r.entropy[t] == Approx(expected[t]).margin(1e-6));
    CHECK(r.max_attn[t] == Approx(1.0 / (t + 1)).epsilon(1e-6));
    CHECK(r.k_eff[t] == t + 1);
    CHECK(r.n_visible[t] == t + 1);
    CHECK(r.argmax[t] == 0);  // ties: the first key
  }
  CHECK(std::isnan(r.entropy_normalized[0]));
  CHECK(r.entropy_normalized[3] == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("k_eff at an exact tie with the threshold", "[attn_row_stats]") {
  // p = [0.6, 0.3, 0.1]: float64 cumsum 0.8999999999999999 < 0.9; the θ − 1e-6 rule gives 2.
  const Result r = one_row({std::log(0.6f), std::log(0.3f), std::log(0.1f)});
  CHECK(r.k_eff[0] == 2);
  // θ = 1 needs every key with mass; never more than the visible count.
  CHECK(one_row({0.0f, -1.0f, -2.0f, -3.0f}, 1.0).k_eff[0] == 4);
  CHECK(one_row({0.0f, 0.0f, 0.0f}, 1.0).k_eff[0] == 3);
}

TEST_CASE("masks: sliding window, padding, empty rows, query offset", "[attn_row_stats]") {
  std::vector<float> q(6 * 2, 0.0f), k(6 * 2, 1.0f);
  AttnMaskSpec window;
  window.sliding_window = 2;
  const Result w = run<float>(q, k, 1, 1, 1, 6, 6, 2, window, AttnRowStatsParams{});
  for (int t = 0; t < 6; ++t) CHECK(w.n_visible[t] == std::min(t + 1, 2));
  CHECK(w.argmax[5] == 4);  // first visible key of the window
  CHECK(w.sink_mass[5] == 0.0);

  const bool valid[6] = {false, false, true, true, true, true};  // left padding
  AttnMaskSpec padded;
  padded.key_valid = valid;
  AttnRowStatsParams params;
  params.n_sink = 3;
  const Result p = run<float>(q, k, 1, 1, 1, 6, 6, 2, padded, params);
  CHECK(p.n_visible[0] == 0);
  CHECK(std::isnan(p.entropy[0]));
  CHECK(p.k_eff[0] == 0);
  CHECK(p.argmax[0] == -1);
  CHECK(p.n_visible[5] == 4);
  CHECK(p.entropy[5] == Approx(std::log(4.0)).epsilon(1e-6));
  CHECK(p.argmax[5] == 2);
  CHECK(p.sink_mass_n[5] == Approx(0.25).epsilon(1e-6));  // keys 0..2, of which only key 2 is real

  AttnMaskSpec cached;
  cached.query_offset = 4;  // 2 queries after 4 cached keys
  const std::vector<float> q2(2 * 2, 0.0f);
  const Result c = run<float>(q2, k, 1, 1, 1, 2, 6, 2, cached, AttnRowStatsParams{});
  CHECK(c.n_visible[0] == 5);
  CHECK(c.n_visible[1] == 6);
}

TEST_CASE("NaN activations give NaN rows, not silent numbers", "[attn_row_stats]") {
  std::vector<float> q(3 * 2, 0.5f), k(3 * 2, 1.0f);
  k[2] = std::numeric_limits<float>::quiet_NaN();  // key 1
  const Result r = run<float>(q, k, 1, 1, 1, 3, 3, 2, AttnMaskSpec{}, AttnRowStatsParams{});
  CHECK_FALSE(std::isnan(r.entropy[0]));  // row 0 does not see key 1
  CHECK(std::isnan(r.entropy[1]));
  CHECK(std::isnan(r.max_attn[2]));
}

TEST_CASE("matches a naive materialise-sort loop on random GQA inputs", "[attn_row_stats]") {
  const int64_t B = 2, H = 4, Hkv = 2, T = 70, D = 24;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<double> q64(static_cast<size_t>(B * H * T * D)), k64(static_cast<size_t>(B * Hkv * T * D));
  for (auto& v : q64) v = normal(rng);
  for (auto& v : k64) v = normal(rng);
  bool valid[B * T];
  for (int64_t i = 0; i < B * T; ++i) valid[i] = !(i / T == 1 && i % T < 9);
  AttnMaskSpec mask;
  mask.key_valid = valid;
  mask.sliding_window = 50;
  AttnRowStatsParams params;
  params.scaling = 1.0 / std::sqrt(static_cast<double>(D));
  params.threshold = 0.8;
  const Result r = run<double>(q64, k64, B, H, Hkv, T, T, D, mask, params);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> p;
        for (int64_t j = std::max<int64_t>(0, t - 49); j <= t; ++j) {
          if (!valid[b * T + j]) continue;
          double s = 0.0;
          for (int64_t d = 0; d < D; ++d)
            s += q64[((b * H + h) * T + t) * D + d] * k64[((b * Hkv + h / 2) * T + j) * D + d];
          p.push_back(s * params.scaling);
        }
        const size_t o = static_cast<size_t>((b * H + h) * T + t);
        REQUIRE(r.n_visible[o] == static_cast<int64_t>(p.size()));
        if (p.empty()) continue;
        const double m = *std::max_element(p.begin(), p.end());
        double z = 0.0;
        for (double& v : p) z += (v = std::exp(v - m));
        double entropy = 0.0;
        for (double& v : p) {
          v /= z;
          entropy -= v * std::log(v);
        }
        std::sort(p.begin(), p.end(), std::greater<double>());
        double c = 0.0;
        int64_t k_eff = 0;
        while (k_eff < static_cast<int64_t>(p.size()) && c < params.threshold - 1e-6) c += p[k_eff++];
        CHECK(r.entropy[o] == Approx(entropy).margin(1e-10));
        CHECK(r.max_attn[o] == Approx(p[0]).margin(1e-12));
        CHECK(r.k_eff[o] == k_eff);
      }
}

TEST_CASE("half and bfloat16 inputs read as their float values", "[attn_row_stats]") {
  std::vector<float> qf = {0.5f, -1.25f, 2.0f, 0.75f}, kf = {1.0f, 0.5f, -0.25f, 2.0f};
  // The same values as IEEE half bit patterns.
  const std::vector<spectra::float16_t> qh = {{0x3800}, {0xBD00}, {0x4000}, {0x3A00}};
  const std::vector<spectra::float16_t> kh = {{0x3C00}, {0x3800}, {0xB400}, {0x4000}};
  std::vector<spectra::bfloat16_t> qb, kb;
  for (float v : qf) qb.push_back(spectra::to_bfloat16(v));
  for (float v : kf) kb.push_back(spectra::to_bfloat16(v));
  AttnMaskSpec mask;
  mask.causal = false;
  const Result f = run<float>(qf, kf, 1, 1, 1, 2, 2, 2, mask, AttnRowStatsParams{});
  const Result h = run<spectra::float16_t>(qh, kh, 1, 1, 1, 2, 2, 2, mask, AttnRowStatsParams{});
  const Result b = run<spectra::bfloat16_t>(qb, kb, 1, 1, 1, 2, 2, 2, mask, AttnRowStatsParams{});
  for (int i = 0; i < 2; ++i) {  // all values are exact in both 16-bit formats
    CHECK(h.entropy[i] == f.entropy[i]);
    CHECK(b.entropy[i] == f.entropy[i]);
  }
}
