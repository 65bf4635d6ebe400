// safetensors reader/writer: round trips, sharded checkpoints, and every malformed
// file gives a one-line error naming the file and the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "fixtures.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"

using namespace braid;

namespace {

Tensor filled(Shape s, float start) {
  Tensor t = Tensor::zeros(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32_mut()[i] = start + float(i);
  return t;
}

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

// Expects open() to throw a one-line error that names the file and contains `what`.
void expect_error(const std::string& path, const std::string& what) {
  try {
    SafetensorsFile::open(path);
    FAIL() << "no error for " << what;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(what), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  TempDir d;
  Tensor a = filled({2, 3}, 1), b = filled({5}, 10);
  Tensor h = Tensor::zeros(DType::BF16, {4});
  write_safetensors(d / "m.safetensors", {{"a", a}, {"b", b}, {"h", h}}, {{"format", "pt"}});
  auto f = SafetensorsFile::open(d / "m.safetensors");
  EXPECT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  Tensor ra = f->get("a");
  EXPECT_EQ(ra.shape(), (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(ra.raw(), a.raw(), a.nbytes()), 0);
  EXPECT_EQ(f->get("b").f32()[4], 14.0f);
  EXPECT_EQ(f->get("h").dtype(), DType::BF16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ra.raw()) % 8, 0u);  // header padded to keep data aligned
  EXPECT_THROW(f->get("missing"), Error);
}

TEST(Safetensors, ShardedCheckpoint) {
  TempDir d;
  write_safetensors(d / "s1.safetensors", {{"x", filled({3}, 0)}});
  write_safetensors(d / "s2.safetensors", {{"y", filled({2, 2}, 5)}});
  write_json_file(d / "model.safetensors.index.json",
                  {{"metadata", {{"total_size", 28}}},
                   {"weight_map", {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}}});
  Checkpoint c = Checkpoint::open_dir(d.path.string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(c.get("y").f32()[3], 8.0f);
  EXPECT_THROW(c.get("z"), Error);
  // An index that points at a shard without the tensor is an error.
  write_json_file(d / "model.safetensors.index.json", {{"weight_map", {{"x", "s2.safetensors"}}}});
  EXPECT_THROW(Checkpoint::open_dir(d.path.string()), Error);
  // So is a shard path that escapes the directory.
  write_json_file(d / "model.safetensors.index.json", {{"weight_map", {{"x", "../s1.safetensors"}}}});
  EXPECT_THROW(Checkpoint::open_dir(d.path.string()), Error);
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  TempDir d;
  const std::string p = d / "bad.safetensors";
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

  { std::ofstream(p, std::ios::binary) << "abc"; }
  expect_error(p, "shorter than the 8-byte header");

  write_raw(p, ok_header, "1234");  // 4 of 8 data bytes
  expect_error(p, "past the data buffer");

  {  // header length larger than the file
    std::ofstream out(p, std::ios::binary);
    uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  expect_error(p, "truncated");

  {  // absurd header length
    std::ofstream out(p, std::ios::binary);
    uint64_t n = uint64_t(1) << 40;
    out.write(reinterpret_cast<const char*>(&n), 8);
  }
  expect_error(p, "exceeds");

  write_raw(p, R"({"a":{"dtype":"F32",)", "");
  expect_error(p, "invalid JSON");

  write_raw(p, R"([1,2])", "");
  expect_error(p, "not a JSON object");

  write_raw(p, R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", "12345678");
  expect_error(p, "unknown dtype");

  write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678");
  expect_error(p, "expected 12");

  write_raw(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678");
  expect_error(p, "without gaps");

  write_raw(
      p,
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      "12345678");
  expect_error(p, "without gaps or overlaps");

  write_raw(p, ok_header, "12345678extra");
  expect_error(p, "tensors cover 8");

  write_raw(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678");
  expect_error(p, "non-negative");

  write_raw(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
            "12345678");
  expect_error(p, "overflows");

  write_raw(p, R"({"a":{"dtype":"F32","shape":[2]}})", "12345678");
  expect_error(p, "data_offsets");

  write_raw(p, R"({"__metadata__":{"k":1}})", "");
  expect_error(p, "__metadata__");

  write_raw(p, R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "12345678");
  auto f = SafetensorsFile::open(p);  // valid file, but braid cannot compute with F64
  EXPECT_THROW(f->get("a"), Error);
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    SafetensorsFile::open("/nonexistent/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, ReadsEveryFixtureCheckpoint) {
  REQUIRE_FIXTURES();
  for (const auto& e : std::filesystem::directory_iterator(fixtures_dir() + "/hf")) {
    Checkpoint c = Checkpoint::open_dir(e.path().string());
    EXPECT_FALSE(c.names().empty()) << e.path();
    auto ref = SafetensorsFile::open((e.path() / "reference.safetensors").string());
    EXPECT_NE(ref->find("input_ids"), nullptr);
  }
}

}  // namespace
