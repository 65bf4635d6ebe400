// MiniMaxForCausalLM (MiniMax-01 / Text-01): lightning-attention layers and softmax-attention
// layers per layer_types, each followed by a softmax top-k mixture of experts with
// renormalised weights. Residuals continue from the normed input, scaled by the
// per-kind alpha / beta factors.
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_minimax(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "rms_norm_eps", 1e-5, false, &s);
  const std::string act = cfg.get_string("hidden_act", "silu");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
  check(a.n_heads > 0, cfg.where(), ": num_attention_heads must be positive");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = cfg.get_int("head_dim", s.d_model / a.n_heads);
  if (cfg.has("sliding_window") && !cfg.raw()["sliding_window"].is_null())
    a.sliding_window = cfg.get_int("sliding_window");
  a.rope = read_rope(cfg, a.head_dim);

  MoeSpec moe;
  moe.n_experts = cfg.get_int("num_local_experts");
  moe.top_k = cfg.get_int("num_experts_per_tok");
  moe.hidden = cfg.get_int("intermediate_size");
  check(parse_activation(act, &moe.act), cfg.where(), ": hidden_act '", act, "' is not supported");
  moe.renormalize = true;

  const int64_t L = read_layer_count(cfg);
  std::vector<std::string> types;
  if (cfg.has("layer_types")) {
    types = cfg.get_string_list("layer_types");
  } else if (cfg.has("attn_type_list")) {  // older configs: 0 = lightning, 1 = softmax
    for (const auto& v : cfg.raw()["attn_type_list"])
      types.push_back(v.is_number_integer() && v.get<int64_t>() == 1 ? "full_attention" : "linear_attention");
  }
  check(int64_t(types.size()) == L, cfg.where(), ": layer_types has ", types.size(), " entries for ", L,
        " layers");
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    const std::string& t = types[size_t(i)];
    b.normed_residual = true;
    if (t == "linear_attention") {
      b.mixer = MixerKind::Lightning;
      b.lightning.n_heads = a.n_heads;
      b.lightning.head_dim = a.head_dim;
      b.lightning.slope_factor = 1.0 - double(i) / (double(L - 1) + 1e-5) + 1e-5;
      b.mixer_alpha = cfg.get_float("linear_attn_alpha_factor", 1.0);
      b.mixer_beta = cfg.get_float("linear_attn_beta_factor", 1.0);
    } else {
      check(t == "full_attention", cfg.where(), ": layer_types[", i, "] = '", t,
            "' is not supported (linear_attention, full_attention)");
      b.mixer = MixerKind::Attention;
      b.attn = a;
      b.mixer_alpha = cfg.get_float("full_attn_alpha_factor", 1.0);
      b.mixer_beta = cfg.get_float("full_attn_beta_factor", 1.0);
    }
    b.has_mlp = false;
    b.has_moe = true;
    b.moe = moe;
    b.channel_alpha = cfg.get_float("mlp_alpha_factor", 1.0);
    b.channel_beta = cfg.get_float("mlp_beta_factor", 1.0);
    s.blocks.push_back(b);
  }

  auto base = tensor_namer({"model.embed_tokens.weight",
                            "model.norm.weight",
                            "lm_head.weight",
                            "model.layers.{}.",
                            {{"norm1.weight", "input_layernorm.weight"},
                             {"norm2.weight", "post_attention_layernorm.weight"},
                             {"attn.", "self_attn."},
                             {"lightning.", "self_attn."},
                             {"moe.router.", "block_sparse_moe.gate."},
                             {"moe.", "block_sparse_moe."}}});
  // Experts keep Mixtral's names: w1 (gate), w3 (up), w2 (down).
  im.tensor_name = [base](const std::string& c) {
    std::string n = base(c);
    for (const auto& [from, to] : {std::pair<std::string, std::string>{".gate_proj.", ".w1."},
                                   {".up_proj.", ".w3."},
                                   {".down_proj.", ".w2."}}) {
      const size_t at = n.find(from);
      if (at != std::string::npos && n.find("block_sparse_moe.experts.") != std::string::npos)
        n.replace(at, from.size(), to);
    }
    return n;
  };
  return im;
}

}  // namespace braid::hf
