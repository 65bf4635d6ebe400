// JambaForCausalLM: Mamba-1 layers with weighted RMSNorms on dt, B and C, attention
// (no positional encoding) every attn_layer_period layers from attn_layer_offset, and a
// mixture of experts (softmax router, top-k, no renormalisation) every
// expert_layer_period layers from expert_layer_offset, gated MLPs elsewhere.
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_jamba(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  s.family = cfg.get_string("model_type");
  s.vocab_size = cfg.get_int("vocab_size");
  s.d_model = cfg.get_int("hidden_size");
  s.norm_eps = cfg.get_float("rms_norm_eps", 1e-6);
  s.tie_embeddings = cfg.get_bool("tie_word_embeddings", false);
  s.max_context = cfg.get_int("max_position_embeddings", 0);
  auto bos = read_token_ids(cfg, "bos_token_id");
  s.bos_token_id = bos.empty() ? -1 : bos[0];
  s.eos_token_ids = read_token_ids(cfg, "eos_token_id");
  const std::string act = cfg.get_string("hidden_act", "silu");

  AttentionSpec a;
  a.n_heads = cfg.get_int("num_attention_heads");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = s.d_model / a.n_heads;
  a.rope.rotary_dim = 0;  // Jamba's attention layers have no positional encoding

  MambaSpec m;
  m.d_inner = cfg.get_int("mamba_expand", 2) * s.d_model;
  m.d_state = cfg.get_int("mamba_d_state", 16);
  m.d_conv = cfg.get_int("mamba_d_conv", 4);
  m.dt_rank = cfg.has("mamba_dt_rank") && cfg.raw()["mamba_dt_rank"].is_string()
                  ? (s.d_model + 15) / 16
                  : cfg.get_int("mamba_dt_rank", (s.d_model + 15) / 16);
  m.conv_bias = cfg.get_bool("mamba_conv_bias", true);
  m.proj_bias = cfg.get_bool("mamba_proj_bias", false);
  m.bcdt_norm_eps = s.norm_eps;
  m.bcdt_norm_weights = true;

  MlpSpec mlp;
  mlp.hidden = cfg.get_int("intermediate_size");
  check(parse_activation(act, &mlp.act), cfg.where(), ": hidden_act '", act, "' is not supported");
  MoeSpec moe;
  moe.n_experts = cfg.get_int("num_experts", 1);
  moe.top_k = cfg.get_int("num_experts_per_tok", 1);
  moe.hidden = mlp.hidden;
  moe.act = mlp.act;
  moe.renormalize = false;

  const int64_t L = cfg.get_int("num_hidden_layers");
  const int64_t ap = cfg.get_int("attn_layer_period", 8), ao = cfg.get_int("attn_layer_offset", 4);
  const int64_t ep = cfg.get_int("expert_layer_period", 2), eo = cfg.get_int("expert_layer_offset", 1);
  check(L > 0 && ap > 0 && ep > 0, cfg.where(),
        ": num_hidden_layers, attn_layer_period and expert_layer_period must be positive");
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    if (i % ap == ao) {
      b.mixer = MixerKind::Attention;
      b.attn = a;
    } else {
      b.mixer = MixerKind::Mamba;
      b.mamba = m;
    }
    if (moe.n_experts > 1 && i % ep == eo) {
      b.has_mlp = false;
      b.has_moe = true;
      b.moe = moe;
    } else {
      b.mlp = mlp;
    }
    s.blocks.push_back(b);
  }

  im.tensor_name = [](const std::string& c) -> std::string {
    if (c == "embed.weight") return "model.embed_tokens.weight";
    if (c == "final_norm.weight") return "model.final_layernorm.weight";
    if (c == "lm_head.weight") return "lm_head.weight";
    const size_t dot = c.find('.', 7);
    const std::string n = c.substr(7, dot - 7), rest = c.substr(dot + 1);
    const std::string pre = "model.layers." + n + ".";
    if (rest == "norm1.weight") return pre + "input_layernorm.weight";
    if (rest == "norm2.weight") return pre + "pre_ff_layernorm.weight";
    if (rest.rfind("attn.", 0) == 0) return pre + "self_attn." + rest.substr(5);
    if (rest == "mamba.b_norm.weight") return pre + "mamba.b_layernorm.weight";
    if (rest == "mamba.c_norm.weight") return pre + "mamba.c_layernorm.weight";
    if (rest == "mamba.dt_norm.weight") return pre + "mamba.dt_layernorm.weight";
    if (rest.rfind("mamba.", 0) == 0) return pre + rest;
    if (rest.rfind("mlp.", 0) == 0) return pre + "feed_forward." + rest.substr(4);
    if (rest.rfind("moe.", 0) == 0) return pre + "feed_forward." + rest.substr(4);  // router, experts.N.*
    return pre + rest;
  };
  return im;
}

}  // namespace braid::hf
