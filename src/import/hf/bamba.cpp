// BambaForCausalLM: Llama-style decoder blocks whose token mixer is Mamba-2 (SSD), except
// the layers in attn_layer_indices, which use grouped-query attention with partial
// rotary embedding; every block has a gated MLP (feed_forward).
#include <algorithm>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_bamba(const JsonObject& cfg) {
  // Start from the Llama-like reading (attention, MLP, norms, RoPE, token ids).
  Import im = import_llama_like(cfg, {});
  ModelSpec& s = im.spec;

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
  const int64_t expand = cfg.get_int("mamba_expand", 2);
  check(m.n_heads * m.head_dim == expand * s.d_model, cfg.where(),
        ": mamba_n_heads x mamba_d_head = ", m.n_heads * m.head_dim,
        " but mamba_expand x hidden_size = ", expand * s.d_model);
  check(m.n_groups > 0 && m.n_heads % m.n_groups == 0, cfg.where(), ": mamba_n_groups ", m.n_groups,
        " must divide mamba_n_heads ", m.n_heads);
  m.norm_group_size = m.d_inner();  // transformers normalises the gated output over all channels
  read_time_step_limit(cfg, &m);

  std::vector<int64_t> attn;
  if (cfg.has("attn_layer_indices")) {
    check(cfg.raw()["attn_layer_indices"].is_array(), cfg.where(), ": attn_layer_indices must be a list");
    for (const auto& v : cfg.raw()["attn_layer_indices"]) {
      check(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < int64_t(s.blocks.size()),
            cfg.where(), ": attn_layer_indices holds an invalid layer index");
      attn.push_back(v.get<int64_t>());
    }
  }
  for (size_t i = 0; i < s.blocks.size(); ++i)
    if (std::find(attn.begin(), attn.end(), int64_t(i)) == attn.end()) {
      s.blocks[i].mixer = MixerKind::Mamba2;
      s.blocks[i].mamba2 = m;
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
    if (rest.rfind("mamba2.", 0) == 0) return pre + "mamba." + rest.substr(7);
    if (rest.rfind("mlp.", 0) == 0) return pre + "feed_forward." + rest.substr(4);
    return pre + rest;
  };
  return im;
}

}  // namespace braid::hf
