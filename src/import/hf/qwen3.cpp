// Qwen3ForCausalLM: Llama layout plus RMSNorm on q and k per head before RoPE.
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_qwen3(const JsonObject& cfg) {
  LlamaLikeOptions o;
  o.qk_norm = true;
  return import_llama_like(cfg, o);
}

}  // namespace braid::hf
