// The decayed linear-attention kernel shared by the gated-linear-attention family
// (lightning attention's fixed per-head decay, RetNet / SimpleGLA scalar gates, GLA's
// per-key-channel gates). For one head and a chunk of Q tokens, continuing from S [dk][dv]:
//   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t.
// g holds log decays (<= 0): one per token (scalar gate) or dk per token (per channel).
// Q > 1 uses the chunked form: with c the cumulative log decay from the chunk start,
//   o = ((q k^T) masked by exp(c_i - c_j), j <= i) v + (q exp(c)) S_0,
//   S = exp(c_last) S_0 + (k exp(c_last - c))^T v,
// forming only exp of non-positive numbers. Q == 1 is the direct recurrence.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace braid {

struct LinearAttentionChunk {
  int64_t Q = 0, dk = 0, dv = 0;
  const float *q = nullptr, *k = nullptr, *v = nullptr;  // rows of length dk / dk / dv
  int64_t ldq = 0, ldk = 0, ldv = 0;                     // row strides
  const float* g = nullptr;                              // [Q] or [Q][dk] (row stride ldg)
  bool per_channel = false;
  int64_t ldg = 0;
  float* S = nullptr;  // [dk][dv], updated in place
  float* o = nullptr;  // [Q] rows of dv, stride ldo (overwritten)
  int64_t ldo = 0;
};

// Floats of scratch linear_attention() needs for a chunk of Q tokens.
size_t linear_attention_scratch(int64_t Q, int64_t dk, int64_t dv, bool per_channel);
// Single-threaded (callers parallelise over heads); `scratch` as sized above.
void linear_attention(const LinearAttentionChunk& c, float* scratch);

// The first sweep of a checkpointed backward pass: each of H heads runs T tokens in
// chunks of C from a zero state, chunk_of(h, t0, n, S) describing a chunk's inputs; writes
// the outputs (head h, token t at o[t * ldo + h * dv]) and the state at each chunk start
// (ck[h][chunk][dk * dv]).
template <class ChunkOf>
void linear_attention_checkpoints(int64_t H, int64_t T, int64_t C, int64_t dk, int64_t dv, bool per_channel,
                                  const ChunkOf& chunk_of, float* o, int64_t ldo, float* ck) {
  const int64_t SZ = dk * dv, nchunks = (T + C - 1) / C;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> S(static_cast<size_t>(SZ), 0.0f),
        scratch(linear_attention_scratch(C, dk, dv, per_channel));
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      std::memcpy(ck + (h * nchunks + c) * SZ, S.data(), size_t(SZ) * sizeof(float));
      LinearAttentionChunk ch = chunk_of(h, t0, n, S.data());
      ch.o = o + t0 * ldo + h * dv, ch.ldo = ldo;
      linear_attention(ch, scratch.data());
    }
  }
}

// Gradients of one chunk (rows with the given strides, written, not added); dS holds dL/dS at
// the chunk's end on entry and dL/dS at its start (c.S) on return. dg has the layout of c.g.
struct LinearAttentionGrads {
  float *dq = nullptr, *dk = nullptr, *dv = nullptr, *dg = nullptr, *dS = nullptr;
  int64_t ldq = 0, ldk = 0, ldv = 0, ldg = 0;
};
size_t linear_attention_backward_scratch(int64_t Q, int64_t dk, int64_t dv, bool per_channel);
// Backward of the chunked form from the chunk-start state c.S (not modified; c.o unused)
// given dL/do (rows of dv, stride lddo).
void linear_attention_backward(const LinearAttentionChunk& c, const float* dO, int64_t lddo,
                               const LinearAttentionGrads& g, float* scratch);

}  // namespace braid
