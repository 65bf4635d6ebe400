// libFuzzer target: a .safetensors file (header length, JSON header, offsets, data).
#include "fuzz_common.hpp"
#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = braid::fuzz::write_file("model.safetensors", data, size);
  try {
    auto f = braid::SafetensorsFile::open(path);
    for (const auto& t : f->tensors()) (void)f->get(t.name);  // every tensor's view
  } catch (const braid::Error&) {
  }
  return 0;
}
