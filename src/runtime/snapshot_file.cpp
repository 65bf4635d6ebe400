#include "runtime/snapshot_file.hpp"

#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/buffer.hpp"
#include "core/error.hpp"
#include "model/spec_json.hpp"

namespace braid {
namespace {

constexpr char kMagic[8] = {'B', 'R', 'A', 'I', 'D', 'S', 'N', 'P'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeadBytes = 8 + 4 + 4 + 8 + 8;  // magic, version, 0, fingerprint, n tokens
constexpr const char* kOther = " (made at another loop depth?)";
// Counts and positions past this are corruption, not context.
constexpr int64_t kMaxCount = int64_t(1) << 40;

// Where a snapshot's bytes go: a stream (hashed as they pass), or nowhere when only their
// count is wanted.
class Out {
 public:
  explicit Out(std::ostream* os) : os_(os), h_(os ? XXH3_createState() : nullptr) {
    check(!os || h_, "out of memory writing a snapshot");
    if (h_) XXH3_64bits_reset(h_);
  }
  ~Out() { XXH3_freeState(h_); }
  Out(const Out&) = delete;
  Out& operator=(const Out&) = delete;
  void bytes(const void* p, size_t n) {
    if (os_ && n) {
      XXH3_64bits_update(h_, p, n);
      os_->write(static_cast<const char*>(p), std::streamsize(n));
    }
    size_ += n;
  }
  template <class T>
  void put(T v) {
    bytes(&v, sizeof v);
  }
  // Appends the checksum of everything so far.
  void finish() {
    const uint64_t sum = h_ ? XXH3_64bits_digest(h_) : 0;
    if (os_) os_->write(reinterpret_cast<const char*>(&sum), sizeof sum);
    size_ += sizeof sum;
  }
  size_t size() const { return size_; }

 private:
  std::ostream* os_;
  XXH3_state_t* h_;
  size_t size_ = 0;
};

class Writer final : public StateFields {
 public:
  explicit Writer(Out& out) : out_(out) {}
  bool loading() const override { return false; }
  void count(int64_t& v) override {
    out_.put('c');
    out_.put(v);
  }
  void floats(float* p, size_t n) override {
    out_.put('f');
    out_.put(uint64_t(n));
    out_.bytes(p, n * sizeof(float));
  }
  void present(bool there) override { out_.put(char(there ? 1 : 0)); }
  void expect_floats(size_t) override {}

 private:
  Out& out_;
};

void write_snapshot(Out& out, const Session::Snapshot& s, uint64_t fingerprint, const int32_t* tokens,
                    int64_t n) {
  out.bytes(kMagic, 8);
  out.put(kVersion);
  out.put(uint32_t(0));
  out.put(fingerprint);
  out.put(uint64_t(n));
  out.bytes(tokens, size_t(n) * sizeof(int32_t));
  out.put(int64_t(s.position));
  out.put(uint64_t(s.states.size()));
  Writer w(out);
  for (const auto& st : s.states) {
    w.present(st != nullptr);
    if (st) st->fields(w);
  }
  out.put(uint64_t(s.logits.size()));
  out.bytes(s.logits.data(), s.logits.size() * sizeof(float));
  out.finish();
}

// Reads fields back, refusing anything that does not match the state being filled.
class Reader final : public StateFields {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& where) : p_(p), n_(n), where_(where) {}
  bool loading() const override { return true; }
  void count(int64_t& v) override {
    tag('c', "a count");
    v = get<int64_t>();
    if (v < 0 || v > kMaxCount) bad("a count of ", v);
  }
  void floats(float* p, size_t n) override {
    tag('f', "an array");
    const uint64_t stored = get<uint64_t>();
    if (stored != n) bad("an array of ", stored, " values where the model's state has ", n, kOther);
    need(n * sizeof(float));
    if (n) std::memcpy(p, p_ + at_, n * sizeof(float));
    at_ += n * sizeof(float);
  }
  void present(bool there) override {
    need(1);
    const uint8_t b = p_[at_++];
    if (b > 1 || bool(b) != there)
      bad(b ? "a state where the model has none" : "no state where the model has one", kOther);
  }
  void expect_floats(size_t n) override {
    if (n > (n_ - at_) / sizeof(float)) truncated();
  }

  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_ + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  size_t at() const { return at_; }
  template <class... Parts>
  [[noreturn]] void bad(const Parts&... parts) const {
    fail("snapshot ", where_, ": ", parts..., " at byte ", at_);
  }

 private:
  void need(size_t k) const {
    if (k > n_ - at_) truncated();
  }
  [[noreturn]] void truncated() const { fail("snapshot ", where_, ": truncated at byte ", at_, " of ", n_); }
  void tag(char want, const char* what) {
    need(1);
    if (char(p_[at_]) != want) bad("expected ", what);
    ++at_;
  }
  const uint8_t* p_;
  size_t n_, at_ = 0;
  const std::string& where_;
};

std::vector<int32_t> read_head(Reader& r, size_t size, uint64_t* fingerprint, const std::string& where) {
  std::vector<int32_t> tokens;
  char magic[8];
  for (char& c : magic) c = char(r.get<uint8_t>());
  check(std::memcmp(magic, kMagic, 8) == 0, "snapshot ", where, ": not a braid snapshot file");
  const uint32_t version = r.get<uint32_t>();
  check(version == kVersion, "snapshot ", where, ": format version ", version, ", this braid reads ",
        kVersion);
  r.get<uint32_t>();
  *fingerprint = r.get<uint64_t>();
  const uint64_t n = r.get<uint64_t>();
  if (n > (size - r.at()) / sizeof(int32_t)) r.bad("a prefix of ", n, " tokens in ", size, " bytes");
  tokens.resize(size_t(n));
  for (int32_t& t : tokens) t = r.get<int32_t>();
  return tokens;
}

}  // namespace

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t model_fingerprint(const Model& m) {
  XXH3_state_t* st = XXH3_createState();
  check(st != nullptr, "out of memory hashing the model");
  XXH3_64bits_reset(st);
  const std::string spec = spec_description(m.spec()).dump();
  XXH3_64bits_update(st, spec.data(), spec.size());
  for (const auto& [name, t] : m.weights()) {
    XXH3_64bits_update(st, name.data(), name.size() + 1);
    for (int64_t d : t.shape()) XXH3_64bits_update(st, &d, sizeof d);
    if (t.nbytes()) XXH3_64bits_update(st, t.raw(), t.nbytes());
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

std::string encode_snapshot(const Session::Snapshot& s, uint64_t fingerprint, const int32_t* tokens,
                            int64_t n) {
  std::ostringstream os;
  Out out(&os);
  write_snapshot(out, s, fingerprint, tokens, n);
  return std::move(os).str();
}

size_t snapshot_file_bytes(const Session::Snapshot& s, int64_t n) {
  Out out(nullptr);
  write_snapshot(out, s, 0, nullptr, n);
  return out.size();
}

Session::Snapshot decode_snapshot(const uint8_t* data, size_t size, const Model& model, uint64_t fingerprint,
                                  std::vector<int32_t>* tokens, const std::string& where) {
  check(size >= kHeadBytes + 8, "snapshot ", where, ": truncated (", size, " bytes)");
  uint64_t sum;
  std::memcpy(&sum, data + size - 8, 8);
  Reader r(data, size - 8, where);
  uint64_t fp = 0;
  std::vector<int32_t> prefix = read_head(r, size - 8, &fp, where);
  check(sum == XXH3_64bits(data, size - 8), "snapshot ", where, ": checksum mismatch (the file is damaged)");
  check(fp == fingerprint, "snapshot ", where, ": made by another model (fingerprint ", hex64(fp),
        ", this model ", hex64(fingerprint), ")");
  Session::Snapshot s;
  s.position = r.get<int64_t>();
  if (s.position < 0 || s.position > kMaxCount) r.bad("a position of ", s.position);
  const uint64_t n_states = r.get<uint64_t>();
  if (n_states > size - r.at()) r.bad(n_states, " states in ", size, " bytes");
  // States shaped by the model at the depth the snapshot was made at, then filled.
  s.states = model.make_states(model.loops_for_states(size_t(n_states)));
  if (s.states.size() != n_states) r.bad(n_states, " states where the model has ", s.states.size());
  for (auto& st : s.states) {
    r.present(st != nullptr);
    if (st) st->fields(r);
  }
  const uint64_t V = r.get<uint64_t>();
  if (V != uint64_t(model.spec().vocab_size))
    r.bad(V, " logits where the model has ", model.spec().vocab_size);
  r.expect_floats(size_t(V));
  s.logits.resize(size_t(V));
  std::memcpy(s.logits.data(), data + r.at(), size_t(V) * sizeof(float));
  check(r.at() + size_t(V) * sizeof(float) == size - 8, "snapshot ", where, ": ",
        size - 8 - r.at() - size_t(V) * sizeof(float), " bytes after the logits");
  if (tokens) *tokens = std::move(prefix);
  return s;
}

void save_snapshot(const std::string& path, const Session::Snapshot& s, uint64_t fingerprint,
                   const int32_t* tokens, int64_t n) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    check(bool(f), "cannot write ", tmp);
    Out out(&f);
    write_snapshot(out, s, fingerprint, tokens, n);
    f.close();
    if (!f) {
      std::filesystem::remove(tmp, ec);
      fail("cannot write ", tmp, " (disk full?)");
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail("cannot rename ", tmp, " to ", path);
  }
}

Session::Snapshot load_snapshot(const std::string& path, const Model& model, uint64_t fingerprint,
                                std::vector<int32_t>* tokens) {
  const std::shared_ptr<MappedFile> f = MappedFile::open(path);
  return decode_snapshot(f->data(), f->size(), model, fingerprint, tokens, path);
}

SnapshotHeader read_snapshot_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  check(bool(f), "cannot open ", path);
  f.seekg(0, std::ios::end);
  const size_t size = size_t(f.tellg());
  f.seekg(0);
  check(size >= kHeadBytes + 8, "snapshot ", path, ": truncated (", size, " bytes)");
  std::string head(kHeadBytes, '\0');
  f.read(head.data(), std::streamsize(kHeadBytes));
  uint64_t n = 0;
  std::memcpy(&n, head.data() + kHeadBytes - 8, 8);
  check(n <= (size - kHeadBytes) / sizeof(int32_t), "snapshot ", path, ": a prefix of ", n, " tokens in ",
        size, " bytes");
  head.resize(kHeadBytes + size_t(n) * sizeof(int32_t));
  f.read(head.data() + kHeadBytes, std::streamsize(n * sizeof(int32_t)));
  check(bool(f), "cannot read ", path);
  Reader r(reinterpret_cast<const uint8_t*>(head.data()), head.size(), path);
  SnapshotHeader h;
  h.tokens = read_head(r, head.size(), &h.fingerprint, path);
  return h;
}

}  // namespace braid
