// libFuzzer target: tokenizer.json; a tokenizer that loads must then encode and decode.
#include "fuzz_common.hpp"
#include "tokenizer/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tok = braid::Tokenizer::from_json(
        braid::parse_json(std::string(reinterpret_cast<const char*>(data), size), "tokenizer.json"),
        "tokenizer.json");
    const auto ids = tok->encode("Hello, w\xC3\xB6rld! 123 <s> \xE4\xB8\xAD\xE6\x96\x87  \n\tend", true);
    (void)tok->decode(ids, false);
    (void)tok->decode({0, 1, 2, 255, 256, 1000000}, true);
  } catch (const braid::Error&) {
  }
  return 0;
}
