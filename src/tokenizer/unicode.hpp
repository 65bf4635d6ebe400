// UTF-8 and Unicode helpers for tokenizers: code point iteration, validation, the
// GPT-2 byte <-> printable-character table, lossy decoding, normalization forms.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace braid::unicode {

// Length in bytes of the UTF-8 sequence that starts with byte b (1 for invalid lead bytes).
inline int utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b >> 5) == 0x6) return 2;
  if ((b >> 4) == 0xe) return 3;
  if ((b >> 3) == 0x1e) return 4;
  return 1;
}

bool valid_utf8(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);
// Decodes bytes to UTF-8 text, replacing each maximal invalid subsequence with U+FFFD
// (the same rule as Rust's String::from_utf8_lossy).
std::string from_utf8_lossy(std::string_view bytes);

// GPT-2 byte-level alphabet: every byte maps to one printable code point.
const std::string& byte_to_char(uint8_t b);  // UTF-8 of the mapped code point
// Maps a code point back to its byte; returns -1 when it is not in the alphabet.
int char_to_byte(uint32_t cp);
// Decodes one code point at s[i] (valid UTF-8 assumed), advancing i.
uint32_t next_cp(std::string_view s, size_t& i);

enum class Form { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, Form f);
std::string lowercase(std::string_view s);

}  // namespace braid::unicode
