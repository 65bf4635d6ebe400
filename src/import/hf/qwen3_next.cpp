// Qwen3NextForCausalLM: Gated DeltaNet layers with a gated softmax-attention layer every
// full_attention_interval layers (per layer_types when given); the attention has q/k
// RMSNorm, partial rotary embedding and a sigmoid output gate packed into q_proj. Every
// decoder_sparse_step-th layer (except mlp_only_layers) has a softmax top-k mixture of
// experts plus a shared expert scaled by a sigmoid gate; the others a gated MLP. All
// RMSNorms outside the Gated DeltaNet multiply by (1 + weight).
#include <algorithm>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_qwen3_next(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "rms_norm_eps", 1e-6, false, &s);
  s.norm_weight_offset = true;
  const std::string act = cfg.get_string("hidden_act", "silu");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
  check(a.n_heads > 0, cfg.where(), ": num_attention_heads must be positive");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = cfg.get_int("head_dim", s.d_model / a.n_heads);
  a.qkv_bias = a.out_bias = cfg.get_bool("attention_bias", false);
  a.qk_norm = true;
  a.output_gate = true;
  a.rope = read_rope(cfg, a.head_dim);

  GatedDeltaNetSpec g;
  g.n_k_heads = cfg.get_int("linear_num_key_heads");
  g.n_v_heads = cfg.get_int("linear_num_value_heads");
  g.head_k_dim = cfg.get_int("linear_key_head_dim");
  g.head_v_dim = cfg.get_int("linear_value_head_dim");
  g.d_conv = cfg.get_int("linear_conv_kernel_dim", 4);
  g.norm_eps = s.norm_eps;

  MlpSpec mlp;
  mlp.hidden = cfg.get_int("intermediate_size");
  check(parse_activation(act, &mlp.act), cfg.where(), ": hidden_act '", act, "' is not supported");
  MoeSpec moe;
  moe.n_experts = cfg.get_int("num_experts", 0);
  moe.top_k = cfg.get_int("num_experts_per_tok", 1);
  moe.hidden = cfg.get_int("moe_intermediate_size", mlp.hidden);
  moe.act = mlp.act;
  moe.renormalize = cfg.get_bool("norm_topk_prob", true);
  moe.shared_hidden = cfg.get_int("shared_expert_intermediate_size", 0);
  moe.shared_gate = moe.shared_hidden > 0;

  const int64_t L = read_layer_count(cfg);
  std::vector<std::string> types;
  if (cfg.has("layer_types")) {
    types = cfg.get_string_list("layer_types");
    check(int64_t(types.size()) == L, cfg.where(), ": layer_types has ", types.size(), " entries for ", L,
          " layers");
  } else {
    const int64_t every = cfg.get_positive_int("full_attention_interval", 4);
    check(every > 0, cfg.where(), ": full_attention_interval must be positive");
    for (int64_t i = 0; i < L; ++i)
      types.push_back((i + 1) % every == 0 ? "full_attention" : "linear_attention");
  }
  std::vector<int64_t> mlp_only;
  if (cfg.has("mlp_only_layers"))
    for (const auto& v : cfg.raw()["mlp_only_layers"]) {
      check(v.is_number_integer(), cfg.where(), ": mlp_only_layers must hold layer indices");
      mlp_only.push_back(v.get<int64_t>());
    }
  const int64_t sparse_step = cfg.get_positive_int("decoder_sparse_step", 1);
  check(sparse_step > 0, cfg.where(), ": decoder_sparse_step must be positive");

  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    const std::string& t = types[size_t(i)];
    if (t == "linear_attention") {
      b.mixer = MixerKind::GatedDeltaNet;
      b.gdn = g;
    } else {
      check(t == "full_attention", cfg.where(), ": layer_types[", i, "] = '", t,
            "' is not supported (linear_attention, full_attention)");
      b.mixer = MixerKind::Attention;
      b.attn = a;
    }
    const bool sparse = std::find(mlp_only.begin(), mlp_only.end(), i) == mlp_only.end() &&
                        moe.n_experts > 0 && (i + 1) % sparse_step == 0;
    if (sparse) {
      b.has_mlp = false;
      b.has_moe = true;
      b.moe = moe;
    } else {
      b.mlp = mlp;
    }
    s.blocks.push_back(b);
  }

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.norm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "input_layernorm.weight"},
                                  {"norm2.weight", "post_attention_layernorm.weight"},
                                  {"attn.", "self_attn."},
                                  {"gdn.", "linear_attn."},
                                  {"moe.router.", "mlp.gate."},
                                  {"moe.shared_gate.", "mlp.shared_expert_gate."},
                                  {"moe.shared.", "mlp.shared_expert."},
                                  {"moe.", "mlp."}}});
  return im;
}

}  // namespace braid::hf
