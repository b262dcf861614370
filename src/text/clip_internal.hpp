// Internal pieces of the CLIP tokenizer, exposed for tests and the bench.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ovseg::detail {

// docs/reference-behaviour.md §5.3 normalisation on code points (input already valid): html.unescape twice, strip,
// fold White_Space runs to one space, strip, Python str.lower().
std::u32string clip_normalize(std::u32string_view text);

// The reference's pre-tokenisation regex (`regex` module, IGNORECASE) on normalised text:
// [begin, end) spans in code points.
void clip_pretokenize(std::u32string_view text, std::vector<std::pair<std::size_t, std::size_t>>& spans);

// bytes_to_unicode(): byte → code point of its stand-in character.
const std::array<char32_t, 256>& clip_byte_to_unicode();

}  // namespace ovseg::detail
