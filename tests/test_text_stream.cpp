// TextStream: generated ids become text only when final (complete UTF-8 characters, no
// tail that could still become a stop string), and stop strings end the text before them.
#include <gtest/gtest.h>

#include "runtime/text_stream.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid {
namespace {

// A byte-level vocabulary: id b is the byte b, so tests spell text one byte per token.
std::unique_ptr<Tokenizer> byte_tokenizer() {
  json vocab = json::object();
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = b;
  json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"byte_fallback", true}}},
      {"decoder", {{"type", "ByteFallback"}}}};
  return Tokenizer::from_json(j, "test tokenizer");
}

std::vector<std::string> feed(TextStream& ts, const std::string& bytes) {
  std::vector<std::string> out;
  for (unsigned char c : bytes) out.push_back(ts.push(int32_t(c)));
  out.push_back(ts.finish());
  return out;
}

TEST(TextStream, HoldsBackAnIncompleteCharacter) {
  const auto tok = byte_tokenizer();
  TextStream ts(tok.get());
  const auto pieces = feed(ts, "a\xC3\xA9z");  // "aéz": é is two bytes
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "", "\xC3\xA9", "z", ""}));
  EXPECT_FALSE(ts.stopped());
}

TEST(TextStream, StopsBeforeAStopStringSpanningTokens) {
  const auto tok = byte_tokenizer();
  TextStream ts(tok.get(), {"END", "xy"});
  const auto pieces = feed(ts, "abENxENDmore");
  // "EN" is held back while it could become "END"; after "x" it cannot, and is released, but
  // "x" waits (it could start "xy") until the next byte.
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "b", "", "", "EN", "x", "", "", "", "", "", "", ""}));
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(ts.text(), "abENx");
}

TEST(TextStream, FinishReleasesAHeldBackPrefix) {
  const auto tok = byte_tokenizer();
  TextStream ts(tok.get(), {"END"});
  EXPECT_EQ(feed(ts, "okEN"), (std::vector<std::string>{"o", "k", "", "", "EN"}));
  EXPECT_FALSE(ts.stopped());
}

TEST(TextStream, WithoutATokenizerTheTextIsTheIds) {
  TextStream ts(nullptr, {" 7"});
  EXPECT_EQ(ts.push(12), "12");
  EXPECT_EQ(ts.push(5), " 5");
  EXPECT_EQ(ts.push(7), "");
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(ts.text(), "12 5");
}

}  // namespace
}  // namespace braid
