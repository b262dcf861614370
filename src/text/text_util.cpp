#include "text/text_util.hpp"

#include <utf8proc.h>

#include <cstdio>

#include "ovseg/ovseg.hpp"

namespace ovseg::detail {
namespace {

// Length of the UTF-8 sequence starting at s[i] if it is well formed, else 0. `valid_prefix`
// gets the number of bytes that form a maximal valid prefix of a sequence (Unicode's "maximal
// subpart", which is also what CPython replaces with one U+FFFD).
int utf8_sequence(std::string_view s, std::size_t i, char32_t* cp, int* valid_prefix) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  *valid_prefix = 1;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t v = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    v = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    v = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;   // overlong
    if (b0 == 0xED) hi = 0x9F;   // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    v = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;   // overlong
    if (b0 == 0xF4) hi = 0x8F;   // above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (always overlong) or F5..FF
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return 0;
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = (k == 1) ? lo : 0x80;
    const unsigned char h = (k == 1) ? hi : 0xBF;
    if (b < l || b > h) return 0;
    v = (v << 6) | (b & 0x3F);
    *valid_prefix = k + 1;
  }
  *cp = v;
  return need + 1;
}

}  // namespace

bool utf8_to_u32(std::string_view s, std::u32string& out, std::size_t* bad_offset) {
  out.clear();
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {  // fast path
      out.push_back(b);
      ++i;
      continue;
    }
    char32_t cp = 0;
    int prefix = 0;
    const int n = utf8_sequence(s, i, &cp, &prefix);
    if (n == 0) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    out.push_back(cp);
    i += static_cast<std::size_t>(n);
  }
  return true;
}

std::string text_preview(std::string_view s, std::size_t max_bytes) {
  std::string out;
  const std::size_t n = s.size() < max_bytes ? s.size() : max_bytes;
  std::size_t i = 0;
  while (i < n) {
    char32_t cp = 0;
    int prefix = 0;
    const int len = utf8_sequence(s, i, &cp, &prefix);
    if (len == 0 || (len == 1 && (cp < 0x20 || cp == 0x7F))) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned char>(s[i]));
      out += buf;
      ++i;
    } else {
      out.append(s.substr(i, static_cast<std::size_t>(len)));
      i += static_cast<std::size_t>(len);
    }
  }
  if (n < s.size()) out += "...";
  return out;
}

std::u32string utf8_to_u32_or_throw(std::string_view s) {
  std::u32string out;
  std::size_t bad = 0;
  if (!utf8_to_u32(s, out, &bad))
    throw Error(ErrorCode::kInvalidArgument, "invalid UTF-8 at byte " + std::to_string(bad) +
                                                 " of text \"" + text_preview(s) + "\"");
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string u32_to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

std::string utf8_decode_replace(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    char32_t cp = 0;
    int prefix = 0;
    const int n = utf8_sequence(bytes, i, &cp, &prefix);
    if (n == 0) {
      append_utf8(out, 0xFFFD);
      i += static_cast<std::size_t>(prefix);
    } else {
      out.append(bytes.substr(i, static_cast<std::size_t>(n)));
      i += static_cast<std::size_t>(n);
    }
  }
  return out;
}

bool is_white_space(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || c == 0x20;
  switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_python_space(char32_t c) { return is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

// ------------------------------------------------------------------------------------------------
// Lower-casing with Python's rules.
// ------------------------------------------------------------------------------------------------
namespace {

struct Range {
  char32_t lo, hi;
};

bool in_ranges(char32_t c, const Range* r, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (c >= r[i].lo && c <= r[i].hi) return true;
  return false;
}

// Other_Lowercase / Other_Uppercase code points without a case mapping of their own (those with
// a mapping are caught by the mapping test in is_cased()).
constexpr Range kOtherCased[] = {
    {0x00AA, 0x00AA}, {0x00BA, 0x00BA}, {0x02B0, 0x02B8}, {0x02C0, 0x02C1},
    {0x02E0, 0x02E4}, {0x0345, 0x0345}, {0x037A, 0x037A}, {0x10FC, 0x10FC},
    {0x1D2C, 0x1D6A}, {0x1D78, 0x1D78}, {0x1D9B, 0x1DBF}, {0x2071, 0x2071},
    {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2170, 0x217F}, {0x2160, 0x216F},
    {0x24B6, 0x24E9}, {0x2C7C, 0x2C7D}, {0xA69C, 0xA69D}, {0xA770, 0xA770},
    {0xA7F2, 0xA7F4}, {0xA7F8, 0xA7F9}, {0xAB5C, 0xAB5F}, {0xAB69, 0xAB69},
    {0x10780, 0x10780}, {0x10783, 0x10785}, {0x10787, 0x107B0}, {0x107B2, 0x107BA},
    {0x1E030, 0x1E06D}, {0x1F130, 0x1F149}, {0x1F150, 0x1F169}, {0x1F170, 0x1F189},
};

// Word_Break MidLetter / MidNumLet / Single_Quote: the non-category part of Case_Ignorable.
constexpr Range kCaseIgnorableExtra[] = {
    {0x0027, 0x0027}, {0x002E, 0x002E}, {0x003A, 0x003A}, {0x00B7, 0x00B7},
    {0x0387, 0x0387}, {0x055F, 0x055F}, {0x05F4, 0x05F4}, {0x2018, 0x2019},
    {0x2024, 0x2024}, {0x2027, 0x2027}, {0xFE13, 0xFE13}, {0xFE52, 0xFE52},
    {0xFE55, 0xFE55}, {0xFF07, 0xFF07}, {0xFF0E, 0xFF0E}, {0xFF1A, 0xFF1A},
};

}  // namespace

bool is_cased(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)
    return true;
  const auto ci = static_cast<utf8proc_int32_t>(c);
  if (utf8proc_tolower(ci) != ci || utf8proc_toupper(ci) != ci) return true;
  return in_ranges(c, kOtherCased, sizeof kOtherCased / sizeof kOtherCased[0]);
}

bool is_case_ignorable(char32_t c) {
  if (in_ranges(c, kCaseIgnorableExtra, sizeof kCaseIgnorableExtra / sizeof kCaseIgnorableExtra[0]))
    return true;
  if (c < 0x80) return c == '^' || c == '`';  // Sk in ASCII
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      return false;
  }
}

void python_lower(std::u32string_view in, std::u32string& out) {
  out.clear();
  out.reserve(in.size() + 2);
  const std::size_t n = in.size();
  for (std::size_t i = 0; i < n; ++i) {
    const char32_t c = in[i];
    if (c < 0x80) {
      out.push_back((c >= 'A' && c <= 'Z') ? c + 32 : c);
    } else if (c == 0x0130) {
      // The one unconditional multi-character lower-case mapping (SpecialCasing.txt).
      out.push_back(U'i');
      out.push_back(0x0307);
    } else if (c == 0x03A3) {
      // Final_Sigma: preceded by a cased letter and not followed by one (case-ignorable
      // characters skipped on both sides), exactly as CPython's handle_capital_sigma.
      std::size_t j = i;
      char32_t prev = 0;
      bool found_prev = false;
      while (j > 0) {
        prev = in[--j];
        if (!is_case_ignorable(prev)) {
          found_prev = true;
          break;
        }
      }
      bool final_sigma = found_prev && is_cased(prev);
      if (final_sigma && i + 1 < n) {
        std::size_t k = i + 1;
        for (; k < n; ++k)
          if (!is_case_ignorable(in[k])) break;
        final_sigma = (k == n) || !is_cased(in[k]);
      }
      out.push_back(final_sigma ? 0x03C2 : 0x03C3);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// html.unescape
// ------------------------------------------------------------------------------------------------
namespace {

// HTML5's replacements for numeric references to C1 / NUL / CR (Python's _invalid_charrefs).
char32_t invalid_charref(std::uint64_t num, bool* found) {
  static constexpr char32_t kC1[32] = {
      0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
      0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};
  *found = true;
  if (num == 0x00) return 0xFFFD;
  if (num == 0x0D) return 0x0D;
  if (num >= 0x80 && num <= 0x9F) return kC1[num - 0x80];
  *found = false;
  return 0;
}

// Python's _invalid_codepoints (references to them are dropped).
bool invalid_codepoint(std::uint64_t num) {
  if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) ||
      (num >= 0x7F && num <= 0x9F) || (num >= 0xFDD0 && num <= 0xFDEF))
    return true;
  return (num & 0xFFFE) == 0xFFFE && num <= 0x10FFFF;
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_hex(char32_t c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(char32_t c) {
  if (is_digit(c)) return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  return static_cast<int>(c - 'A' + 10);
}
bool is_name_char(char32_t c) {  // [^\t\n\f <&#;]
  return !(c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
           c == ';');
}

}  // namespace

std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const char32_t c = s[i];
    if (c != '&' || i + 1 >= n) {
      out.push_back(c);
      ++i;
      continue;
    }
    std::size_t p = i + 1;
    if (s[p] == '#') {
      // '#' is not a name character, so a failed numeric form leaves the '&' alone.
      const bool hex = p + 1 < n && (s[p + 1] == 'x' || s[p + 1] == 'X') && p + 2 < n &&
                       is_hex(s[p + 2]);
      const bool dec = p + 1 < n && is_digit(s[p + 1]);
      if (!hex && !dec) {
        out.push_back(c);
        ++i;
        continue;
      }
      std::uint64_t num = 0;
      constexpr std::uint64_t kCap = 0x7FFFFFFF;  // anything above U+10FFFF behaves the same
      std::size_t q = p + (hex ? 2 : 1);
      for (; q < n && (hex ? is_hex(s[q]) : is_digit(s[q])); ++q) {
        num = num * (hex ? 16 : 10) + static_cast<std::uint64_t>(hex ? hex_value(s[q]) : s[q] - '0');
        if (num > kCap) num = kCap;
      }
      if (q < n && s[q] == ';') ++q;
      bool found = false;
      const char32_t repl = invalid_charref(num, &found);
      if (found) {
        out.push_back(repl);
      } else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out.push_back(0xFFFD);
      } else if (!invalid_codepoint(num)) {
        out.push_back(static_cast<char32_t>(num));
      }
      i = q;
      continue;
    }
    // Named reference: up to 32 name characters, then an optional ';'.
    std::size_t q = p;
    while (q < n && q - p < 32 && is_name_char(s[q])) ++q;
    if (q == p) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (q < n && s[q] == ';') ++q;
    const std::u32string_view name = s.substr(p, q - p);
    char32_t val[2];
    int k = lookup_html_entity(name, val);
    if (k > 0) {
      out.append(val, static_cast<std::size_t>(k));
      i = q;
      continue;
    }
    // Longest prefix (at least 2 characters) that is a known name; the rest stays as text.
    bool done = false;
    for (std::size_t x = name.size() - 1; x >= 2; --x) {
      k = lookup_html_entity(name.substr(0, x), val);
      if (k > 0) {
        out.append(val, static_cast<std::size_t>(k));
        out.append(name.substr(x));
        done = true;
        break;
      }
    }
    if (!done) {
      out.push_back('&');
      out.append(name);
    }
    i = q;
  }
  return out;
}

}  // namespace ovseg::detail
