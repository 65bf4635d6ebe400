// Backward passes of the row-wise, elementwise and matrix kernels (training). Each takes
// the forward's inputs and dL/d(output) and produces dL/d(input); parameter gradients
// are always accumulated (+=), so one buffer can sum over sequences and tied uses.
// Finite-difference checks in double live in tests/test_backward.cpp.
#pragma once
#include <cstdint>

#include "ops/cpu/gemm.hpp"

namespace braid::ops {

// Backward of y = x . W^T + b (x[T, in], W[out, in]): dx = dy . W (written, or added when
// accumulate_dx; skipped when dx is null), dW += dy^T . x, db += column sums of dy (when
// db is not null).
// W must be f32 (a compact matrix throws: training needs f32 weights).
void linear_backward(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* dy, float* dx,
                     bool accumulate_dx, float* dW, float* db);

// Backward of rmsnorm (y = w * x / rms(x)): dx written or added; dw += (skipped if null).
// dx may alias dy (then not accumulated), here and in layernorm_backward.
void rmsnorm_backward(const float* x, const float* w, float eps, int64_t rows, int64_t n, const float* dy,
                      float* dx, bool accumulate_dx, float* dw);
// Backward of layernorm: dx written or added; dw, db += (each skipped if null).
void layernorm_backward(const float* x, const float* w, float eps, int64_t rows, int64_t n, const float* dy,
                        float* dx, bool accumulate_dx, float* dw, float* db);

// d/dx of the activations, given the pre-activation x: dx[i] = dy[i] * act'(x[i]).
void silu_backward(const float* x, const float* dy, int64_t n, float* dx);
void gelu_tanh_backward(const float* x, const float* dy, int64_t n, float* dx);
void gelu_erf_backward(const float* x, const float* dy, int64_t n, float* dx);
void relu2_backward(const float* x, const float* dy, int64_t n, float* dx);

// Backward of a softmax row given its output p: dx = p * (dp - sum(p * dp)); in place
// (dx == dp) allowed.
void softmax_backward(const float* p, const float* dp, int64_t n, float* dx);

// Mean-free fused softmax cross-entropy over rows of logits[T, V]: returns the sum over
// rows with target >= 0 of -log softmax(logits)[target], and overwrites the logits with
// scale * d(sum)/d(logits) (softmax - onehot; zero rows where target < 0).
double cross_entropy_fused(float* logits, const int32_t* targets, int64_t T, int64_t V, float scale);

}  // namespace braid::ops
