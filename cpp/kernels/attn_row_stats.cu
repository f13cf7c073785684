// CUDA kernel of attn_row_stats — the twin of the CPU kernel (attn_row_stats.cpp, next to this file;
// definitions in spectra/attn_row_stats.hpp) with the same masks (causal, sliding window,
// query_offset, key_valid), GQA (query head h reads KV head h / (H / Hkv); K is never repeated),
// scaling, softcap, outputs, dtypes and NaN rules.
//
// Memory: O(1) beyond the outputs. No T×T matrix, no per-row buffer in global memory: every pass
// recomputes the logits of one 64-query × 64-key tile at a time in shared memory (tensor cores for
// float16/bfloat16, float32/float64 FMAs otherwise), as flash attention does.
//
// Work split: one CTA of 128 threads per (batch, query head, block of 64 query rows); the two lanes
// l and l ^ 16 of a warp own one row and each see 32 keys of every 64-key tile. Causal CTAs with the
// most keys are scheduled first, and the CTAs of one query block run all heads back to back, so the
// heads of a GQA group read the same K tiles from L2.
//
// Algorithm, per row (logits s_j = scaling·q·k_j, softcapped, in float32 — float64 for float64 inputs —
// exactly as the CPU op computes them):
//   pass 1  m = max s_j, the first argmax, the smallest finite logit, the visible-key count;
//   pass 2  with that m fixed: w_j = exp(s_j − m), Z = Σw, A = Σ w·(s − m), B = Σ w·(s − m)² summed
//           exactly like the CPU (float partials over ≤ 32 keys, float64 across), sink masses; then
//           entropy = ln Z − A/Z, max_attn = 1/Z, logit_var = B/Z − (A/Z)², as on the CPU; and a
//           64-bin histogram of the distances d = m − s (bins over [0, min(m − min s, 32)], the last
//           one open) holding each bin's key count and mass.
//   k_eff   is the smallest k such that the k largest weights sum to ≥ target = (θ − 1e-6)·Z. That
//           needs the sorted-descending cumulative mass, which cannot be streamed, but weights sort
//           by d, so only the one bin where the cumulative mass (from the top) crosses the target
//           matters: keys above it all count, keys below it none. Scanning the histogram from d = 0
//           gives that bin, the count and the mass above it. If the bin holds ≤ 128 keys (64 for
//           float64), the next pass gathers their weights into shared memory, a bitonic sort orders
//           them and a cumulative sum from the mass above finds k exactly. Otherwise the next pass
//           histograms just that bin's keys into 64 sub-bins and the search recurses. From level 2
//           on, bins are ranges of the IEEE bit pattern of d (monotone in d for d ≥ 0), split by a
//           power-of-two shift, so membership is an exact integer comparison and a bin whose range
//           is one bit pattern holds keys of identical weight — a tie, resolved by arithmetic. A bin
//           shrinks 64-fold per level: at most ~6 levels for float32, ~11 for float64; typically one
//           or two before the gather. A CTA runs another pass only while one of its rows needs it.
//   Why exact: the logits, d and w are recomputed bit-identically in every pass (same inputs, same
//           instruction sequence; products and differences use __fmul_rn/__fsub_rn so no pass can
//           fuse them into an FMA differently), so a key's bin is the same in every pass. Bin masses
//           are summed in 64-bit fixed point (2^-40 per unit weight): integer atomics are exact and
//           order-independent, with a rounding error of at most n·2^-41 ≤ 6e-8 for n = 128K keys,
//           well inside the op's 1e-6 tolerance on θ. The CPU finds the same k with one histogram
//           level plus a sort of its bin; only summation order differs, so k_eff agrees except when
//           the true cumulative mass is within rounding of θ − 1e-6.
// The largest cost is recomputing QKᵀ once per pass (3 passes at least when θ needs a search, 4–5
// typically for long rows); passes 1 and the gather are cheap per element, pass 2 pays one exp and two
// shared-memory atomics per visible key.
//
// Torch-free: the op layer (cpp/ops/attn_row_stats_cuda.cu) checks the arguments, allocates the
// outputs, picks the path and checks the launch limits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <mma.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "spectra/attn_row_stats.hpp"
#include "spectra/cuda/attn_row_stats.cuh"

namespace spectra::cuda_kernels {
namespace {

constexpr int kRows = kAttnRowStatsCtaRows;  // query rows per CTA
constexpr int kKeys = 64;       // keys per tile
constexpr int kThreads = 128;   // 4 warps of 16 rows; lanes l and l ^ 16 share a row
constexpr int kWarps = kThreads / 32;
constexpr int kLdS = kKeys + 4;     // row stride of the tensor-core logit tile (a multiple of 4 for wmma)
constexpr int kLdSFma = kKeys + 1;  // row stride of the FMA path's logit tile
constexpr int kChunk = 32;       // head-dim chunk of the FMA path
constexpr int kBins = 64;
constexpr int kRegionBytes = kBins * 12;  // per row: kBins uint64 masses, then kBins uint32 counts
constexpr int kCollectBytes = 512;        // per row, aliasing the masses: the gathered weights
constexpr double kFixScale = 1099511627776.0;  // 2^40: bin masses in fixed point
constexpr int kMaxRefinePasses = 24;           // > the ~11 levels float64 can need; see the fallback
static_assert(kRows == kKeys, "load_tile16 copies kRows rows for Q and K tiles alike");

enum : int { kModeDone = 0, kModeRefine = 1, kModeCollect = 2 };

// ---- numeric helpers per accumulation type (float for 16/32-bit inputs, double for float64) ----
template <typename Acc>
struct Num;

template <>
struct Num<float> {
  using Key = uint32_t;
  static constexpr Key kKeyMax = 0xFFFFFFFFu;
  static constexpr float kMaxFinite = 3.402823466e38f;
  __device__ static __forceinline__ Key key(float d) { return __float_as_uint(d); }
  __device__ static __forceinline__ float from_key(Key u) { return __uint_as_float(u); }
  __device__ static __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
  __device__ static __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
  __device__ static __forceinline__ float exp(float x) { return expf(x); }
  __device__ static __forceinline__ float inf() { return __int_as_float(0x7f800000); }
  __device__ static __forceinline__ unsigned long long fix(float w) {
    return __float2ull_rn(__fmul_rn(w, 1099511627776.0f));
  }
};

template <>
struct Num<double> {
  using Key = unsigned long long;
  static constexpr Key kKeyMax = 0xFFFFFFFFFFFFFFFFull;
  static constexpr double kMaxFinite = 1.7976931348623157e308;
  __device__ static __forceinline__ Key key(double d) { return static_cast<Key>(__double_as_longlong(d)); }
  __device__ static __forceinline__ double from_key(Key u) { return __longlong_as_double(static_cast<long long>(u)); }
  __device__ static __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
  __device__ static __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
  __device__ static __forceinline__ double exp(double x) { return ::exp(x); }
  __device__ static __forceinline__ double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
  __device__ static __forceinline__ unsigned long long fix(double w) {
    return __double2ull_rn(__dmul_rn(w, kFixScale));
  }
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename In>
struct WmmaType;
template <>
struct WmmaType<float16_t> {
  using type = __half;
};
template <>
struct WmmaType<bfloat16_t> {
  using type = __nv_bfloat16;
};

// ---- kernel arguments (the CPU kernel's structs, with device pointers) ----
template <typename In, typename Acc>
struct Args {
  HeadsView<In> q, k;
  AttnMaskSpec mask;  // key_valid: a contiguous (batch, key_len) bool tensor on the device
  AttnRowStatsOutputs<Acc> out;
  AttnRowStatsParams params;
  double keff_level;  // θ − kKeffTolerance
  int64_t q_blocks;   // ceil(query_len / kRows)
  int dpad;           // tensor-core path: head_dim rounded up to 16
  bool q_vec, k_vec;  // rows may be copied in 16-byte vectors
};

// Shared-memory carve-up, the same on host (to size the launch) and device.
struct Layout {
  int q = 0, k = 0, valid = 0, count = 0, hist = 0, scratch = 0, s = 0, total = 0;
};

__host__ __device__ inline int align128(int x) { return (x + 127) / 128 * 128; }

__host__ __device__ inline Layout make_layout(bool tensor_cores, int dpad, int acc_size) {
  Layout l;
  int off = 0;
  if (tensor_cores) {
    const int ldq = dpad + 8;
    l.q = off;
    off = align128(off + kRows * ldq * 2);
    l.k = off;
    off = align128(off + kKeys * ldq * 2);
    l.s = off;
    off = align128(off + kRows * kLdS * 4);
  } else {
    l.q = off;
    off = align128(off + kRows * (kChunk + 1) * acc_size);
    l.k = off;
    off = align128(off + (kKeys * (kChunk + 1) + 2) * acc_size);
    l.s = off;
    off = align128(off + kRows * kLdSFma * acc_size);
  }
  l.valid = off;
  off = align128(off + kKeys);
  l.count = off;
  off = align128(off + kRows * 4);
  l.hist = off;
  off = align128(off + kRows * kRegionBytes);
  l.scratch = off;
  off = align128(off + 2 * kWarps * 8);
  l.total = off;
  return l;
}

// Min of `lo` and max of `hi` over the CTA; every thread gets the result.
__device__ __forceinline__ void block_range(long long& lo, long long& hi, long long* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const long long l2 = __shfl_xor_sync(0xffffffffu, lo, offset);
    const long long h2 = __shfl_xor_sync(0xffffffffu, hi, offset);
    lo = l2 < lo ? l2 : lo;
    hi = h2 > hi ? h2 : hi;
  }
  if ((threadIdx.x & 31) == 0) {
    scratch[threadIdx.x >> 5] = lo;
    scratch[kWarps + (threadIdx.x >> 5)] = hi;
  }
  __syncthreads();
  lo = scratch[0];
  hi = scratch[kWarps];
  for (int w = 1; w < kWarps; ++w) {
    lo = scratch[w] < lo ? scratch[w] : lo;
    hi = scratch[kWarps + w] > hi ? scratch[kWarps + w] : hi;
  }
  __syncthreads();
}

// Rows row0 .. row0 + 63 of (batch bb, head) of a 16-bit tensor into dst (row stride ld), head dim
// zero-padded to dpad, rows past seq zero.
template <typename In>
__device__ __forceinline__ void load_tile16(In* dst, int ld, const HeadsView<In>& v, int64_t bb, int64_t head,
                                            int64_t row0, int dpad, bool vec) {
  const In* base = v.data + bb * v.stride_batch + head * v.stride_head;
  if (vec) {  // stride_dim == 1, dim % 8 == 0, 16-byte aligned rows
    const int per_row = dpad / 8, real = static_cast<int>(v.dim / 8), total = kRows * per_row;
    for (int first = threadIdx.x; first < total; first += kThreads * 8) {
      uint4 regs[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int idx = first + u * kThreads;
        const int r = idx / per_row, c = idx - r * per_row;
        regs[u] = make_uint4(0u, 0u, 0u, 0u);
        if (idx < total && row0 + r < v.seq && c < real)
          regs[u] = __ldg(reinterpret_cast<const uint4*>(base + (row0 + r) * v.stride_seq) + c);
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int idx = first + u * kThreads;
        if (idx < total) {
          const int r = idx / per_row, c = idx - r * per_row;
          reinterpret_cast<uint4*>(dst + r * ld)[c] = regs[u];
        }
      }
    }
  } else {
    for (int idx = threadIdx.x; idx < kRows * dpad; idx += kThreads) {
      const int r = idx / dpad, c = idx - r * dpad;
      In x{0};
      if (row0 + r < v.seq && c < v.dim) x = base[(row0 + r) * v.stride_seq + c * v.stride_dim];
      dst[r * ld + c] = x;
    }
  }
}

// Dims d0 .. d0 + 31 of rows row0 .. row0 + 63 into dst as Acc (row stride kChunk + 1; with
// `split`, rows 32..63 start one element later so the two half-warps read different banks).
template <typename In, typename Acc>
__device__ __forceinline__ void load_chunk(Acc* dst, const HeadsView<In>& v, int64_t bb, int64_t head, int64_t row0,
                                           int64_t d0, bool split) {
  const In* base = v.data + bb * v.stride_batch + head * v.stride_head;
  for (int idx = threadIdx.x; idx < kRows * kChunk; idx += kThreads) {
    const int r = idx / kChunk, c = idx - r * kChunk;
    Acc x = 0;
    if (row0 + r < v.seq && d0 + c < v.dim) x = to_acc(base[(row0 + r) * v.stride_seq + (d0 + c) * v.stride_dim]);
    dst[r * (kChunk + 1) + c + (split ? (r >> 5) : 0)] = x;
  }
}

// First bin, scanning from the largest weights, whose mass brings the running total to target_fix;
// -1 if none does. Accumulates the mass and count of the bins before it.
__device__ __forceinline__ int scan_bins(const unsigned long long* mass, const unsigned* count, int n_bins,
                                         unsigned long long& above_fix, long long& count_above, double target_fix,
                                         unsigned& bin_count) {
  for (int bb = 0; bb < n_bins; ++bb) {
    const unsigned long long mb = mass[bb];
    if (static_cast<double>(above_fix + mb) >= target_fix) {
      bin_count = count[bb];
      return bb;
    }
    above_fix += mb;
    count_above += count[bb];
  }
  return -1;
}

template <typename Key>
__device__ __forceinline__ int shift_for(Key range) {
  int shift = 0;
  while ((range >> shift) >= static_cast<Key>(kBins)) ++shift;
  return shift;
}

template <typename In, typename Acc, bool kTensorCores>
__global__ void __launch_bounds__(kThreads)
    attn_row_stats_kernel(const __grid_constant__ Args<In, Acc> args) {
  using N = Num<Acc>;
  using Key = typename N::Key;
  constexpr int kCollect = kCollectBytes / static_cast<int>(sizeof(Acc));  // power of two
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (kTensorCores) {  // the host launches this path only on sm_80+
    __trap();
  } else
#endif
  {
  extern __shared__ __align__(128) unsigned char smem[];
  const Layout L = make_layout(kTensorCores, args.dpad, static_cast<int>(sizeof(Acc)));
  unsigned char* valid_s = smem + L.valid;
  unsigned* collect_count = reinterpret_cast<unsigned*>(smem + L.count);
  long long* scratch = reinterpret_cast<long long*>(smem + L.scratch);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, half = lane >> 4;
  const int row = warp * 16 + (lane & 15);
  unsigned long long* my_mass = reinterpret_cast<unsigned long long*>(smem + L.hist + row * kRegionBytes);
  unsigned* my_count = reinterpret_cast<unsigned*>(smem + L.hist + row * kRegionBytes + kBins * 8);
  Acc* my_buf = reinterpret_cast<Acc*>(smem + L.hist + row * kRegionBytes);

  const int64_t heads = args.q.heads, bh_count = args.q.batch * heads;
  const int64_t block = args.q_blocks - 1 - static_cast<int64_t>(blockIdx.x) / bh_count;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % bh_count;
  const int64_t b = bh / heads, h = bh % heads, kv = h / (heads / args.k.heads);
  const int64_t t0 = block * kRows, t = t0 + row;
  const int64_t query_len = args.q.seq, key_len = args.k.seq;
  const bool* key_valid = args.mask.key_valid != nullptr ? args.mask.key_valid + b * key_len : nullptr;
  const Acc scaling = static_cast<Acc>(args.params.scaling);
  const double softcap = args.params.softcap;

  // Visible key range of this row (spectra::visible_range on the CPU).
  long long lo = 0, hi = -1;
  const bool row_in = t < query_len;
  if (row_in) {
    const int64_t index = t + args.mask.query_offset;
    hi = key_len - 1;
    if (args.mask.causal) hi = index < key_len - 1 ? index : key_len - 1;
    if (args.mask.sliding_window > 0) {
      const int64_t first = index - args.mask.sliding_window + 1;
      lo = first > 0 ? first : 0;
      if (!args.mask.causal) {
        const int64_t last = index + args.mask.sliding_window - 1;
        hi = last < key_len - 1 ? last : key_len - 1;
      }
    }
  }
  const bool has_keys = row_in && hi >= lo;
  long long visible = (has_keys && key_valid == nullptr) ? hi - lo + 1 : 0;

  auto logit = [&](Acc raw) -> Acc {
    Acc s = N::mul(raw, scaling);
    // As the CPU: the cap in float64 whatever Acc is.
    if (softcap > 0.0) s = static_cast<Acc>(__dmul_rn(softcap, ::tanh(__ddiv_rn(static_cast<double>(s), softcap))));
    return s;
  };

  if constexpr (kTensorCores) {
    const int ldq = args.dpad + 8;
    load_tile16<In>(reinterpret_cast<In*>(smem + L.q), ldq, args.q, b, h, t0, args.dpad, args.q_vec);
  }
  __syncthreads();

  // Calls per_element(raw logit, key index) for every key of the participating rows' visible
  // ranges (hidden keys skipped), tile by tile, then after_tile(). Every thread of the CTA must call
  // it (it synchronises); `participate` only says whether this thread's row does the work.
  auto for_each_logit = [&](bool participate, auto&& per_element, auto&& after_tile) {
    long long r_lo = participate ? lo : LLONG_MAX, r_hi = participate ? hi : -1;
    block_range(r_lo, r_hi, scratch);
    if (r_hi < r_lo) return;
    for (long long j0 = r_lo / kKeys * kKeys; j0 <= r_hi; j0 += kKeys) {
      // The tile's logits land in shared memory; each thread then reads its row's 32 keys from
      // there at a row-dependent rotation, so the 32 lanes of a warp hit 32 different banks.
      const Acc* s_row;
      int rot;
      if constexpr (kTensorCores) {
        using T = typename WmmaType<In>::type;
        namespace wmma = nvcuda::wmma;
        const int ldq = args.dpad + 8;
        __syncthreads();  // the previous tile's readers are done
        load_tile16<In>(reinterpret_cast<In*>(smem + L.k), ldq, args.k, b, kv, j0, args.dpad, args.k_vec);
        if (key_valid != nullptr) {
          for (int c = tid; c < kKeys; c += kThreads) valid_s[c] = (j0 + c < key_len) && key_valid[j0 + c];
        }
        __syncthreads();
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
#pragma unroll
        for (int n = 0; n < 4; ++n) wmma::fill_fragment(acc[n], 0.0f);
        const T* qa = reinterpret_cast<const T*>(smem + L.q) + (warp * 16) * ldq;
        const T* kb = reinterpret_cast<const T*>(smem + L.k);
        for (int k0 = 0; k0 < args.dpad; k0 += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
          wmma::load_matrix_sync(fa, qa + k0, ldq);
#pragma unroll
          for (int n = 0; n < 4; ++n) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
            wmma::load_matrix_sync(fb, kb + (n * 16) * ldq + k0, ldq);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
          }
        }
        float* s_tile = reinterpret_cast<float*>(smem + L.s);
#pragma unroll
        for (int n = 0; n < 4; ++n)
          wmma::store_matrix_sync(s_tile + (warp * 16) * kLdS + n * 16, acc[n], kLdS, wmma::mem_row_major);
        __syncwarp();
        // bank(row, col) = 4·row + col (mod 32) with kLdS = 68: rotate by the row and the half.
        rot = (lane & 15) + 16 * half;
        s_row = s_tile + row * kLdS + half * 32;
      } else {
        Acc* qc = reinterpret_cast<Acc*>(smem + L.q);
        Acc* kc = reinterpret_cast<Acc*>(smem + L.k);
        Acc acc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) acc[i] = 0;
        for (int64_t d0 = 0; d0 < args.q.dim; d0 += kChunk) {
          __syncthreads();
          load_chunk<In, Acc>(qc, args.q, b, h, t0, d0, false);
          load_chunk<In, Acc>(kc, args.k, b, kv, j0, d0, true);
          if (d0 == 0 && key_valid != nullptr) {
            for (int c = tid; c < kKeys; c += kThreads) valid_s[c] = (j0 + c < key_len) && key_valid[j0 + c];
          }
          __syncthreads();
          const Acc* q_row = qc + row * (kChunk + 1);
          const Acc* k_rows = kc + (half * 32) * (kChunk + 1) + half;
#pragma unroll 2
          for (int dd = 0; dd < kChunk; ++dd) {
            const Acc qv = q_row[dd];
#pragma unroll
            for (int i = 0; i < 32; ++i) acc[i] = fma(qv, k_rows[i * (kChunk + 1) + dd], acc[i]);
          }
        }
        // Only this thread reads back what it writes: no barrier needed.
        Acc* s_tile = reinterpret_cast<Acc*>(smem + L.s);
#pragma unroll
        for (int i = 0; i < 32; ++i) s_tile[row * kLdSFma + half * 32 + i] = acc[i];
        // bank(row, col) = row + col (mod 32) with kLdSFma = 65: rotate by the half.
        rot = 16 * half;
        s_row = s_tile + row * kLdSFma + half * 32;
      }
      if (participate) {
        for (int i = 0; i < 32; ++i) {
          const int c = (i + rot) & 31;
          const int col = half * 32 + c;
          const long long j = j0 + col;
          if (j < lo || j > hi) continue;
          if (key_valid != nullptr && !valid_s[col]) continue;
          per_element(static_cast<Acc>(s_row[c]), j);
        }
        after_tile();
      }
    }
  };

  auto zero_histograms = [&]() {
    uint4* p = reinterpret_cast<uint4*>(smem + L.hist);
    for (int i = tid; i < kRows * kRegionBytes / 16; i += kThreads) p[i] = make_uint4(0u, 0u, 0u, 0u);
    for (int i = tid; i < kRows; i += kThreads) collect_count[i] = 0u;
  };

  // ---- pass 1: max, first argmax, smallest finite logit, visible count ----
  Acc m = -N::inf(), lowest = N::inf();
  long long arg = LLONG_MAX;
  for_each_logit(
      has_keys,
      [&](Acc raw, long long j) {
        const Acc s = logit(raw);
        if (s > m || (s == m && j < arg)) {
          m = s;
          arg = j;
        }
        if (s < lowest && s > -N::inf()) lowest = s;
        if (key_valid != nullptr) ++visible;
      },
      [] {});
  {
    const Acc m2 = __shfl_xor_sync(0xffffffffu, m, 16);
    const long long a2 = __shfl_xor_sync(0xffffffffu, arg, 16);
    if (m2 > m || (m2 == m && a2 < arg)) {
      m = m2;
      arg = a2;
    }
    const Acc l2 = __shfl_xor_sync(0xffffffffu, lowest, 16);
    lowest = l2 < lowest ? l2 : lowest;
    if (key_valid != nullptr) visible += __shfl_xor_sync(0xffffffffu, visible, 16);
  }
  // As the CPU: no visible key, or no finite maximum, gives a NaN row.
  const bool alive = has_keys && visible > 0 && m > -N::inf() && m < N::inf();

  // ---- pass 2: Z, Σw(s−m), Σw(s−m)², sink masses, level-1 histogram of d = m − s ----
  zero_histograms();
  Acc span = 0;
  if (alive) {
    span = N::sub(m, lowest);
    span = span < Acc(32) ? span : Acc(32);
  }
  const bool hist_on = alive && span > Acc(0);
  Acc inv1 = 0;
  if (hist_on) {
    inv1 = static_cast<Acc>(kBins) / span;
    inv1 = inv1 < N::kMaxFinite ? inv1 : N::kMaxFinite;
  }
  auto bin1 = [&](Acc d) -> int {  // d >= 0 finite
    const Acc x = N::mul(d, inv1);
    return x < static_cast<Acc>(kBins - 1) ? static_cast<int>(x) : kBins - 1;
  };
  double z = 0.0, sum_a = 0.0, sum_b = 0.0, sink0 = 0.0, sink_n = 0.0;
  Acc zf = 0, af = 0, bf = 0;
  const long long n_sink = args.params.n_sink;
  for_each_logit(
      alive,
      [&](Acc raw, long long j) {
        const Acc d = N::sub(m, logit(raw));
        const Acc w = N::exp(-d);
        const Acc dc = w > Acc(0) ? -d : Acc(0);
        zf += w;
        af += w * dc;
        bf += w * dc * dc;
        if (j == 0) sink0 = static_cast<double>(w);
        if (j < n_sink) sink_n += static_cast<double>(w);
        if (hist_on && w > Acc(0)) {
          const int bb = bin1(d);
          atomicAdd(my_count + bb, 1u);
          atomicAdd(my_mass + bb, N::fix(w));
        }
      },
      [&] {
        z += static_cast<double>(zf);
        sum_a += static_cast<double>(af);
        sum_b += static_cast<double>(bf);
        zf = af = bf = 0;
      });
  z += __shfl_xor_sync(0xffffffffu, z, 16);
  sum_a += __shfl_xor_sync(0xffffffffu, sum_a, 16);
  sum_b += __shfl_xor_sync(0xffffffffu, sum_b, 16);
  sink0 += __shfl_xor_sync(0xffffffffu, sink0, 16);
  sink_n += __shfl_xor_sync(0xffffffffu, sink_n, 16);
  __syncthreads();  // every row's histogram is complete

  const double nan = __longlong_as_double(0x7ff8000000000000LL);
  const bool nan_row = !alive || isnan(z);  // a NaN logit reaches Z
  double entropy = nan, entropy_normalized = nan, max_attn = nan, sink_mass = nan, sink_mass_n = nan,
         logit_var = nan;
  long long argmax = -1, k_eff = 0;
  int mode = kModeDone;
  int b1 = 0, shift = 0;
  Key m_lo = 0, m_hi = N::kKeyMax, h_lo = 0, h_hi = N::kKeyMax;
  unsigned long long above_fix = 0;
  long long count_above = 0;
  unsigned bin_count = 0;
  double target = 0.0, target_fix = 0.0;
  if (!nan_row) {
    argmax = arg;
    entropy = fmax(0.0, log(z) - sum_a / z);
    max_attn = 1.0 / z;
    logit_var = fmax(0.0, sum_b / z - (sum_a / z) * (sum_a / z));
    sink_mass = lo == 0 ? sink0 / z : 0.0;
    sink_mass_n = sink_n / z;
    entropy_normalized = visible >= 2 ? entropy / log(static_cast<double>(visible)) : nan;
    target = args.keff_level * z;
    target_fix = target * kFixScale;
    if (target <= 1.0) {
      k_eff = 1;  // the maximal key alone (weight exactly 1)
    } else if (!hist_on) {
      k_eff = static_cast<long long>(ceil(target - 1e-12));  // every key with mass has weight 1
    } else {
      const int bb = scan_bins(my_mass, my_count, kBins, above_fix, count_above, target_fix, bin_count);
      if (bb < 0) {
        k_eff = count_above;  // rounding left the total a hair below target: every key with mass
      } else {
        b1 = bb;
        // The bin's d range as bit patterns, widened by 2^-10 relative so rounding of d·inv1 can never
        // put a member outside it (membership itself is tested with bin1, exactly).
        const Acc d_lo = static_cast<Acc>(bb) / inv1, d_hi = static_cast<Acc>(bb + 1) / inv1;
        h_lo = bb == 0 ? Key(0) : N::key(d_lo * static_cast<Acc>(1.0 - 1.0 / 1024));
        h_hi = bb == kBins - 1 ? N::key(N::inf()) : N::key(d_hi * static_cast<Acc>(1.0 + 1.0 / 1024));
        shift = shift_for<Key>(h_hi - h_lo);
        mode = bin_count <= static_cast<unsigned>(kCollect) ? kModeCollect : kModeRefine;
      }
    }
  }

  // ---- passes 3+: refine the threshold bin, or gather and sort its weights ----
  for (int pass = 0; __syncthreads_or(mode != kModeDone); ++pass) {
    const int pass_mode = mode;
    zero_histograms();
    // for_each_logit starts with a barrier, so the zeroing is complete before any atomic.
    for_each_logit(
        pass_mode != kModeDone,
        [&](Acc raw, long long) {
          const Acc d = N::sub(m, logit(raw));
          if (bin1(d) != b1) return;
          const Key u = N::key(d);
          if (u < m_lo || u > m_hi) return;
          const Acc w = N::exp(-d);
          if (!(w > Acc(0))) return;
          if (pass_mode == kModeRefine) {
            const Key uc = u < h_lo ? h_lo : (u > h_hi ? h_hi : u);
            const int bb = static_cast<int>((uc - h_lo) >> shift);
            atomicAdd(my_count + bb, 1u);
            atomicAdd(my_mass + bb, N::fix(w));
          } else {
            const unsigned idx = atomicAdd(collect_count + row, 1u);
            if (idx < static_cast<unsigned>(kCollect)) my_buf[idx] = w;
          }
        },
        [] {});
    __syncthreads();

    if (pass_mode == kModeRefine) {
      const int last = static_cast<int>((h_hi - h_lo) >> shift);
      const int bb = scan_bins(my_mass, my_count, last + 1, above_fix, count_above, target_fix, bin_count);
      if (bb < 0) {
        k_eff = count_above;
        mode = kModeDone;
      } else if (shift == 0) {
        // One bit pattern of d: every key of the bin has the same weight w.
        const double w = static_cast<double>(N::exp(-N::from_key(h_lo + static_cast<Key>(bb))));
        const double need = target - static_cast<double>(above_fix) / kFixScale;
        double n = ceil(need / w);
        n = n < 1.0 ? 1.0 : (n > static_cast<double>(bin_count) ? static_cast<double>(bin_count) : n);
        k_eff = count_above + static_cast<long long>(n);
        mode = kModeDone;
      } else {
        const Key new_lo = bb == 0 ? m_lo : h_lo + (static_cast<Key>(bb) << shift);
        const Key new_hi = bb == last ? m_hi : h_lo + ((static_cast<Key>(bb) + 1) << shift) - 1;
        m_lo = new_lo;
        m_hi = new_hi;
        h_lo = new_lo > h_lo ? new_lo : h_lo;
        h_hi = new_hi < h_hi ? new_hi : h_hi;
        shift = shift_for<Key>(h_hi - h_lo);
        mode = bin_count <= static_cast<unsigned>(kCollect) ? kModeCollect : kModeRefine;
        if (mode == kModeRefine && pass + 1 >= kMaxRefinePasses) {
          // Unreachable (a bin shrinks 64-fold per level): stop with every key of the bin counted.
          k_eff = count_above + bin_count;
          mode = kModeDone;
        }
      }
    }

    // Gather rows: bitonic sort (descending) of the weights, then the cumulative sum. Every lane runs
    // the network (it synchronises the warp); only gathering rows swap.
    const bool gathering = pass_mode == kModeCollect;
    const unsigned gathered = gathering ? collect_count[row] : 0u;
    const int n_gathered = gathered < static_cast<unsigned>(kCollect) ? static_cast<int>(gathered) : kCollect;
    if (gathering) {
      for (int i = n_gathered + half; i < kCollect; i += 2) my_buf[i] = Acc(-1);
    }
    __syncwarp();
    for (int size = 2; size <= kCollect; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        if (gathering) {
          for (int p = half; p < kCollect / 2; p += 2) {
            const int i = ((p & ~(stride - 1)) << 1) | (p & (stride - 1));
            const int jx = i + stride;
            const Acc x = my_buf[i], y = my_buf[jx];
            const bool descending = (i & size) == 0;
            if (descending ? x < y : x > y) {
              my_buf[i] = y;
              my_buf[jx] = x;
            }
          }
        }
        __syncwarp();
      }
    }
    if (gathering) {
      if (gathered > static_cast<unsigned>(kCollect)) {
        // Cannot happen (the bin's count was <= kCollect and every pass recomputes the same keys);
        // stay exact anyway: histogram the bin instead.
        mode = kModeRefine;
      } else {
        double mass = static_cast<double>(above_fix) / kFixScale;
        long long k = count_above + n_gathered;
        for (int i = 0; i < n_gathered; ++i) {
          mass += static_cast<double>(my_buf[i]);
          if (mass >= target) {
            k = count_above + i + 1;
            break;
          }
        }
        k_eff = k;
        mode = kModeDone;
      }
    }
  }

  if (row_in && half == 0) {
    const int64_t o = (b * heads + h) * query_len + t;
    const AttnRowStatsOutputs<Acc>& out = args.out;
    out.entropy[o] = static_cast<Acc>(entropy);
    out.entropy_normalized[o] = static_cast<Acc>(entropy_normalized);
    out.max_attn[o] = static_cast<Acc>(max_attn);
    out.sink_mass[o] = static_cast<Acc>(sink_mass);
    out.sink_mass_n[o] = static_cast<Acc>(sink_mass_n);
    if (out.logit_var != nullptr) out.logit_var[o] = static_cast<Acc>(logit_var);
    out.argmax[o] = argmax;
    out.k_eff[o] = nan_row ? 0 : (k_eff < visible ? k_eff : visible);
    out.n_visible[o] = visible;
  }
  }
}

// 16-byte row copies need unit stride along head_dim, head_dim % 8 == 0 and 16-byte aligned rows.
template <typename In>
bool rows_are_vectorizable(const HeadsView<In>& x) {
  if (x.stride_dim != 1 || x.dim % 8 != 0) return false;
  const int64_t sizes[3] = {x.batch, x.heads, x.seq};
  const int64_t strides[3] = {x.stride_batch, x.stride_head, x.stride_seq};
  for (int i = 0; i < 3; ++i) {
    if (sizes[i] > 1 && strides[i] % 8 != 0) return false;
  }
  return reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
}

}  // namespace

int attn_row_stats_shared_bytes(bool tensor_cores, int dpad, int acc_size) {
  return make_layout(tensor_cores, dpad, acc_size).total;
}

template <typename In, typename Acc, bool kTensorCores>
cudaError_t launch_attn_row_stats(const HeadsView<In>& q, const HeadsView<In>& k, const AttnMaskSpec& mask,
                                  const AttnRowStatsParams& params, const AttnRowStatsOutputs<Acc>& out, int dpad,
                                  int64_t q_blocks, cudaStream_t stream) {
  Args<In, Acc> args{};
  args.q = q;
  args.k = k;
  args.mask = mask;
  args.out = out;
  args.params = params;
  args.keff_level = params.threshold - kKeffTolerance;
  args.q_blocks = q_blocks;
  args.dpad = dpad;
  args.q_vec = kTensorCores && rows_are_vectorizable(q);
  args.k_vec = kTensorCores && rows_are_vectorizable(k);
  const int shared = make_layout(kTensorCores, dpad, static_cast<int>(sizeof(Acc))).total;
  const int64_t blocks = q_blocks * q.batch * q.heads;
  auto kernel = attn_row_stats_kernel<In, Acc, kTensorCores>;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
  if (err != cudaSuccess) return err;
  kernel<<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(args);
  return cudaGetLastError();
}

#define SPECTRA_INSTANTIATE(In, Acc, kTensorCores)                                                                  \
  template cudaError_t launch_attn_row_stats<In, Acc, kTensorCores>(                                                \
      const HeadsView<In>&, const HeadsView<In>&, const AttnMaskSpec&, const AttnRowStatsParams&,                   \
      const AttnRowStatsOutputs<Acc>&, int, int64_t, cudaStream_t);
SPECTRA_INSTANTIATE(float16_t, float, true)
SPECTRA_INSTANTIATE(bfloat16_t, float, true)
SPECTRA_INSTANTIATE(float, float, false)
SPECTRA_INSTANTIATE(double, double, false)
#undef SPECTRA_INSTANTIATE

}  // namespace spectra::cuda_kernels
