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
  read_model_fields(cfg, "rms_norm_eps", 1e-6, false, &s);
  const std::string act = cfg.get_string("hidden_act", "silu");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
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

  const int64_t L = read_layer_count(cfg);
  const int64_t ap = cfg.get_positive_int("attn_layer_period", 8), ao = cfg.get_int("attn_layer_offset", 4);
  const int64_t ep = cfg.get_positive_int("expert_layer_period", 2),
                eo = cfg.get_int("expert_layer_offset", 1);
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

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.final_layernorm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "input_layernorm.weight"},
                                  {"norm2.weight", "pre_ff_layernorm.weight"},
                                  {"attn.", "self_attn."},
                                  {"mamba.b_norm.", "mamba.b_layernorm."},
                                  {"mamba.c_norm.", "mamba.c_layernorm."},
                                  {"mamba.dt_norm.", "mamba.dt_layernorm."},
                                  {"mlp.", "feed_forward."},
                                  {"moe.", "feed_forward."}}});

  return im;
}

}  // namespace braid::hf
