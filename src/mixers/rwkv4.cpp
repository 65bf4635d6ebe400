#include "mixers/rwkv4.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void rwkv_token_shift(const float* x, int64_t T, int64_t D, const float* shift, const float* mix,
                      float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const float* prev = t == 0 ? shift : x + (t - 1) * D;
    for (int64_t i = 0; i < D; ++i) out[t * D + i] = x[t * D + i] * mix[i] + prev[i] * (1.0f - mix[i]);
  }
}

Rwkv4TimeMix::Rwkv4TimeMix(const Rwkv4Spec& spec, int64_t d_model, Rwkv4Weights w)
    : s_(spec), d_(d_model), w_(w) {
  refresh_derived();
}

void Rwkv4TimeMix::refresh_derived() {
  decay_.resize(static_cast<size_t>(s_.attn_dim));
  for (int64_t c = 0; c < s_.attn_dim; ++c) decay_[size_t(c)] = -std::exp(w_.time_decay[c]);
}

std::unique_ptr<State> Rwkv4TimeMix::make_state() const {
  return std::make_unique<Rwkv4State>(d_, s_.attn_dim);
}

void Rwkv4TimeMix::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<Rwkv4State*>(&state);
  check(st != nullptr && int64_t(st->num.size()) == s_.attn_dim,
        "rwkv4 layer was given a state of another mixer");
  const int64_t D = d_, A = s_.attn_dim;
  float* mixed = ws.get(Workspace::kAttnOut, size_t(T * D));
  float* k = ws.get(Workspace::kK, size_t(T * A));
  float* v = ws.get(Workspace::kV, size_t(T * A));
  float* r = ws.get(Workspace::kQ, size_t(T * A));
  rwkv_token_shift(x, T, D, st->shift.data(), w_.mix_k, mixed);
  ops::linear(mixed, T, D, w_.key, A, nullptr, k);
  rwkv_token_shift(x, T, D, st->shift.data(), w_.mix_v, mixed);
  ops::linear(mixed, T, D, w_.value, A, nullptr, v);
  rwkv_token_shift(x, T, D, st->shift.data(), w_.mix_r, mixed);
  ops::linear(mixed, T, D, w_.receptance, A, nullptr, r);
  std::memcpy(st->shift.data(), x + (T - 1) * D, size_t(D) * sizeof(float));

  // WKV scan per channel; the result, times sigmoid(r), overwrites r.
  float *num = st->num.data(), *den = st->den.data(), *mx = st->max.data();
#pragma omp parallel for schedule(static) if (T * A > 4096)
  for (int64_t c = 0; c < A; ++c) {
    const float u = w_.time_first[c], w = decay_[size_t(c)];
    float n = num[c], d = den[c], m = mx[c];
    for (int64_t t = 0; t < T; ++t) {
      const float kt = k[t * A + c], vt = v[t * A + c];
      const float mo = std::max(m, kt + u);
      const float e1 = std::exp(m - mo), e2 = std::exp(kt + u - mo);
      const float wkv = (e1 * n + e2 * vt) / (e1 * d + e2);
      const float ms = std::max(m + w, kt);
      const float f1 = std::exp(m + w - ms), f2 = std::exp(kt - ms);
      n = f1 * n + f2 * vt;
      d = f1 * d + f2;
      m = ms;
      r[t * A + c] = ops::sigmoid(r[t * A + c]) * wkv;
    }
    num[c] = n, den[c] = d, mx[c] = m;
  }
  st->pos += T;
  ops::linear(r, T, A, w_.output, D, nullptr, y);
  if (s_.out_scale != 1.0)
    for (int64_t i = 0; i < T * D; ++i) y[i] *= float(s_.out_scale);
}

RwkvChannelMix::RwkvChannelMix(const RwkvChannelMixSpec& spec, int64_t d_model, RwkvChannelMixWeights w)
    : s_(spec), d_(d_model), w_(w) {}

std::unique_ptr<State> RwkvChannelMix::make_state() const { return std::make_unique<Rwkv4State>(d_, 0); }

void RwkvChannelMix::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<Rwkv4State*>(&state);
  check(st != nullptr && st->num.empty(), "rwkv channel mix was given a state of another mixer");
  const int64_t D = d_, F = s_.hidden;
  float* mixed = ws.get(Workspace::kMlpB, size_t(T * D));
  float* k = ws.get(Workspace::kMlpA, size_t(T * F));
  float* r = ws.get(Workspace::kGate, size_t(T * D));
  rwkv_token_shift(x, T, D, st->shift.data(), w_.mix_k, mixed);
  ops::linear(mixed, T, D, w_.key, F, nullptr, k);
  rwkv_token_shift(x, T, D, st->shift.data(), w_.mix_r, mixed);
  ops::linear(mixed, T, D, w_.receptance, D, nullptr, r);
  std::memcpy(st->shift.data(), x + (T - 1) * D, size_t(D) * sizeof(float));
  for (int64_t i = 0; i < T * F; ++i) {
    const float a = std::max(k[i], 0.0f);
    k[i] = a * a;
  }
  ops::linear(k, T, F, w_.value, D, nullptr, y);
  const float sc = float(s_.out_scale);
  for (int64_t i = 0; i < T * D; ++i) y[i] = ops::sigmoid(r[i]) * y[i] * sc;
  st->pos += T;
}

}  // namespace braid
