// Backward of the RG-LRU mixer (Griffin / RecurrentGemma) for a sequence that starts from
// an empty state. Per channel, with i = sigmoid(gate_x), r = sigmoid(gate_a),
// log a = s r (s = -8 softplus(Lambda)):
//   h_0 = x_0 i_0;   h_t = a_t h_{t-1} + sqrt(1 - a_t^2) x_t i_t;   out_t = h_t * gelu(y_t)
// is differentiated in reverse with every h_t kept (T x width floats, like any activation).
#include <cmath>
#include <vector>

#include "mixers/rglru.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void RgLruMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t W = s_.width, H = s_.n_heads, bw = s_.head_width(), K = s_.d_conv;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  Vec xb = vec(T * W), ypre = vec(T * W), xc = vec(T * W), gi = vec(T * W), ga = vec(T * W),
      window = vec((K - 1) * W);
  const ops::Projection p[2] = {{w_.linear_x, W, w_.linear_x_b, xb.data()},
                                {w_.linear_y, W, w_.linear_y_b, ypre.data()}};
  ops::linear_multi(x, T, d_, p, 2);
  Vec yg(ypre);
  ops::gelu_tanh_inplace(yg.data(), T * W);
  ops::causal_conv1d(xb.data(), W, T, W, w_.conv_w, w_.conv_b, K, false, window.data(), xc.data());
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < bw; ++j) {
        gi[size_t(t * W + h * bw + j)] = w_.input_gate_b[h * bw + j];
        ga[size_t(t * W + h * bw + j)] = w_.a_gate_b[h * bw + j];
      }
    ops::gemm(T, bw, bw, 1.0f, xc.data() + h * bw, W, w_.input_gate + h * bw * bw, bw, false, 1.0f,
              gi.data() + h * bw, W);
    ops::gemm(T, bw, bw, 1.0f, xc.data() + h * bw, W, w_.a_gate + h * bw * bw, bw, false, 1.0f,
              ga.data() + h * bw, W);
  }
  // Forward recurrence, keeping every h_t, and the output.
  Vec hs = vec(T * W), out = vec(T * W);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < W; ++c) {
    float hc = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      const size_t k = size_t(t * W + c);
      const float i = ops::sigmoid(gi[k]), r = ops::sigmoid(ga[k]);
      const float la = log_a_scale_[size_t(c)] * r;
      const float mult = t == 0 ? 1.0f : std::sqrt(1.0f - std::exp(2.0f * la));
      hc = (t == 0 ? 0.0f : std::exp(la) * hc) + xc[k] * i * mult;
      hs[k] = hc;
      out[k] = hc * yg[k];
    }
  }
  Vec dout = vec(T * W), dyg = vec(T * W), dxc = vec(T * W), dgi = vec(T * W), dga = vec(T * W), ds = vec(W);
  ops::linear_backward(out.data(), T, W, w_.linear_out, d_, dy, dout.data(), false, gs.of(w_.linear_out),
                       gs.of(w_.linear_out_b));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < W; ++c) {
    float dh = 0.0f;  // dL/dh_t from later tokens
    double dsc = 0;
    const float sc = log_a_scale_[size_t(c)];
    for (int64_t t = T - 1; t >= 0; --t) {
      const size_t k = size_t(t * W + c);
      dyg[k] = dout[k] * hs[k];
      dh += dout[k] * yg[k];
      const float i = ops::sigmoid(gi[k]), r = ops::sigmoid(ga[k]);
      const float la = sc * r, a = std::exp(la);
      const float e2 = std::exp(2.0f * la), mult = t == 0 ? 1.0f : std::sqrt(1.0f - e2);
      dxc[k] = dh * i * mult;
      dgi[k] = dh * xc[k] * mult * i * (1.0f - i);
      float dla = 0.0f;
      if (t > 0) {
        const float dmult = dh * xc[k] * i;
        dla = dh * hs[k - size_t(W)] * a - dmult * e2 / mult;  // d sqrt(1 - e^{2la}) / dla
        dh *= a;
      } else {
        dh = 0.0f;
      }
      dga[k] = dla * sc * r * (1.0f - r);
      dsc += double(dla) * r;
    }
    ds[size_t(c)] = float(dsc);
  }
  if (float* g = gs.of(w_.a_param))
    for (int64_t c = 0; c < W; ++c) g[c] += ds[size_t(c)] * -8.0f * ops::sigmoid(w_.a_param[c]);
  // Block-diagonal gates: G[in][out] per head.
  float *dGi = gs.of(w_.input_gate), *dGa = gs.of(w_.a_gate), *dbi = gs.of(w_.input_gate_b),
        *dba = gs.of(w_.a_gate_b);
  for (int64_t h = 0; h < H; ++h) {
    const float* xh = xc.data() + h * bw;
    if (dGi) ops::gemm_tn(bw, bw, T, 1.0f, xh, W, dgi.data() + h * bw, W, 1.0f, dGi + h * bw * bw, bw);
    if (dGa) ops::gemm_tn(bw, bw, T, 1.0f, xh, W, dga.data() + h * bw, W, 1.0f, dGa + h * bw * bw, bw);
    ops::gemm(T, bw, bw, 1.0f, dgi.data() + h * bw, W, w_.input_gate + h * bw * bw, bw, true, 1.0f,
              dxc.data() + h * bw, W);
    ops::gemm(T, bw, bw, 1.0f, dga.data() + h * bw, W, w_.a_gate + h * bw * bw, bw, true, 1.0f,
              dxc.data() + h * bw, W);
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < W; ++c) {
      if (dbi) dbi[c] += dgi[size_t(t * W + c)];
      if (dba) dba[c] += dga[size_t(t * W + c)];
    }
  Vec dxb = vec(T * W), dyp = vec(T * W);
  ops::causal_conv1d_backward(xb.data(), W, T, W, w_.conv_w, K, dxc.data(), dxb.data(), gs.of(w_.conv_w),
                              gs.of(w_.conv_b));
  ops::gelu_tanh_backward(ypre.data(), dyg.data(), T * W, dyp.data());
  ops::linear_backward(x, T, d_, w_.linear_x, W, dxb.data(), dx, false, gs.of(w_.linear_x),
                       gs.of(w_.linear_x_b));
  ops::linear_backward(x, T, d_, w_.linear_y, W, dyp.data(), dx, true, gs.of(w_.linear_y),
                       gs.of(w_.linear_y_b));
}

}  // namespace braid
