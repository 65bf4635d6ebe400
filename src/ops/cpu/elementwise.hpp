// Row-wise and elementwise kernels: norms, activations, softmax, rotary embedding.
// Each has a scalar reference in tests/test_ops.cpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace braid::ops {

// Scalar gate functions shared by the mixers, as the references compute them in f32:
// sigmoid, softplus with torch's threshold (x > 20 returns x), and a log-sigmoid that
// never forms exp of a positive number.
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float log_sigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::abs(x))); }

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, for `rows` rows of n. In-place
// allowed (y == x).
void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t n, float* y);
// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b (biased variance); in-place allowed.
void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t n, float* y);

// y = silu(gate) * up, elementwise over n.
void swiglu(const float* gate, const float* up, int64_t n, float* y);
void silu_inplace(float* x, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);
void gelu_erf_inplace(float* x, int64_t n);
void relu2_inplace(float* x, int64_t n);  // max(x, 0)^2

// Numerically stable softmax over the first n entries of x, in place.
void softmax_inplace(float* x, int64_t n);

// y += x over n elements.
void add_inplace(float* y, const float* x, int64_t n);

// Rotary embedding on one head vector in the "rotate half" layout: for i < rot/2,
// (v[i], v[i + rot/2]) is rotated by the angle whose cos/sin are cs[i], sn[i].
// Dimensions >= rot are left as they are (partial rotary).
void rope_rotate_half(float* v, const float* cs, const float* sn, int64_t rot);

}  // namespace braid::ops
