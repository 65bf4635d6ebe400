// TextStream: turns generated token ids into text as it becomes final. Holds back an
// incomplete UTF-8 character until its remaining bytes arrive and, with stop strings,
// any tail that could still grow into one; stops at the first stop string, which is
// not part of the text. Without a tokenizer the text is the ids, space-separated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace braid {

class Tokenizer;

class TextStream {
 public:
  explicit TextStream(const Tokenizer* tok, std::vector<std::string> stop = {});

  // Adds one generated id; returns the text that became final with it ("" if none).
  std::string push(int32_t id);
  // Ends the stream: returns whatever was held back (nothing after a stop string).
  std::string finish();

  bool stopped() const { return stopped_; }  // a stop string was produced
  const std::string& text() const { return emitted_; }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::string decode(size_t from, size_t to) const;  // ids_[from, to) as text
  void extend(bool final);                           // decoded_ += the new ids' final text
  std::string release(bool final);

  const Tokenizer* tok_;
  std::vector<std::string> stop_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0, read_ = 0;  // ids_[prefix_, read_): context already in decoded_
  std::string decoded_;           // the text of ids_[0, read_)
  std::string emitted_;
  bool stopped_ = false;
};

}  // namespace braid
