#include "mixers/titans.hpp"

#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "mixers/titans_recurrence.hpp"
#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

inline float silu_d1(float a, float s) { return s * (1.0f + a * (1.0f - s)); }
// h = silu(a) = a sigmoid(a), keeping sigmoid(a) in sg for the derivatives.
inline void silu_with_sigmoid(const float* a, int64_t n, float* h, float* sg) {
  for (int64_t i = 0; i < n; ++i) sg[i] = ops::sigmoid(a[i]), h[i] = a[i] * sg[i];
}
inline float silu_d2(float a, float s) { return s * (1.0f - s) * (2.0f + a * (1.0f - 2.0f * s)); }

// y[r] (+)= sum_c A[r][c] x[c] (ops::matvec_batch: vectorised per row, dispatched by CPU).
inline void mv(const float* A, const float* x, int64_t rows, int64_t cols, float* y, bool acc) {
  ops::matvec_batch(A, x, 1, rows, cols, acc, y, rows);
}
// y[c] += sum_r A[r][c] x[r]
void mtv(const float* A, const float* x, int64_t rows, int64_t cols, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float xr = x[r];
    for (int64_t c = 0; c < cols; ++c) y[c] += A[r * cols + c] * xr;
  }
}
// A[r][c] += s * a[r] b[c]
void outer(const float* a, const float* b, int64_t rows, int64_t cols, float s, float* A) {
  for (int64_t r = 0; r < rows; ++r) {
    const float ar = s * a[r];
    for (int64_t c = 0; c < cols; ++c) A[r * cols + c] += ar * b[c];
  }
}

BRAID_DISPATCH void net_apply(const MemoryNet& net, const float* M, const float* x, float* y, float* tmp) {
  const int64_t d = net.d, m = net.m, depth = net.depth;
  if (depth == 1) return mv(M, x, d, d, y, false);
  const float *W1 = M, *W2 = M + m * d;
  float* h = tmp;
  mv(W1, x, m, d, h, false);
  for (int64_t i = 0; i < m; ++i) h[i] = h[i] * ops::sigmoid(h[i]);
  mv(W2, h, d, m, y, false);
}

BRAID_DISPATCH void net_apply_backward(const MemoryNet& net, const float* M, const float* x, const float* dy,
                                       float* dM, float* dx, float* tmp) {
  const int64_t d = net.d, m = net.m, depth = net.depth;
  if (depth == 1) {
    outer(dy, x, d, d, 1.0f, dM);
    mtv(M, dy, d, d, dx);
    return;
  }
  const float *W1 = M, *W2 = M + m * d;
  float *a = tmp, *h = tmp + m, *da = tmp + 2 * m, *sg = tmp + 3 * m;
  mv(W1, x, m, d, a, false);
  silu_with_sigmoid(a, m, h, sg);
  outer(dy, h, d, m, 1.0f, dM + m * d);
  std::fill(da, da + m, 0.0f);
  mtv(W2, dy, d, m, da);  // dh
  for (int64_t i = 0; i < m; ++i) da[i] *= silu_d1(a[i], sg[i]);
  outer(da, x, m, d, 1.0f, dM);
  mtv(W1, da, m, d, dx);
}

BRAID_DISPATCH void net_grad(const MemoryNet& net, const float* M, const float* k, const float* v,
                             float scale, float* U, float* tmp) {
  const int64_t d = net.d, m = net.m, depth = net.depth;
  if (depth == 1) {
    float* e = tmp;
    mv(M, k, d, d, e, false);
    for (int64_t i = 0; i < d; ++i) e[i] -= v[i];
    outer(e, k, d, d, 2.0f * scale, U);
    return;
  }
  const float *W1 = M, *W2 = M + m * d;
  float *a = tmp, *h = tmp + m, *g = tmp + 2 * m, *sg = tmp + 3 * m, *e = tmp + 4 * m;
  mv(W1, k, m, d, a, false);
  silu_with_sigmoid(a, m, h, sg);
  mv(W2, h, d, m, e, false);
  for (int64_t i = 0; i < d; ++i) e[i] = 2.0f * (e[i] - v[i]);  // dl/do
  outer(e, h, d, m, scale, U + m * d);
  std::fill(g, g + m, 0.0f);
  mtv(W2, e, d, m, g);
  for (int64_t i = 0; i < m; ++i) g[i] *= silu_d1(a[i], sg[i]);
  outer(g, k, m, d, scale, U);
}

BRAID_DISPATCH void net_grad_backward(const MemoryNet& net, const float* M, const float* k, const float* v,
                                      const float* dU, float* dM, float* dk, float* dv, float* tmp) {
  const int64_t d = net.d, m = net.m, depth = net.depth;
  if (depth == 1) {
    // u = 2 e k^T with e = W k - v.
    float *e = tmp, *de = tmp + d;
    mv(M, k, d, d, e, false);
    for (int64_t i = 0; i < d; ++i) e[i] -= v[i];
    mv(dU, k, d, d, de, false);
    for (int64_t i = 0; i < d; ++i) de[i] *= 2.0f;
    for (int64_t r = 0; r < d; ++r)  // dk += 2 dU^T e
      for (int64_t c = 0; c < d; ++c) dk[c] += 2.0f * dU[r * d + c] * e[r];
    outer(de, k, d, d, 1.0f, dM);
    mtv(M, de, d, d, dk);
    for (int64_t i = 0; i < d; ++i) dv[i] -= de[i];
    return;
  }
  // a = W1 k, h = silu(a), e = W2 h - v, r = W2^T (2e), g = silu'(a) * r;
  // u1 = g k^T, u2 = 2 e h^T.
  const float *W1 = M, *W2 = M + m * d;
  const float *dU1 = dU, *dU2 = dU + m * d;
  float *dW1 = dM, *dW2 = dM + m * d;
  float *a = tmp, *h = a + m, *r = h + m, *dg = r + m, *da = dg + m, *dh = da + m;
  float *sg = dh + m, *e = sg + m, *de = e + d;
  mv(W1, k, m, d, a, false);
  silu_with_sigmoid(a, m, h, sg);
  mv(W2, h, d, m, e, false);
  for (int64_t i = 0; i < d; ++i) e[i] -= v[i];
  std::fill(r, r + m, 0.0f);
  mtv(W2, e, d, m, r);
  for (int64_t i = 0; i < m; ++i) r[i] *= 2.0f;
  // Through u1 = g k^T.
  mv(dU1, k, m, d, dg, false);
  for (int64_t i = 0; i < m; ++i) {
    const float g = silu_d1(a[i], sg[i]) * r[i];
    for (int64_t c = 0; c < d; ++c) dk[c] += dU1[i * d + c] * g;
  }
  for (int64_t i = 0; i < m; ++i) {
    const float s = sg[i];
    da[i] = silu_d2(a[i], s) * r[i] * dg[i];
    dg[i] *= silu_d1(a[i], s);  // now dr
  }
  // r = W2^T (2 e): dW2 += 2 e dr^T, de = 2 W2 dr.
  outer(e, dg, d, m, 2.0f, dW2);
  mv(W2, dg, d, m, de, false);
  for (int64_t i = 0; i < d; ++i) de[i] *= 2.0f;
  // Through u2 = 2 e h^T: de += 2 dU2 h, dh = 2 dU2^T e.
  ops::matvec(dU2, h, d, m, 2.0f, true, de);
  std::fill(dh, dh + m, 0.0f);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < m; ++j) dh[j] += 2.0f * dU2[i * m + j] * e[i];
  // e = W2 h - v.
  outer(de, h, d, m, 1.0f, dW2);
  mtv(W2, de, d, m, dh);
  for (int64_t i = 0; i < d; ++i) dv[i] -= de[i];
  // h = silu(a), a = W1 k.
  for (int64_t i = 0; i < m; ++i) da[i] += silu_d1(a[i], sg[i]) * dh[i];
  outer(da, k, m, d, 1.0f, dW1);
  mtv(W1, da, m, d, dk);
}

}  // namespace

// The members forward to the dispatched free functions: clang does not resolve
// target_clones on member functions called from other files.
void MemoryNet::apply(const float* M, const float* x, float* y, float* tmp) const {
  net_apply(*this, M, x, y, tmp);
}

void MemoryNet::apply_backward(const float* M, const float* x, const float* dy, float* dM, float* dx,
                               float* tmp) const {
  net_apply_backward(*this, M, x, dy, dM, dx, tmp);
}

void MemoryNet::grad(const float* M, const float* k, const float* v, float scale, float* U,
                     float* tmp) const {
  net_grad(*this, M, k, v, scale, U, tmp);
}

void MemoryNet::grad_backward(const float* M, const float* k, const float* v, const float* dU, float* dM,
                              float* dk, float* dv, float* tmp) const {
  net_grad_backward(*this, M, k, v, dU, dM, dk, dv, tmp);
}

BRAID_DISPATCH float titans_update(const MemoryNet& net, const float* M0, const float* const* keys,
                                   const float* const* values, int64_t n, float alpha, float eta, float theta,
                                   float max_norm, float* M, float* S, float* U, float* tmp) {
  const int64_t P = net.size();
  std::fill(U, U + P, 0.0f);
  for (int64_t j = 0; j < n; ++j) net.grad(M0, keys[j], values[j], 1.0f, U, tmp);
  const float norm = float(std::sqrt(dot_f64(U, U, P)));
  if (max_norm > 0 && norm > max_norm) {
    const float r = max_norm / norm;
    for (int64_t i = 0; i < P; ++i) U[i] *= r;
  }
  const float keep = 1.0f - alpha;
  for (int64_t i = 0; i < P; ++i) {
    S[i] = eta * S[i] - theta * U[i];
    M[i] = keep * M[i] + S[i];
  }
  return norm;
}

BRAID_DISPATCH TitansGateGrads titans_update_backward(int64_t P, float alpha, float eta, float theta,
                                                      const float* Mprev, const float* Sprev, const float* U,
                                                      float* dM, float* dS, float* dU) {
  TitansGateGrads g;
  g.alpha = -dot_f64(dM, Mprev, P);
  const float keep = 1.0f - alpha;
  for (int64_t i = 0; i < P; ++i) {
    dS[i] += dM[i];
    dM[i] *= keep;
  }
  g.eta = dot_f64(dS, Sprev, P), g.theta = -dot_f64(dS, U, P);
  for (int64_t i = 0; i < P; ++i) {
    dU[i] = -theta * dS[i];
    dS[i] *= eta;
  }
  return g;
}

BRAID_DISPATCH void titans_clip_backward(const float* U, int64_t P, float max_norm, float raw_norm,
                                         float* dU) {
  if (!(max_norm > 0 && raw_norm > max_norm)) return;
  // U = c x / |x|: dx = (c / |x|) (dU - w (w . dU)) with w = x / |x| = U / c.
  const float r = max_norm / raw_norm, wd = float(dot_f64(U, dU, P) / max_norm);
  for (int64_t i = 0; i < P; ++i) dU[i] = r * (dU[i] - U[i] / max_norm * wd);
}

TitansState::TitansState(int64_t heads, int64_t mem_size, int64_t window, int64_t d)
    : M(static_cast<size_t>(heads * mem_size), 0.0f),
      M0(M.size(), 0.0f),
      S(M.size(), 0.0f),
      win_k(static_cast<size_t>((window - 1) * heads * d), 0.0f),
      win_v(win_k.size(), 0.0f) {}

size_t TitansState::bytes() const { return (3 * M.size() + 2 * win_k.size()) * sizeof(float); }

TitansMixer::TitansMixer(const TitansSpec& spec, int64_t d_model, TitansWeights w)
    : s_(spec), d_(d_model), w_(w) {
  net_.d = s_.head_dim;
  net_.m = s_.depth == 2 ? s_.hidden : 0;
  net_.depth = s_.depth;
}

std::unique_ptr<State> TitansMixer::make_state() const {
  auto st = std::make_unique<TitansState>(s_.n_heads, net_.size(), s_.window, s_.head_dim);
  std::memcpy(st->M.data(), w_.memory, st->M.size() * sizeof(float));
  return st;
}

size_t TitansMixer::fixed_state_bytes() const {
  return size_t(3 * s_.n_heads * net_.size() + 2 * (s_.window - 1) * s_.n_heads * s_.head_dim) *
         sizeof(float);
}

void TitansMixer::project(const float* x, int64_t T, Inputs& in) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d;
  auto sized = [](std::vector<float>& v, int64_t n) { v.assign(static_cast<size_t>(n), 0.0f); };
  sized(in.q_raw, T * HD), sized(in.k_raw, T * HD), sized(in.v, T * HD), sized(in.gates_raw, T * 3 * H);
  const ops::Projection p[4] = {{w_.q, HD, nullptr, in.q_raw.data()},
                                {w_.k, HD, nullptr, in.k_raw.data()},
                                {w_.v, HD, nullptr, in.v.data()},
                                {w_.gates, 3 * H, w_.gates_b, in.gates_raw.data()}};
  ops::linear_multi(x, T, d_, p, 4);
  in.q = in.q_raw, in.k = in.k_raw;
  for (std::vector<float>* z : {&in.q, &in.k})
    for (int64_t r = 0; r < T * H; ++r) l2_normalize(z->data() + r * d, d);
  in.gates.resize(in.gates_raw.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < 3 * H; ++j) {
      const float s = ops::sigmoid(in.gates_raw[size_t(t * 3 * H + j)]);
      in.gates[size_t(t * 3 * H + j)] = j < 2 * H ? s : float(s_.max_lr) * s;
    }
}

void TitansMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<TitansState*>(&state);
  check(st != nullptr, "titans mixer was given a state of another mixer");
  if (T == 0) return;
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size(), W = s_.window;
  Inputs in;
  project(x, T, in);
  float* o = ws.get(Workspace::kAttnOut, size_t(T * HD));
  const int64_t pos = st->pos;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> U(static_cast<size_t>(P)), tmp(static_cast<size_t>(net_.scratch()));
    std::vector<const float*> keys(static_cast<size_t>(W)), values(static_cast<size_t>(W));
    float *M = &st->M[size_t(h * P)], *M0 = &st->M0[size_t(h * P)], *S = &st->S[size_t(h * P)];
    for (int64_t t = 0; t < T; ++t) {
      const int64_t p = pos + t;
      if (p % s_.chunk == 0) std::memcpy(M0, M, size_t(P) * sizeof(float));
      int64_t n = 0;
      for (int64_t j = std::max<int64_t>(0, p - W + 1); j <= p; ++j, ++n) {
        if (j >= pos) {
          keys[size_t(n)] = &in.k[size_t((j - pos) * HD + h * d)];
          values[size_t(n)] = &in.v[size_t((j - pos) * HD + h * d)];
        } else {  // from the window kept in the state
          const int64_t row = (W - 1) - (pos - j);
          keys[size_t(n)] = &st->win_k[size_t((row * H + h) * d)];
          values[size_t(n)] = &st->win_v[size_t((row * H + h) * d)];
        }
      }
      const float* gt = &in.gates[size_t(t * 3 * H)];
      titans_update(net_, M0, keys.data(), values.data(), n, gt[h], gt[H + h], gt[2 * H + h],
                    float(s_.max_grad_norm), M, S, U.data(), tmp.data());
      net_.apply(M, &in.q[size_t(t * HD + h * d)], o + t * HD + h * d, tmp.data());
    }
  }
  // Keep the last window - 1 keys and values.
  for (int64_t row = 0; row < W - 1; ++row) {
    const int64_t j = pos + T - (W - 1) + row;  // absolute position of this row
    if (j < 0) continue;
    float *dk = &st->win_k[size_t(row * HD)], *dv = &st->win_v[size_t(row * HD)];
    if (j >= pos) {
      std::memcpy(dk, &in.k[size_t((j - pos) * HD)], size_t(HD) * sizeof(float));
      std::memcpy(dv, &in.v[size_t((j - pos) * HD)], size_t(HD) * sizeof(float));
    } else {  // still in the old window: rows shift towards the front
      const int64_t old = (W - 1) - (pos - j);
      std::memmove(dk, &st->win_k[size_t(old * HD)], size_t(HD) * sizeof(float));
      std::memmove(dv, &st->win_v[size_t(old * HD)], size_t(HD) * sizeof(float));
    }
  }
  st->pos += T;
  float* on = ws.get(Workspace::kGate, size_t(T * HD));
  ops::rmsnorm(o, w_.norm, float(s_.norm_eps), T * H, d, on);
  ops::linear(on, T, HD, w_.out, d_, nullptr, y);
}

}  // namespace braid
