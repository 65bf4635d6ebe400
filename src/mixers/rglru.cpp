#include "mixers/rglru.hpp"

#include <cmath>

#include "core/error.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

RgLruMixer::RgLruMixer(const RgLruSpec& spec, int64_t d_model, RgLruWeights w)
    : s_(spec), d_(d_model), w_(w) {
  refresh_derived();
}

void RgLruMixer::refresh_derived() {
  log_a_scale_.resize(static_cast<size_t>(s_.width));
  for (int64_t c = 0; c < s_.width; ++c) {
    const float v = w_.a_param[c];
    log_a_scale_[size_t(c)] = -8.0f * ops::softplus(v);
  }
}

std::unique_ptr<State> RgLruMixer::make_state() const {
  return std::make_unique<RgLruState>(s_.width, s_.d_conv);
}

void RgLruMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<RgLruState*>(&state);
  check(st != nullptr, "rglru layer was given a state of another mixer");
  const int64_t W = s_.width, H = s_.n_heads, bw = s_.head_width();
  float* xb = ws.get(Workspace::kQ, size_t(T * W));
  float* yb = ws.get(Workspace::kK, size_t(T * W));
  float* xc = ws.get(Workspace::kV, size_t(T * W));
  float* gi = ws.get(Workspace::kAttnOut, size_t(T * W));
  float* ga = ws.get(Workspace::kGate, size_t(T * W));
  const ops::Projection p[2] = {{w_.linear_x, W, w_.linear_x_b, xb}, {w_.linear_y, W, w_.linear_y_b, yb}};
  ops::linear_multi(x, T, d_, p, 2);
  ops::gelu_tanh_inplace(yb, T * W);
  ops::causal_conv1d(xb, W, T, W, w_.conv_w, w_.conv_b, s_.d_conv, false, st->conv.data(), xc);
  // Block-diagonal gates: per head, x_h [T][bw] . G_h [bw][bw] + b_h.
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < bw; ++j) {
        gi[t * W + h * bw + j] = w_.input_gate_b[h * bw + j];
        ga[t * W + h * bw + j] = w_.a_gate_b[h * bw + j];
      }
    ops::gemm(T, bw, bw, 1.0f, xc + h * bw, W, w_.input_gate + h * bw * bw, bw, false, 1.0f, gi + h * bw, W);
    ops::gemm(T, bw, bw, 1.0f, xc + h * bw, W, w_.a_gate + h * bw * bw, bw, false, 1.0f, ga + h * bw, W);
  }
  float* hs = st->h.data();
  const int64_t p0 = st->pos;
#pragma omp parallel for schedule(static) if (T * W > 4096)
  for (int64_t c = 0; c < W; ++c) {
    float hc = hs[c];
    for (int64_t t = 0; t < T; ++t) {
      const float i = ops::sigmoid(gi[t * W + c]);
      const float r = ops::sigmoid(ga[t * W + c]);
      const float log_a = log_a_scale_[size_t(c)] * r;
      const float a = std::exp(log_a);
      const float mult = p0 + t == 0 ? 1.0f : std::sqrt(1.0f - std::exp(2.0f * log_a));
      const float in = xc[t * W + c] * i * mult;
      hc = (p0 + t == 0 ? 0.0f : a * hc) + in;
      xb[t * W + c] = hc * yb[t * W + c];
    }
    hs[c] = hc;
  }
  st->pos += T;
  ops::linear(xb, T, W, w_.linear_out, d_, w_.linear_out_b, y);
}

}  // namespace braid
