// Every case in ../shared/fixtures/tokenizers/*/cases.json (made with the Hugging Face
// tokenizers library) must encode to the same ids and decode to the same text.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "fixtures.hpp"
#include "io/json.hpp"
#include "runtime/text_stream.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

using namespace braid;

namespace {

class TokenizerCases : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerCases, EncodeAndDecodeMatchReference) {
  REQUIRE_FIXTURES();
  const std::string dir = fixtures_dir() + "/tokenizers/" + GetParam();
  auto tok = Tokenizer::load(dir + "/tokenizer.json");
  json cases = read_json_file(dir + "/cases.json");
  ASSERT_GT(cases.size(), 20u);
  for (const auto& c : cases) {
    ASSERT_FALSE(c.contains("error")) << "reference failed on a case: " << c.dump();
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok->encode(text);
    EXPECT_EQ(got, want) << "encode " << json(text).dump();
    EXPECT_EQ(tok->decode(want), c["decoded"].get<std::string>()) << "decode " << json(text).dump();
  }
}

// Text streamed one generated id at a time (each id decoded with a few before it as context)
// is the text of all the ids decoded at once, for every case of each real tokenizer.
TEST_P(TokenizerCases, StreamedTextEqualsDecodedText) {
  REQUIRE_FIXTURES();
  const std::string dir = fixtures_dir() + "/tokenizers/" + GetParam();
  auto tok = Tokenizer::load(dir + "/tokenizer.json");
  for (const auto& c : read_json_file(dir + "/cases.json")) {
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    TextStream ts(tok.get());
    std::string streamed;
    for (int32_t id : ids) streamed += ts.push(id);
    streamed += ts.finish();
    EXPECT_EQ(streamed, tok->decode(ids, true)) << json(c["text"]).dump();
    EXPECT_EQ(ts.text(), streamed);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerCases,
                         ::testing::Values("bpe_gpt2_style", "bpe_llama3_style", "bpe_sentencepiece_style"));

TEST(Tokenizer, RejectsInvalidUtf8) {
  REQUIRE_FIXTURES();
  auto tok = Tokenizer::load(fixtures_dir() + "/tokenizers/bpe_gpt2_style/tokenizer.json");
  EXPECT_THROW(tok->encode(std::string("ab\xff")), Error);
}

TEST(Tokenizer, MissingFileIsAnError) {
  try {
    Tokenizer::load("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json"), std::string::npos);
  }
}

// Found by fuzz_tokenizer: one huge id made the id table take gigabytes.
TEST(Tokenizer, SparseVocabularyIdsAreRefused) {
  json j = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 96444444}}}, {"merges", json::array()}}}};
  const std::string e = error_of([&] { Tokenizer::from_json(j, "t.json"); });
  EXPECT_NE(e.find("vocab id 96444444 of 'b' is out of range"), std::string::npos) << e;
  j["model"]["vocab"]["b"] = 1000;  // a gap is fine
  EXPECT_EQ(Tokenizer::from_json(j, "t.json")->token_id("b"), 1000);
}

TEST(Tokenizer, UnsupportedModelTypeIsNamed) {
  json j = {{"model", {{"type", "Unigram"}, {"vocab", json::array()}}}};
  try {
    Tokenizer::from_json(j, "t.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos) << e.what();
  }
}

TEST(Unicode, LossyDecodingReplacesMaximalInvalidSubparts) {
  // Same expectations as Rust's String::from_utf8_lossy.
  EXPECT_EQ(unicode::from_utf8_lossy("a\xF0\x9F\x98"
                                     "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(unicode::from_utf8_lossy("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(unicode::from_utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(unicode::from_utf8_lossy("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");
}

TEST(Unicode, ByteTableRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    const std::string& c = unicode::byte_to_char(uint8_t(b));
    size_t i = 0;
    EXPECT_EQ(unicode::char_to_byte(unicode::next_cp(c, i)), b);
  }
  EXPECT_EQ(unicode::byte_to_char(' '), "\xC4\xA0");  // U+0120 'Ġ'
}

}  // namespace
