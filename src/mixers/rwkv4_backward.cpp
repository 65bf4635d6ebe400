// Backward of RWKV-4 time mixing and channel mixing for a sequence that starts from an
// empty state. Per channel, with w = -exp(time_decay) and u = time_first, the WKV output
//   o_t = (A_{t-1} + e^{u+k_t} v_t) / (B_{t-1} + e^{u+k_t}),
//   A_t = e^w A_{t-1} + e^{k_t} v_t,   B_t = e^w B_{t-1} + e^{k_t}
// does not depend on the forward's running log scale, so the reverse sweep differentiates
// this form. dL/dA_t and dL/dB_t are sums over later tokens s of e^{(s-1-t)w} g_s / Z_s
// (Z_s the denominator); they are carried with their own running log scale rho, and every
// exponent formed (rho + k_t, rho + w + log scale of A_{t-1}) is provably <= 0.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "mixers/rwkv4.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void rwkv_token_shift_backward(const float* x, int64_t T, int64_t D, const float* mix, const float* dout,
                               float* dx, float* dmix) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      const float g = dout[t * D + i];
      dx[t * D + i] += g * mix[i];
      if (t > 0) dx[(t - 1) * D + i] += g * (1.0f - mix[i]);
      if (dmix) dmix[i] += g * (x[t * D + i] - (t > 0 ? x[(t - 1) * D + i] : 0.0f));
    }
}

namespace {

using Vec = std::vector<float>;
Vec zeros(int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); }

// One token-shifted projection out = shift(x, mix) . W^T, and its backward.
struct ShiftedLinear {
  const float* mix;
  ops::MatRef W;
  int64_t out;
  Vec forward(const float* x, int64_t T, int64_t D) const {
    Vec mixed = zeros(T * D), y = zeros(T * out), shift = zeros(D);
    rwkv_token_shift(x, T, D, shift.data(), mix, mixed.data());
    ops::linear(mixed.data(), T, D, W, out, nullptr, y.data());
    return y;
  }
  void backward(const float* x, int64_t T, int64_t D, const float* dy, float* dx, GradSink& g) const {
    Vec mixed = zeros(T * D), dmixed = zeros(T * D), shift = zeros(D);
    rwkv_token_shift(x, T, D, shift.data(), mix, mixed.data());
    ops::linear_backward(mixed.data(), T, D, W, out, dy, dmixed.data(), false, g.of(W), nullptr);
    rwkv_token_shift_backward(x, T, D, mix, dmixed.data(), dx, g.of(mix));
  }
};

}  // namespace

void Rwkv4TimeMix::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t D = d_, A = s_.attn_dim;
  const ShiftedLinear pk{w_.mix_k, w_.key, A}, pv{w_.mix_v, w_.value, A}, pr{w_.mix_r, w_.receptance, A};
  const Vec k = pk.forward(x, T, D), v = pv.forward(x, T, D), r = pr.forward(x, T, D);
  // Forward scan keeping, per token, the output o, 1 / the stabilised denominator z, the
  // output's log scale M and e^{u + k - M}; and the state (num, den, log scale) before it.
  Vec o = zeros(T * A), zinv = zeros(T * A), M = zeros(T * A), e2 = zeros(T * A), pn = zeros(T * A),
      pd = zeros(T * A), pm = zeros(T * A), rout = zeros(T * A);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < A; ++c) {
    const float u = w_.time_first[c], w = decay_[size_t(c)];
    float n = 0.0f, d = 0.0f, m = -1e38f;
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = size_t(t * A + c);
      pn[i] = n, pd[i] = d, pm[i] = m;
      const float kt = k[i], vt = v[i];
      const float mo = std::max(m, kt + u);
      const float f1 = std::exp(m - mo), f2 = std::exp(kt + u - mo);
      const float z = f1 * d + f2;
      o[i] = (f1 * n + f2 * vt) / z;
      zinv[i] = 1.0f / z, M[i] = mo, e2[i] = f2;
      rout[i] = ops::sigmoid(r[i]) * o[i];
      const float ms = std::max(m + w, kt);
      const float g1 = std::exp(m + w - ms), g2 = std::exp(kt - ms);
      n = g1 * n + g2 * vt;
      d = g1 * d + g2;
      m = ms;
    }
  }
  Vec drout = zeros(T * A), dy_s;
  const float* dyo = dy;
  if (s_.out_scale != 1.0) {
    dy_s.assign(dy, dy + T * D);
    for (float& g : dy_s) g *= float(s_.out_scale);
    dyo = dy_s.data();
  }
  ops::linear_backward(rout.data(), T, A, w_.output, D, dyo, drout.data(), false, gs.of(w_.output), nullptr);
  Vec dk = zeros(T * A), dv = zeros(T * A), dr = zeros(T * A), dw = zeros(A), du = zeros(A);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < A; ++c) {
    const float w = decay_[size_t(c)];
    float rho = -1e30f, ra = 0.0f, rb = 0.0f;  // dL/dA_t = ra e^rho, dL/dB_t = rb e^rho
    double gw = 0, gu = 0;
    for (int64_t t = T - 1; t >= 0; --t) {
      const size_t i = size_t(t * A + c);
      const float sg = ops::sigmoid(r[i]);
      const float go = drout[i] * sg;  // dL/do_t
      dr[i] = drout[i] * o[i] * sg * (1.0f - sg);
      // o_t through e^{u + k_t}: d o / d(u + k_t) = e^{u+k_t} (v_t - o_t) / Z_t.
      const float gz = go * zinv[i];
      const float direct = gz * e2[i] * (v[i] - o[i]);
      gu += direct;
      float gk = direct, gv = gz * e2[i];
      // A_t = e^w A_{t-1} + e^{k_t} v_t (and B_t) with the gradient of later tokens.
      const float s = std::exp(rho + k[i]);
      gk += s * (ra * v[i] + rb);
      gv += s * ra;
      if (t > 0) gw += double(std::exp(rho + w + pm[i])) * (ra * pn[i] + rb * pd[i]);
      dk[i] = gk, dv[i] = gv;
      // Add token t's own dependence on A_{t-1}, B_{t-1}: 1 / Z_t and -o_t / Z_t, with
      // 1 / Z_t = zinv e^{-M_t}.
      const float nrho = std::max(rho + w, -M[i]);
      const float keep = std::exp(rho + w - nrho), add = std::exp(-M[i] - nrho) * gz;
      ra = keep * ra + add;
      rb = keep * rb - add * o[i];
      rho = nrho;
    }
    dw[size_t(c)] = float(gw), du[size_t(c)] = float(gu);
  }
  if (float* g = gs.of(w_.time_decay))
    for (int64_t c = 0; c < A; ++c) g[c] += dw[size_t(c)] * decay_[size_t(c)];  // dw/dtd = w
  if (float* g = gs.of(w_.time_first))
    for (int64_t c = 0; c < A; ++c) g[c] += du[size_t(c)];
  std::fill(dx, dx + T * D, 0.0f);
  pk.backward(x, T, D, dk.data(), dx, gs);
  pv.backward(x, T, D, dv.data(), dx, gs);
  pr.backward(x, T, D, dr.data(), dx, gs);
}

void RwkvChannelMix::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t D = d_, F = s_.hidden;
  const ShiftedLinear pk{w_.mix_k, w_.key, F}, pr{w_.mix_r, w_.receptance, D};
  const Vec kk = pk.forward(x, T, D), r = pr.forward(x, T, D);
  Vec a = zeros(T * F), val = zeros(T * D);
  for (int64_t i = 0; i < T * F; ++i) {
    const float p = std::max(kk[size_t(i)], 0.0f);
    a[size_t(i)] = p * p;
  }
  ops::linear(a.data(), T, F, w_.value, D, nullptr, val.data());
  const float sc = float(s_.out_scale);
  Vec dval = zeros(T * D), dr = zeros(T * D), da = zeros(T * F), dkk = zeros(T * F);
  for (int64_t i = 0; i < T * D; ++i) {
    const float sg = ops::sigmoid(r[size_t(i)]);
    dval[size_t(i)] = dy[i] * sg * sc;
    dr[size_t(i)] = dy[i] * val[size_t(i)] * sc * sg * (1.0f - sg);
  }
  ops::linear_backward(a.data(), T, F, w_.value, D, dval.data(), da.data(), false, gs.of(w_.value), nullptr);
  ops::relu2_backward(kk.data(), da.data(), T * F, dkk.data());
  std::fill(dx, dx + T * D, 0.0f);
  pk.backward(x, T, D, dkk.data(), dx, gs);
  pr.backward(x, T, D, dr.data(), dx, gs);
}

}  // namespace braid
