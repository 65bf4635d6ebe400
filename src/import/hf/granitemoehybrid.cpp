// GraniteMoeHybridForCausalLM: Mamba-2 and attention layers (layer_types), each block
// followed by a mixture of experts (router -> top-k -> softmax over the chosen logits)
// plus an always-on shared MLP, with Granite's embedding / attention / residual /
// logits multipliers. Expert weights are fused: input_linear [E, 2F, D] holds each
// expert's gate (first F rows) and up projection, output_linear [E, D, F] its down.
#include <cmath>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_granitemoehybrid(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "rms_norm_eps", 1e-6, false, &s);
  s.embedding_multiplier = cfg.get_float("embedding_multiplier", 1.0);
  s.residual_multiplier = cfg.get_float("residual_multiplier", 1.0);
  s.logits_scaling = cfg.get_float("logits_scaling", 1.0);
  check(s.logits_scaling != 0, cfg.where(), ": logits_scaling must not be 0");

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = s.d_model / a.n_heads;
  a.qkv_bias = a.out_bias = cfg.get_bool("attention_bias", false);
  a.scale = cfg.get_float("attention_multiplier", 1.0 / std::sqrt(double(a.head_dim)));
  const std::string pos = cfg.get_string("position_embedding_type", "nope");
  check(pos == "rope" || pos == "nope", cfg.where(), ": position_embedding_type '", pos,
        "' is not supported");
  if (pos == "rope")
    a.rope = read_rope(cfg, a.head_dim);
  else
    a.rope.rotary_dim = 0;

  // Like Bamba, transformers normalises the gated SSD output over all channels at once
  // (fixtures have n_groups = 1, where both conventions agree).
  const Mamba2Spec m = read_prefixed_mamba2(cfg, s.norm_eps, /*grouped_norm=*/false);

  MoeSpec moe;
  moe.n_experts = cfg.get_int("num_local_experts");
  moe.top_k = cfg.get_int("num_experts_per_tok");
  moe.hidden = cfg.get_int("intermediate_size");
  moe.shared_hidden = cfg.get_int("shared_intermediate_size", 0);
  moe.renormalize = true;  // softmax over the top-k logits
  const std::string act = cfg.get_string("hidden_act", "silu");
  check(parse_activation(act, &moe.act), cfg.where(), ": hidden_act '", act, "' is not supported");
  check(moe.n_experts > 0, cfg.where(),
        ": num_local_experts = 0 (dense GraniteMoeHybrid) is not supported yet");

  const std::vector<std::string> types = cfg.get_string_list("layer_types");
  check(int64_t(types.size()) == cfg.get_int("num_hidden_layers"), cfg.where(), ": layer_types has ",
        types.size(), " entries for num_hidden_layers = ", cfg.get_int("num_hidden_layers"));
  for (size_t i = 0; i < types.size(); ++i) {
    BlockSpec b;
    if (types[i] == "mamba" || types[i] == "linear_attention") {
      b.mixer = MixerKind::Mamba2;
      b.mamba2 = m;
    } else if (types[i] == "attention" || types[i] == "full_attention") {
      b.mixer = MixerKind::Attention;
      b.attn = a;
    } else {
      fail(cfg.where(), ": layer_types[", i, "] = '", types[i], "' is not supported");
    }
    b.has_mlp = false;
    b.has_moe = true;
    b.moe = moe;
    s.blocks.push_back(b);
  }

  const int64_t F = moe.hidden, S = moe.shared_hidden;
  auto base = tensor_namer({"model.embed_tokens.weight",
                            "model.norm.weight",
                            "lm_head.weight",
                            "model.layers.{}.",
                            {{"norm1.weight", "input_layernorm.weight"},
                             {"norm2.weight", "post_attention_layernorm.weight"},
                             {"attn.", "self_attn."},
                             {"mamba2.", "mamba."},
                             {"moe.router.", "block_sparse_moe.router.layer."}}});
  // Fused tensors: expert E's gate is rows [0, F) of input_linear[E], its up rows
  // [F, 2F), its down output_linear[E]; the shared MLP is split the same way.
  im.tensor_ref = [F, S, base](const std::string& c) -> TensorRef {
    std::string n, rest;
    if (!split_block_name(c, &n, &rest)) return {base(c)};
    const std::string pre = "model.layers." + n + ".";
    if (rest == "moe.shared.gate_proj.weight") return {pre + "shared_mlp.input_linear.weight", -1, 0, S};
    if (rest == "moe.shared.up_proj.weight") return {pre + "shared_mlp.input_linear.weight", -1, S, 2 * S};
    if (rest == "moe.shared.down_proj.weight") return {pre + "shared_mlp.output_linear.weight"};
    if (rest.rfind("moe.experts.", 0) == 0) {  // moe.experts.E.{gate,up,down}_proj.weight
      const size_t d2 = rest.find('.', 12);
      const int64_t e = std::stoll(rest.substr(12, d2 - 12));
      const std::string what = rest.substr(d2 + 1);
      if (what == "gate_proj.weight") return {pre + "block_sparse_moe.input_linear.weight", e, 0, F};
      if (what == "up_proj.weight") return {pre + "block_sparse_moe.input_linear.weight", e, F, 2 * F};
      return {pre + "block_sparse_moe.output_linear.weight", e};
    }
    return {base(c)};
  };

  return im;
}

}  // namespace braid::hf
