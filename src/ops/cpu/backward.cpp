#include "ops/cpu/backward.hpp"

#include <cmath>
#include <vector>

#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid::ops {

void linear_backward(const float* x, int64_t T, int64_t in, MatRef W, int64_t out, const float* dy, float* dx,
                     bool accumulate_dx, float* dW, float* db) {
  if (T == 0) return;
  if (dx) gemm(T, in, out, 1.0f, dy, out, W.f32(), in, false, accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (dW) gemm_tn(out, in, T, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (db)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) db[o] += dy[t * out + o];
}

void rmsnorm_backward(const float* x, const float* w, float eps, int64_t rows, int64_t n, const float* dy,
                      float* dx, bool accumulate_dx, float* dw) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    double ss = 0.0, dot = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      ss += double(xr[i]) * xr[i];
      dot += double(gr[i]) * w[i] * xr[i];
    }
    const double inv = 1.0 / std::sqrt(ss / double(n) + double(eps));
    const double c = dot * inv * inv * inv / double(n);
    if (dw)  // before dx, which may overwrite dy
      for (int64_t i = 0; i < n; ++i) dw[i] += float(gr[i] * (xr[i] * inv));
    for (int64_t i = 0; i < n; ++i) {
      const float d = float(inv * gr[i] * w[i] - c * xr[i]);
      dr[i] = accumulate_dx ? dr[i] + d : d;
    }
  }
}

void layernorm_backward(const float* x, const float* w, float eps, int64_t rows, int64_t n, const float* dy,
                        float* dx, bool accumulate_dx, float* dw, float* db) {
  std::vector<double> xhat(static_cast<size_t>(n), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const double mean = sum / double(n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const double inv = 1.0 / std::sqrt(ss / double(n) + double(eps));
    double s1 = 0.0, s2 = 0.0;  // mean of dxhat, of dxhat * xhat
    for (int64_t i = 0; i < n; ++i) {
      xhat[size_t(i)] = (xr[i] - mean) * inv;
      const double g = double(gr[i]) * w[i];
      s1 += g;
      s2 += g * xhat[size_t(i)];
    }
    s1 /= double(n), s2 /= double(n);
    if (dw)  // before dx, which may overwrite dy
      for (int64_t i = 0; i < n; ++i) dw[i] += float(gr[i] * xhat[size_t(i)]);
    if (db)
      for (int64_t i = 0; i < n; ++i) db[i] += gr[i];
    for (int64_t i = 0; i < n; ++i) {
      const float d = float(inv * (double(gr[i]) * w[i] - s1 - xhat[size_t(i)] * s2));
      dr[i] = accumulate_dx ? dr[i] + d : d;
    }
  }
}

void silu_backward(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
}

void gelu_tanh_backward(const float* x, const float* dy, int64_t n, float* dx) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i], u = k * (v + 0.044715f * v * v * v), th = std::tanh(u);
    const float du = k * (1.0f + 3.0f * 0.044715f * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du);
  }
}

void gelu_erf_backward(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float cdf = 0.5f * (1.0f + std::erf(v * 0.7071067811865476f));
    const float pdf = 0.3989422804014327f * std::exp(-0.5f * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

void relu2_backward(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] * 2.0f * x[i] : 0.0f;
}

void softmax_backward(const float* p, const float* dp, int64_t n, float* dx) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(p[i]) * dp[i];
  for (int64_t i = 0; i < n; ++i) dx[i] = p[i] * float(dp[i] - s);
}

double cross_entropy_fused(float* logits, const int32_t* targets, int64_t T, int64_t V, float scale) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* row = logits + t * V;
    if (targets[t] < 0) {
      for (int64_t i = 0; i < V; ++i) row[i] = 0.0f;
      continue;
    }
    float m = row[0];
    for (int64_t i = 1; i < V; ++i) m = row[i] > m ? row[i] : m;
    double s = 0.0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(double(row[i] - m));
    const double lse = double(m) + std::log(s);
    total += lse - double(row[targets[t]]);
    for (int64_t i = 0; i < V; ++i) row[i] = float(std::exp(double(row[i]) - lse)) * scale;
    row[targets[t]] -= scale;
  }
  return total;
}

}  // namespace braid::ops
