// libFuzzer target: the body of POST /v1/completions and of POST /v1/chat/completions.
#include "fuzz_common.hpp"
#include "serve/api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)braid::serve::parse_completion_request(std::string(reinterpret_cast<const char*>(data), size),
                                                 braid::serve::RequestLimits{});
  } catch (const braid::serve::ApiError&) {
  }
  try {
    (void)braid::serve::parse_chat_request(std::string(reinterpret_cast<const char*>(data), size),
                                           braid::serve::RequestLimits{});
  } catch (const braid::serve::ApiError&) {
  }
  return 0;
}
