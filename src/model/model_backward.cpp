// Model::loss_and_grad and regression_loss_and_grad: the training forward and backward of
// one sequence, sharing train_pass between the two kinds of input and loss. The forward
// keeps each block's input and its mid-block residual stream (2 x T x d_model per
// block); the backward recomputes each block's internals from those (activation
// recomputation), so memory is bounded by one block's activations plus the logits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "model/model.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

LossSum Model::loss_and_grad(const int32_t* tokens, const int32_t* targets, int64_t n_tokens,
                             float grad_scale, GradSink& g, int64_t loops) const {
  check(spec_.input_dim == 0, "this model reads vectors of ", spec_.input_dim,
        " values, not token ids: train it with regression_loss_and_grad");
  const int64_t N = spec_.persistent_tokens, T = N + n_tokens, D = spec_.d_model, V = spec_.vocab_size;
  if (n_tokens == 0) return {};
  for (int64_t t = 0; t < n_tokens; ++t) {
    check(tokens[t] >= 0 && tokens[t] < V, "token id ", tokens[t], " at position ", t,
          " is outside the vocabulary [0, ", V, ")");
    check(targets[t] >= -1 && targets[t] < V, "target id ", targets[t], " at position ", t,
          " is outside the vocabulary [0, ", V, ") (-1 means no target)");
  }
  if (spec_.segment.enabled()) return segment_loss_and_grad(tokens, targets, n_tokens, grad_scale, g, loops);
  std::vector<float> emb(static_cast<size_t>(T * D));
  embed_tokens(tokens, n_tokens, emb.data() + N * D);
  std::vector<int64_t> rows;  // positions (persistent rows included) with a target
  std::vector<int32_t> tgt;
  for (int64_t t = 0; t < n_tokens; ++t)
    if (targets[t] >= 0) rows.push_back(N + t), tgt.push_back(targets[t]);
  auto head = [&](const float* x, int64_t A, float* dx) {
    return cross_entropy_head(x, A, tgt.data(), grad_scale, dx, g);
  };
  const LossSum loss = train_pass(emb, rows, head, g, loops);
  if (float* de = g.of(embed_))
    for (int64_t t = 0; t < n_tokens; ++t) {
      float* row = de + int64_t(tokens[t]) * D;
      const float* d = &emb[size_t((N + t) * D)];
      for (int64_t c = 0; c < D; ++c) row[c] += d[c];
    }
  return loss;
}

LossSum Model::cross_entropy_head(const float* x, int64_t A, const int32_t* tgt, float grad_scale, float* dx,
                                  GradSink& g) const {
  const int64_t D = spec_.d_model, V = spec_.vocab_size;
  const float lsc = float(spec_.logits_scaling), cap = float(spec_.logits_soft_cap);
  std::vector<float> logits(static_cast<size_t>(A * V));
  ops::linear(x, A, D, head_, V, nullptr, logits.data());
  if (lsc != 1.0f)
    for (float& v : logits) v /= lsc;
  std::vector<float> th;  // tanh of the capped logits, for the cap's backward
  if (cap > 0) {
    th.resize(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) th[i] = std::tanh(logits[i] / cap), logits[i] = th[i] * cap;
  }
  const LossSum loss{ops::cross_entropy_fused(logits.data(), tgt, A, V, grad_scale), A};
  if (cap > 0)
    for (size_t i = 0; i < logits.size(); ++i) logits[i] *= 1.0f - th[i] * th[i];
  if (lsc != 1.0f)
    for (float& v : logits) v /= lsc;
  ops::linear_backward(x, A, D, head_, V, logits.data(), dx, false, g.of(head_), nullptr);
  return loss;
}

LossSum Model::regression_loss_and_grad(const float* x, const float* y, int64_t n_rows, float grad_scale,
                                        GradSink& g, int64_t loops) const {
  const int64_t I = spec_.input_dim;
  check(I > 0, "this model reads token ids, not vectors: train it with loss_and_grad");
  const int64_t N = spec_.persistent_tokens, T = N + n_rows, D = spec_.d_model, O = spec_.vocab_size;
  if (n_rows == 0) return {};
  for (int64_t i = 0; i < n_rows * I; ++i)
    check(std::isfinite(x[i]), "input value ", x[i], " at position ", i / I, " is not finite");
  std::vector<int64_t> rows;  // positions (persistent rows included) with a target
  std::vector<float> tgt;
  for (int64_t t = 0; t < n_rows; ++t) {
    const float* yt = y + t * O;
    const int64_t nan = std::count_if(yt, yt + O, [](float v) { return std::isnan(v); });
    check(nan == 0 || nan == O, "target at position ", t,
          " is partly NaN: a row is all NaN (no target) or none");
    for (int64_t j = 0; j < O; ++j)
      check(nan == O || std::isfinite(yt[j]), "target value ", yt[j], " at position ", t, " is not finite");
    if (nan == 0) rows.push_back(N + t), tgt.insert(tgt.end(), yt, yt + O);
  }
  std::vector<float> emb(static_cast<size_t>(T * D));
  ops::linear(x, n_rows, I, read_in_, D, read_in_b_, emb.data() + N * D);
  // Squared error of the head's outputs on the target rows.
  auto head = [&](const float* xs, int64_t A, float* dx) {
    std::vector<float> out(static_cast<size_t>(A * O));
    ops::linear(xs, A, D, head_, O, nullptr, out.data());
    LossSum loss{0, A * O};
    for (size_t i = 0; i < out.size(); ++i) {
      const double e = double(out[i]) - double(tgt[i]);
      loss.sum += e * e;
      out[i] = float(2.0 * e) * grad_scale;  // d(sum)/d(out), scaled
    }
    ops::linear_backward(xs, A, D, head_, O, out.data(), dx, false, g.of(head_), nullptr);
    return loss;
  };
  const LossSum loss = train_pass(emb, rows, head, g, loops);
  ops::linear_backward(x, n_rows, I, read_in_, D, emb.data() + N * D, nullptr, false, g.of(read_in_),
                       g.of(read_in_b_));
  return loss;
}

LossSum Model::train_pass(std::vector<float>& emb, const std::vector<int64_t>& rows, const HeadLoss& head,
                          GradSink& g, int64_t loops) const {
  const std::vector<LayerStep> steps = schedule(loops);
  if (loops == 0) loops = spec_.loop.enabled() ? spec_.loop.loops : 1;
  const int64_t N = spec_.persistent_tokens, D = spec_.d_model, L = int64_t(steps.size());
  const int64_t TD = int64_t(emb.size()), T = TD / D;
  if (rows.empty()) {  // nothing to learn from: every gradient is zero
    std::fill(emb.begin(), emb.end(), 0.0f);
    return {};
  }
  if (N > 0) std::memcpy(emb.data(), persistent_, size_t(N * D) * sizeof(float));
  Workspace ws;
  // Forward, keeping the residual stream at block entry (in) and after the mixer (mid).
  std::vector<float> h(static_cast<size_t>(TD)), n(static_cast<size_t>(TD)), tmp(static_cast<size_t>(TD));
  // Per step (block application): the stream at its entry and after its token mixer.
  std::vector<std::vector<float>> in(static_cast<size_t>(L)), mid(static_cast<size_t>(L));
  std::vector<float> loop_in, dloop_in;  // the looped core's input and its gradient
  if (spec_.loop.enabled()) loop_in.resize(size_t(TD)), dloop_in.assign(size_t(TD), 0.0f);
  auto loop_start = [&](size_t s) {
    return steps[s].iter >= 0 && int64_t(steps[s].block) == spec_.loop.begin;
  };
  if (spec_.embedding_multiplier != 1.0)
    for (float& v : emb) v *= float(spec_.embedding_multiplier);
  if (embed_norm_)
    norm(emb.data(), embed_norm_, embed_norm_b_, T, h.data());
  else
    h = emb;
  const float rm = float(spec_.residual_multiplier);
  auto residual = [&](const float* v, bool from_norm, double alpha, double beta) {
    add_residual(h.data(), n.data(), v, TD, from_norm, alpha, beta);
  };
  auto channel_forward = [&](size_t i, const float* x, float* y) {
    const BlockSpec& b = spec_.blocks[i];
    if (b.has_cmix) {
      std::unique_ptr<State> st = cmixers_[i]->make_state();
      cmixers_[i]->forward(x, T, *st, y, ws);
    } else if (b.has_moe)
      moe_forward(b.moe, blocks_[i].moe, x, T, D, y, ws);
    else
      ffn_forward(b.mlp, x, T, D, blocks_[i].mlp, y, ws);
  };
  for (size_t s = 0; s < size_t(L); ++s) {
    const size_t i = steps[s].block;
    const BlockSpec& b = spec_.blocks[i];
    const BlockWeights& bw = blocks_[i];
    if (loop_start(s)) loop_entry(h.data(), loop_in.data(), steps[s].iter, loops, T);
    in[s] = h;
    if (mixers_[i]) {
      norm(h.data(), bw.norm1, bw.norm1_b, T, n.data());
      std::unique_ptr<State> st = mixers_[i]->make_state();
      mixers_[i]->forward(n.data(), T, *st, tmp.data(), ws);
      residual(tmp.data(), b.normed_residual, b.mixer_alpha, b.mixer_beta);
    }
    mid[s] = h;
    if (b.has_mlp || b.has_moe || b.has_cmix) {
      norm(h.data(), bw.norm2, bw.norm2_b, T, n.data());
      channel_forward(i, n.data(), tmp.data());
      residual(tmp.data(), b.normed_residual, b.channel_alpha, b.channel_beta);
    }
    if (b.post_scale != 1.0)
      for (float& v : h) v *= float(b.post_scale);
  }
  norm(h.data(), final_norm_, final_norm_b_, T, n.data(), spec_.final_norm_eps);
  // The head runs only on the rows with a target (a task's answers may be a few of T): they
  // are gathered into a compact [A, D] matrix, and their gradients scattered back.
  const int64_t A = int64_t(rows.size());
  const bool compact = A < T;
  std::vector<float> dh(static_cast<size_t>(TD)), dn(static_cast<size_t>(TD)), dv(static_cast<size_t>(TD));
  LossSum loss;
  if (compact) {
    std::vector<float> na(static_cast<size_t>(A * D)), dna(static_cast<size_t>(A * D));
    for (int64_t r = 0; r < A; ++r) std::copy_n(n.data() + rows[size_t(r)] * D, D, na.data() + r * D);
    loss = head(na.data(), A, dna.data());
    for (int64_t r = 0; r < A; ++r) std::copy_n(dna.data() + r * D, D, dn.data() + rows[size_t(r)] * D);
  } else {
    loss = head(n.data(), A, dn.data());
  }
  norm_backward(h.data(), final_norm_, final_norm_b_, T, dn.data(), dh.data(), false, g,
                spec_.final_norm_eps);
  // Through h_out = base * alpha + v * beta * rm, where v = f(norm(x)) and base is x or
  // norm(x): dh becomes dL/dx.
  auto residual_backward = [&](const float* x, const float* normw, const float* normb, bool from_norm,
                               double alpha, double beta, auto&& f_backward) {
    const float a = float(alpha), bsc = float(beta) * rm;
    norm(x, normw, normb, T, n.data());
    for (int64_t j = 0; j < TD; ++j) dv[size_t(j)] = dh[size_t(j)] * bsc;
    f_backward(n.data(), dv.data(), dn.data());  // dn = dL/d(norm(x)) through f
    if (from_norm) {
      for (int64_t j = 0; j < TD; ++j) dn[size_t(j)] += dh[size_t(j)] * a;
      norm_backward(x, normw, normb, T, dn.data(), dh.data(), false, g);
    } else {
      if (a != 1.0f)
        for (float& v : dh) v *= a;
      norm_backward(x, normw, normb, T, dn.data(), dh.data(), true, g);
    }
  };
  for (int64_t ss = L - 1; ss >= 0; --ss) {
    const size_t s = size_t(ss), i = steps[s].block;
    const BlockSpec& b = spec_.blocks[i];
    const BlockWeights& bw = blocks_[i];
    if (b.post_scale != 1.0)
      for (float& v : dh) v *= float(b.post_scale);
    if (b.has_mlp || b.has_moe || b.has_cmix)
      residual_backward(mid[s].data(), bw.norm2, bw.norm2_b, b.normed_residual, b.channel_alpha,
                        b.channel_beta, [&](const float* x, const float* dy, float* dx) {
                          if (b.has_cmix)
                            cmixers_[i]->backward(x, T, dy, dx, g);
                          else if (b.has_moe)
                            moe_backward(b.moe, bw.moe, x, T, D, dy, dx, g);
                          else
                            ffn_backward(b.mlp, x, T, D, bw.mlp, dy, dx, false, g);
                        });
    std::vector<float>().swap(mid[s]);
    if (mixers_[i])
      residual_backward(
          in[s].data(), bw.norm1, bw.norm1_b, b.normed_residual, b.mixer_alpha, b.mixer_beta,
          [&](const float* x, const float* dy, float* dx) { mixers_[i]->backward(x, T, dy, dx, g); });
    std::vector<float>().swap(in[s]);
    if (loop_start(s)) loop_entry_backward(dh.data(), dloop_in.data(), steps[s].iter, loops, T, g);
  }
  if (embed_norm_) {
    norm_backward(emb.data(), embed_norm_, embed_norm_b_, T, dh.data(), dn.data(), false, g);
    dh.swap(dn);
  }
  if (spec_.embedding_multiplier != 1.0)
    for (float& v : dh) v *= float(spec_.embedding_multiplier);
  if (float* dp = N > 0 ? g.of(persistent_) : nullptr)
    for (int64_t i = 0; i < N * D; ++i) dp[i] += dh[size_t(i)];
  emb.swap(dh);  // dL/d(the rows that entered)
  return loss;
}

}  // namespace braid
