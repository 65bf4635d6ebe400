// The decode-time state updates of the state-space and delta-rule mixers, fused with their
// readout: each state row is decayed, given its rank-one input and read against the output
// vector in one pass, so the state (megabytes per token at decode) is streamed once.
#pragma once
#include <cstdint>

namespace braid::ops {

// Mamba-2 (SSD), one head: for each row r of S [rows][n],
//   S_r = a S_r + (d x_r) b;   y_r = S_r . c.
void decay_update_readout(float* S, int64_t rows, int64_t n, float a, float d, const float* x, const float* b,
                          const float* c, float* y);

// Gated DeltaNet, one value head, on its state S [dk][dv] (the right side's S the old state):
//   S = a S + k (b (v - a S^T k))^T;   o = S^T q,
// two passes over S. dv <= 1024.
void delta_rule_step(float* S, int64_t dk, int64_t dv, float a, float b, const float* q, const float* k,
                     const float* v, float* o);

// Mamba-1 selective scan of `channels` channels through T tokens: channel i has the state
// h[i * n ...] and log-decay rates A[i * n ...]; at token t, with d = dt[t * ld + i] and
// x = u[t * ld + i],
//   h_i = exp(A_i d) h_i + (d B_t) x;   y[t * ld + i] = h_i . C_t,
// B_t and C_t being rows of n values at B + t * ldbc and C + t * ldbc (exp as ops::exp_fast).
void selective_scan(float* h, const float* A, int64_t channels, int64_t n, int64_t T, const float* dt,
                    const float* u, int64_t ld, const float* B, const float* C, int64_t ldbc, float* y);

}  // namespace braid::ops
