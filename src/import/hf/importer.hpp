// Hugging Face importers: config.json -> ModelSpec, plus the mapping from braid's
// canonical parameter names to the checkpoint's tensor names. No math lives here.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "io/json.hpp"
#include "model/spec.hpp"

namespace braid::hf {

// Where a canonical parameter lives in a checkpoint: a tensor, optionally one entry of
// its first dimension (fused expert weights [E, ...]) and then a range of rows (fused
// gate/up halves). Slices are zero-copy views.
struct TensorRef {
  std::string name;
  int64_t index = -1;                   // -1: the whole tensor
  int64_t row_begin = 0, row_end = -1;  // -1: all rows
};

struct Import {
  ModelSpec spec;
  // Canonical name ("blocks.3.attn.q_proj.weight") -> name in the checkpoint.
  std::function<std::string(const std::string&)> tensor_name;
  // Set instead of tensor_name by families that store several parameters in one tensor.
  std::function<TensorRef(const std::string&)> tensor_ref;
};

using ImportFn = Import (*)(const JsonObject& config);

struct Importer {
  const char* model_type;
  ImportFn fn;
};

// All registered families; find_importer returns null for an unknown model_type.
const std::vector<Importer>& importers();
const Importer* find_importer(const std::string& model_type);

// Shared by Llama-like families (llama, qwen3, ...): decoder blocks of
// RMSNorm -> attention -> RMSNorm -> gated MLP, names under model.layers.N.
struct LlamaLikeOptions {
  bool qk_norm = false;
  bool default_tie = false;
  bool default_qkv_bias = false;
};
Import import_llama_like(const JsonObject& cfg, const LlamaLikeOptions& opt);

// Rotary settings from rope_parameters (transformers >= 5) or rope_theta + rope_scaling.
RopeSpec read_rope(const JsonObject& cfg, int64_t head_dim);
// time_step_limit [min, max] (max may be {"__float__": "Infinity"}) into a Mamba-2 spec.
void read_time_step_limit(const JsonObject& cfg, Mamba2Spec* m);
// eos_token_id as an int, a list of ints, or null.
std::vector<int64_t> read_token_ids(const JsonObject& cfg, const std::string& key);

// The model-level fields every family has: model_type, vocab_size, hidden_size, the
// norm epsilon (under `eps_key`), tie_word_embeddings, max_position_embeddings, and the
// bos / eos token ids.
void read_model_fields(const JsonObject& cfg, const std::string& eps_key, double default_eps,
                       bool default_tie, ModelSpec* s);

// The layer count under `key`: an error unless 1 <= count <= kMaxLayers.
int64_t read_layer_count(const JsonObject& cfg, const std::string& key = "num_hidden_layers");

// num_hidden_layers copies of one block.
std::vector<BlockSpec> repeat_block(const JsonObject& cfg, const BlockSpec& b);

// Mamba-2 hyper-parameters stored under `mamba_*` keys (bamba, granitemoehybrid).
// `grouped_norm`: the gated norm works per group of d_inner / n_groups channels.
Mamba2Spec read_prefixed_mamba2(const JsonObject& cfg, double norm_eps, bool grouped_norm);

// Checkpoint naming of a family: where the embedding, final norm and head live, the
// prefix of layer N ("model.layers.{}." with {} for N), and how the rest of a canonical block name is
// renamed: the first rule whose `from` is a prefix of it (or equal to it, for exact
// names) replaces that prefix with `to`; without a match the rest is kept.
struct NameMap {
  std::string embed, final_norm, lm_head = "lm_head.weight", layer_prefix;
  std::vector<std::pair<std::string, std::string>> rules;
  // Other names outside the blocks, exactly ("final_norm.bias" -> "model.norm.bias").
  std::vector<std::pair<std::string, std::string>> exact = {};
};
std::function<std::string(const std::string&)> tensor_namer(NameMap map);
// Splits "blocks.N.rest" into N and rest; false for other names.
bool split_block_name(const std::string& canonical, std::string* n, std::string* rest);

}  // namespace braid::hf
