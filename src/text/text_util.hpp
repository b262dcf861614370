// Internal text helpers of the tokenizers: strict UTF-8 handling and the few pieces of Python's
// string semantics the CLIP reference depends on (html.unescape, str.isspace / regex \s,
// str.lower()). Code points are handled as std::u32string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ovseg::detail {

// Strict UTF-8 → code points (rejects overlong forms, surrogates, values above U+10FFFF and
// truncated sequences). On failure returns false and sets *bad_offset to the offending byte.
bool utf8_to_u32(std::string_view s, std::u32string& out, std::size_t* bad_offset = nullptr);
// Throws Error(kInvalidArgument) naming the byte offset and a printable preview of `s`.
std::u32string utf8_to_u32_or_throw(std::string_view s);

void append_utf8(std::string& out, char32_t c);
std::string u32_to_utf8(std::u32string_view s);

// Python's bytes.decode("utf-8", errors="replace"): each maximal invalid subpart becomes one
// U+FFFD.
std::string utf8_decode_replace(std::string_view bytes);

// A printable, bounded preview of user text for error messages (invalid bytes as \xNN).
std::string text_preview(std::string_view s, std::size_t max_bytes = 80);

// Python str.isspace(): bidi class WS/B/S or category Zs (includes U+001C..U+001F).
bool is_python_space(char32_t c);
// The Unicode White_Space property, which is what the `regex` module's \s matches (the CLIP
// reference uses `regex`, not `re`): like is_python_space but without U+001C..U+001F.
bool is_white_space(char32_t c);

// Python's str.lower(): full lower-case mapping (U+0130 → "i̇") with the Final_Sigma rule for
// U+03A3 (Cased / Case_Ignorable context).
void python_lower(std::u32string_view in, std::u32string& out);
bool is_cased(char32_t c);
bool is_case_ignorable(char32_t c);

// Python's html.unescape(): numeric references (&#NN; &#xNN;, ';' optional, with the HTML5
// replacement table for invalid numbers) and named references. Named references use the HTML 4
// entity set (with ';') plus every legacy name Python accepts without ';' (see
// html_entities.cpp), with Python's longest-legacy-prefix rule.
std::u32string html_unescape(std::u32string_view s);

// Named-entity table lookup: `name` excludes '&' and includes the ';' when present. Returns the
// number of code points written to out (0 if unknown).
int lookup_html_entity(std::u32string_view name, char32_t out[2]);
// Every name the table knows, as matched after '&' ("amp;", "amp", ...), for tests.
std::vector<std::string> html_entity_names();

}  // namespace ovseg::detail
