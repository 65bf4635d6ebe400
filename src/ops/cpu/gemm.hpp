// Matrix products through BLAS (OpenBLAS, OpenMP build).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "core/dtype.hpp"

namespace braid::ops {

// A weight matrix [out, in] as stored: f32 values, or a compact format (BF16, F16, Q8_0,
// Q4_0) that linear() reads as it is (ops/cpu/wdot.hpp). Implicit from an f32 pointer.
struct MatRef {
  const void* data = nullptr;
  DType dtype = DType::F32;

  MatRef() = default;
  MatRef(std::nullptr_t) {}
  MatRef(const float* p) : data(p) {}
  MatRef(const void* p, DType t) : data(p), dtype(t) {}
  explicit operator bool() const { return data != nullptr; }
  // The f32 values; throws for a compact format (training and a few layers need f32).
  const float* f32() const;
  // The matrix from row r on (rows of `in` values).
  MatRef from_row(int64_t r, int64_t in) const;
};

// y[T, out] = x[T, in] . W[out, in]^T (+ bias[out]); W row-major as stored in
// checkpoints. T == 1 takes the GEMV path (bandwidth-bound decode); a compact W meets up to
// 4 rows the same way and more rows by converting a panel of its rows at a time for SGEMM.
void linear(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y);

// Batched decoding: while a DecodeRows is alive on the calling thread, linear() and
// linear_multi() treat their T rows as T independent tokens and give each row exactly
// (bit for bit) what a call with that row alone (T = 1) gives, reading the weights once for
// all rows. So a sequence's numbers do not depend on which others share its batch.
class DecodeRows {
 public:
  // on = false suspends the mode for the guard's lifetime (a sequence run on its own inside
  // a batch, whose mixer may pass several rows per token).
  explicit DecodeRows(bool on = true);
  ~DecodeRows();
  DecodeRows(const DecodeRows&) = delete;
  DecodeRows& operator=(const DecodeRows&) = delete;
  static bool active();

 private:
  bool prev_;
};

// Several projections of the same input, y_i = x . W_i^T (+ b_i). For one token the
// rows of all matrices are split across threads in a single parallel region (one
// fork/join instead of one per matrix); for T > 1 each is a BLAS GEMM.
struct Projection {
  MatRef W;
  int64_t out;
  const float* bias;  // may be null
  float* y;
};
void linear_multi(const float* x, int64_t T, int64_t in, const Projection* p, int n);

// Decode steps that run as one parallel region (a layer's projections with the work between
// them split across the same threads, so the team forks once per step): every thread of the
// enclosing region calls these with the same arguments, the rows are shared among the team,
// each of the T rows is what linear() gives it as one token, and they return after a
// barrier, so every thread then sees all of y (`barrier` false: at once, for a region's last
// product, whose end is a barrier). Outside a parallel region they run on the calling thread
// alone.
void linear_in_team(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y,
                    bool barrier = true);
// Ranges [r0, r1) of the rows of linear()'s y (T rows of `out`) on the calling thread alone
// (its input prepared once), no barrier, each value what linear() gives it: for decode steps
// whose threads own fixed rows.
void linear_rows(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* bias, float* y,
                 std::initializer_list<std::pair<int64_t, int64_t>> ranges);
// Whether linear() takes its decode path (the rows linear_in_team shares) for T rows of a
// matrix stored as `dtype`: one row, DecodeRows active, or a compact matrix and a few rows.
bool decodes_by_rows(int64_t T, DType dtype);
void linear_multi_in_team(const float* x, int64_t T, int64_t in, const Projection* p, int n);

// C[M, N] = alpha * A[M, K] . op(B) + beta * C, row-major; op(B) = B[K, N] or, when
// b_transposed, B[N, K]^T. lda/ldb/ldc are row strides in elements.
void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool b_transposed, float beta, float* C, int64_t ldc);

// C[M, N] = alpha * A[K, M]^T . B[K, N] + beta * C (row-major, row strides lda/ldb/ldc).
void gemm_tn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc);

// Solves (I + L) X = B in place for X, L the strictly lower part of the n x n matrix `l`
// (its diagonal and upper part are not read); B is n x m with row stride ldb.
void solve_unit_lower(int64_t n, int64_t m, const float* l, int64_t ldl, float* B, int64_t ldb);
// Solves (I + L)^T X = B in place (the transposed system, for backward passes).
void solve_unit_lower_transposed(int64_t n, int64_t m, const float* l, int64_t ldl, float* B, int64_t ldb);

// Single-thread vector kernels with runtime dispatch (AVX-512 / AVX2 / baseline):
// dot(a, b); y[r] (+)= alpha * A[r, :] . x; y = p^T A (y[c] = sum_r p[r] A[r, c]).
float dot(const float* a, const float* b, int64_t n);
void matvec(const float* A, const float* x, int64_t rows, int64_t cols, float alpha, bool accumulate,
            float* y);
void vecmat(const float* p, const float* A, int64_t rows, int64_t cols, float* y);
// matvec and vecmat for n inputs at once (input i at x + i * xs or p + i * ps, its output at
// y + i * ys), A read once for up to four of them: each output exactly what matvec (alpha,
// not accumulating) or vecmat gives that input alone. Decode attention's query heads that
// share a key-value head.
void matvec_multi(const float* A, const float* x, int64_t n, int64_t xs, int64_t rows, int64_t cols,
                  float alpha, float* y, int64_t ys);
void vecmat_multi(const float* p, int64_t n, int64_t ps, const float* A, int64_t rows, int64_t cols, float* y,
                  int64_t ys);
// Decoding's f32 GEMV for B inputs x[B, cols] at once: y[b * ldy + r] (+)= A[r, :] . x[b, :],
// every row of A read once for all B inputs, each value the same whatever B is (on the
// AVX-512 path, ops::active_isa(), a register-blocked kernel, ops/cpu/gemv_f32.hpp; otherwise
// one matvec-style dot product at a time).
void matvec_batch(const float* A, const float* x, int64_t B, int64_t rows, int64_t cols, bool accumulate,
                  float* y, int64_t ldy);

// Scalar reference of linear() in double accumulation, for tests.
void linear_ref(const float* x, int64_t T, int64_t in, const float* W, int64_t out, const float* bias,
                float* y);

}  // namespace braid::ops
