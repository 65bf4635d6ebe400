#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_llama(const JsonObject& cfg);
Import import_qwen3(const JsonObject& cfg);
Import import_mamba(const JsonObject& cfg);
Import import_falcon_mamba(const JsonObject& cfg);
Import import_mamba2(const JsonObject& cfg);
Import import_bamba(const JsonObject& cfg);
Import import_nemotron_h(const JsonObject& cfg);
Import import_lfm2(const JsonObject& cfg);
Import import_jamba(const JsonObject& cfg);
Import import_granitemoehybrid(const JsonObject& cfg);
Import import_falcon_h1(const JsonObject& cfg);
Import import_qwen3_next(const JsonObject& cfg);
Import import_rwkv(const JsonObject& cfg);
Import import_recurrent_gemma(const JsonObject& cfg);
Import import_minimax(const JsonObject& cfg);
Import import_xlstm(const JsonObject& cfg);

const std::vector<Importer>& importers() {
  // clang-format off
  static const std::vector<Importer> list = {
      {"llama", import_llama},
      {"qwen3", import_qwen3},
      {"mamba", import_mamba},
      {"falcon_mamba", import_falcon_mamba},
      {"mamba2", import_mamba2},
      {"bamba", import_bamba},
      {"nemotron_h", import_nemotron_h},
      {"lfm2", import_lfm2},
      {"jamba", import_jamba},
      {"granitemoehybrid", import_granitemoehybrid},
      {"falcon_h1", import_falcon_h1},
      {"qwen3_next", import_qwen3_next},
      {"rwkv", import_rwkv},
      {"recurrent_gemma", import_recurrent_gemma},
      {"minimax", import_minimax},
      {"xlstm", import_xlstm},
  };
  // clang-format on
  return list;
}

const Importer* find_importer(const std::string& model_type) {
  for (const auto& i : importers())
    if (model_type == i.model_type) return &i;
  return nullptr;
}

}  // namespace braid::hf
