// Lfm2ForCausalLM: blocks of operator_norm -> (gated short convolution | attention with
// q/k RMSNorm and RoPE) -> residual, ffn_norm -> SwiGLU (w1 gate, w3 up, w2 down) ->
// residual; the final norm is called embedding_norm.
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_lfm2(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "norm_eps", 1e-5, true, &s);
  check(!cfg.get_bool("block_auto_adjust_ff_dim", false), cfg.where(),
        ": block_auto_adjust_ff_dim = true is not supported (give intermediate_size as stored)");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
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

  const int64_t L = read_layer_count(cfg);
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

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.embedding_norm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "operator_norm.weight"},
                                  {"norm2.weight", "ffn_norm.weight"},
                                  {"attn.q_norm.", "self_attn.q_layernorm."},
                                  {"attn.k_norm.", "self_attn.k_layernorm."},
                                  {"attn.o_proj.", "self_attn.out_proj."},
                                  {"attn.", "self_attn."},
                                  {"short_conv.", "conv."},
                                  {"mlp.gate_proj.", "feed_forward.w1."},
                                  {"mlp.up_proj.", "feed_forward.w3."},
                                  {"mlp.down_proj.", "feed_forward.w2."}}});

  return im;
}

}  // namespace braid::hf
