// The bundled default model (models/default): within the size limits it is shipped under,
// its tokenizer fits its vocabulary, and it was trained (greedy text from a corpus-style
// prompt continues in the corpus's words).
#include <gtest/gtest.h>

#include <filesystem>

#include "import/load.hpp"
#include "runtime/generate.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid {
namespace {

const std::string kDir = std::string(BRAID_SOURCE_DIR) + "/models/default";

TEST(DefaultModel, LoadsWithinItsLimitsAndGenerates) {
  EXPECT_LE(std::filesystem::file_size(kDir + "/model.safetensors"), 20u << 20);
  std::shared_ptr<const Model> model = load_model(kDir);
  EXPECT_LE(model->n_params(), 10'000'000);
  const auto tok = Tokenizer::load(kDir + "/tokenizer.json");
  EXPECT_LE(tok->vocab_size(), model->spec().vocab_size);

  Session s(model);
  GenerateOptions o;
  o.max_new_tokens = 24;  // greedy
  const std::vector<int32_t> prompt = tok->encode("And the LORD spake unto Moses, saying,");
  const std::vector<int32_t> out = generate(s, prompt, o);
  ASSERT_EQ(out.size(), 24u);
  const std::string text = tok->decode(out);
  // An untrained model emits arbitrary tokens; this one continues in the corpus's English.
  int known = 0;
  for (const char* w : {" the ", " and ", " unto ", " of ", " LORD", " shall ", " thou ", " thy ", " thee"})
    known += text.find(w) != std::string::npos;
  EXPECT_GE(known, 2) << text;
}

}  // namespace
}  // namespace braid
