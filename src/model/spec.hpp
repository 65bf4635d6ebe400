// ModelSpec: a model as data. Importers translate a Hugging Face config.json into a
// ModelSpec; braid's own spec files (docs/training.md) describe one directly. The
// Model is built from the spec alone, so a mixer never knows which family uses it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mixers/mixer_specs.hpp"

namespace braid {

enum class MixerKind {
  Attention,
  Mamba,
  Mamba2,
  ShortConv,
  GatedDeltaNet,
  Rwkv4,
  RgLru,
  Lightning,
  Mlstm,
  Gla,
  Titans
};
// Block and final norms: RMSNorm (weight) or LayerNorm (weight and bias).
enum class NormKind { RMS, Layer };
enum class Activation { SiLU, GeluTanh, GeluErf, Relu2 };

const char* mixer_kind_name(MixerKind k);
const char* activation_name(Activation a);
// Parses the Hugging Face / braid spelling ("silu", "gelu_pytorch_tanh", ...).
bool parse_activation(const std::string& s, Activation* out);

struct MlpSpec {
  int64_t hidden = 0;
  Activation act = Activation::SiLU;
  bool gated = true;  // act(gate(x)) * up(x), else act(up(x))
  bool bias = false;
  // Falcon-H1: act(gate(x) * gate_multiplier), down(...) * down_multiplier.
  double gate_multiplier = 1, down_multiplier = 1;
};

// Mixture of gated-MLP experts: scores = softmax or sigmoid of a linear router, each
// token goes to its top_k experts weighted by their scores (renormalised to sum to 1 when
// `renormalize`), plus an optional always-on shared expert.
struct MoeSpec {
  int64_t n_experts = 0, top_k = 0, hidden = 0;
  Activation act = Activation::SiLU;
  bool renormalize = false;
  bool sigmoid_scores = false;
  int64_t shared_hidden = 0;  // 0 = no shared expert
  bool shared_gate = false;   // shared expert output times sigmoid(w . x) (Qwen3-Next)
};

struct BlockSpec {
  bool has_mixer = true;  // false: the block is only norm -> MLP -> residual
  MixerKind mixer = MixerKind::Attention;
  // A second token mixer reading the same normed input (Falcon-H1: attention and Mamba-2
  // side by side); the block adds mixer(x * in) * out + parallel(x * in') * out'.
  bool has_parallel = false;
  MixerKind parallel = MixerKind::Mamba2;
  // Combine as mixer(x * in) * out * sigmoid(parallel(x * in') * out') instead of the sum:
  // Titans' memory as a gate (sliding-window attention gated by the long-term memory).
  bool parallel_gate = false;
  // Or memory as context (Titans' MAC, MemoryContextMixer): attention (the main mixer) over
  // each chunk of the titans memory (the parallel one) beside the memory's reading of it,
  // after context_persistent learned rows (persistent memory); the memory learns from the
  // attention's output, which it gates.
  bool parallel_context = false;
  int64_t context_persistent = 0;
  double mixer_in_scale = 1, mixer_out_scale = 1, parallel_in_scale = 1, parallel_out_scale = 1;
  AttentionSpec attn;
  MambaSpec mamba;
  Mamba2Spec mamba2;
  ShortConvSpec short_conv;
  GatedDeltaNetSpec gdn;
  Rwkv4Spec rwkv;
  RgLruSpec rglru;
  LightningSpec lightning;
  MlstmSpec mlstm;
  GlaSpec gla;
  TitansSpec titans;
  bool has_mlp = true;
  MlpSpec mlp;
  bool has_moe = false;  // the channel mixer is `moe` instead of `mlp`
  MoeSpec moe;
  bool has_cmix = false;  // the channel mixer is RWKV channel mixing (stateful)
  RwkvChannelMixSpec cmix;
  double post_scale = 1;  // the residual stream is multiplied by this after the block
  // MiniMax-style residuals: the stream continues from the normed input instead of the raw
  // one, and h = alpha * h + beta * f(h) for the token mixer and for the channel mixer.
  bool normed_residual = false;
  double mixer_alpha = 1, mixer_beta = 1, channel_alpha = 1, channel_beta = 1;
};

// Looped depth: blocks [begin, end) form a recurrent core applied `loops` times with shared
// weights between a prelude (blocks before it) and a coda (blocks after it). Before each
// iteration i >= 1 the core's input e (the prelude's output) is added to the stream (input
// injection); with step_embedding, learned embeddings of the step index i and of the loop
// count k (LoopFormer-style step and step-size conditioning) are added before every
// iteration. Every iteration of a stateful mixer keeps its own state (KV or recurrent).
// The loop count is chosen per sequence, up to max_loops; training samples it uniformly
// from [train_min, train_max] for each sequence.
struct LoopSpec {
  int64_t begin = 0, end = 0;  // end == 0: no loop
  int64_t loops = 1, max_loops = 1, train_min = 1, train_max = 1;
  bool inject = true;
  bool step_embedding = false;
  bool enabled() const { return end > begin; }
};

// Segment recurrence with memory tokens (RMT, Bulatov et al. 2022): the sequence is cut into
// segments of `length` tokens; every layer's state starts empty in each segment, which is
// framed as [M read rows, the segment's tokens, M write rows], where both read and write rows
// enter as the current memory (M x d_model; param segment.memory.weight for the first
// segment) and the write rows' final-norm outputs become the next segment's memory. Training
// backpropagates through the memory across `bptt` segments (the memory is detached at every
// bptt-th boundary; 0: never).
struct SegmentSpec {
  int64_t length = 0, memory_tokens = 0, bptt = 0;
  bool enabled() const { return length > 0; }
};

// The most blocks a model may have (the deepest published models have under 200).
constexpr int64_t kMaxLayers = 4096;

struct ModelSpec {
  std::string family;  // "llama", "qwen3", "braid", ...
  std::string name;
  int64_t vocab_size = 0, d_model = 0;
  double norm_eps = 1e-6;
  double final_norm_eps = 0;  // the final norm's epsilon when it differs (0 = norm_eps)
  bool tie_embeddings = false;
  // Scalar multipliers some families use (Granite): embeddings are multiplied by
  // embedding_multiplier, each block's mixer/MLP output by residual_multiplier before
  // the residual add, and logits divided by logits_scaling.
  double embedding_multiplier = 1.0, residual_multiplier = 1.0, logits_scaling = 1.0;
  double logits_soft_cap = 0;  // > 0: logits = cap * tanh(logits / cap) (Gemma-style)
  int64_t max_context = 0;     // advisory (from the checkpoint); 0 = unknown
  std::vector<BlockSpec> blocks;
  // Hidden-state dumps start with the embedding output (most families) or with the
  // output of the first block (Mamba-style models); `verify` follows the reference.
  bool hidden_states_from_embedding = true;
  // Norm weights stored as offsets from one: the norm multiplies by (1 + w) (Gemma-style;
  // Qwen3-Next). Applies to block norms, the final norm and attention q/k norms.
  bool norm_weight_offset = false;
  NormKind norm_kind = NormKind::RMS;
  bool embed_norm = false;  // a norm on the embedding output (RWKV's pre_ln), params embed_norm.*
  // Persistent memory tokens (Titans): learned vectors (param persistent.weight [N, D]) that
  // every sequence starts with, as if they were the embeddings of N tokens before its first.
  int64_t persistent_tokens = 0;
  // Real-valued sequences (in-context regression): with input_dim > 0 each position is a
  // vector of input_dim values, read in by a linear map (read_in.weight [D, input_dim],
  // read_in.bias [D]) where token models look up embed.weight; the head's vocab_size outputs
  // are real-valued predictions (the spec format calls them output_dim), trained by squared
  // error. Such a model has no embedding table to tie to.
  int64_t input_dim = 0;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  LoopSpec loop;
  SegmentSpec segment;
};

// One parameter the spec calls for, under braid's canonical name.
struct ParamDecl {
  std::string name;  // e.g. "blocks.0.attn.q_proj.weight"
  std::vector<int64_t> shape;
  // Normal: N(0, std^2). SsmALog: log(1..N) per row (S4D-real). DtBias: softplus^-1 of
  // dt ~ log-uniform in [1e-3, 1e-1].
  // HeadALog: log(1..n) along the vector (Mamba-2's per-head decay).
  // Half: every entry 0.5 (RWKV token-shift mixing ratios).
  // MemoryGates: Titans gate biases [alpha | eta | theta] per head: -4.6 (forget 1%), 0, 0.
  // FanIn: uniform in +-1/sqrt(fan_in), fan_in the product of all dimensions but the first
  // (PyTorch's default for Linear and Conv1d, which the Mamba reference keeps): the depthwise
  // convolutions, whose few taps would otherwise scale their input down to ~std, Mamba's dt_proj
  // (dt_rank^-0.5, as Mamba does) and the Mamba / Mamba-2 input projections.
  enum class Init {
    Normal,
    Ones,
    Zeros,
    Half,
    SsmALog,
    HeadALog,
    DtBias,
    MemoryGates,
    FanIn
  } init = Init::Normal;
};

// Every parameter of the model, in a stable order. The single source of truth for
// loading, initialisation, parameter counts and (later) gradients.
std::vector<ParamDecl> param_decls(const ModelSpec& spec);
// Throws braid::Error naming the first inconsistent field.
void validate_spec(const ModelSpec& spec);

}  // namespace braid
