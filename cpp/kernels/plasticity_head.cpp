#include "spectra/plasticity_head.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "spectra/plasticity_pairwise.hpp"

namespace spectra {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The published tool's floors: R²'s SS_tot, the Householder degeneracy and the variance floor.
constexpr double kSsTotFloor = 1e-12;
constexpr double kHouseholderEps = 1e-12;
constexpr double kVarianceFloor = 1e-12;

double mean_of(const double* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s / static_cast<double>(n);
}

double norm_of(const std::vector<double>& x) {
  double s = 0.0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// OLS of every column of x (n, dim) on t, the published fit_multioutput_linear_regressor: a constant
// t gives beta = 0, alpha = the column means and R² = 0.
struct ColumnFit {
  std::vector<double> alpha, beta, r2;
  double r2_mean = 0.0;
};

ColumnFit fit_columns(const double* x, const double* t, int64_t n, int64_t dim) {
  ColumnFit fit;
  fit.alpha.assign(dim, 0.0);
  fit.beta.assign(dim, 0.0);
  fit.r2.assign(dim, 0.0);
  const double t_mean = mean_of(t, n);
  double denom = 0.0;
  for (int64_t i = 0; i < n; ++i) denom += (t[i] - t_mean) * (t[i] - t_mean);
  std::vector<double> col_mean(dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* row = x + i * dim;
    for (int64_t j = 0; j < dim; ++j) col_mean[j] += row[j];
  }
  for (double& m : col_mean) m /= static_cast<double>(n);
  if (!(denom > 0.0)) {
    fit.alpha = col_mean;
    return fit;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double* row = x + i * dim;
    const double tc = t[i] - t_mean;
    for (int64_t j = 0; j < dim; ++j) fit.beta[j] += tc * row[j];
  }
  for (int64_t j = 0; j < dim; ++j) {
    fit.beta[j] /= denom;
    fit.alpha[j] = col_mean[j] - fit.beta[j] * t_mean;
  }
  std::vector<double> ss_res(dim, 0.0), ss_tot(dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* row = x + i * dim;
    for (int64_t j = 0; j < dim; ++j) {
      const double r = row[j] - (fit.alpha[j] + t[i] * fit.beta[j]);
      const double c = row[j] - col_mean[j];
      ss_res[j] += r * r;
      ss_tot[j] += c * c;
    }
  }
  double r2_sum = 0.0;
  int64_t r2_count = 0;
  for (int64_t j = 0; j < dim; ++j) {
    fit.r2[j] = std::min(1.0 - ss_res[j] / std::max(ss_tot[j], kSsTotFloor), 1.0);
    if (!std::isnan(fit.r2[j])) {
      r2_sum += fit.r2[j];
      ++r2_count;
    }
  }
  fit.r2_mean = r2_count > 0 ? r2_sum / static_cast<double>(r2_count) : kNaN;
  return fit;
}

// scipy.stats.skew / kurtosis (Fisher) with bias=False; NaN when the variance is zero (SciPy's
// threshold, (1e-15·mean)², is zero for the z-scored samples these see).
struct ShapeStats {
  double skew, kurt;
};

// From the central moment sums Σc², Σc³, Σc⁴ of n values (NaN when the variance is zero).
ShapeStats shape_from_moments(double s2, double s3, double s4, int64_t n) {
  const double nd = static_cast<double>(n);
  const double m2 = s2 / nd, m3 = s3 / nd, m4 = s4 / nd;
  if (!(m2 > 0.0)) return {kNaN, kNaN};
  double skew = m3 / std::pow(m2, 1.5);
  double kurt = m4 / (m2 * m2);
  if (n > 2) skew *= std::sqrt((nd - 1.0) * nd) / (nd - 2.0);
  if (n > 3) kurt = 1.0 / (nd - 2.0) / (nd - 3.0) * ((nd * nd - 1.0) * kurt - 3.0 * (nd - 1.0) * (nd - 1.0)) + 3.0;
  return {skew, kurt - 3.0};
}

ShapeStats shape_stats(const double* x, int64_t n) {
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  double s2 = 0.0, s3 = 0.0, s4 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double c = x[i] - mean, c2 = c * c;
    s2 += c2;
    s3 += c2 * c;
    s4 += c2 * c2;
  }
  return shape_from_moments(s2, s3, s4, n);
}

// np.median: the mean of the two middle values for an even count; NaN when any value is NaN.
double median_of(std::vector<double> v) {
  if (v.empty()) return kNaN;
  for (double x : v)
    if (std::isnan(x)) return kNaN;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  return 0.5 * (*std::max_element(v.begin(), v.begin() + mid) + hi);
}

// x H for H = I − 2vvᵀ, in place on row-major rows: O(n·dim) instead of the dense product.
void reflect_rows(std::vector<double>& x, int64_t dim, const std::vector<double>& v) {
  if (v.empty()) return;
  const int64_t n = static_cast<int64_t>(x.size()) / dim;
#pragma omp parallel for schedule(static) if (n * dim > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double* row = x.data() + i * dim;
    double dot = 0.0;
    for (int64_t j = 0; j < dim; ++j) dot += row[j] * v[j];
    for (int64_t j = 0; j < dim; ++j) row[j] -= 2.0 * dot * v[j];
  }
}

std::vector<double> oriented(const double* x, int64_t n, int64_t dim, const std::vector<double>& sign) {
  std::vector<double> out(x, x + n * dim);
  bool finite = true;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) {
      finite &= std::isfinite(out[i * dim + j]);
      out[i * dim + j] *= sign[j];
    }
  if (!finite) throw std::invalid_argument("q: contains NaN or infinite values");
  return out;
}

void check_rows(const PlasticityRows& rows) {
  if (rows.dim < 1) throw std::invalid_argument("dim must be >= 1");
  if (rows.n_q < 1) throw std::invalid_argument("q must have at least 1 row");
  if (rows.n_k < 1) throw std::invalid_argument("k must have at least 1 row");
}

}  // namespace

std::vector<double> key_orientation(const double* k, const int64_t* k_bucket, int64_t n_k, int64_t dim) {
  std::vector<int64_t> order(n_k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return k_bucket[a] < k_bucket[b]; });
  // The mean of the per-bucket means: every bucket weighs the same, however many keys it holds.
  std::vector<double> total(dim, 0.0), bucket_sum(dim, 0.0);
  int64_t n_buckets = 0;
  for (int64_t start = 0; start < n_k;) {
    int64_t end = start;
    std::fill(bucket_sum.begin(), bucket_sum.end(), 0.0);
    while (end < n_k && k_bucket[order[end]] == k_bucket[order[start]]) {
      const double* row = k + order[end] * dim;
      for (int64_t j = 0; j < dim; ++j) bucket_sum[j] += row[j];
      ++end;
    }
    for (int64_t j = 0; j < dim; ++j) total[j] += bucket_sum[j] / static_cast<double>(end - start);
    ++n_buckets;
    start = end;
  }
  std::vector<double> sign(dim, 1.0);
  for (int64_t j = 0; j < dim; ++j) {
    // Every key enters one bucket mean, so a NaN or infinite key shows up here.
    if (!std::isfinite(total[j])) throw std::invalid_argument("k: contains NaN or infinite values");
    sign[j] = total[j] < 0.0 ? -1.0 : 1.0;  // 0 → +1
  }
  return sign;
}

QueryModel fit_query_model(const PlasticityRows& rows, const std::vector<int64_t>& noise_ks_dims,
                           const std::vector<double>* sign) {
  check_rows(rows);
  const int64_t n = rows.n_q, dim = rows.dim;
  QueryModel model;
  model.dim = dim;
  model.sign = sign != nullptr ? *sign : key_orientation(rows.k, rows.k_bucket, rows.n_k, dim);
  if (static_cast<int64_t>(model.sign.size()) != dim) throw std::invalid_argument("sign must have dim entries");
  // One working copy of the queries: oriented now, reflected in place once the oriented fits are done.
  model.q_rot = oriented(rows.q, n, dim, model.sign);
  const std::vector<double>& xq = model.q_rot;

  ColumnFit fit = fit_columns(xq.data(), rows.q_pos, n, dim);
  model.alpha = fit.alpha;
  model.beta = fit.beta;
  model.r2 = fit.r2;
  model.r2_pos = fit.r2_mean;
  model.beta_norm = norm_of(model.beta);

  // Scalar predictability: log2(t + 1) regressed on the projection onto the drift direction.
  {
    std::vector<double> y(n);
    for (int64_t i = 0; i < n; ++i) y[i] = std::log2(rows.q_pos[i] + 1.0);
    const double y_mean = mean_of(y.data(), n);
    double mae_baseline = 0.0;
    for (int64_t i = 0; i < n; ++i) mae_baseline += std::fabs(y[i] - y_mean);
    mae_baseline /= static_cast<double>(n);
    model.mae_baseline = model.mae_proj = mae_baseline;
    model.r2_scalar = 0.0;
    if (model.beta_norm > 0.0) {
      std::vector<double> u(dim), s(n, 0.0);
      for (int64_t j = 0; j < dim; ++j) u[j] = model.beta[j] / model.beta_norm;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < dim; ++j) s[i] += xq[i * dim + j] * u[j];
      const double s_mean = mean_of(s.data(), n);
      double denom = 0.0, cross = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        denom += (s[i] - s_mean) * (s[i] - s_mean);
        cross += (s[i] - s_mean) * y[i];
      }
      if (denom > 0.0) {
        const double b = cross / denom, a = y_mean - b * s_mean;
        double mae = 0.0, ss_res = 0.0, ss_tot = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const double r = y[i] - (a + b * s[i]);
          mae += std::fabs(r);
          ss_res += r * r;
          ss_tot += (y[i] - y_mean) * (y[i] - y_mean);
        }
        model.mae_proj = mae / static_cast<double>(n);
        model.r2_scalar = ss_tot > 0.0 ? 1.0 - ss_res / ss_tot : 0.0;
      }
    }
  }

  // Householder reflection taking the drift direction β̂ to e_1 (and back: H is an involution).
  if (model.beta_norm >= kHouseholderEps) {
    std::vector<double> v(dim);
    for (int64_t j = 0; j < dim; ++j) v[j] = model.beta[j] / model.beta_norm - (j == 0 ? 1.0 : 0.0);
    const double v_norm = norm_of(v);
    if (v_norm >= kHouseholderEps) {
      for (double& x : v) x /= v_norm;
      model.householder = std::move(v);
    }
  }
  reflect_rows(model.q_rot, dim, model.householder);

  ColumnFit refit = fit_columns(model.q_rot.data(), rows.q_pos, n, dim);
  model.alpha_rot = refit.alpha;
  model.beta_rot = refit.beta;
  model.resid_var.assign(dim, 1.0);
  std::vector<double> resid0(n);
  {
    std::vector<double> mean(dim, 0.0), sq(dim, 0.0);
    auto residual = [&](int64_t i, int64_t j) {
      return model.q_rot[i * dim + j] - (refit.alpha[j] + rows.q_pos[i] * refit.beta[j]);
    };
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dim; ++j) mean[j] += residual(i, j);
    for (double& m : mean) m /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < dim; ++j) {
        const double c = residual(i, j) - mean[j];
        sq[j] += c * c;
      }
    if (n >= 2)
      for (int64_t j = 0; j < dim; ++j) model.resid_var[j] = sq[j] / static_cast<double>(n - 1);
    for (int64_t i = 0; i < n; ++i) resid0[i] = residual(i, 0);
  }

  // Normality of the positional coordinate's residual, z-scored with ddof = 1.
  {
    const double m = mean_of(resid0.data(), n);
    double ss = 0.0;
    for (double r : resid0) ss += (r - m) * (r - m);
    const double sd = n >= 2 ? std::sqrt(ss / static_cast<double>(n - 1)) : kNaN;
    if (sd > 0.0) {
      for (double& r : resid0) r = (r - m) / sd;
      const ShapeStats shape = shape_stats(resid0.data(), n);
      model.resid0_skew = shape.skew;
      model.resid0_kurt = shape.kurt;
      std::vector<double> scratch(n);
      model.resid0_ks = ks_normal_test(resid0.data(), n, scratch.data());
    }
  }

  // Normality of the other coordinates of the rotated queries (each z-scored; sd 0 → 1). Skewness
  // and kurtosis are scale-free, so they come from each column's central moments in two row-wise
  // passes; only the KS columns are z-scored, into contiguous buffers.
  if (dim > 1 && n >= 3) {
    const int64_t noise_dim = dim - 1;
    for (int64_t j : noise_ks_dims)
      if (j < 0 || j >= noise_dim) throw std::invalid_argument("noise_ks_dims must lie in [0, dim - 1)");
    std::vector<double> mean(dim, 0.0), m2(dim, 0.0), m3(dim, 0.0), m4(dim, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* row = model.q_rot.data() + i * dim;
      for (int64_t j = 1; j < dim; ++j) mean[j] += row[j];
    }
    for (double& m : mean) m /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {
      const double* row = model.q_rot.data() + i * dim;
      for (int64_t j = 1; j < dim; ++j) {
        const double c = row[j] - mean[j], c2 = c * c;
        m2[j] += c2;
        m3[j] += c2 * c;
        m4[j] += c2 * c2;
      }
    }
    std::vector<double> abs_skew(noise_dim), abs_kurt(noise_dim);
    for (int64_t j = 0; j < noise_dim; ++j) {
      const ShapeStats shape = shape_from_moments(m2[j + 1], m3[j + 1], m4[j + 1], n);
      abs_skew[j] = std::fabs(shape.skew);
      abs_kurt[j] = std::fabs(shape.kurt);
    }
    model.noise_med_abs_skew = median_of(abs_skew);
    model.noise_med_abs_kurt = median_of(abs_kurt);
    const int64_t n_tests = static_cast<int64_t>(noise_ks_dims.size());
    std::vector<double> z(static_cast<size_t>(n * n_tests));
    for (int64_t i = 0; i < n; ++i) {
      const double* row = model.q_rot.data() + i * dim;
      for (int64_t t = 0; t < n_tests; ++t) z[t * n + i] = row[noise_ks_dims[t] + 1];
    }
    model.noise_ks.resize(n_tests);
#pragma omp parallel for schedule(dynamic)
    for (int64_t t = 0; t < n_tests; ++t) {
      const int64_t col = noise_ks_dims[t] + 1;
      double sd = std::sqrt(m2[col] / static_cast<double>(n - 1));
      if (sd == 0.0) sd = 1.0;
      double* zc = z.data() + t * n;
      for (int64_t i = 0; i < n; ++i) zc[i] = (zc[i] - mean[col]) / sd;
      std::vector<double> scratch(n);
      model.noise_ks[t] = ks_normal_test(zc, n, scratch.data());
    }
  }
  return model;
}

// ---- Cells and key pairs ----

namespace {

// A run of eligible keys of one example: order[begin, begin + size).
struct KeyGroup {
  int64_t begin, size;
};

// Keys sorted so that every cell's eligible keys of one example are one contiguous run:
// published, by (bucket, example, row); thesis, by (example, position, row).
std::vector<int64_t> key_order(const PlasticityRows& rows, PlasticityMode mode) {
  std::vector<int64_t> order(rows.n_k);
  std::iota(order.begin(), order.end(), 0);
  if (mode == PlasticityMode::published) {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      if (rows.k_bucket[a] != rows.k_bucket[b]) return rows.k_bucket[a] < rows.k_bucket[b];
      return rows.k_example[a] < rows.k_example[b];
    });
  } else {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      if (rows.k_example[a] != rows.k_example[b]) return rows.k_example[a] < rows.k_example[b];
      return rows.k_pos[a] < rows.k_pos[b];
    });
  }
  return order;
}

int64_t floor_div(double x, double width) { return static_cast<int64_t>(std::floor(x / width)); }

std::vector<KeyGroup> cell_groups(const PlasticityRows& rows, const std::vector<int64_t>& order,
                                  const PlasticityCell& cell, const PlasticityOptions& options) {
  std::vector<KeyGroup> groups;
  const int64_t n = rows.n_k;
  if (options.mode == PlasticityMode::published) {
    auto lo = std::lower_bound(order.begin(), order.end(), cell.k_bucket,
                               [&](int64_t row, int64_t b) { return rows.k_bucket[row] < b; });
    for (int64_t i = lo - order.begin(); i < n && rows.k_bucket[order[i]] == cell.k_bucket;) {
      int64_t j = i;
      while (j < n && rows.k_bucket[order[j]] == cell.k_bucket && rows.k_example[order[j]] == rows.k_example[order[i]]) ++j;
      if (j - i >= 2) groups.push_back({i, j - i});
      i = j;
    }
    return groups;
  }
  // thesis: keys before τ (and inside the window) of each example.
  double min_pos = -std::numeric_limits<double>::infinity();
  if (options.lookback > 0) {
    const int64_t first_bucket = floor_div(cell.tau, static_cast<double>(options.bucket_size)) - options.lookback;
    min_pos = static_cast<double>(first_bucket * options.bucket_size);
  }
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && rows.k_example[order[j]] == rows.k_example[order[i]]) ++j;
    auto pos_less = [&](int64_t row, double t) { return rows.k_pos[row] < t; };
    const int64_t lo = std::lower_bound(order.begin() + i, order.begin() + j, min_pos, pos_less) - order.begin();
    const int64_t hi = std::lower_bound(order.begin() + i, order.begin() + j, cell.tau, pos_less) - order.begin();
    if (hi - lo >= 2) groups.push_back({lo, hi - lo});
    i = j;
  }
  return groups;
}

// splitmix64 (Steele et al.): a counter-based stream per cell, so draws do not depend on threads.
struct CellRng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (Lemire 2019).
  uint64_t below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

uint64_t cell_seed(uint64_t seed, int64_t cell) {
  CellRng mix{seed ^ (0xD1B54A32D192ED03ULL * static_cast<uint64_t>(cell + 1))};
  return mix.next();
}

}  // namespace

std::vector<PlasticityCell> plasticity_cells(const PlasticityRows& rows, const PlasticityOptions& options) {
  check_rows(rows);
  std::vector<PlasticityCell> cells;
  if (options.mode == PlasticityMode::published) {
    std::vector<int64_t> q_buckets(rows.q_bucket, rows.q_bucket + rows.n_q);
    std::sort(q_buckets.begin(), q_buckets.end());
    q_buckets.erase(std::unique(q_buckets.begin(), q_buckets.end()), q_buckets.end());
    std::vector<int64_t> k_buckets(rows.k_bucket, rows.k_bucket + rows.n_k);
    std::sort(k_buckets.begin(), k_buckets.end());
    k_buckets.erase(std::unique(k_buckets.begin(), k_buckets.end()), k_buckets.end());
    for (int64_t j : q_buckets) {
      if (j <= 0) continue;  // the published tool never evaluates the first bucket
      double pos_sum = 0.0;
      int64_t count = 0;
      for (int64_t i = 0; i < rows.n_q; ++i)
        if (rows.q_bucket[i] == j) {
          pos_sum += rows.q_pos[i];
          ++count;
        }
      for (int64_t c : k_buckets) {
        if (c >= j) break;
        if (options.lookback > 0 && c < j - options.lookback) continue;
        PlasticityCell cell;
        cell.q_cell = j;
        cell.k_bucket = c;
        cell.tau = pos_sum / static_cast<double>(count);
        cell.n_queries = count;
        cell.ap = kNaN;
        cells.push_back(cell);
      }
    }
  } else {
    if (!(options.grid_width > 0.0)) throw std::invalid_argument("grid_width must be > 0");
    std::vector<std::pair<int64_t, double>> grid(rows.n_q);
    for (int64_t i = 0; i < rows.n_q; ++i) grid[i] = {floor_div(rows.q_pos[i], options.grid_width), rows.q_pos[i]};
    std::sort(grid.begin(), grid.end());
    for (size_t i = 0; i < grid.size();) {
      size_t j = i;
      double pos_sum = 0.0;
      while (j < grid.size() && grid[j].first == grid[i].first) pos_sum += grid[j++].second;
      PlasticityCell cell;
      cell.q_cell = grid[i].first;
      cell.k_bucket = -1;
      cell.n_queries = static_cast<int64_t>(j - i);
      cell.tau = options.grid_midpoint ? (static_cast<double>(cell.q_cell) + 0.5) * options.grid_width
                                       : pos_sum / static_cast<double>(cell.n_queries);
      cell.ap = kNaN;
      cells.push_back(cell);
      i = j;
    }
  }
  return cells;
}

PlasticityPairs draw_plasticity_pairs(const PlasticityRows& rows, const std::vector<PlasticityCell>& cells,
                                      const PlasticityOptions& options) {
  check_rows(rows);
  if (options.pairs_per_cell < 1) throw std::invalid_argument("pairs_per_cell must be >= 1");
  const std::vector<int64_t> order = key_order(rows, options.mode);
  const int64_t n_cells = static_cast<int64_t>(cells.size());
  std::vector<std::vector<KeyGroup>> groups(n_cells);
  std::vector<int64_t> offset(n_cells + 1, 0);
  for (int64_t c = 0; c < n_cells; ++c) {
    const bool drawable = options.mode == PlasticityMode::published || cells[c].n_queries >= options.min_queries;
    if (drawable) groups[c] = cell_groups(rows, order, cells[c], options);
    uint64_t total = 0;
    for (const KeyGroup& g : groups[c]) total += static_cast<uint64_t>(g.size) * (g.size - 1) / 2;
    offset[c + 1] = offset[c] + static_cast<int64_t>(std::min<uint64_t>(options.pairs_per_cell, total));
  }
  PlasticityPairs pairs;
  pairs.cell.resize(offset[n_cells]);
  pairs.first.resize(offset[n_cells]);
  pairs.second.resize(offset[n_cells]);
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < n_cells; ++c) {
    const std::vector<KeyGroup>& g = groups[c];
    if (g.empty()) continue;
    std::vector<uint64_t> cumulative(g.size());
    uint64_t total = 0;
    for (size_t i = 0; i < g.size(); ++i) cumulative[i] = (total += static_cast<uint64_t>(g[i].size) * (g[i].size - 1) / 2);
    CellRng rng{cell_seed(options.seed, c)};
    for (int64_t d = offset[c]; d < offset[c + 1]; ++d) {
      // A group with probability ∝ its number of pairs, then an ordered pair of distinct keys in
      // it: together a uniform ordered pair over all eligible same-example pairs.
      const uint64_t r = rng.below(total);
      const KeyGroup& group = g[std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin()];
      const int64_t a = static_cast<int64_t>(rng.below(group.size));
      int64_t b = static_cast<int64_t>(rng.below(group.size - 1));
      if (b >= a) ++b;
      pairs.cell[d] = c;
      pairs.first[d] = order[group.begin + a];
      pairs.second[d] = order[group.begin + b];
    }
  }
  return pairs;
}

PlasticityResult evaluate_plasticity_pairs(const PlasticityRows& rows, const QueryModel& model,
                                           std::vector<PlasticityCell> cells, PlasticityPairs pairs,
                                           const PlasticityOptions& options) {
  check_rows(rows);
  const int64_t dim = rows.dim, n_cells = static_cast<int64_t>(cells.size());
  const int64_t n_pairs = static_cast<int64_t>(pairs.cell.size());
  if (static_cast<int64_t>(pairs.first.size()) != n_pairs || static_cast<int64_t>(pairs.second.size()) != n_pairs)
    throw std::invalid_argument("pairs: cell, first and second must have the same length");
  for (int64_t p = 0; p < n_pairs; ++p) {
    if (pairs.cell[p] < 0 || pairs.cell[p] >= n_cells)
      throw std::invalid_argument("pairs: cell index " + std::to_string(pairs.cell[p]) + " outside [0, " +
                                  std::to_string(n_cells) + ")");
    if (pairs.first[p] < 0 || pairs.first[p] >= rows.n_k || pairs.second[p] < 0 || pairs.second[p] >= rows.n_k)
      throw std::invalid_argument("pairs: key row outside [0, " + std::to_string(rows.n_k) + ")");
  }
  const bool published = options.mode == PlasticityMode::published;
  const bool full = !published && options.full_covariance;
  if (!published && options.min_queries < 2) throw std::invalid_argument("min_queries must be >= 2");

  // Each cell's query law: mean (n_cells, dim) and diagonal variance (n_cells, dim), or for a full
  // covariance the (dim − 1)² block of the non-positional coordinates.
  std::vector<double> mean(n_cells * dim), var(n_cells * dim), cov;
  const int64_t nd = dim - 1;
  if (full) cov.assign(static_cast<size_t>(n_cells * nd * nd), 0.0);
  std::vector<std::vector<int64_t>> members;
  if (!published) {
    members.resize(n_cells);
    std::vector<std::pair<int64_t, int64_t>> index(n_cells);
    for (int64_t c = 0; c < n_cells; ++c) index[c] = {cells[c].q_cell, c};
    std::sort(index.begin(), index.end());
    for (int64_t i = 0; i < rows.n_q; ++i) {
      const int64_t g = floor_div(rows.q_pos[i], options.grid_width);
      auto it = std::lower_bound(index.begin(), index.end(), std::make_pair(g, int64_t{-1}));
      if (it != index.end() && it->first == g) members[it->second].push_back(i);
    }
  }
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < n_cells; ++c) {
    double* mu = mean.data() + c * dim;
    double* sigma2 = var.data() + c * dim;
    const double tau = cells[c].tau;
    if (published) {
      for (int64_t j = 0; j < dim; ++j) {
        mu[j] = model.alpha_rot[j] + model.beta_rot[j] * tau;
        sigma2[j] = model.resid_var[j] <= 0.0 ? kVarianceFloor : model.resid_var[j];
      }
      continue;
    }
    mu[0] = model.alpha_rot[0] + model.beta_rot[0] * tau;
    sigma2[0] = std::max(model.resid_var[0], kVarianceFloor);
    const std::vector<int64_t>& m = members[c];
    const int64_t count = static_cast<int64_t>(m.size());
    if (count < options.min_queries) {
      for (int64_t j = 1; j < dim; ++j) mu[j] = sigma2[j] = kNaN;
      continue;
    }
    for (int64_t j = 1; j < dim; ++j) {
      double s = 0.0;
      for (int64_t i : m) s += model.q_rot[i * dim + j];
      mu[j] = s / static_cast<double>(count);
      double ss = 0.0;
      for (int64_t i : m) ss += (model.q_rot[i * dim + j] - mu[j]) * (model.q_rot[i * dim + j] - mu[j]);
      sigma2[j] = std::max(ss / static_cast<double>(count - 1), kVarianceFloor);
    }
    if (full) {
      double* block = cov.data() + c * nd * nd;
      for (int64_t i : m)
        for (int64_t a = 0; a < nd; ++a) {
          const double ca = model.q_rot[i * dim + a + 1] - mu[a + 1];
          for (int64_t b = a; b < nd; ++b) block[a * nd + b] += ca * (model.q_rot[i * dim + b + 1] - mu[b + 1]);
        }
      for (int64_t a = 0; a < nd; ++a) {
        for (int64_t b = a; b < nd; ++b) block[b * nd + a] = block[a * nd + b] /= static_cast<double>(count - 1);
        block[a * nd + a] += kVarianceFloor;
      }
    }
  }

  const bool reflect = !model.householder.empty();
  if (static_cast<int64_t>(model.sign.size()) != dim)
    throw std::invalid_argument("model: sign must have dim entries");
  pairs.m.assign(n_pairs, 0.0);
  pairs.v.assign(n_pairs, 0.0);
  pairs.pp.assign(n_pairs, 0.0);
  pairs.used.assign(n_pairs, 0);
#pragma omp parallel
  {
    std::vector<double> w(dim);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n_pairs; ++p) {
      const int64_t c = pairs.cell[p];
      // The keys' difference in the model's basis, w = H(s ∘ (k1 − k2)): O(dim) per pair instead of
      // rotating every key row up front.
      const double* k1 = rows.k + pairs.first[p] * dim;
      const double* k2 = rows.k + pairs.second[p] * dim;
      double along = 0.0;
      for (int64_t j = 0; j < dim; ++j) {
        w[j] = model.sign[j] * (k1[j] - k2[j]);
        if (reflect) along += w[j] * model.householder[j];
      }
      if (reflect)
        for (int64_t j = 0; j < dim; ++j) w[j] -= 2.0 * along * model.householder[j];
      const double* mu = mean.data() + c * dim;
      const double* sigma2 = var.data() + c * dim;
      double m = 0.0, v = 0.0;
      for (int64_t j = 0; j < dim; ++j) m += mu[j] * w[j];
      if (full) {
        const double* block = cov.data() + c * nd * nd;
        v = sigma2[0] * w[0] * w[0];
        for (int64_t a = 0; a < nd; ++a) {
          double row = 0.0;
          for (int64_t b = 0; b < nd; ++b) row += block[a * nd + b] * w[b + 1];
          v += w[a + 1] * row;
        }
      } else {
        for (int64_t j = 0; j < dim; ++j) v += sigma2[j] * w[j] * w[j];
      }
      pairs.m[p] = m;
      pairs.v[p] = v;
      if (published && v <= 0.0) continue;  // the published tool skips such draws
      pairs.pp[p] = pair_plasticity(m, v).pp;
      pairs.used[p] = 1;
    }
  }
  for (PlasticityCell& cell : cells) {
    cell.n_draws = cell.n_pairs = 0;
    cell.ap = 0.0;
  }
  for (int64_t p = 0; p < n_pairs; ++p) {
    PlasticityCell& cell = cells[pairs.cell[p]];
    ++cell.n_draws;
    if (!pairs.used[p]) continue;
    ++cell.n_pairs;
    cell.ap += pairs.pp[p];
  }
  for (PlasticityCell& cell : cells) cell.ap = cell.n_pairs > 0 ? cell.ap / static_cast<double>(cell.n_pairs) : kNaN;
  // The pool each cell's draws came from, for the caller's record.
  if (n_cells > 0) {
    const std::vector<int64_t> order = key_order(rows, options.mode);
    for (PlasticityCell& cell : cells) {
      double total = 0.0;
      if (published || cell.n_queries >= options.min_queries)
        for (const KeyGroup& g : cell_groups(rows, order, cell, options))
          total += static_cast<double>(g.size) * static_cast<double>(g.size - 1) / 2.0;
      cell.n_eligible_pairs = total;
    }
  }
  return {std::move(cells), std::move(pairs)};
}

}  // namespace spectra
