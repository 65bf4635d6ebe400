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

  // transformers normalises Bamba's gated SSD output over all channels at once.
  const Mamba2Spec m = read_prefixed_mamba2(cfg, s.norm_eps, /*grouped_norm=*/false);

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

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.final_layernorm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "input_layernorm.weight"},
                                  {"norm2.weight", "pre_ff_layernorm.weight"},
                                  {"attn.", "self_attn."},
                                  {"mamba2.", "mamba."},
                                  {"mlp.", "feed_forward."}}});

  return im;
}

}  // namespace braid::hf
