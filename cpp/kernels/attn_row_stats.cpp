#include "spectra/attn_row_stats.hpp"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace spectra {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kKeyTile = 256;
constexpr int64_t kHistogramBins = 2048;

// Logits of rows × keys: out[r * out_stride + j] = q_r · k_j. Keys come packed in panels of
// kMicroKeys keys, each panel (dim, kMicroKeys) contiguous, so the inner loop runs over keys with
// unit stride: a register block of kMicroRows rows × kMicroKeys keys accumulates q[r][d] · k[d][j]
// with no horizontal sums, and each panel streams through the cache once per row group. q holds a
// multiple of kMicroRows rows (zero-padded). target_clones builds AVX-512, AVX2 and baseline
// versions and picks one when the module loads.
constexpr int64_t kMicroRows = 4;
constexpr int64_t kMicroKeys = 32;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPECTRA_TARGET_CLONES_DOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPECTRA_TARGET_CLONES_DOT
#endif

SPECTRA_TARGET_CLONES_DOT
void dot_tile(const float* q, int64_t rows, const float* panels, int64_t keys, int64_t dim, float* out,
              int64_t out_stride) {
  for (int64_t r0 = 0; r0 < rows; r0 += kMicroRows) {
    for (int64_t j0 = 0; j0 < keys; j0 += kMicroKeys) {
      const float* panel = panels + (j0 / kMicroKeys) * dim * kMicroKeys;
      float acc[kMicroRows][kMicroKeys] = {};
      for (int64_t d = 0; d < dim; ++d) {
        const float* kd = panel + d * kMicroKeys;
        for (int64_t r = 0; r < kMicroRows; ++r) {
          const float qv = q[(r0 + r) * dim + d];
          for (int64_t j = 0; j < kMicroKeys; ++j) acc[r][j] += qv * kd[j];
        }
      }
      const int64_t nr = std::min(kMicroRows, rows - r0), nj = std::min(kMicroKeys, keys - j0);
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t j = 0; j < nj; ++j) out[(r0 + r) * out_stride + j0 + j] = acc[r][j];
    }
  }
}

void dot_tile(const double* q, int64_t rows, const double* panels, int64_t keys, int64_t dim, double* out,
              int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < keys; ++j) {
      const double* panel = panels + (j / kMicroKeys) * dim * kMicroKeys + j % kMicroKeys;
      double s = 0.0;
      for (int64_t d = 0; d < dim; ++d) s += q[r * dim + d] * panel[d * kMicroKeys];
      out[r * out_stride + j] = s;
    }
}

struct VisibleRange {
  int64_t lo = 0, hi = -1;  // inclusive
};

VisibleRange visible_range(const AttnMaskSpec& mask, int64_t t, int64_t key_seq) {
  const int64_t index = t + mask.query_offset;
  VisibleRange r{0, key_seq - 1};
  if (mask.causal) r.hi = std::min(index, key_seq - 1);
  if (mask.sliding_window > 0) {
    r.lo = std::max<int64_t>(0, index - mask.sliding_window + 1);
    if (!mask.causal) r.hi = std::min(key_seq - 1, index + mask.sliding_window - 1);
  }
  return r;
}

// Scratch owned by one call (one thread's chunk of tasks).
template <typename Acc>
struct Workspace {
  std::vector<Acc> q_block, k_tile, logits, weights;
  std::vector<double> bin_mass, boundary;
  std::vector<int64_t> bin_count, valid_prefix;
  int64_t prefix_batch = -1;
  int64_t keys_batch = -1, keys_head = -1;  // whose keys k_tile holds
};

struct RowResult {
  double entropy = kNaN, entropy_normalized = kNaN, max_attn = kNaN, sink_mass = kNaN, sink_mass_n = kNaN,
         logit_var = kNaN;
  int64_t argmax = -1, k_eff = 0, n_visible = 0;
};

// e^x for x <= 0 in float, written as plain arithmetic so the compiler vectorises the loops that
// call it (glibc's expf is a scalar call). Range reduction x = (n + f)·ln 2 with |f| <= 1/2 and a
// degree-7 Taylor polynomial of e^(f ln 2): relative error below 1e-8, under float32's own
// rounding. 2^n is applied as 2^(n + 64) · 2^−64 so results stay right down into the subnormal
// range, like expf; below −104 the result is 0.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;
  constexpr float kTwoToMinus64 = 5.42101086242752217e-20f;
  const bool underflow = x < -104.0f;
  x = underflow ? -104.0f : x;
  const float t = x * kLog2e;
  // Round to nearest by adding and removing 1.5·2^23 (std::nearbyint is a library call below SSE4.1,
  // which would keep this loop scalar). |t| <= 151, far inside the trick's range.
  constexpr float kRound = 12582912.0f;
  const float n = (t + kRound) - kRound;
  const float y = (t - n) * kLn2;
  float p = 1.0f / 5040.0f;
  p = p * y + 1.0f / 720.0f;
  p = p * y + 1.0f / 120.0f;
  p = p * y + 1.0f / 24.0f;
  p = p * y + 1.0f / 6.0f;
  p = p * y + 0.5f;
  p = p * y + 1.0f;
  p = p * y + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 64 + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? 0.0f : (p * scale) * kTwoToMinus64;
}

inline double exp_nonpositive(double x) { return std::exp(x); }

// The two full passes over a row, as non-template functions so target_clones can build AVX-512
// and AVX2 versions of them (the loops are written for the vectoriser: no branches, explicit lanes).
constexpr int64_t kLanes = 16;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPECTRA_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SPECTRA_TARGET_CLONES
#endif

SPECTRA_TARGET_CLONES
float row_max(const float* s, int64_t n) {
  float lanes[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lanes[l] = -std::numeric_limits<float>::infinity();
  const int64_t body = n - n % kLanes;
  for (int64_t i = 0; i < body; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] = s[i + l] > lanes[l] ? s[i + l] : lanes[l];
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t l = 0; l < kLanes; ++l) m = lanes[l] > m ? lanes[l] : m;
  for (int64_t i = body; i < n; ++i) m = s[i] > m ? s[i] : m;
  return m;
}

double row_max(const double* s, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = s[i] > m ? s[i] : m;
  return m;
}

// e[i] = exp(s[i] − m) (0 for hidden keys at −inf), z += Σ e, a += Σ e·(s − m), b += Σ e·(s − m)².
// A NaN logit makes
// z NaN. The distance is clamped at −104 nats before the product so 0 · (−inf) never occurs. Sums
// run in float lanes over chunks of 256 keys (16 terms per lane) and in float64 across chunks:
// all-float inner loops vectorise, and the error stays at float64 level over long rows.
SPECTRA_TARGET_CLONES
void row_weights(const float* s, int64_t n, float m, float* e, double& z, double& a, double& b) {
  constexpr int64_t kChunk = 256;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1 = std::min(n, c0 + kChunk);
    const int64_t body = c0 + (c1 - c0) / kLanes * kLanes;
    float z_lanes[kLanes] = {}, a_lanes[kLanes] = {}, b_lanes[kLanes] = {};
    for (int64_t i = c0; i < body; i += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const float d = s[i + l] - m;
        const float w = exp_nonpositive(d);
        const float dc = d > -104.0f ? d : -104.0f;
        e[i + l] = w;
        z_lanes[l] += w;
        a_lanes[l] += w * dc;
        b_lanes[l] += w * dc * dc;
      }
    }
    for (int64_t i = body; i < c1; ++i) {
      const float d = s[i] - m;
      const float w = exp_nonpositive(d);
      const float dc = d > -104.0f ? d : -104.0f;
      e[i] = w;
      z_lanes[0] += w;
      a_lanes[0] += w * dc;
      b_lanes[0] += w * dc * dc;
    }
    double zc = 0.0, ac = 0.0, bc = 0.0;
    for (int64_t l = 0; l < kLanes; ++l) {
      zc += z_lanes[l];
      ac += a_lanes[l];
      bc += b_lanes[l];
    }
    z += zc;
    a += ac;
    b += bc;
  }
}

void row_weights(const double* s, int64_t n, double m, double* e, double& z, double& a, double& b) {
  for (int64_t i = 0; i < n; ++i) {
    const double d = s[i] - m;
    const double w = std::exp(d);
    e[i] = w;
    z += w;
    a += w > 0.0 ? w * d : 0.0;
    b += w > 0.0 ? w * d * d : 0.0;
  }
}

// The smallest logit among keys with mass (hidden or underflowed keys count as the max).
SPECTRA_TARGET_CLONES
float row_lowest(const float* s, const float* e, int64_t n, float max) {
  float lanes[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lanes[l] = max;
  const int64_t body = n - n % kLanes;
  for (int64_t i = 0; i < body; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const float v = e[i + l] > 0.0f ? s[i + l] : max;
      lanes[l] = v < lanes[l] ? v : lanes[l];
    }
  float lowest = max;
  for (int64_t l = 0; l < kLanes; ++l) lowest = lanes[l] < lowest ? lanes[l] : lowest;
  for (int64_t i = body; i < n; ++i) {
    const float v = e[i] > 0.0f ? s[i] : max;
    lowest = v < lowest ? v : lowest;
  }
  return lowest;
}

double row_lowest(const double* s, const double* e, int64_t n, double max) {
  double lowest = max;
  for (int64_t i = 0; i < n; ++i) {
    const double v = e[i] > 0.0 ? s[i] : max;
    lowest = v < lowest ? v : lowest;
  }
  return lowest;
}

// k_eff: the smallest count of the largest weights whose sum reaches target (weights e = exp(s − m),
// the largest exactly 1). A histogram of the logits' distance below the max locates the bin that
// holds the threshold; only that bin's members are sorted. The bins adapt to the row: about one
// per two keys (16 to kHistogramBins) spread over the row's logit span, capped at 32 nats (weights
// below e^−32 share the last bin), so the work per row is O(n) however wide or narrow the row is.
template <typename Acc>
int64_t k_eff_of(const Acc* s, const Acc* e, int64_t n, Acc max, double target, Workspace<Acc>& ws) {
  if (target <= 1.0) return 1;  // the maximal key alone (weight exactly 1) reaches it
  const Acc lowest = row_lowest(s, e, n, max);
  const Acc span = std::min<Acc>(max - lowest, Acc(32));
  if (!(span > Acc(0))) {
    // Every key with mass has weight 1: k keys hold k units.
    return static_cast<int64_t>(std::ceil(target - 1e-12));
  }
  const int64_t n_bins = std::clamp<int64_t>(n / 2, 16, kHistogramBins);
  const Acc scale = static_cast<Acc>(n_bins) / span;
  auto bin_of = [&](Acc v) {
    const Acc b = (max - v) * scale;
    return b >= static_cast<Acc>(n_bins - 1) ? n_bins - 1 : static_cast<int64_t>(b);
  };
  for (int64_t i = 0; i < n; ++i) {
    if (!(e[i] > Acc(0))) continue;
    const int64_t b = bin_of(s[i]);
    ws.bin_mass[b] += static_cast<double>(e[i]);
    ++ws.bin_count[b];
  }
  double above = 0.0;
  int64_t count_above = 0, bin = 0;
  for (; bin < n_bins - 1; ++bin) {
    if (above + ws.bin_mass[bin] >= target) break;
    above += ws.bin_mass[bin];
    count_above += ws.bin_count[bin];
  }
  std::fill_n(ws.bin_mass.begin(), n_bins, 0.0);  // the bins stay zero between rows
  std::fill_n(ws.bin_count.begin(), n_bins, 0);
  ws.boundary.clear();
  for (int64_t i = 0; i < n; ++i)
    if (e[i] > Acc(0) && bin_of(s[i]) == bin) ws.boundary.push_back(static_cast<double>(e[i]));
  std::sort(ws.boundary.begin(), ws.boundary.end(), std::greater<double>());
  double mass = above;
  for (size_t i = 0; i < ws.boundary.size(); ++i) {
    mass += ws.boundary[i];
    if (mass >= target) return count_above + static_cast<int64_t>(i) + 1;
  }
  // Only rounding (or weights that underflowed to 0) can leave the total a hair below target.
  return count_above + static_cast<int64_t>(ws.boundary.size());
}

// k_eff of a row with a learned sink: the smallest number of outcomes (keys, and the sink as one)
// whose mass reaches target, all weights relative to the row's overall max M. The keys' weights are
// f · e (e relative to their own max); the best k outcomes are either the k best keys or the sink
// and the k − 1 best keys, so the count is the smaller of those two searches.
template <typename Acc>
int64_t k_eff_with_sink(const Acc* s, const Acc* e, int64_t n, Acc key_max, double f, double keys_mass, double w,
                        double target, int64_t n_mass, Workspace<Acc>& ws) {
  const double rest = target - w;
  if (rest <= 0.0) return 1;  // the sink alone
  int64_t best = rest <= keys_mass ? 1 + k_eff_of(s, e, n, key_max, rest / f, ws) : 1 + n_mass;
  if (target <= keys_mass) best = std::min(best, k_eff_of(s, e, n, key_max, target / f, ws));
  return best;
}

// Statistics of one row from its logits s[0, n) (keys lo .. lo + n − 1; hidden keys hold −inf);
// sink: this head's learned sink logit, or nullptr.
template <typename Acc>
RowResult row_stats(const Acc* s, int64_t n, int64_t lo, int64_t visible, const AttnRowStatsParams& p,
                    const double* sink, Workspace<Acc>& ws) {
  RowResult res;
  res.n_visible = visible;
  if (visible == 0 || n <= 0) return res;
  // Pass 1: the max (NaNs compare false and are caught by the sums below).
  const Acc m = row_max(s, n);
  if (!(m > -std::numeric_limits<Acc>::infinity()) || std::isinf(m)) return res;  // no finite logit
  // Pass 2: weights e = exp(s − m) <= 1, Z = Σe and Σ e·(s − m), the sums in float64.
  Acc* e = ws.weights.data();
  double z = 0.0, a = 0.0, b = 0.0;
  row_weights(s, n, m, e, z, a, b);
  if (std::isnan(z)) return res;  // a NaN activation reached this row
  int64_t arg = 0;
  while (arg < n && !(s[arg] == m)) ++arg;
  res.argmax = lo + arg;
  res.entropy = std::max(0.0, std::log(z) - a / z);
  res.max_attn = 1.0 / z;
  // Var_p(s) = E[(s − m)²] − E[s − m]², clamped at 0 against cancellation: dH/d ln α = −Var_p(s)
  // at α = 1 when every logit of the row is scaled by α (see docs/metrics.md).
  res.logit_var = std::max(0.0, b / z - (a / z) * (a / z));
  res.sink_mass = lo == 0 ? static_cast<double>(e[0]) / z : 0.0;
  double sink_n = 0.0;
  for (int64_t j = lo; j < std::min<int64_t>(p.n_sink, lo + n); ++j) sink_n += static_cast<double>(e[j - lo]);
  res.sink_mass_n = sink_n / z;
  res.entropy_normalized = visible >= 2 ? res.entropy / std::log(static_cast<double>(visible)) : kNaN;
  res.k_eff = std::min(k_eff_of(s, e, n, m, (p.threshold - kKeffTolerance) * z, ws), visible);
  if (sink == nullptr) return res;

  // A learned sink: one more outcome with logit σ. The keys' sums above are relative to their max
  // m; move them to the row's max M = max(m, σ) (factor f = e^(m − M) <= 1, shift δ = m − M) and
  // add the sink's terms, all in float64.
  const double sigma = *sink, key_max = static_cast<double>(m);
  const double big = std::max(key_max, sigma), delta = key_max - big, f = std::exp(delta);
  const double d_sink = sigma - big, w = std::exp(d_sink);
  const double zk = f * z, ak = f * (a + delta * z), bk = f * (b + 2.0 * delta * a + delta * delta * z);
  const double zt = zk + w, at = ak + w * d_sink, bt = bk + w * d_sink * d_sink;
  const double mean = at / zt, p_sink = w / zt;
  res.entropy = std::max(0.0, std::log(zt) - mean);
  res.max_attn = f / zt;
  // −dH/d ln α with the keys' logits scaled by α and σ fixed: Var_p(s) − σ·p_sink·(σ − E_p[s]).
  res.logit_var = std::max(0.0, bt / zt - mean * mean) - sigma * p_sink * (d_sink - mean);
  res.sink_mass = (lo == 0 ? f * static_cast<double>(e[0]) / zt : 0.0) + p_sink;
  res.sink_mass_n = f * sink_n / zt + p_sink;
  res.entropy_normalized = res.entropy / std::log(static_cast<double>(visible + 1));
  int64_t n_mass = 0;
  for (int64_t i = 0; i < n; ++i) n_mass += e[i] > Acc(0) ? 1 : 0;
  const double target = (p.threshold - kKeffTolerance) * zt;
  res.k_eff = std::min(k_eff_with_sink(s, e, n, m, f, zk, w, target, n_mass, ws), visible + 1);
  return res;
}

// to_float reads every input type (float16/bfloat16 bit patterns, float, double) at full value.
template <typename Acc, typename In>
Acc load_one(In x) {
  return static_cast<Acc>(to_float(x));
}

template <typename Acc, typename In>
void load_vec(const In* src, int64_t dim, int64_t stride, Acc* dst) {
  for (int64_t d = 0; d < dim; ++d) dst[d] = load_one<Acc>(src[d * stride]);
}

}  // namespace

template <typename In, typename Out>
void attn_row_stats(const HeadsView<In>& q, const HeadsView<In>& k, const AttnMaskSpec& mask,
                    const AttnRowStatsParams& params, const AttnRowStatsOutputs<Out>& out, int64_t task_begin,
                    int64_t task_end) {
  using Acc = std::conditional_t<std::is_same_v<In, double>, double, float>;
  const int64_t dim = q.dim, key_seq = k.seq, query_seq = q.seq;
  const int64_t blocks = (query_seq + kAttnRowsPerBlock - 1) / kAttnRowsPerBlock;
  const int64_t group = q.heads / k.heads;
  Workspace<Acc> ws;
  // kAttnRowsPerBlock is a multiple of kMicroRows and kKeyTile of kMicroKeys: padding stays zero.
  static_assert(kAttnRowsPerBlock % kMicroRows == 0 && kKeyTile % kMicroKeys == 0);
  ws.q_block.assign(static_cast<size_t>(kAttnRowsPerBlock * dim), Acc(0));
  // All keys of one (batch, KV head), packed once into (dim, kMicroKeys) panels and shared by every
  // query head of the group and every row block; the last panel is zero-padded.
  const int64_t n_panels = std::max<int64_t>(1, (key_seq + kMicroKeys - 1) / kMicroKeys);
  ws.k_tile.assign(static_cast<size_t>(n_panels * dim * kMicroKeys), Acc(0));
  ws.logits.resize(static_cast<size_t>(kAttnRowsPerBlock * std::max<int64_t>(key_seq, 1)));
  ws.weights.resize(static_cast<size_t>(std::max<int64_t>(key_seq, 1)));
  ws.bin_mass.assign(kHistogramBins, 0.0);
  ws.bin_count.assign(kHistogramBins, 0);
  ws.valid_prefix.resize(static_cast<size_t>(key_seq + 1));
  constexpr Acc neg_inf = -std::numeric_limits<Acc>::infinity();

  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t block = task % blocks;
    const int64_t bh = task / blocks;
    const int64_t b = bh / q.heads, h = bh % q.heads, kv = h / group;
    const int64_t t0 = block * kAttnRowsPerBlock;
    const int64_t rows = std::min(kAttnRowsPerBlock, query_seq - t0);
    const bool* valid = mask.key_valid ? mask.key_valid + b * key_seq : nullptr;
    if (valid != nullptr && ws.prefix_batch != b) {
      // Real keys before index j, so a row's visible count is one subtraction.
      ws.valid_prefix[0] = 0;
      for (int64_t j = 0; j < key_seq; ++j) ws.valid_prefix[j + 1] = ws.valid_prefix[j] + (valid[j] ? 1 : 0);
      ws.prefix_batch = b;
    }

    VisibleRange ranges[kAttnRowsPerBlock];
    int64_t lo = key_seq, hi = -1;
    for (int64_t r = 0; r < rows; ++r) {
      ranges[r] = visible_range(mask, t0 + r, key_seq);
      lo = std::min(lo, ranges[r].lo);
      hi = std::max(hi, ranges[r].hi);
      load_vec<Acc>(q.vec(b, h, t0 + r), dim, q.stride_dim, ws.q_block.data() + r * dim);
    }
    for (int64_t r = rows; r < kAttnRowsPerBlock; ++r)
      std::fill_n(ws.q_block.data() + r * dim, dim, Acc(0));
    if (ws.keys_batch != b || ws.keys_head != kv) {
      for (int64_t j0 = 0; j0 < key_seq; j0 += kMicroKeys) {
        const int64_t nj = std::min(kMicroKeys, key_seq - j0);
        const In* rows_of[kMicroKeys];
        for (int64_t j = 0; j < nj; ++j) rows_of[j] = k.vec(b, kv, j0 + j);
        Acc* panel = ws.k_tile.data() + (j0 / kMicroKeys) * dim * kMicroKeys;
        for (int64_t d = 0; d < dim; ++d) {
          const int64_t offset = d * k.stride_dim;
          for (int64_t j = 0; j < nj; ++j) panel[d * kMicroKeys + j] = load_one<Acc>(rows_of[j][offset]);
        }
      }
      ws.keys_batch = b;
      ws.keys_head = kv;
    }
    // Logits of the block's union key range; each row's own range is cut out below.
    // Panels start at multiples of kMicroKeys: logits left of lo are computed and never read.
    for (int64_t j0 = lo / kMicroKeys * kMicroKeys; j0 <= hi; j0 += kKeyTile) {
      const int64_t keys = std::min(kKeyTile, hi - j0 + 1);
      dot_tile(ws.q_block.data(), rows, ws.k_tile.data() + (j0 / kMicroKeys) * dim * kMicroKeys, keys, dim,
               ws.logits.data() + j0, key_seq);
    }
    for (int64_t r = 0; r < rows; ++r) {
      Acc* row = ws.logits.data() + r * key_seq;
      const VisibleRange range = ranges[r];
      for (int64_t j = range.lo; j <= range.hi; ++j) {
        Acc s = row[j] * static_cast<Acc>(params.scaling);
        if (params.softcap > 0.0) s = static_cast<Acc>(params.softcap * std::tanh(s / params.softcap));
        row[j] = (valid != nullptr && !valid[j]) ? neg_inf : s;
      }
      const int64_t n = range.hi - range.lo + 1;
      int64_t visible = n <= 0 ? 0
                        : valid != nullptr ? ws.valid_prefix[range.hi + 1] - ws.valid_prefix[range.lo]
                                           : n;
      if (mask.visible != nullptr && n > 0) {
        // The custom mask hides more keys of this row; the count is then taken key by key.
        const bool* seen = mask.visible + b * mask.visible_stride_batch + h * mask.visible_stride_head +
                           (t0 + r) * mask.visible_stride_query;
        visible = 0;
        for (int64_t j = range.lo; j <= range.hi; ++j) {
          const bool shown = seen[j * mask.visible_stride_key];
          if (!shown) row[j] = neg_inf;
          visible += (shown && (valid == nullptr || valid[j])) ? 1 : 0;
        }
      }
      const double* sink = params.sinks != nullptr ? params.sinks + h : nullptr;
      const RowResult res = row_stats<Acc>(row + range.lo, n, range.lo, visible, params, sink, ws);
      const int64_t o = (b * q.heads + h) * query_seq + t0 + r;
      out.entropy[o] = static_cast<Out>(res.entropy);
      out.entropy_normalized[o] = static_cast<Out>(res.entropy_normalized);
      out.max_attn[o] = static_cast<Out>(res.max_attn);
      out.sink_mass[o] = static_cast<Out>(res.sink_mass);
      out.sink_mass_n[o] = static_cast<Out>(res.sink_mass_n);
      if (out.logit_var != nullptr) out.logit_var[o] = static_cast<Out>(res.logit_var);
      out.argmax[o] = res.argmax;
      out.k_eff[o] = res.k_eff;
      out.n_visible[o] = res.n_visible;
    }
  }
}

#define SPECTRA_INSTANTIATE(In, Out)                                                                             \
  template void attn_row_stats<In, Out>(const HeadsView<In>&, const HeadsView<In>&, const AttnMaskSpec&,       \
                                        const AttnRowStatsParams&, const AttnRowStatsOutputs<Out>&, int64_t, \
                                        int64_t);
SPECTRA_INSTANTIATE(float, float)
SPECTRA_INSTANTIATE(double, double)
SPECTRA_INSTANTIATE(float16_t, float)
SPECTRA_INSTANTIATE(bfloat16_t, float)
#undef SPECTRA_INSTANTIATE

}  // namespace spectra
