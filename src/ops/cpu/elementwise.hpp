// Row-wise and elementwise kernels: norms, activations, softmax, rotary embedding.
// Each has a scalar reference in tests/test_ops.cpp.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace braid::ops {

// A log-sigmoid that never forms exp of a positive number (sigmoid, SiLU and softplus, the
// other gate functions shared by the mixers, follow exp_fast below).
inline float log_sigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::abs(x))); }

// e^x in f32 within 2 ulp of std::exp over the whole range (0 below -103.97, +inf above
// 88.72, NaN in gives NaN out), branch-free so that a loop calling it vectorises: the state
// decays of the selective scans take T x channels x d_state of these per layer. x = n ln2 + r
// with |r| <= ln2/2 (ln2 split in two parts so r is exact), e^r by a degree-7 polynomial
// (Cephes' expf coefficients), and 2^n applied as two factors so that results which are
// subnormal come out right.
inline float exp_fast(float x) {
  const float xc = std::min(std::max(x, -104.0f), 88.72283935546875f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  const float kn = xc * 1.44269504088896341f + magic;
  const float n = kn - magic;
  const int32_t ni = std::bit_cast<int32_t>(kn) - std::bit_cast<int32_t>(magic);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n1 = ni >> 1, n2 = ni - n1;  // each in [-75, 64]: 2^n1 and 2^n2 are normal
  const float y = p * std::bit_cast<float>((n1 + 127) << 23) * std::bit_cast<float>((n2 + 127) << 23);
  return x > 88.72283935546875f ? std::numeric_limits<float>::infinity() : y;
}

// log(1 + y) in f32 for y >= 0, within 1 ulp of log1p, branch-free so that a loop calling it
// vectorises (+inf gives +inf, NaN gives NaN). u = 1 + y is split as 2^e m with m in
// [sqrt(1/2), sqrt(2)); log m is f - f^2/2 + f^3 P(f) in f = m - 1 (Cephes' logf
// coefficients), e ln2 is added in two parts (ln2's leading bits times e is exact), and
// (y - (u - 1)) / u restores what rounding 1 + y lost (so a y tiny against 1 gives y).
inline float log1p_fast(float y) {
  const float u = 1.0f + y;
  const int32_t bits = std::bit_cast<int32_t>(u);
  const int32_t e = (bits - 0x3f3504f3) >> 23;  // 0x3f3504f3: sqrt(1/2)
  const float f = std::bit_cast<float>(bits - (e << 23)) - 1.0f, ef = float(e);
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float lost = (y - (u - 1.0f)) / u;
  const float r = (f + ((p * f * z + ef * -2.12194440e-4f + lost) - 0.5f * z)) + ef * 0.693359375f;
  return r < u ? r : u;  // r < u, except at +inf and NaN (where r is NaN), which pass through
}

// softplus with torch's threshold (x > 20 returns x) as log1p(e^x), through exp_fast and
// log1p_fast so that loops of it vectorise (softplus_inplace; the compiler may turn the
// threshold into a branch around the division, which it will not compute for every lane
// unless told that floating-point exceptions do not trap, as elementwise.cpp is).
inline float softplus(float x) { return x > 20.0f ? x : log1p_fast(exp_fast(x)); }

// sigmoid(x) and SiLU x * sigmoid(x) (as x / (1 + e^-x)) with exp_fast, so that loops of
// them vectorise: the gates of every mixer.
inline float sigmoid(float x) { return 1.0f / (1.0f + exp_fast(-x)); }
inline float silu(float x) { return x / (1.0f + exp_fast(-x)); }

// Asks for the cache lines of [p, p + bytes) (null p: nothing). A decode step calls it for a
// layer's small operands (convolution weights and window, gate vectors) before the layer's
// first projection, so that they arrive from memory while the projection streams instead of
// one miss at a time after it.
inline void prefetch(const void* p, size_t bytes) {
  if (!p) return;
  const char* c = static_cast<const char*>(p);
  for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
}

// The sum of x[i]^2 in double, in eight interleaved partial sums (so it vectorises), added
// in a fixed order: the one sum of squares of every norm.
double sum_squares(const float* x, int64_t n);

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, for `rows` rows of n. In-place
// allowed (y == x).
void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t n, float* y);
// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b (biased variance); in-place allowed.
void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t n, float* y);

// y = silu(gate) * up, elementwise over n.
void swiglu(const float* gate, const float* up, int64_t n, float* y);
void silu_inplace(float* x, int64_t n);
void softplus_inplace(float* x, int64_t n);
// y[i] = (y[i] + u[i] * D[i]) * SiLU(z[i]): Mamba's skip connection and output gate.
void skip_silu_gate(float* y, const float* u, const float* D, const float* z, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);
void gelu_erf_inplace(float* x, int64_t n);
void relu2_inplace(float* x, int64_t n);  // max(x, 0)^2

// The largest of x[0, n), n >= 1, in 16 lanes (vectorises); a NaN never wins unless it is
// x[0], which nothing then beats (as a loop of `x[i] > m` would give).
float max_value(const float* x, int64_t n);

// Numerically stable softmax over the first n entries of x, in place.
void softmax_inplace(float* x, int64_t n);

// y += x over n elements.
void add_inplace(float* y, const float* x, int64_t n);

// Rotary embedding on one head vector in the "rotate half" layout: for i < rot/2,
// (v[i], v[i + rot/2]) is rotated by the angle whose cos/sin are cs[i], sn[i].
// Dimensions >= rot are left as they are (partial rotary).
void rope_rotate_half(float* v, const float* cs, const float* sn, int64_t rot);

}  // namespace braid::ops
