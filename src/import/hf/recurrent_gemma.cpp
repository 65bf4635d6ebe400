// RecurrentGemmaForCausalLM (Griffin): residual blocks of RG-LRU recurrent blocks and
// local (sliding-window) multi-query attention in the block_types pattern, each followed by
// a gated GELU MLP with biases. Gemma conventions: (1 + w) RMSNorms, embeddings times
// sqrt(hidden_size) rounded to bfloat16 as the reference does, logits soft-capped.
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

namespace {

// Rounds to the nearest bfloat16 (ties to even), the precision of Gemma's normalizer.
double round_to_bf16(double v) {
  float f = float(v);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

Import import_recurrent_gemma(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "rms_norm_eps", 1e-6, true, &s);
  s.norm_weight_offset = true;
  s.embedding_multiplier = round_to_bf16(std::sqrt(double(s.d_model)));
  s.logits_soft_cap = cfg.get_float("logits_soft_cap", 0.0);
  const std::string act = cfg.get_string("hidden_activation", "gelu_pytorch_tanh");
  check(act == "gelu_pytorch_tanh", cfg.where(), ": hidden_activation '", act,
        "' is not supported (the recurrent block uses gelu_pytorch_tanh)");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
  check(a.n_heads > 0, cfg.where(), ": num_attention_heads must be positive");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = cfg.get_int("head_dim", s.d_model / a.n_heads);
  a.qkv_bias = cfg.get_bool("attention_bias", false);
  a.out_bias = true;
  a.sliding_window = cfg.get_int("attention_window_size");
  a.rope = read_rope(cfg, a.head_dim);

  RgLruSpec r;
  r.width = cfg.get_int("lru_width", s.d_model);
  r.n_heads = a.n_heads;
  r.d_conv = cfg.get_int("conv1d_width", 4);

  MlpSpec mlp;
  mlp.hidden = cfg.get_int("intermediate_size") / 2;
  mlp.act = Activation::GeluTanh;
  mlp.bias = true;

  const int64_t L = read_layer_count(cfg);
  const std::vector<std::string> pattern = cfg.get_string_list("block_types");
  check(!pattern.empty(), cfg.where(), ": block_types is empty");
  for (int64_t i = 0; i < L; ++i) {
    const std::string& t = pattern[size_t(i) % pattern.size()];
    BlockSpec b;
    if (t == "recurrent") {
      b.mixer = MixerKind::RgLru;
      b.rglru = r;
    } else {
      check(t == "attention", cfg.where(), ": block type '", t, "' is not supported (recurrent, attention)");
      b.mixer = MixerKind::Attention;
      b.attn = a;
    }
    b.mlp = mlp;
    s.blocks.push_back(b);
  }

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.final_norm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "temporal_pre_norm.weight"},
                                  {"norm2.weight", "channel_pre_norm.weight"},
                                  {"attn.", "temporal_block."},
                                  {"rglru.conv1d.", "temporal_block.conv_1d."},
                                  {"rglru.linear_", "temporal_block.linear_"},
                                  {"rglru.", "temporal_block.rg_lru."},
                                  {"mlp.", "mlp_block."}}});
  return im;
}

}  // namespace braid::hf
