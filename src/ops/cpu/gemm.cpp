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

// The 16 lane sums of a . x over the first n values (n a multiple of 16): four accumulators
// over 64-value steps, then 16-value steps, as dot16 forms them.
inline void lane_products(const float* a, const float* x, int64_t n, F32x16& p) {
  F32x16 acc[4] = {}, u, v;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 4; ++j) load16(u, a + i + 16 * j), load16(v, x + i + 16 * j), acc[j] += u * v;
  for (; i < n; i += 16) load16(u, a + i), load16(v, x + i), acc[0] += u * v;
  p = (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace

// Rows in groups of 16 whose lane sums are reduced together (lane_sums16), then each row's
// tail of fewer than 16 columns in order: a row's value does not depend on its group.
BRAID_DISPATCH void matvec(const float* A, const float* x, int64_t rows, int64_t cols, float alpha,
                           bool accumulate, float* y) {
  const int64_t whole = cols / 16 * 16;
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t m = std::min<int64_t>(16, rows - r0);
    F32x16 p[16] = {};
    for (int64_t j = 0; j < m; ++j) lane_products(A + (r0 + j) * cols, x, whole, p[j]);
    float sums[16];
    lane_sums16(p, sums);
    for (int64_t j = 0; j < m; ++j) {
      const float* a = A + (r0 + j) * cols;
      float s = sums[j];
      for (int64_t i = whole; i < cols; ++i) s += a[i] * x[i];
      const float d = alpha * s;
      y[r0 + j] = accumulate ? y[r0 + j] + d : d;
    }
  }
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

namespace {

// Columns [c, c + 16 W) of p . A, the sums in registers, each column's over the rows in order.
template <int W>
inline void vecmat_columns(const float* p, const float* A, int64_t rows, int64_t cols, int64_t c, float* y) {
  F32x16 acc[W] = {};
  for (int64_t r = 0; r < rows; ++r)
    for (int w = 0; w < W; ++w) {
      F32x16 a;
      load16(a, A + r * cols + c + 16 * w);
      acc[w] += p[r] * a;
    }
  for (int w = 0; w < W; ++w) store16(y + c + 16 * w, acc[w]);
}

}  // namespace

BRAID_DISPATCH void vecmat(const float* p, const float* A, int64_t rows, int64_t cols, float* y) {
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) vecmat_columns<4>(p, A, rows, cols, c, y);
  for (; c + 16 <= cols; c += 16) vecmat_columns<1>(p, A, rows, cols, c, y);
  for (; c < cols; ++c) {
    float acc = 0.0f;
    for (int64_t r = 0; r < rows; ++r) acc += p[r] * A[r * cols + c];
    y[c] = acc;
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
