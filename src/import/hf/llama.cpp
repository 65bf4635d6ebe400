// LlamaForCausalLM (and Mistral-style checkpoints that share its layout).
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_llama(const JsonObject& cfg) { return import_llama_like(cfg, {}); }

}  // namespace braid::hf
