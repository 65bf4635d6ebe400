#include "model/ffn.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/backward.hpp"
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

void activate_backward(Activation a, const float* x, const float* dy, int64_t n, float* dx) {
  switch (a) {
    case Activation::SiLU:
      return ops::silu_backward(x, dy, n, dx);
    case Activation::GeluTanh:
      return ops::gelu_tanh_backward(x, dy, n, dx);
    case Activation::GeluErf:
      return ops::gelu_erf_backward(x, dy, n, dx);
    case Activation::Relu2:
      return ops::relu2_backward(x, dy, n, dx);
  }
}

MlpSpec expert_spec(const MoeSpec& s, int64_t hidden) {
  MlpSpec m;
  m.hidden = hidden;
  m.act = s.act;
  return m;
}

// Top-k routing of each token: chosen expert and its weight, from the router logits.
void route(const MoeSpec& s, const float* x, int64_t T, int64_t D, const float* router, float* scores,
           int32_t* chosen, float* weight, int32_t* order) {
  const int64_t E = s.n_experts, K = s.top_k;
  ops::linear(x, T, D, router, E, nullptr, scores);
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
}

}  // namespace

namespace {

// The hidden activations in place over n values: act(gate) * up, or act(up) without a gate
// (gate multiplier applied first). Elementwise; a caller splitting it among threads starts
// each share at a multiple of 64 values, so every value takes the same vector lane or scalar
// tail as in one call.
void hidden_activations(const MlpSpec& spec, float* up, float* gate, int64_t n) {
  if (gate && spec.gate_multiplier != 1.0) {
    const float m = float(spec.gate_multiplier);
    for (int64_t i = 0; i < n; ++i) gate[i] *= m;
  }
  if (!gate) {
    activate(spec.act, up, n);
  } else if (spec.act == Activation::SiLU) {
    ops::swiglu(gate, up, n, up);
  } else {
    activate(spec.act, gate, n);
    for (int64_t i = 0; i < n; ++i) up[i] *= gate[i];
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
  const float dm = float(spec.down_multiplier);
  if (ops::decodes_by_rows(T, w.up.dtype) && (!gated || ops::decodes_by_rows(T, w.gate.dtype)) &&
      ops::decodes_by_rows(T, w.down.dtype)) {
    // Decoding: one parallel region, the projections' rows shared among the threads and the
    // activations split between them in shares of 64 values; each value is what it is alone.
#pragma omp parallel if (F * D * (gated ? 3 : 2) * T >= (int64_t(1) << 15))
    {
      const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num(), blocks = (n + 63) / 64;
      ops::linear_multi_in_team(x, T, D, proj, gated ? 2 : 1);
      const int64_t b = std::min(n, blocks * id / nt * 64), e = std::min(n, blocks * (id + 1) / nt * 64);
      hidden_activations(spec, up + b, gated ? gate + b : nullptr, e - b);
#pragma omp barrier
      // the region ends on a barrier; only the scaling below needs one before it
      ops::linear_in_team(up, T, F, w.down, D, w.down_b, y, /*barrier=*/dm != 1.0f);
      if (dm != 1.0f)
        for (int64_t i = T * D * id / nt; i < T * D * (id + 1) / nt; ++i) y[i] *= dm;
    }
    return;
  }
  ops::linear_multi(x, T, D, proj, gated ? 2 : 1);
  hidden_activations(spec, up, gate, n);
  ops::linear(up, T, F, w.down, D, w.down_b, y);
  if (dm != 1.0f)
    for (int64_t i = 0; i < T * D; ++i) y[i] *= dm;
}

void moe_forward(const MoeSpec& s, const MoeWeights& w, const float* x, int64_t T, int64_t D, float* y,
                 Workspace& ws) {
  const int64_t E = s.n_experts, K = s.top_k;
  const MlpSpec expert = expert_spec(s, s.hidden);
  float* scores = ws.get(Workspace::kMoeR, size_t(T * E));
  // Scratch from the workspace, so decoding does not allocate.
  int32_t* chosen = ws.get_int(Workspace::kMoeChosen, size_t(T * K));
  int32_t* order = ws.get_int(Workspace::kMoeOrder, size_t(E));
  int32_t* rows = ws.get_int(Workspace::kMoeRows, size_t(T * K));
  float* weight = ws.get(Workspace::kMoeWeight, size_t(2 * T * K));
  float* rw = weight + T * K;
  route(s, x, T, D, w.router, scores, chosen, weight, order);
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
    const MlpSpec shared = expert_spec(s, s.shared_hidden);
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

void ffn_backward(const MlpSpec& spec, const float* x, int64_t T, int64_t D, const FfnWeights& w,
                  const float* dy, float* dx, bool accumulate_dx, GradSink& g) {
  const int64_t F = spec.hidden, n = T * F;
  const bool gated = spec.gated;
  std::vector<float> up(static_cast<size_t>(n)), gate(gated ? static_cast<size_t>(n) : 0),
      a(static_cast<size_t>(n)), da(static_cast<size_t>(n));
  const ops::Projection proj[2] = {{w.up, F, w.up_b, up.data()}, {w.gate, F, w.gate_b, gate.data()}};
  ops::linear_multi(x, T, D, proj, gated ? 2 : 1);
  float* pre = gated ? gate.data() : up.data();  // the activation's input
  if (gated && spec.gate_multiplier != 1.0)
    for (float& v : gate) v *= float(spec.gate_multiplier);
  std::copy(pre, pre + n, a.begin());
  activate(spec.act, a.data(), n);  // act(pre)
  std::vector<float> h(a);          // what down_proj sees
  if (gated)
    for (int64_t i = 0; i < n; ++i) h[size_t(i)] *= up[size_t(i)];
  const float* dyd = dy;
  std::vector<float> dy_scaled;
  if (spec.down_multiplier != 1.0) {
    dy_scaled.assign(dy, dy + T * D);
    for (float& v : dy_scaled) v *= float(spec.down_multiplier);
    dyd = dy_scaled.data();
  }
  ops::linear_backward(h.data(), T, F, w.down, D, dyd, da.data(), false, g.of(w.down), g.of(w.down_b));
  std::vector<float> dpre(static_cast<size_t>(n));
  if (gated) {
    // h = act(gate) * up: d up = da * act(gate); d gate = act'(gate) * da * up.
    std::vector<float> dact(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) dact[size_t(i)] = da[size_t(i)] * up[size_t(i)];
    activate_backward(spec.act, pre, dact.data(), n, dpre.data());
    if (spec.gate_multiplier != 1.0)
      for (float& v : dpre) v *= float(spec.gate_multiplier);
    for (int64_t i = 0; i < n; ++i) da[size_t(i)] *= a[size_t(i)];  // now d up
    ops::linear_backward(x, T, D, w.up, F, da.data(), dx, accumulate_dx, g.of(w.up), g.of(w.up_b));
    ops::linear_backward(x, T, D, w.gate, F, dpre.data(), dx, true, g.of(w.gate), g.of(w.gate_b));
  } else {
    activate_backward(spec.act, pre, da.data(), n, dpre.data());
    ops::linear_backward(x, T, D, w.up, F, dpre.data(), dx, accumulate_dx, g.of(w.up), g.of(w.up_b));
  }
}

void moe_backward(const MoeSpec& s, const MoeWeights& w, const float* x, int64_t T, int64_t D,
                  const float* dy, float* dx, GradSink& g) {
  const int64_t E = s.n_experts, K = s.top_k;
  std::vector<float> scores(static_cast<size_t>(T * E)), weight(static_cast<size_t>(T * K)),
      dweight(static_cast<size_t>(T * K), 0.0f);
  std::vector<int32_t> chosen(static_cast<size_t>(T * K)), order(static_cast<size_t>(E));
  route(s, x, T, D, w.router, scores.data(), chosen.data(), weight.data(), order.data());
  std::fill(dx, dx + T * D, 0.0f);
  Workspace ws;
  const MlpSpec expert = expert_spec(s, s.hidden);
  std::vector<float> xe, ye, dye, dxe;
  std::vector<int64_t> slot;  // index t * K + j of each routed row
  for (int64_t e = 0; e < E; ++e) {
    slot.clear();
    for (int64_t i = 0; i < T * K; ++i)
      if (chosen[size_t(i)] == e) slot.push_back(i);
    const int64_t n = int64_t(slot.size());
    if (n == 0) continue;
    xe.resize(size_t(n * D)), ye.resize(size_t(n * D)), dye.resize(size_t(n * D)), dxe.resize(size_t(n * D));
    for (int64_t r = 0; r < n; ++r)
      std::memcpy(&xe[size_t(r * D)], x + (slot[size_t(r)] / K) * D, size_t(D) * 4);
    ffn_forward(expert, xe.data(), n, D, w.experts[size_t(e)], ye.data(), ws);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t i = slot[size_t(r)];
      const float* dyt = dy + (i / K) * D;
      dweight[size_t(i)] = ops::dot(dyt, &ye[size_t(r * D)], D);
      for (int64_t c = 0; c < D; ++c) dye[size_t(r * D + c)] = weight[size_t(i)] * dyt[c];
    }
    ffn_backward(expert, xe.data(), n, D, w.experts[size_t(e)], dye.data(), dxe.data(), false, g);
    for (int64_t r = 0; r < n; ++r) ops::add_inplace(dx + (slot[size_t(r)] / K) * D, &dxe[size_t(r * D)], D);
  }
  // Router: d score of each chosen expert (through the renormalisation), then through
  // the softmax over all experts or the per-expert sigmoid.
  std::vector<float> dscore(static_cast<size_t>(T * E), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float* sc = &scores[size_t(t * E)];
    float* ds = &dscore[size_t(t * E)];
    double sum = 0, wd = 0;
    for (int64_t j = 0; j < K; ++j) {
      sum += sc[chosen[size_t(t * K + j)]];
      wd += double(weight[size_t(t * K + j)]) * dweight[size_t(t * K + j)];
    }
    for (int64_t j = 0; j < K; ++j) {
      const int64_t i = t * K + j;
      ds[chosen[size_t(i)]] = s.renormalize ? float((dweight[size_t(i)] - wd) / sum) : dweight[size_t(i)];
    }
    if (s.sigmoid_scores)
      for (int64_t e = 0; e < E; ++e) ds[e] *= sc[e] * (1.0f - sc[e]);
    else
      ops::softmax_backward(sc, ds, E, ds);
  }
  ops::linear_backward(x, T, D, w.router, E, dscore.data(), dx, true, g.of(w.router), nullptr);
  if (s.shared_hidden > 0) {
    const MlpSpec shared = expert_spec(s, s.shared_hidden);
    const float* dys = dy;
    std::vector<float> scaled;
    if (s.shared_gate) {
      std::vector<float> ys(static_cast<size_t>(T * D));
      ffn_forward(shared, x, T, D, w.shared, ys.data(), ws);
      scaled.resize(size_t(T * D));
      float* dsg = g.of(w.shared_gate);
      for (int64_t t = 0; t < T; ++t) {
        const float gt = ops::sigmoid(ops::dot(w.shared_gate, x + t * D, D));
        const float dgt = ops::dot(dy + t * D, &ys[size_t(t * D)], D) * gt * (1.0f - gt);
        for (int64_t c = 0; c < D; ++c) {
          scaled[size_t(t * D + c)] = gt * dy[t * D + c];
          dx[t * D + c] += dgt * w.shared_gate[c];
          if (dsg) dsg[c] += dgt * x[t * D + c];
        }
      }
      dys = scaled.data();
    }
    ffn_backward(shared, x, T, D, w.shared, dys, dx, true, g);
  }
}

}  // namespace braid
