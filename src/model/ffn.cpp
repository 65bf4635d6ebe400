#include "model/ffn.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

void activate(Activation a, float* v, int64_t n) {
  switch (a) {
    case Activation::SiLU:
      ops::silu_inplace(v, n);
      break;
    case Activation::GeluTanh:
      ops::gelu_tanh_inplace(v, n);
      break;
    case Activation::GeluErf:
      ops::gelu_erf_inplace(v, n);
      break;
    case Activation::Relu2:
      ops::relu2_inplace(v, n);
      break;
  }
}

}  // namespace

void ffn_forward(const MlpSpec& spec, const float* x, int64_t T, int64_t D, const FfnWeights& w, float* y,
                 Workspace& ws) {
  const int64_t F = spec.hidden, n = T * F;
  const bool gated = spec.gated;
  float* up = ws.get(Workspace::kMlpA, size_t(n));
  float* gate = gated ? ws.get(Workspace::kMlpB, size_t(n)) : nullptr;
  const ops::Projection proj[2] = {{w.up, F, w.up_b, up}, {w.gate, F, w.gate_b, gate}};
  ops::linear_multi(x, T, D, proj, gated ? 2 : 1);
  if (gated && spec.gate_multiplier != 1.0) {
    const float m = float(spec.gate_multiplier);
    for (int64_t i = 0; i < n; ++i) gate[i] *= m;
  }
  if (!gated) {
    activate(spec.act, up, n);
  } else if (spec.act == Activation::SiLU) {
    ops::swiglu(gate, up, n, up);
  } else {
    activate(spec.act, gate, n);
    for (int64_t i = 0; i < n; ++i) up[i] *= gate[i];
  }
  ops::linear(up, T, F, w.down, D, w.down_b, y);
  if (spec.down_multiplier != 1.0) {
    const float m = float(spec.down_multiplier);
    for (int64_t i = 0; i < T * D; ++i) y[i] *= m;
  }
}

void moe_forward(const MoeSpec& s, const MoeWeights& w, const float* x, int64_t T, int64_t D, float* y,
                 Workspace& ws) {
  const int64_t E = s.n_experts, K = s.top_k;
  MlpSpec expert;
  expert.hidden = s.hidden;
  expert.act = s.act;
  float* scores = ws.get(Workspace::kMoeR, size_t(T * E));
  ops::linear(x, T, D, w.router, E, nullptr, scores);
  // Top-k per token: chosen[t * K + j] = expert, weight[t * K + j] = score.
  // Scratch from the workspace, so decoding does not allocate.
  int32_t* chosen = ws.get_int(Workspace::kMoeChosen, size_t(T * K));
  int32_t* order = ws.get_int(Workspace::kMoeOrder, size_t(E));
  int32_t* rows = ws.get_int(Workspace::kMoeRows, size_t(T * K));
  float* weight = ws.get(Workspace::kMoeWeight, size_t(2 * T * K));
  float* rw = weight + T * K;
  for (int64_t t = 0; t < T; ++t) {
    float* sc = scores + t * E;
    if (s.sigmoid_scores)
      for (int64_t e = 0; e < E; ++e) sc[e] = ops::sigmoid(sc[e]);
    else
      ops::softmax_inplace(sc, E);
    for (int64_t e = 0; e < E; ++e) order[e] = int32_t(e);
    std::partial_sort(order, order + K, order + E,
                      [&](int32_t a, int32_t b) { return sc[a] != sc[b] ? sc[a] > sc[b] : a < b; });
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += sc[order[j]];
    for (int64_t j = 0; j < K; ++j) {
      chosen[t * K + j] = order[j];
      weight[t * K + j] = s.renormalize ? float(sc[order[j]] / sum) : sc[order[j]];
    }
  }
  std::memset(y, 0, size_t(T * D) * sizeof(float));
  // Each expert runs once over the tokens routed to it (gathered into one batch).
  for (int64_t e = 0; e < E; ++e) {
    int64_t n = 0;
    for (int64_t i = 0; i < T * K; ++i)
      if (chosen[i] == e) rows[n] = int32_t(i / K), rw[n] = weight[i], ++n;
    if (n == 0) continue;
    float* xe = ws.get(Workspace::kMoeX, size_t(n * D));
    float* ye = ws.get(Workspace::kMoeY, size_t(n * D));
    for (int64_t r = 0; r < n; ++r)
      std::memcpy(xe + r * D, x + int64_t(rows[r]) * D, size_t(D) * sizeof(float));
    ffn_forward(expert, xe, n, D, w.experts[size_t(e)], ye, ws);
    for (int64_t r = 0; r < n; ++r) {
      float* dst = y + int64_t(rows[r]) * D;
      for (int64_t i = 0; i < D; ++i) dst[i] += rw[r] * ye[r * D + i];
    }
  }
  if (s.shared_hidden > 0) {
    MlpSpec shared = expert;
    shared.hidden = s.shared_hidden;
    float* ys = ws.get(Workspace::kMoeY, size_t(T * D));
    ffn_forward(shared, x, T, D, w.shared, ys, ws);
    if (s.shared_gate) {
      // Each token's shared-expert output is scaled by sigmoid(w . x).
      for (int64_t t = 0; t < T; ++t) {
        const float g = ops::sigmoid(ops::dot(w.shared_gate, x + t * D, D));
        for (int64_t i = 0; i < D; ++i) ys[t * D + i] *= g;
      }
    }
    ops::add_inplace(y, ys, T * D);
  }
}

}  // namespace braid
