// The CLIP normalisation (docs/reference-behaviour.md §5.3 steps 2-5) against Python itself: html.unescape, strip,
// whitespace folding and str.lower() computed by /usr/bin/python3 on the same strings, the HTML
// entity table entry by entry, and lower-casing / Final_Sigma exhaustively over Unicode.
#include <map>

#include <gtest/gtest.h>

#include <utf8proc.h>

#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text/clip_internal.hpp"
#include "text/text_util.hpp"
#include "text_test_util.hpp"

namespace ovseg {
namespace {

using test::TempDir;

#define REQUIRE_PYTHON()                                                                 \
  do {                                                                                   \
    if (!test::have_python()) GTEST_SKIP() << "python not found: " << test::python();    \
  } while (0)

// Python's stdlib `re` \s also matches U+001C..U+001F (the reference's `regex` does not), so the
// strings compared with Python avoid those four; ReferenceRegexQuirks covers them.
const std::vector<std::string> kTricky = {
    // lower-casing
    "İstanbul", "İI", "ΣΑΣ ΑΣ", "ΑΣ.", "Σ", "ΑΣ'Α", "Α\u0301Σ", "ΑΣ\u0301", "ΑΣ\u0301Α",
    "ǅ titlecase ǈ ǋ ǲ", "ẞ capital sharp", "ΑΣ\u00ad", "Ⅻ roman ⅻ", "ⒶⒷ Ⓐ", "ﬁ ﬀ ﬆ",
    "\u212a kelvin \u2126 ohm \u212b angstrom", "ᾈ ᾼ ῌ", "ΌΣΟΣ ΌΣΟΣ.", "ªΣ", "ʰΣ", "\u13a0\u13f5",
    "\u1c90\u1cbf", "\U00010400\U000104b0", "ＡＢＣ", "ÀÉÎÕÜ Ÿ", "ΣΣΣ", "AΣ1", "1Σ", "A.Σ",
    "A:Σ b", "AΣ\u2019s", "ꞫꞬꞭ Ɪ", "\U0001E900", "\U00016E40", "ΑΣ\U0001F600", "\u0130\u0307",
    // html.unescape (two passes)
    "&amp;amp;amp;", "&ampx", "&notit;", "&#65;&#x41;&#X41", "&#0;", "&#128;&#150;&#159;",
    "&#x110000;", "&#xD800;", "&#1;x", "&#99999999999999999999;", "&eacute", "&Eacute;",
    "&EACUTE;", "&nbsp;x", "&lt;&gt", "&apos;", "&hellip;", "&euro;", "&#;", "&;", "&#x;",
    "&&amp;", "&amp", "&copy2023", "&lang;&rang;", "&#65279;", "&#x1F600;", "&#65", "&frac12x",
    "&AElig;", "&#xfdd0;x", "&#x10FFFF;", "&#x0d;", "&ampamp;", "&Amp;", "& amp;", "&#13;",
    "&#x7f;", "&#x0b;", "&amp;#65;", "&amp;lt;b&amp;gt;", "&sigma;&Sigma;&sigmaf;", "&reg&REG",
    "&quot;q&QUOT;", "&#0000065;", "&#x000041;", "&alpha;&beta;&Omega;", "&thinsp;a&ensp;",
    "&#x2028;a&#x85;b", "&#12;x", "&abcdefghijklmnopqrstuvwxyzabcdefghij;", "&amp\u00e9;",
    // whitespace
    "  a \t\n b \u3000 c\u2028", "\u00a0x\u00a0", "\u200b", "a\u0085b", "\u2029", "x\r\ny",
    "\u180e", "\u2007 \u202f\u205f\u1680", "\v\f a \r", "",
    // mixed
    "It's A T-SHIRT &amp; JEANS", "There is a large Chest Of Drawers, Chest, Bureau, Dresser in the scene.",
};

const char* const kPythonNormalize =
    "re.sub(r'\\s+', ' ', html.unescape(html.unescape(t)).strip()).strip().lower()";

TEST(ClipNormalize, AgreesWithPythonOnTrickyStrings) {
  REQUIRE_PYTHON();
  TempDir dir;
  const auto expected = test::python_map(dir, kTricky, "import html, re", kPythonNormalize);
  ASSERT_TRUE(expected.is_array()) << "python failed";
  ASSERT_EQ(expected.size(), kTricky.size());
  for (std::size_t i = 0; i < kTricky.size(); ++i)
    EXPECT_EQ(ClipTokenizer::normalize(kTricky[i]), expected[i].get<std::string>())
        << "input: \"" << detail::text_preview(kTricky[i]) << "\"";
}

TEST(ClipNormalize, EntityTableAgreesWithPython) {
  REQUIRE_PYTHON();
  TempDir dir;
  std::vector<std::string> inputs;
  for (const auto& name : detail::html_entity_names()) {
    inputs.push_back("&" + name);
    inputs.push_back("x&" + name + "zz;");  // exercises the longest-prefix rule
  }
  ASSERT_GT(inputs.size(), 2u * 350u);
  const auto expected = test::python_map(dir, inputs, "import html", "html.unescape(t)");
  ASSERT_TRUE(expected.is_array()) << "python failed";
  ASSERT_EQ(expected.size(), inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto got = detail::u32_to_utf8(detail::html_unescape(detail::utf8_to_u32_or_throw(inputs[i])));
    EXPECT_EQ(got, expected[i].get<std::string>()) << "input: " << inputs[i];
  }
}

TEST(ClipNormalize, FixedExamples) {
  // docs/reference-behaviour.md §5.3 and the Python semantics, spelled out by hand.
  EXPECT_EQ(ClipTokenizer::normalize("  A  PHOTO\tof\n\nA   Cat.  "), "a photo of a cat.");
  EXPECT_EQ(ClipTokenizer::normalize("fish &amp;amp; chips"), "fish & chips");
  EXPECT_EQ(ClipTokenizer::normalize("&amp;amp;amp;"), "&amp;");  // exactly two passes
  EXPECT_EQ(ClipTokenizer::normalize("\xc4\xb0"), "i\xcc\x87");   // İ → i + U+0307
  EXPECT_EQ(ClipTokenizer::normalize("\xce\x91\xce\xa3"), "\xce\xb1\xcf\x82");  // ΑΣ → ας
  EXPECT_EQ(ClipTokenizer::normalize("\xce\xa3"), "\xcf\x83");   // lone Σ → σ
  EXPECT_EQ(ClipTokenizer::normalize("\x1c x \x1f"), "x");       // str.strip() removes U+001C..F
  EXPECT_EQ(ClipTokenizer::normalize("a\x1c" "b"), "a\x1c" "b");  // ... but \s does not fold them
  EXPECT_EQ(ClipTokenizer::normalize("a\xc2\xa0\xe3\x80\x80 b"), "a b");
}

TEST(ClipPretokenize, SpecExample) {
  const std::u32string text = U"there is a t-shirt. it's 10,000 \u00bd'";
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  detail::clip_pretokenize(text, spans);
  std::vector<std::u32string> got;
  for (const auto& [b, e] : spans) got.push_back(text.substr(b, e - b));
  const std::vector<std::u32string> want = {U"there", U"is", U"a", U"t",  U"-", U"shirt", U".",
                                            U"it",    U"'s", U"1", U"0",  U",", U"0",     U"0",
                                            U"0",     U"\u00bd", U"'"};
  EXPECT_EQ(got, want);
}

// Every assigned code point: str.lower() of the character alone, and the three Final_Sigma
// contexts "X Σ", "A X Σ", "A Σ X" (which together pin down Cased and Case_Ignorable).
const char* const kUnicodeDumpPy = R"PY(
import json, sys, unicodedata
lower = {}
flags = []
for c in range(0x110000):
    if 0xD800 <= c <= 0xDFFF or unicodedata.category(chr(c)) == 'Cn':
        flags.append('x')
        continue
    ch = chr(c)
    if ch.lower() != ch:
        lower[c] = ch.lower()
    t1 = (ch + '\u03a3').lower()[-1] == '\u03c2'
    t2 = ('A' + ch + '\u03a3').lower()[-1] == '\u03c2'
    t3 = ('A\u03a3' + ch).lower()[1] == '\u03c2'
    flags.append(str(int(t1) + 2 * int(t2) + 4 * int(t3)))
json.dump({'unicode': unicodedata.unidata_version, 'lower': lower, 'flags': ''.join(flags)},
          open(sys.argv[1], 'w', encoding='utf-8'))
)PY";

TEST(ClipNormalize, LowerCasingAgreesWithPythonOnAllCodePoints) {
  REQUIRE_PYTHON();
  TempDir dir;
  ASSERT_EQ(test::run_python(dir, kUnicodeDumpPy, "'" + dir.file("unicode.json") + "'"), 0);
  const auto j = nlohmann::json::parse(test::read_text(dir.file("unicode.json")));
  const std::string flags = j["flags"].get<std::string>();
  ASSERT_EQ(flags.size(), 0x110000u);
  std::map<std::uint32_t, std::string> lower;
  for (auto it = j["lower"].begin(); it != j["lower"].end(); ++it)
    lower[static_cast<std::uint32_t>(std::stoul(it.key()))] = it.value().get<std::string>();

  int compared = 0, lower_bad = 0, sigma_bad = 0;
  std::u32string out;
  for (std::uint32_t c = 0; c < 0x110000; ++c) {
    if (flags[c] == 'x') continue;
    // Skip code points that this utf8proc's Unicode version has not assigned.
    if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_CN) continue;
    ++compared;
    const char32_t ch = c;
    detail::python_lower(std::u32string(1, ch), out);
    const auto it = lower.find(c);
    std::string want;
    if (it == lower.end())
      detail::append_utf8(want, ch);
    else
      want = it->second;
    if (detail::u32_to_utf8(out) != want && ++lower_bad <= 20)
      ADD_FAILURE() << "lower() of U+" << std::hex << c;

    const auto last_is_final = [&](const std::u32string& s) {
      detail::python_lower(s, out);
      return out.back() == 0x03C2;
    };
    const auto second_is_final = [&](const std::u32string& s) {
      detail::python_lower(s, out);
      return out[1] == 0x03C2;
    };
    const int want_flags = flags[c] - '0';
    const int got_flags = int(last_is_final(std::u32string{ch, 0x03A3})) +
                          2 * int(last_is_final(std::u32string{U'A', ch, 0x03A3})) +
                          4 * int(second_is_final(std::u32string{U'A', 0x03A3, ch}));
    if (got_flags != want_flags && ++sigma_bad <= 20)
      ADD_FAILURE() << "Final_Sigma context of U+" << std::hex << c << ": python " << want_flags
                    << ", ours " << got_flags;
  }
  EXPECT_GT(compared, 250000);
  EXPECT_EQ(lower_bad, 0);
  EXPECT_EQ(sigma_bad, 0);
  RecordProperty("python_unicode_version", j["unicode"].get<std::string>());
}

}  // namespace
}  // namespace ovseg
