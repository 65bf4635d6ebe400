#include "runtime/text_stream.hpp"

#include <algorithm>

#include "tokenizer/tokenizer.hpp"

namespace braid {

namespace {
const std::string kReplacement = "\xEF\xBF\xBD";  // what decode gives for an incomplete character
}

TextStream::TextStream(const Tokenizer* tok, std::vector<std::string> stop)
    : tok_(tok), stop_(std::move(stop)) {
  std::erase_if(stop_, [](const std::string& s) { return s.empty(); });
}

std::string TextStream::decode(size_t from, size_t to) const {
  const std::vector<int32_t> ids(ids_.begin() + std::ptrdiff_t(from), ids_.begin() + std::ptrdiff_t(to));
  if (tok_) return tok_->decode(ids, true);
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  return s;
}

// Decodes the ids since the last text that came out, with the few ids before it as context
// (a decoder may treat the first token of a text differently, e.g. drop its leading space),
// so each token costs the same however long the output grows.
void TextStream::extend(bool final) {
  const std::string before = decode(prefix_, read_), now = decode(prefix_, ids_.size());
  if (now.size() <= before.size() || now.compare(0, before.size(), before) != 0) return;
  const bool incomplete =
      now.size() >= kReplacement.size() &&
      now.compare(now.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0;
  if (incomplete && !final) return;  // the last character is not complete yet
  decoded_.append(now, before.size());
  prefix_ = read_;
  read_ = ids_.size();
}

// The part of decoded_ beyond what was emitted that is final now.
std::string TextStream::release(bool final) {
  const std::string& full = decoded_;
  size_t end = full.size();
  // The earliest stop string that ends in the new text ends the stream.
  const size_t from = emitted_.size();
  size_t cut = std::string::npos;
  for (const auto& s : stop_) {
    const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    const size_t at = full.find(s, start);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    end = std::max(cut, from);
  } else if (!final) {
    // Hold back the longest tail that is a proper prefix of a stop string.
    for (const auto& s : stop_)
      for (size_t k = std::min(s.size() - 1, full.size() - from); k > 0; --k)
        if (full.compare(full.size() - k, k, s, 0, k) == 0) {
          end = std::min(end, full.size() - k);
          break;
        }
  }
  std::string out = full.substr(from, end - from);
  emitted_ += out;
  return out;
}

std::string TextStream::push(int32_t id) {
  if (stopped_) return "";
  ids_.push_back(id);
  extend(false);
  return release(false);
}

std::string TextStream::finish() {
  if (stopped_) return "";
  extend(true);
  return release(true);
}

}  // namespace braid
