// libFuzzer target: a model directory's config.json (every importer, and braid's own spec
// format), through the same path `braid` uses to read it.
#include "fuzz_common.hpp"
#include "import/load.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  braid::fuzz::write_file("config.json", data, size);
  try {
    (void)braid::load_spec(braid::fuzz::scratch().string());
  } catch (const braid::Error&) {
  }
  return 0;
}
