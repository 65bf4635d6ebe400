// Lfm2ForCausalLM: blocks of operator_norm -> (gated short convolution | attention with
// q/k RMSNorm and RoPE) -> residual, ffn_norm -> SwiGLU (w1 gate, w3 up, w2 down) ->
// residual; the final norm is called embedding_norm.
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_lfm2(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  s.family = cfg.get_string("model_type");
  s.vocab_size = cfg.get_int("vocab_size");
  s.d_model = cfg.get_int("hidden_size");
  s.norm_eps = cfg.get_float("norm_eps", 1e-5);
  s.tie_embeddings = cfg.get_bool("tie_word_embeddings", true);
  s.max_context = cfg.get_int("max_position_embeddings", 0);
  auto bos = read_token_ids(cfg, "bos_token_id");
  s.bos_token_id = bos.empty() ? -1 : bos[0];
  s.eos_token_ids = read_token_ids(cfg, "eos_token_id");
  check(!cfg.get_bool("block_auto_adjust_ff_dim", false), cfg.where(),
        ": block_auto_adjust_ff_dim = true is not supported (give intermediate_size as stored)");

  AttentionSpec a;
  a.n_heads = cfg.get_int("num_attention_heads");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = s.d_model / a.n_heads;
  a.qk_norm = true;
  a.rope = read_rope(cfg, a.head_dim);

  ShortConvSpec c;
  c.kernel = cfg.get_int("conv_L_cache", 3);
  c.bias = cfg.get_bool("conv_bias", false);

  MlpSpec m;
  m.hidden = cfg.get_int("intermediate_size");
  m.act = Activation::SiLU;
  m.gated = true;

  const int64_t L = cfg.get_int("num_hidden_layers");
  std::vector<std::string> types;
  if (cfg.has("layer_types")) {
    types = cfg.get_string_list("layer_types");
  } else {
    types.assign(size_t(L), "conv");
    check(cfg.has("full_attn_idxs"), cfg.where(), ": neither layer_types nor full_attn_idxs is given");
    for (const auto& v : cfg.raw()["full_attn_idxs"]) {
      check(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < L, cfg.where(),
            ": full_attn_idxs holds an invalid layer index");
      types[size_t(v.get<int64_t>())] = "full_attention";
    }
  }
  check(int64_t(types.size()) == L, cfg.where(), ": layer_types has ", types.size(), " entries for ", L,
        " layers");
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    const std::string& t = types[size_t(i)];
    if (t == "conv") {
      b.mixer = MixerKind::ShortConv;
      b.short_conv = c;
    } else if (t == "full_attention") {
      b.mixer = MixerKind::Attention;
      b.attn = a;
    } else {
      fail(cfg.where(), ": layer_types[", i, "] = '", t, "' is not supported (conv, full_attention)");
    }
    b.mlp = m;
    s.blocks.push_back(b);
  }

  im.tensor_name = [](const std::string& cn) -> std::string {
    if (cn == "embed.weight") return "model.embed_tokens.weight";
    if (cn == "final_norm.weight") return "model.embedding_norm.weight";
    if (cn == "lm_head.weight") return "lm_head.weight";
    const size_t dot = cn.find('.', 7);
    const std::string n = cn.substr(7, dot - 7), rest = cn.substr(dot + 1);
    const std::string pre = "model.layers." + n + ".";
    if (rest == "norm1.weight") return pre + "operator_norm.weight";
    if (rest == "norm2.weight") return pre + "ffn_norm.weight";
    if (rest == "attn.q_norm.weight") return pre + "self_attn.q_layernorm.weight";
    if (rest == "attn.k_norm.weight") return pre + "self_attn.k_layernorm.weight";
    if (rest.rfind("attn.o_proj.", 0) == 0) return pre + "self_attn.out_proj." + rest.substr(12);
    if (rest.rfind("attn.", 0) == 0) return pre + "self_attn." + rest.substr(5);
    if (rest.rfind("short_conv.", 0) == 0) return pre + "conv." + rest.substr(11);
    if (rest == "mlp.gate_proj.weight") return pre + "feed_forward.w1.weight";
    if (rest == "mlp.up_proj.weight") return pre + "feed_forward.w3.weight";
    if (rest == "mlp.down_proj.weight") return pre + "feed_forward.w2.weight";
    return pre + rest;
  };
  return im;
}

}  // namespace braid::hf
