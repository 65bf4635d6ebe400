// Backward of the Gated DeltaNet mixer for a sequence that starts from an empty state.
// The recurrence per value head, with a = exp(g_t), b = beta_t and unit-norm k:
//   S' = a S_{t-1};  e = v - S'^T k;  S_t = S' + b k e^T;  o_t = S_t^T q
// is differentiated token by token in reverse. States are kept only at chunk starts and
// recomputed inside a chunk, so memory is O(T / chunk) states per head.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/gated_deltanet.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

// Backward of y = x / sqrt(|x|^2 + 1e-6) * scale: dx = scale inv (dy - xhat (xhat . dy)),
// xhat = x inv.
void l2_normalize_backward(const float* x, const float* dy, int64_t n, float scale, float* dx) {
  double ss = 0, xd = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i], xd += double(x[i]) * dy[i];
  const double inv = 1.0 / std::sqrt(ss + 1e-6);
  for (int64_t i = 0; i < n; ++i) dx[i] = float(scale * inv * (dy[i] - x[i] * xd * inv * inv));
}

}  // namespace

void GatedDeltaNetMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t NK = s_.n_k_heads, NV = s_.n_v_heads, DK = s_.head_k_dim, DV = s_.head_v_dim;
  const int64_t R = NV / NK, KD = s_.key_dim(), VD = s_.value_dim(), CD = s_.conv_dim();
  const int64_t E = 2 * KD + 2 * VD, K = s_.d_conv, C = s_.chunk, SZ = DK * DV;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  // Recompute the forward up to the recurrence's inputs.
  Vec proj = vec(T * E), ba = vec(T * 2 * NV), mixed = vec(T * CD), z = vec(T * VD), beta = vec(T * NV);
  Vec g = vec(T * NV), u = vec(T * CD), window = vec((K - 1) * CD);
  const ops::Projection p[2] = {{w_.in_proj_qkvz, E, nullptr, proj.data()},
                                {w_.in_proj_ba, 2 * NV, nullptr, ba.data()}};
  ops::linear_multi(x, T, d_, p, 2);
  unpack(proj.data(), ba.data(), T, mixed.data(), z.data(), beta.data(), g.data());
  ops::causal_conv1d(mixed.data(), CD, T, CD, w_.conv_w, nullptr, K, false, window.data(), u.data());
  Vec act(u), qkv;  // silu(u); then q, k normalised
  ops::silu_inplace(act.data(), T * CD);
  qkv = act;
  const float qscale = float(1.0 / std::sqrt(double(DK)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      gdn_l2_normalize(&qkv[size_t(t * CD + kh * DK)], DK, qscale);
      gdn_l2_normalize(&qkv[size_t(t * CD + KD + kh * DK)], DK, 1.0f);
    }
  const int64_t nchunks = (T + C - 1) / C;
  // Forward recurrence: outputs o and the state at each chunk start.
  Vec o = vec(T * VD), ck = vec(NV * nchunks * SZ);
  auto qk = [&](int64_t t, int64_t h, bool key) {
    return &qkv[size_t(t * CD + (key ? KD : 0) + (h / R) * DK)];
  };
  auto vv = [&](int64_t t, int64_t h) { return &qkv[size_t(t * CD + 2 * KD + h * DV)]; };
  // One step S <- S' + k (b e)^T from S (in place); writes the error e = v - S'^T k.
  auto step = [&](int64_t t, int64_t h, float* S, float* e) {
    const float a = std::exp(g[size_t(t * NV + h)]), b = beta[size_t(t * NV + h)];
    const float* k = qk(t, h, true);
    const float* v = vv(t, h);
    for (int64_t j = 0; j < DV; ++j) e[j] = 0.0f;
    for (int64_t i = 0; i < DK; ++i)
      for (int64_t j = 0; j < DV; ++j) e[j] += S[i * DV + j] * k[i];
    for (int64_t j = 0; j < DV; ++j) e[j] = v[j] - a * e[j];
    for (int64_t i = 0; i < DK; ++i)
      for (int64_t j = 0; j < DV; ++j) S[i * DV + j] = a * S[i * DV + j] + k[i] * b * e[j];
  };
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < NV; ++h) {
    Vec S = vec(SZ), e = vec(DV);
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) std::memcpy(&ck[size_t((h * nchunks + t / C) * SZ)], S.data(), size_t(SZ) * 4);
      step(t, h, S.data(), e.data());
      const float* q = qk(t, h, false);
      float* ot = &o[size_t(t * VD + h * DV)];
      for (int64_t i = 0; i < DK; ++i)
        for (int64_t j = 0; j < DV; ++j) ot[j] += S[size_t(i * DV + j)] * q[i];
    }
  }
  // Output: rmsnorm per head, gate silu(z), out_proj.
  Vec normed = vec(T * VD), gated = vec(T * VD), dgated = vec(T * VD);
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * NV, DV, normed.data());
  for (int64_t i = 0; i < T * VD; ++i)
    gated[size_t(i)] = normed[size_t(i)] * z[size_t(i)] * ops::sigmoid(z[size_t(i)]);
  ops::linear_backward(gated.data(), T, VD, w_.out_proj, d_, dy, dgated.data(), false, gs.of(w_.out_proj),
                       nullptr);
  Vec dz = vec(T * VD), dnormed = vec(T * VD), dout = vec(T * VD);
  for (int64_t i = 0; i < T * VD; ++i) {
    const float zi = z[size_t(i)], sg = ops::sigmoid(zi);
    dnormed[size_t(i)] = dgated[size_t(i)] * zi * sg;
    dz[size_t(i)] = dgated[size_t(i)] * normed[size_t(i)] * sg * (1.0f + zi * (1.0f - sg));
  }
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T * NV, DV, dnormed.data(), dout.data(), false,
                        gs.of(w_.norm));
  // Reverse sweep per value head. q / k are shared by the R value heads of a key head, so
  // their gradients are written per value head and summed after.
  Vec dqh = vec(NV * T * DK), dkh = vec(NV * T * DK), dqkv = vec(T * CD), dbeta = vec(T * NV),
      dg = vec(T * NV);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < NV; ++h) {
    Vec Sall = vec((C + 1) * SZ), errs = vec(C * DV), dS = vec(SZ);
    Vec ddelta = vec(DV), dpred = vec(DV);
    for (int64_t c = nchunks - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      // Sall[j] = S_{t0 + j - 1}: the state before token t0 + j.
      replay_chunk(&ck[size_t((h * nchunks + c) * SZ)], SZ, n, Sall.data(),
                   [&](int64_t j, float* S) { step(t0 + j, h, S, &errs[size_t(j * DV)]); });
      for (int64_t j = n - 1; j >= 0; --j) {
        const int64_t t = t0 + j;
        const float a = std::exp(g[size_t(t * NV + h)]), b = beta[size_t(t * NV + h)];
        const float* q = qk(t, h, false);
        const float* k = qk(t, h, true);
        const float* Sprev = &Sall[size_t(j * SZ)];
        const float* St = &Sall[size_t((j + 1) * SZ)];
        const float* err = &errs[size_t(j * DV)];  // delta = b err
        const float* dot = &dout[size_t(t * VD + h * DV)];
        float* dq = &dqh[size_t((h * T + t) * DK)];
        float* dk = &dkh[size_t((h * T + t) * DK)];
        float* dv = &dqkv[size_t(t * CD + 2 * KD + h * DV)];
        // o = S_t^T q: dq = S_t do, dS += q do^T. Then through S_t = S' + k delta^T, delta = b e.
        for (int64_t j2 = 0; j2 < DV; ++j2) ddelta[size_t(j2)] = 0.0f;
        for (int64_t i = 0; i < DK; ++i) {
          float acc = 0.0f, acck = 0.0f;
          float* dSi = &dS[size_t(i * DV)];
          const float* Sti = St + i * DV;
          // The dot products are reductions: let them vectorise (summed in lanes).
#pragma omp simd reduction(+ : acc, acck)
          for (int64_t j2 = 0; j2 < DV; ++j2) {
            acc += Sti[j2] * dot[j2];
            dSi[j2] += q[i] * dot[j2];
            ddelta[size_t(j2)] += dSi[j2] * k[i];
            acck += dSi[j2] * b * err[j2];
          }
          dq[i] = acc;
          dk[i] = acck;
        }
        // delta = b e, e = v - S'^T k with S' = a S_{t-1}.
        double db = 0;
        for (int64_t j2 = 0; j2 < DV; ++j2) {
          db += double(ddelta[size_t(j2)]) * err[j2];
          dv[j2] = b * ddelta[size_t(j2)];
          dpred[size_t(j2)] = -b * ddelta[size_t(j2)];
        }
        double da = 0;
        for (int64_t i = 0; i < DK; ++i) {
          const float* Sp = Sprev + i * DV;
          float* dSi = &dS[size_t(i * DV)];
          float acck = 0.0f;
#pragma omp simd reduction(+ : acck, da)
          for (int64_t j2 = 0; j2 < DV; ++j2) {
            const float dspi = dSi[j2] + k[i] * dpred[size_t(j2)];  // dS'
            acck += a * Sp[j2] * dpred[size_t(j2)];
            da += double(dspi) * Sp[j2];
            dSi[j2] = a * dspi;  // dS_{t-1}
          }
          dk[i] += acck;
        }
        dbeta[size_t(t * NV + h)] = float(db);
        dg[size_t(t * NV + h)] = float(da) * a;
      }
    }
  }
  // q / k gradients summed over the value heads of each key head, then back through the
  // l2 normalisation (on silu(u)), the SiLU and the convolution.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < NV; ++h) {
      float* dq = &dqkv[size_t(t * CD + (h / R) * DK)];
      float* dk = &dqkv[size_t(t * CD + KD + (h / R) * DK)];
      const float* sq = &dqh[size_t((h * T + t) * DK)];
      const float* sk = &dkh[size_t((h * T + t) * DK)];
      for (int64_t i = 0; i < DK; ++i) dq[i] += sq[i], dk[i] += sk[i];
    }
  Vec tmp = vec(DK);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh)
      for (int key = 0; key < 2; ++key) {
        const int64_t off = t * CD + (key ? KD : 0) + kh * DK;
        l2_normalize_backward(&act[size_t(off)], &dqkv[size_t(off)], DK, key ? 1.0f : qscale, tmp.data());
        std::memcpy(&dqkv[size_t(off)], tmp.data(), size_t(DK) * 4);
      }
  Vec du = vec(T * CD), dmixed = vec(T * CD);
  ops::silu_backward(u.data(), dqkv.data(), T * CD, du.data());
  ops::causal_conv1d_backward(mixed.data(), CD, T, CD, w_.conv_w, K, du.data(), dmixed.data(),
                              gs.of(w_.conv_w), nullptr);
  // Back into the projections' interleaved layout; beta = sigmoid(b), g = A softplus(alpha + dt_bias).
  Vec dproj = vec(T * E), dba = vec(T * 2 * NV);
  float* dA_log = gs.of(w_.A_log);
  float* ddt = gs.of(w_.dt_bias);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t kh = 0; kh < NK; ++kh) {
      float* dst = &dproj[size_t(t * E + kh * (2 * DK + 2 * R * DV))];
      const float* row = &dmixed[size_t(t * CD)];
      std::memcpy(dst, row + kh * DK, size_t(DK) * 4);
      std::memcpy(dst + DK, row + KD + kh * DK, size_t(DK) * 4);
      std::memcpy(dst + 2 * DK, row + 2 * KD + kh * R * DV, size_t(R * DV) * 4);
      std::memcpy(dst + 2 * DK + R * DV, &dz[size_t(t * VD + kh * R * DV)], size_t(R * DV) * 4);
      const float* b = &ba[size_t(t * 2 * NV + kh * 2 * R)];
      float* db = &dba[size_t(t * 2 * NV + kh * 2 * R)];
      for (int64_t j = 0; j < R; ++j) {
        const int64_t h = kh * R + j;
        const float bt = beta[size_t(t * NV + h)], dgt = dg[size_t(t * NV + h)];
        db[j] = dbeta[size_t(t * NV + h)] * bt * (1.0f - bt);
        const float pre = b[R + j] + w_.dt_bias[h];
        const float dpre = dgt * A(h) * (pre > 20.0f ? 1.0f : ops::sigmoid(pre));
        db[R + j] = dpre;
        if (ddt) ddt[h] += dpre;
        if (dA_log) dA_log[h] += dgt * g[size_t(t * NV + h)];  // dg / dA_log = g
      }
    }
  ops::linear_backward(x, T, d_, w_.in_proj_qkvz, E, dproj.data(), dx, false, gs.of(w_.in_proj_qkvz),
                       nullptr);
  ops::linear_backward(x, T, d_, w_.in_proj_ba, 2 * NV, dba.data(), dx, true, gs.of(w_.in_proj_ba), nullptr);
}

}  // namespace braid
