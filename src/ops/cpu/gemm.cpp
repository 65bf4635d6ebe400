#include "ops/cpu/gemm.hpp"

#include <cblas.h>

namespace braid::ops {

void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool b_transposed, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void linear(const float* x, int64_t T, int64_t in, const float* W, int64_t out, const float* bias, float* y) {
  if (T == 0) return;
  if (bias) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * out + o] = bias[o];
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (T == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(out), int(in), 1.0f, W, int(in), x, 1, beta, y, 1);
  } else {
    gemm(T, out, in, 1.0f, x, in, W, in, true, beta, y, out);
  }
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
