#include "ops/cpu/elementwise.hpp"

#include <cmath>

#include "ops/cpu/dispatch.hpp"

namespace braid::ops {

BRAID_DISPATCH double sum_squares(const float* x, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += double(x[i + k]) * double(x[i + k]);
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

void rmsnorm(const float* x, const float* w, float eps, int64_t rows, int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const double ss = sum_squares(xr, n);
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void layernorm(const float* x, const float* w, const float* b, float eps, int64_t rows, int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const double mean = sum / double(n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const float m = float(mean), inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * inv * w[i] + b[i];
  }
}

BRAID_DISPATCH void swiglu(const float* gate, const float* up, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    y[i] = silu(g) * up[i];
  }
}

BRAID_DISPATCH void silu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}

BRAID_DISPATCH void softplus_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = softplus(x[i]);
}

BRAID_DISPATCH void skip_silu_gate(float* y, const float* u, const float* D, const float* z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = (y[i] + u[i] * D[i]) * silu(z[i]);
}

void gelu_tanh_inplace(float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void gelu_erf_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.7071067811865476f));
}

void relu2_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] * x[i] : 0.0f;
}

BRAID_DISPATCH float max_value(const float* x, int64_t n) {
  float lanes[16];
  for (float& l : lanes) l = x[0];
  int64_t i = 1;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
  float m = x[0];
  for (float l : lanes) m = l > m ? l : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// The maximum through max_value, the exponentials through exp_fast, the sum in 8 lanes of doubles
// (as sum_squares): every pass vectorises.
BRAID_DISPATCH void softmax_inplace(float* x, int64_t n) {
  if (n <= 0) return;
  const float m = max_value(x, n);
  if (m == -INFINITY) {  // every entry masked: define the result as uniform zero weight
    for (int64_t j = 0; j < n; ++j) x[j] = 0.0f;
    return;
  }
  for (int64_t j = 0; j < n; ++j) x[j] = exp_fast(x[j] - m);
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += double(x[i + k]);
  double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += double(x[i]);
  const float inv = float(1.0 / s);
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope_rotate_half(float* v, const float* cs, const float* sn, int64_t rot) {
  const int64_t h = rot / 2;
  for (int64_t i = 0; i < h; ++i) {
    float a = v[i], b = v[i + h];
    v[i] = a * cs[i] - b * sn[i];
    v[i + h] = b * cs[i] + a * sn[i];
  }
}

}  // namespace braid::ops
