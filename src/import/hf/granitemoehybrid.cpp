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
  s.family = cfg.get_string("model_type");
  s.vocab_size = cfg.get_int("vocab_size");
  s.d_model = cfg.get_int("hidden_size");
  s.norm_eps = cfg.get_float("rms_norm_eps", 1e-6);
  s.tie_embeddings = cfg.get_bool("tie_word_embeddings", false);
  s.max_context = cfg.get_int("max_position_embeddings", 0);
  s.embedding_multiplier = cfg.get_float("embedding_multiplier", 1.0);
  s.residual_multiplier = cfg.get_float("residual_multiplier", 1.0);
  s.logits_scaling = cfg.get_float("logits_scaling", 1.0);
  check(s.logits_scaling != 0, cfg.where(), ": logits_scaling must not be 0");
  auto bos = read_token_ids(cfg, "bos_token_id");
  s.bos_token_id = bos.empty() ? -1 : bos[0];
  s.eos_token_ids = read_token_ids(cfg, "eos_token_id");

  AttentionSpec a;
  a.n_heads = cfg.get_int("num_attention_heads");
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

  Mamba2Spec m;
  m.n_heads = cfg.get_int("mamba_n_heads");
  m.head_dim = cfg.get_int("mamba_d_head");
  m.d_state = cfg.get_int("mamba_d_state");
  m.n_groups = cfg.get_int("mamba_n_groups", 1);
  m.d_conv = cfg.get_int("mamba_d_conv", 4);
  m.conv_bias = cfg.get_bool("mamba_conv_bias", true);
  m.proj_bias = cfg.get_bool("mamba_proj_bias", false);
  m.norm_eps = s.norm_eps;
  m.chunk = cfg.get_int("mamba_chunk_size", 256);
  check(m.n_groups > 0 && m.n_heads % m.n_groups == 0, cfg.where(), ": mamba_n_groups ", m.n_groups,
        " must divide mamba_n_heads ", m.n_heads);
  m.norm_group_size = m.d_inner() / m.n_groups;
  read_time_step_limit(cfg, &m);

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
  im.tensor_ref = [F, S](const std::string& c) -> TensorRef {
    if (c == "embed.weight") return {"model.embed_tokens.weight"};
    if (c == "final_norm.weight") return {"model.norm.weight"};
    if (c == "lm_head.weight") return {"lm_head.weight"};
    const size_t dot = c.find('.', 7);
    const std::string n = c.substr(7, dot - 7), rest = c.substr(dot + 1);
    const std::string pre = "model.layers." + n + ".";
    if (rest == "norm1.weight") return {pre + "input_layernorm.weight"};
    if (rest == "norm2.weight") return {pre + "post_attention_layernorm.weight"};
    if (rest.rfind("attn.", 0) == 0) return {pre + "self_attn." + rest.substr(5)};
    if (rest.rfind("mamba2.", 0) == 0) return {pre + "mamba." + rest.substr(7)};
    if (rest == "moe.router.weight") return {pre + "block_sparse_moe.router.layer.weight"};
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
    return {pre + rest};
  };
  return im;
}

}  // namespace braid::hf
