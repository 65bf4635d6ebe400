#include "import/save.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "model/spec_json.hpp"

namespace braid {

void save_model(const std::string& dir, const ModelSpec& spec, const Weights& weights) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(fs::is_directory(dir), dir, ": cannot create directory");
  std::vector<std::pair<std::string, Tensor>> list;
  for (const ParamDecl& p : param_decls(spec)) {
    auto it = weights.find(p.name);
    check(it != weights.end(), "save_model: missing parameter '", p.name, "'");
    list.emplace_back(p.name, it->second);
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), list, {{"format", "pt"}});
  write_json_file((fs::path(dir) / "config.json").string(), spec_to_json(spec));
}

}  // namespace braid
