#include "ops/cpu/gemm.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/gemv_f32.hpp"
#include "ops/cpu/vec16.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid::ops {

namespace {

// The bodies below are BRAID_DISPATCH clones; 16 independent f32 accumulators keep the loops
// vectorised without reassociating a single sum.

inline float dot16(const float* a, const float* b, int64_t n) {
  // Four independent 16-lane accumulators hide the FMA latency; then 16-wide steps,
  // then a scalar tail.
  float acc[4][16] = {};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 16; ++k) acc[j][k] += a[i + 16 * j + k] * b[i + 16 * j + k];
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[0][k] += a[i + k] * b[i + k];
  float s = 0.0f;
  for (int k = 0; k < 16; ++k) s += (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

BRAID_DISPATCH float dot(const float* a, const float* b, int64_t n) { return dot16(a, b, n); }

namespace {

// How far ahead matvec and vecmat ask for A's lines (the weight stream's distance, wdot.hpp):
// decode attention streams each head's cache from the last-level cache or memory.
const int64_t kRowsAhead = stream_prefetch_bytes();

// The 16 lane sums of a . x over the first n values (n a multiple of 16) for G inputs x (xs
// apart) at once, each vector of a loaded once for all of them: four accumulators over
// 64-value steps, then 16-value steps, as dot16 forms them; p[g][j] gets input g's. N > 0:
// n = 16 N known at compile time (head dims 64 and 128), the same steps unrolled.
template <int G, int N>
[[gnu::always_inline]] inline void lane_products(const float* a, const float* x, int64_t xs, int64_t n,
                                                 F32x16 (*p)[16], int64_t j) {
  if constexpr (N > 0) n = 16 * N;
  F32x16 acc[G][4] = {}, u[4], v;
  int64_t i = 0;
#pragma GCC unroll 2
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 4; ++k) prefetch_stream(a + i + 16 * k, kRowsAhead), load16(u[k], a + i + 16 * k);
    for (int g = 0; g < G; ++g)
      for (int k = 0; k < 4; ++k) load16(v, x + g * xs + i + 16 * k), acc[g][k] += u[k] * v;
  }
#pragma GCC unroll 3
  for (; i < n; i += 16) {
    prefetch_stream(a + i, kRowsAhead), load16(u[0], a + i);
    for (int g = 0; g < G; ++g) load16(v, x + g * xs + i), acc[g][0] += u[0] * v;
  }
  for (int g = 0; g < G; ++g) p[g][j] = (acc[g][0] + acc[g][1]) + (acc[g][2] + acc[g][3]);
}

// s plus a[i] x[i] for i in [from, cols), in order: a row's columns past its vectors.
[[gnu::always_inline]] inline float row_tail(const float* a, const float* x, int64_t from, int64_t cols,
                                             float s) {
  for (int64_t i = from; i < cols; ++i) s += a[i] * x[i];
  return s;
}

// matvec for G inputs, A's rows read once for all of them: rows in groups of 16 whose lane
// sums are reduced together (lane_sums16), then each row's tail of fewer than 16 columns in
// order, so a row's value depends neither on its group nor on the other inputs. Every helper
// here is inlined into each dispatch clone (one compiled for the baseline would round
// differently).
template <int G, int N>
[[gnu::always_inline]] inline void matvec_g(const float* A, const float* x, int64_t xs, int64_t rows,
                                            int64_t cols, float alpha, bool accumulate, float* y,
                                            int64_t ys) {
  const int64_t whole = cols / 16 * 16;
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t m = std::min<int64_t>(16, rows - r0);
    F32x16 p[G][16];
    for (int64_t j = 0; j < m; ++j) lane_products<G, N>(A + (r0 + j) * cols, x, xs, whole, p, j);
    for (int g = 0; g < G; ++g) {
      for (int64_t j = m; j < 16; ++j) p[g][j] = F32x16{};
      float sums[16];
      lane_sums16(p[g], sums);
      for (int64_t j = 0; j < m; ++j) {
        float* out = y + g * ys + r0 + j;
        const float d = alpha * row_tail(A + (r0 + j) * cols, x + g * xs, whole, cols, sums[j]);
        *out = accumulate ? *out + d : d;
      }
    }
  }
}

// matvec_g with the column count fixed at compile time where it is a head dim's 64 or 128.
template <int G>
[[gnu::always_inline]] inline void matvec_cols(const float* A, const float* x, int64_t xs, int64_t rows,
                                               int64_t cols, float alpha, bool accumulate, float* y,
                                               int64_t ys) {
  if (cols == 64) return matvec_g<G, 4>(A, x, xs, rows, cols, alpha, accumulate, y, ys);
  if (cols == 128) return matvec_g<G, 8>(A, x, xs, rows, cols, alpha, accumulate, y, ys);
  matvec_g<G, 0>(A, x, xs, rows, cols, alpha, accumulate, y, ys);
}

// Columns [c, c + 16 W) of p . A for G inputs p (ps apart), the sums in registers, each
// column's over the rows in order, each row's vectors loaded once for all inputs.
template <int G, int W>
[[gnu::always_inline]] inline void vecmat_columns_g(const float* p, int64_t ps, const float* A, int64_t rows,
                                                    int64_t cols, int64_t c, float* y, int64_t ys) {
  F32x16 acc[G][W] = {};
  for (int64_t r = 0; r < rows; ++r) {
    F32x16 a[W];
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w)
      prefetch_stream(A + r * cols + c + 16 * w, kRowsAhead), load16(a[w], A + r * cols + c + 16 * w);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const float pr = p[g * ps + r];
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[g][w] += pr * a[w];
    }
  }
  for (int g = 0; g < G; ++g)
    for (int w = 0; w < W; ++w) store16(y + g * ys + c + 16 * w, acc[g][w]);
}

// Column c of p . A, summed over the rows in order: vecmat's columns past its vectors.
[[gnu::always_inline]] inline float column_sum(const float* p, const float* A, int64_t rows, int64_t cols,
                                               int64_t c) {
  float acc = 0.0f;
  for (int64_t r = 0; r < rows; ++r) acc += p[r] * A[r * cols + c];
  return acc;
}

template <int G>
[[gnu::always_inline]] inline void vecmat_g(const float* p, int64_t ps, const float* A, int64_t rows,
                                            int64_t cols, float* y, int64_t ys) {
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) vecmat_columns_g<G, 4>(p, ps, A, rows, cols, c, y, ys);
  for (; c + 16 <= cols; c += 16) vecmat_columns_g<G, 1>(p, ps, A, rows, cols, c, y, ys);
  for (int g = 0; g < G; ++g)
    for (int64_t t = c; t < cols; ++t) y[g * ys + t] = column_sum(p + g * ps, A, rows, cols, t);
}

}  // namespace

BRAID_DISPATCH void matvec(const float* A, const float* x, int64_t rows, int64_t cols, float alpha,
                           bool accumulate, float* y) {
  matvec_cols<1>(A, x, 0, rows, cols, alpha, accumulate, y, 0);
}

// Columns 64 and then 16 at a time with their sums in registers, then one at a time: each
// column's sum runs over the rows in order, whichever group it falls in.
BRAID_DISPATCH void vecmat(const float* p, const float* A, int64_t rows, int64_t cols, float* y) {
  vecmat_g<1>(p, 0, A, rows, cols, y, 0);
}

namespace {

// The generic path of matvec_batch (CPUs without AVX-512): one dot product at a time.
BRAID_DISPATCH void matvec_batch_generic(const float* A, const float* x, int64_t B, int64_t rows,
                                         int64_t cols, bool accumulate, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = A + r * cols;  // stays in cache across the B inputs
    if (r + kGemvPrefetchRows < rows)
      for (int64_t c = 0; c < cols; c += 16) __builtin_prefetch(a + kGemvPrefetchRows * cols + c);
    for (int64_t b = 0; b < B; ++b) {
      const float d = dot16(a, x + b * cols, cols);
      y[b * ldy + r] = accumulate ? y[b * ldy + r] + d : d;
    }
  }
}

}  // namespace

void matvec_batch(const float* A, const float* x, int64_t B, int64_t rows, int64_t cols, bool accumulate,
                  float* y, int64_t ldy) {
  if (active_isa() == Isa::Avx512)
    gemv::rows_avx512(A, x, B, rows, cols, accumulate, y, ldy);
  else
    matvec_batch_generic(A, x, B, rows, cols, accumulate, y, ldy);
}

// Up to four inputs a pass over A.
BRAID_DISPATCH void matvec_multi(const float* A, const float* x, int64_t n, int64_t xs, int64_t rows,
                                 int64_t cols, float alpha, float* y, int64_t ys) {
  for (int64_t i = 0; i < n; i += 4) {
    const float* xi = x + i * xs;
    float* yi = y + i * ys;
    switch (std::min<int64_t>(4, n - i)) {
      case 1:
        matvec_cols<1>(A, xi, xs, rows, cols, alpha, false, yi, ys);
        break;
      case 2:
        matvec_cols<2>(A, xi, xs, rows, cols, alpha, false, yi, ys);
        break;
      case 3:
        matvec_cols<3>(A, xi, xs, rows, cols, alpha, false, yi, ys);
        break;
      default:
        matvec_cols<4>(A, xi, xs, rows, cols, alpha, false, yi, ys);
        break;
    }
  }
}

BRAID_DISPATCH void vecmat_multi(const float* p, int64_t n, int64_t ps, const float* A, int64_t rows,
                                 int64_t cols, float* y, int64_t ys) {
  for (int64_t i = 0; i < n; i += 4) {
    const float* pi = p + i * ps;
    float* yi = y + i * ys;
    switch (std::min<int64_t>(4, n - i)) {
      case 1:
        vecmat_g<1>(pi, ps, A, rows, cols, yi, ys);
        break;
      case 2:
        vecmat_g<2>(pi, ps, A, rows, cols, yi, ys);
        break;
      case 3:
        vecmat_g<3>(pi, ps, A, rows, cols, yi, ys);
        break;
      default:
        vecmat_g<4>(pi, ps, A, rows, cols, yi, ys);
        break;
    }
  }
}

namespace {

// B inputs through rows of W in its stored format (`in`: the inputs prepared for a compact W).
void matvec_rows(MatRef W, const float* x, const WInputs& in, int64_t B, int64_t rows, int64_t cols,
                 bool accumulate, float* y, int64_t ldy) {
  if (W.dtype == DType::F32)
    matvec_batch(static_cast<const float*>(W.data), x, B, rows, cols, accumulate, y, ldy);
  else
    matvec_w_rows(in, W.data, rows, accumulate, y, ldy);
}

WInputs prepared_for(MatRef W, const float* x, int64_t B, int64_t cols) {
  return W.dtype == DType::F32 ? WInputs{} : prepare_inputs(W.dtype, x, B, cols);
}

// Threads take blocks of rows as they free up (a guided schedule: large runs of blocks first,
// then smaller), so a thread the host slows down does not hold the other at the join: about
// kBlocksPerThread blocks per thread, of at least kRowBlock rows (each block is one pass
// through the row kernels, whose per-call cost 16-row blocks paid a dozen times over for a
// 3072-row matrix). A multiple of 4, the row kernels' group; no value depends on the split.
constexpr int64_t kRowBlock = 16, kBlocksPerThread = 16;
constexpr int kMaxProjections = 8;

// The rows of n projections of x[T, in] as one range of blocks. Every caller prepares the
// inputs itself (the same values, into its own scratch), so no thread waits for another's.
struct RowBlocks {
  RowBlocks(const float* x, int64_t T, int64_t in, const Projection* p, int n)
      : x(x), T(T), in(in), p(p), n(n) {
    check(n <= kMaxProjections, "linear_multi: at most ", kMaxProjections, " projections, not ", n);
    for (int i = 0; i < n; ++i) {
      int j = 0;
      while (j < i && p[j].W.dtype != p[i].W.dtype) ++j;
      prepared[i] = j < i ? prepared[j] : prepared_for(p[i].W, x, T, in);
      total += p[i].out;
    }
  }
  // Rows per block for a team of `threads`.
  int64_t block_for(int64_t threads) const {
    const int64_t b = (total + kBlocksPerThread * threads - 1) / (kBlocksPerThread * threads);
    return std::max(kRowBlock, (b + kRowBlock - 1) / kRowBlock * kRowBlock);
  }
  // Block k of `block` rows of the combined range, each matrix's part contiguous.
  void run(int64_t k, int64_t block) const { run_rows(k * block, std::min(total, k * block + block)); }
  // Rows [b, e) of the combined range.
  void run_rows(int64_t b, int64_t e) const {
    int64_t base = 0;  // first combined row of matrix i
    for (int i = 0; i < n; base += p[i].out, ++i) {
      const int64_t lo = std::max(b, base) - base, hi = std::min(e, base + p[i].out) - base;
      if (lo >= hi) continue;
      if (p[i].bias)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = lo; r < hi; ++r) p[i].y[t * p[i].out + r] = p[i].bias[r];
      matvec_rows(p[i].W.from_row(lo, in), x, prepared[i], T, hi - lo, in, p[i].bias != nullptr, p[i].y + lo,
                  p[i].out);
    }
  }
  const float* x;
  int64_t T, in;
  const Projection* p;
  int n;
  WInputs prepared[kMaxProjections];
  int64_t total = 0;
};

// The blocks shared by the threads of the enclosing team (a worksharing loop), each
// streaming contiguous blocks of the matrices: decode is bound by reading W once. Returns
// after the loop's barrier, or at once without it (`barrier` false).
void rows_in_team(const float* x, int64_t T, int64_t in, const Projection* p, int n, bool barrier = true) {
  const RowBlocks rows(x, T, in, p, n);
  const int64_t block = rows.block_for(omp_get_num_threads()), blocks = (rows.total + block - 1) / block;
  if (barrier) {
#pragma omp for schedule(guided)
    for (int64_t k = 0; k < blocks; ++k) rows.run(k, block);
  } else {
#pragma omp for schedule(guided) nowait
    for (int64_t k = 0; k < blocks; ++k) rows.run(k, block);
  }
}

// The decode path of linear() and linear_multi(): a parallel region over the rows unless
// the matrices are small enough that one thread is quicker, or the caller is one thread of
// a parallel region already (a task's own small product: no region, no worksharing).
void decode_rows(const float* x, int64_t T, int64_t in, const Projection* p, int n) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += p[i].out;
  if (total * in < (int64_t(1) << 15) || omp_in_parallel()) {
    const RowBlocks rows(x, T, in, p, n);
    rows.run_rows(0, rows.total);  // one pass: no per-block calls
    return;
  }
#pragma omp parallel
  rows_in_team(x, T, in, p, n);
}

// y = x . W^T + beta y for a compact W: each panel of rows is converted to f32 (threads
// split the rows) and multiplied by SGEMM, so prefill runs at GEMM speed.
void gemm_compact(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, float beta, float* y) {
  thread_local std::vector<float> panel;
  const int64_t rows = std::max<int64_t>(16, (int64_t(1) << 20) / std::max<int64_t>(in, 1));
  panel.resize(size_t(std::min(rows, out) * in));
  float* const buf = panel.data();  // the calling thread's buffer (workers have their own)
  for (int64_t r0 = 0; r0 < out; r0 += rows) {
    const int64_t n = std::min(rows, out - r0);
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      dequantize_rows(W.dtype, W.from_row(r0 + b, in).data, e - b, in, buf + b * in);
    }
    gemm(T, n, in, 1.0f, x, in, buf, in, true, beta, y + r0, out);
  }
}

thread_local bool t_decode_rows = false;

}  // namespace

DecodeRows::DecodeRows(bool on) : prev_(t_decode_rows) { t_decode_rows = on; }
DecodeRows::~DecodeRows() { t_decode_rows = prev_; }
bool DecodeRows::active() { return t_decode_rows; }

void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool b_transposed, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm_tn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
}

void solve_unit_lower(int64_t n, int64_t m, const float* l, int64_t ldl, float* B, int64_t ldb) {
  if (n == 0 || m == 0) return;
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasUnit, int(n), int(m), 1.0f, l,
              int(ldl), B, int(ldb));
}

void solve_unit_lower_transposed(int64_t n, int64_t m, const float* l, int64_t ldl, float* B, int64_t ldb) {
  if (n == 0 || m == 0) return;
  cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasUnit, int(n), int(m), 1.0f, l, int(ldl),
              B, int(ldb));
}

const float* MatRef::f32() const {
  check(dtype == DType::F32, "this needs f32 weights, but the matrix is stored as ", dtype_name(dtype),
        " (training and a few layer internals read f32 only)");
  return static_cast<const float*>(data);
}

MatRef MatRef::from_row(int64_t r, int64_t in) const {
  return {static_cast<const uint8_t*>(data) + size_t(r) * row_bytes(dtype, in), dtype};
}

bool decodes_by_rows(int64_t T, DType dtype) {
  // A compact matrix meets a few rows (memory as context decodes two per token) by reading its
  // codes once for all of them, not by converting the whole matrix for SGEMM.
  constexpr int64_t kFewRows = 4;
  return T == 1 || t_decode_rows || (dtype != DType::F32 && T <= kFewRows);
}

void linear(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y) {
  if (T == 0) return;
  if (decodes_by_rows(T, W.dtype)) {
    const Projection p{W, out, bias, y};
    decode_rows(x, T, in, &p, 1);
    return;
  }
  if (bias) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * out + o] = bias[o];
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (W.dtype == DType::F32) {
    gemm(T, out, in, 1.0f, x, in, static_cast<const float*>(W.data), in, true, beta, y, out);
  } else {
    gemm_compact(x, T, in, W, out, beta, y);
  }
}

void linear_multi(const float* x, int64_t T, int64_t in, const Projection* p, int n) {
  if (T != 1 && !t_decode_rows) {
    for (int i = 0; i < n; ++i) linear(x, T, in, p[i].W, p[i].out, p[i].bias, p[i].y);
    return;
  }
  decode_rows(x, T, in, p, n);
}

void linear_in_team(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y,
                    bool barrier) {
  const Projection p{W, out, bias, y};
  rows_in_team(x, T, in, &p, 1, barrier);
}

void linear_rows(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y,
                 std::initializer_list<std::pair<int64_t, int64_t>> ranges) {
  const Projection p{W, out, bias, y};
  const RowBlocks rows(x, T, in, &p, 1);
  for (const auto& [r0, r1] : ranges) {
    check(0 <= r0 && r0 <= r1 && r1 <= out, "linear_rows: rows [", r0, ", ", r1, ") of ", out);
    rows.run_rows(r0, r1);
  }
}

void linear_multi_in_team(const float* x, int64_t T, int64_t in, const Projection* p, int n) {
  rows_in_team(x, T, in, p, n);
}

void linear_ref(const float* x, int64_t T, int64_t in, const float* W, int64_t out, const float* bias,
                float* y) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = bias ? bias[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += double(x[t * in + i]) * double(W[o * in + i]);
      y[t * out + o] = float(s);
    }
}

}  // namespace braid::ops
