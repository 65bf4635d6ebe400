// Hyper-parameters of each token mixer. Plain data shared by the mixers (which
// compute) and the ModelSpec (which lists them per layer).
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace braid {

struct RopeSpec {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  int64_t rotary_dim = 0;        // <= head_dim; 0 disables rotary embedding
  double factor = 1.0;           // linear / llama3
  double low_freq_factor = 1.0;  // llama3
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct AttentionSpec {
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool qkv_bias = false, out_bias = false;
  bool qk_norm = false;        // RMSNorm over head_dim on q and k before RoPE (Qwen3)
  int64_t sliding_window = 0;  // 0 = full causal attention
  // With a sliding window: the first sink_tokens positions stay visible to every query
  // (attention sinks; where a model's persistent memory tokens sit).
  int64_t sink_tokens = 0;
  double scale = 0;           // score scale; 0 = 1 / sqrt(head_dim)
  double key_multiplier = 1;  // keys scaled after projection (Falcon-H1)
  // q_proj also yields a per-channel gate, interleaved per head as [query | gate]; the
  // attention output is multiplied by sigmoid(gate) before o_proj (Qwen3-Next).
  bool output_gate = false;
  RopeSpec rope;
};

// Mamba-1 selective state space mixer (Gu & Dao): in_proj -> causal depthwise conv
// -> SiLU -> x_proj (dt, B, C) -> softplus(dt_proj) -> diagonal selective scan + D skip
// -> SiLU(z) gate -> out_proj.
struct MambaSpec {
  int64_t d_inner = 0, d_state = 16, d_conv = 4, dt_rank = 0;
  bool conv_bias = true;
  bool proj_bias = false;    // biases on in_proj and out_proj
  double bcdt_norm_eps = 0;  // > 0: RMSNorm on B, C and dt (FalconMamba: no weights; Jamba: weights)
  bool bcdt_norm_weights = false;
  int64_t chunk = 256;  // tokens per prefill chunk (bounds activation memory)
};

// Mamba-2 / SSD mixer (Dao & Gu): in_proj -> [z | x B C | dt], causal depthwise conv on
// x B C -> SiLU, scalar decay per head, state [heads][head_dim][d_state] shared B/C per
// group, D skip, gated RMSNorm (per group of channels) with z, out_proj.
enum class Mamba2Norm {
  GateThenNorm,  // rmsnorm(y * silu(z)) (Mamba-2, Bamba, NemotronH)
  NormThenGate,  // rmsnorm(y) * silu(z)
  GateOnly,      // y * silu(z), no norm and no norm weight (Falcon-H1 without mamba_rms_norm)
};

struct Mamba2Spec {
  int64_t n_heads = 0, head_dim = 0, d_state = 0, n_groups = 1, d_conv = 4;
  bool conv_bias = true, proj_bias = false;
  double dt_min = 0.0, dt_max = 0.0;  // clamp of dt after softplus; max <= 0 means no upper limit
  double norm_eps = 1e-5;
  int64_t norm_group_size = 0;  // channels per gated-norm group (0 = all d_inner channels)
  int64_t chunk = 64;           // tokens per SSD chunk
  Mamba2Norm norm = Mamba2Norm::GateThenNorm;
  // Scales of the in_proj output sections [z, x, B, C, dt] (Falcon-H1's ssm_multipliers).
  std::array<double, 5> proj_multipliers{1, 1, 1, 1, 1};
  int64_t d_inner() const { return n_heads * head_dim; }
};

// Gated short convolution (LFM2): in_proj -> [B | C | x], y = C * conv(B * x) with a
// causal depthwise kernel of a few taps, then out_proj. State: the last kernel - 1 inputs.
struct ShortConvSpec {
  int64_t kernel = 3;
  bool bias = false;  // on in_proj, conv and out_proj
};

// Gated DeltaNet (Yang et al.): per value head a matrix state S [head_k_dim][head_v_dim]
// updated by the gated delta rule S_t = a_t S_{t-1} + b_t k_t (v_t - a_t S_{t-1}^T k_t)^T
// with decay a_t = exp(-exp(A_log) softplus(alpha_t + dt_bias)), b_t = sigmoid(beta_t),
// L2-normalised q and k after a causal depthwise conv (SiLU), o_t = S_t^T q_t / sqrt(d_k),
// then a per-head RMSNorm gated by SiLU(z). Value heads share key heads in groups
// (n_v_heads a multiple of n_k_heads). in_proj_qkvz rows are grouped per key head as
// [q | k | v (group's value heads) | z (same)] and in_proj_ba as [beta | alpha] (Qwen3-Next).
struct GatedDeltaNetSpec {
  int64_t n_k_heads = 0, n_v_heads = 0, head_k_dim = 0, head_v_dim = 0, d_conv = 4;
  double norm_eps = 1e-6;
  int64_t chunk = 64;  // tokens per chunk of the chunked (WY) form
  int64_t key_dim() const { return n_k_heads * head_k_dim; }
  int64_t value_dim() const { return n_v_heads * head_v_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

// RWKV-4 time mixing (Peng et al.): token shift (each of k, v, r mixes the current and the
// previous normed input with learned per-channel ratios), then the WKV recurrence per
// channel with decay w = -exp(time_decay) and bonus u = time_first for the current token:
// wkv_t = (sum_{i<t} e^{-(t-1-i)|w| + k_i} v_i + e^{u + k_t} v_t) / (same without v), kept
// as a (num, den, max) state for stability; out = W_o (sigmoid(r) * wkv) * out_scale.
struct Rwkv4Spec {
  int64_t attn_dim = 0;  // attention_hidden_size (channels of k, v, r)
  double out_scale = 1;  // 2^-(layer / rescale_every) in Hugging Face's inference rescaling
};

// RWKV-4 channel mixing: token shift for k and r, then sigmoid(r) * W_v relu(W_k x_k)^2,
// times out_scale. Stateful (the previous normed input), so it is a Mixer too.
struct RwkvChannelMixSpec {
  int64_t hidden = 0;
  double out_scale = 1;
};

// Griffin's recurrent block (RG-LRU, De et al.): x = conv(W_x h) (causal depthwise, with
// bias), y = gelu_tanh(W_y h); per head block-diagonal gates i_t = sigmoid(x W_i + b_i),
// r_t = sigmoid(x W_r + b_r); log a_t = -8 r_t softplus(Lambda);
// h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t) (the sqrt factor is 1 at position 0);
// out = W_out (h * y). State: the conv window and h.
struct RgLruSpec {
  int64_t width = 0, n_heads = 1, d_conv = 4;
  int64_t head_width() const { return width / n_heads; }
};

// Lightning attention (MiniMax-01): q, k, v = SiLU(W_qkv x) (per head [q | k | v]); per
// head linear attention with a fixed decay exp(-slope_h) per token, slope_h =
// 2^(-8 (h + 1) / n_heads) * slope_factor; RMSNorm over all heads, times
// sigmoid(W_gate x), then out_proj. State: S [n_heads][head_dim][head_dim].
struct LightningSpec {
  int64_t n_heads = 0, head_dim = 0;
  double slope_factor = 1;  // MiniMax: 1 - layer / (n_layers - 1 + 1e-5) + 1e-5
  double norm_eps = 1e-6;
  int64_t chunk = 64;  // tokens per chunk of the chunked form
};

// mLSTM (xLSTM, Beck et al.): per head a matrix memory C [dk][dv] and normaliser n [dk]
// with exponential input gate and sigmoid forget gate, stabilised by a running max m:
//   m_t = max(log sigmoid(f_t) + m_{t-1}, i_t),  C_t = e^{lsig(f_t) + m_{t-1} - m_t} C_{t-1}
//   + e^{i_t - m_t} k_t v_t^T (n likewise with k_t), h_t = C_t^T q~ / (max(|n_t . q~|, e^{-m_t}) + eps)
// with q~ = q / sqrt(dk); gate pre-activations are soft-capped. Then a per-head LayerNorm
// (weight over all channels), times sigmoid(o), and out_proj.
struct MlstmSpec {
  int64_t n_heads = 0, qk_dim = 0, v_dim = 0;  // totals over heads
  double gate_soft_cap = 0;                    // 0 = none
  double eps = 1e-6, norm_eps = 1e-6;
  int64_t chunk = 64;
};

// Gated linear attention, the family braid's own specs use (GLA, Yang et al.; SimpleGLA /
// RetNet-style gates): per head S_t = diag(a_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(dk),
// with log a_t per key channel (log sigmoid of a low-rank projection, / gate_normalizer), per
// head (log sigmoid of a linear gate, / gate_normalizer) or fixed per head (RetNet:
// a_h = 1 - 2^(-5 - h)). Output: per-head RMSNorm times SiLU(W_g x), then o_proj.
enum class GlaGate { PerChannel, PerHead, Fixed };

struct GlaSpec {
  int64_t n_heads = 0, head_k_dim = 0, head_v_dim = 0;
  GlaGate gate = GlaGate::PerChannel;
  int64_t gate_rank = 16;         // low-rank width of the per-channel gate projection
  double gate_normalizer = 16.0;  // log gate divided by this (not used for Fixed)
  double norm_eps = 1e-5;
  int64_t chunk = 64;
};

// Titans-style neural long-term memory: per head, a small network M (linear, or a
// two-layer SiLU MLP) whose weights learn at test time. For each token, with q, k
// L2-normalised projections and v a projection of the input:
//   u_t = sum over the last `window` tokens j of grad_M ||M0(k_j) - v_j||^2
//   S_t = eta_t S_{t-1} - theta_t u_t          (momentum: "surprise")
//   M_t = (1 - alpha_t) M_{t-1} + S_t          (forgetting)
//   y_t = M_t(q_t)
// where M0 is the memory at the start of the token's chunk (absolute positions are cut
// into chunks of `chunk`), alpha, eta = sigmoid and theta = max_lr * sigmoid of per-head
// projections of the input. window > 1 is ATLAS's sliding-window (Omega) rule; chunk 1
// makes every gradient use the current memory. max_grad_norm > 0 rescales each token's
// u_t (per head) to at most that L2 norm before it enters the momentum, which keeps the
// test-time learning from diverging when the trained gates make its steps too large.
struct TitansSpec {
  int64_t n_heads = 0, head_dim = 0;
  int64_t depth = 2;   // 1: M(x) = W x; 2: M(x) = W2 silu(W1 x)
  int64_t hidden = 0;  // depth 2: width of the memory MLP (default 2 x head_dim)
  int64_t chunk = 16, window = 1;
  double max_lr = 0.01;
  double max_grad_norm = 0;  // 0: u_t is not clipped
  double norm_eps = 1e-6;    // per-head RMSNorm of the retrieved values
};

}  // namespace braid
