#include "tokenizer/unicode.hpp"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "core/error.hpp"

namespace braid::unicode {

bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf)
      len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
      len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
      len = 4, cp = c & 0x07;
    else
      return false;
    if (i + size_t(len) > n) return false;
    for (int k = 1; k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
      return false;
    i += size_t(len);
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xc0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xe0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(char(0xf0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(char(0x80 | (cp & 0x3f)));
  }
}

std::string from_utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  auto bad = [&] { out += "\xEF\xBF\xBD"; };
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(char(c));
      ++i;
      continue;
    }
    // Valid ranges of the second byte per lead byte (Unicode Table 3-7).
    int len = 0;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
      len = 2;
    else if (c == 0xe0)
      len = 3, lo = 0xa0;
    else if (c >= 0xe1 && c <= 0xec)
      len = 3;
    else if (c == 0xed)
      len = 3, hi = 0x9f;
    else if (c >= 0xee && c <= 0xef)
      len = 3;
    else if (c == 0xf0)
      len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
      len = 4;
    else if (c == 0xf4)
      len = 4, hi = 0x8f;
    if (len == 0) {
      bad();
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k < size_t(len); ++k) {
      if (i + k >= n) break;
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
      if (d < l || d > h) break;
    }
    if (k == size_t(len)) {
      out.append(s.data() + i, size_t(len));
    } else {
      bad();  // the maximal valid prefix (k bytes) is replaced by one U+FFFD
    }
    i += k;
  }
  return out;
}

namespace {

struct ByteTable {
  std::array<std::string, 256> to_char;
  std::array<int, 324> from_cp;  // mapped code points are all < 324
  ByteTable() {
    from_cp.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
      append_utf8(to_char[size_t(b)], cp);
      from_cp[cp] = b;
    }
  }
};

const ByteTable& table() {
  static const ByteTable t;
  return t;
}

}  // namespace

const std::string& byte_to_char(uint8_t b) { return table().to_char[b]; }

int char_to_byte(uint32_t cp) { return cp < 324 ? table().from_cp[cp] : -1; }

uint32_t next_cp(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int len = utf8_len(c);
  if (i + size_t(len) > s.size()) len = 1;
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + size_t(k)]) & 0x3f);
  i += size_t(len);
  return cp;
}

std::string normalize(std::string_view s, Form f) {
  int opts = UTF8PROC_STABLE;
  switch (f) {
    case Form::NFC:
      opts |= UTF8PROC_COMPOSE;
      break;
    case Form::NFD:
      opts |= UTF8PROC_DECOMPOSE;
      break;
    case Form::NFKC:
      opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case Form::NFKD:
      opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    utf8proc_ssize_t(s.size()), &out, utf8proc_option_t(opts));
  check(n >= 0, "unicode normalization failed: ", utf8proc_errmsg(n));
  std::string r(reinterpret_cast<char*>(out), size_t(n));
  std::free(out);
  return r;
}

std::string lowercase(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) append_utf8(out, uint32_t(utf8proc_tolower(utf8proc_int32_t(next_cp(s, i)))));
  return out;
}

}  // namespace braid::unicode
