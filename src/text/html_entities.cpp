// Named character references for html_unescape(). Python's html.unescape knows all 2231 HTML5
// names; this table holds the subset that occurs in practice:
//  * every name Python accepts WITHOUT a trailing ';' (the 106 legacy names: the Latin-1 set
//    plus AMP/LT/GT/QUOT/COPY/REG), each also with ';' — so the longest-prefix rule for
//    unterminated references is exact;
//  * the rest of the HTML 4 entity set (Greek letters, math, arrows, typographic punctuation)
//    with ';', using the HTML5 values (lang;/rang; are U+27E8/U+27E9);
//  * &apos; and the HTML5 names of ASCII punctuation (&excl; &num; &lpar; ...).
// Other HTML5-only names (e.g. &NotNestedLessLess;) are left as text.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "text/text_util.hpp"

namespace ovseg::detail {
namespace {

struct Entity {
  const char* name;  // without '&' and ';'
  char32_t value;
  bool legacy;       // also valid without ';'
};

constexpr Entity kEntities[] = {
    // Legacy names (valid with and without ';').
    {"AMP", 0x26, true}, {"amp", 0x26, true}, {"LT", 0x3C, true}, {"lt", 0x3C, true},
    {"GT", 0x3E, true}, {"gt", 0x3E, true}, {"QUOT", 0x22, true}, {"quot", 0x22, true},
    {"COPY", 0xA9, true}, {"copy", 0xA9, true}, {"REG", 0xAE, true}, {"reg", 0xAE, true},
    {"nbsp", 0xA0, true}, {"iexcl", 0xA1, true}, {"cent", 0xA2, true}, {"pound", 0xA3, true},
    {"curren", 0xA4, true}, {"yen", 0xA5, true}, {"brvbar", 0xA6, true}, {"sect", 0xA7, true},
    {"uml", 0xA8, true}, {"ordf", 0xAA, true}, {"laquo", 0xAB, true}, {"not", 0xAC, true},
    {"shy", 0xAD, true}, {"macr", 0xAF, true}, {"deg", 0xB0, true}, {"plusmn", 0xB1, true},
    {"sup2", 0xB2, true}, {"sup3", 0xB3, true}, {"acute", 0xB4, true}, {"micro", 0xB5, true},
    {"para", 0xB6, true}, {"middot", 0xB7, true}, {"cedil", 0xB8, true}, {"sup1", 0xB9, true},
    {"ordm", 0xBA, true}, {"raquo", 0xBB, true}, {"frac14", 0xBC, true}, {"frac12", 0xBD, true},
    {"frac34", 0xBE, true}, {"iquest", 0xBF, true}, {"Agrave", 0xC0, true}, {"Aacute", 0xC1, true},
    {"Acirc", 0xC2, true}, {"Atilde", 0xC3, true}, {"Auml", 0xC4, true}, {"Aring", 0xC5, true},
    {"AElig", 0xC6, true}, {"Ccedil", 0xC7, true}, {"Egrave", 0xC8, true}, {"Eacute", 0xC9, true},
    {"Ecirc", 0xCA, true}, {"Euml", 0xCB, true}, {"Igrave", 0xCC, true}, {"Iacute", 0xCD, true},
    {"Icirc", 0xCE, true}, {"Iuml", 0xCF, true}, {"ETH", 0xD0, true}, {"Ntilde", 0xD1, true},
    {"Ograve", 0xD2, true}, {"Oacute", 0xD3, true}, {"Ocirc", 0xD4, true}, {"Otilde", 0xD5, true},
    {"Ouml", 0xD6, true}, {"times", 0xD7, true}, {"Oslash", 0xD8, true}, {"Ugrave", 0xD9, true},
    {"Uacute", 0xDA, true}, {"Ucirc", 0xDB, true}, {"Uuml", 0xDC, true}, {"Yacute", 0xDD, true},
    {"THORN", 0xDE, true}, {"szlig", 0xDF, true}, {"agrave", 0xE0, true}, {"aacute", 0xE1, true},
    {"acirc", 0xE2, true}, {"atilde", 0xE3, true}, {"auml", 0xE4, true}, {"aring", 0xE5, true},
    {"aelig", 0xE6, true}, {"ccedil", 0xE7, true}, {"egrave", 0xE8, true}, {"eacute", 0xE9, true},
    {"ecirc", 0xEA, true}, {"euml", 0xEB, true}, {"igrave", 0xEC, true}, {"iacute", 0xED, true},
    {"icirc", 0xEE, true}, {"iuml", 0xEF, true}, {"eth", 0xF0, true}, {"ntilde", 0xF1, true},
    {"ograve", 0xF2, true}, {"oacute", 0xF3, true}, {"ocirc", 0xF4, true}, {"otilde", 0xF5, true},
    {"ouml", 0xF6, true}, {"divide", 0xF7, true}, {"oslash", 0xF8, true}, {"ugrave", 0xF9, true},
    {"uacute", 0xFA, true}, {"ucirc", 0xFB, true}, {"uuml", 0xFC, true}, {"yacute", 0xFD, true},
    {"thorn", 0xFE, true}, {"yuml", 0xFF, true},
    // HTML 4 special characters.
    {"OElig", 0x152, false}, {"oelig", 0x153, false}, {"Scaron", 0x160, false},
    {"scaron", 0x161, false}, {"Yuml", 0x178, false}, {"circ", 0x2C6, false},
    {"tilde", 0x2DC, false}, {"ensp", 0x2002, false}, {"emsp", 0x2003, false},
    {"thinsp", 0x2009, false}, {"zwnj", 0x200C, false}, {"zwj", 0x200D, false},
    {"lrm", 0x200E, false}, {"rlm", 0x200F, false}, {"ndash", 0x2013, false},
    {"mdash", 0x2014, false}, {"lsquo", 0x2018, false}, {"rsquo", 0x2019, false},
    {"sbquo", 0x201A, false}, {"ldquo", 0x201C, false}, {"rdquo", 0x201D, false},
    {"bdquo", 0x201E, false}, {"dagger", 0x2020, false}, {"Dagger", 0x2021, false},
    {"permil", 0x2030, false}, {"lsaquo", 0x2039, false}, {"rsaquo", 0x203A, false},
    {"euro", 0x20AC, false},
    // HTML 4 symbols and Greek letters.
    {"fnof", 0x192, false}, {"Alpha", 0x391, false}, {"Beta", 0x392, false},
    {"Gamma", 0x393, false}, {"Delta", 0x394, false}, {"Epsilon", 0x395, false},
    {"Zeta", 0x396, false}, {"Eta", 0x397, false}, {"Theta", 0x398, false},
    {"Iota", 0x399, false}, {"Kappa", 0x39A, false}, {"Lambda", 0x39B, false},
    {"Mu", 0x39C, false}, {"Nu", 0x39D, false}, {"Xi", 0x39E, false}, {"Omicron", 0x39F, false},
    {"Pi", 0x3A0, false}, {"Rho", 0x3A1, false}, {"Sigma", 0x3A3, false}, {"Tau", 0x3A4, false},
    {"Upsilon", 0x3A5, false}, {"Phi", 0x3A6, false}, {"Chi", 0x3A7, false},
    {"Psi", 0x3A8, false}, {"Omega", 0x3A9, false}, {"alpha", 0x3B1, false},
    {"beta", 0x3B2, false}, {"gamma", 0x3B3, false}, {"delta", 0x3B4, false},
    {"epsilon", 0x3B5, false}, {"zeta", 0x3B6, false}, {"eta", 0x3B7, false},
    {"theta", 0x3B8, false}, {"iota", 0x3B9, false}, {"kappa", 0x3BA, false},
    {"lambda", 0x3BB, false}, {"mu", 0x3BC, false}, {"nu", 0x3BD, false}, {"xi", 0x3BE, false},
    {"omicron", 0x3BF, false}, {"pi", 0x3C0, false}, {"rho", 0x3C1, false},
    {"sigmaf", 0x3C2, false}, {"sigma", 0x3C3, false}, {"tau", 0x3C4, false},
    {"upsilon", 0x3C5, false}, {"phi", 0x3C6, false}, {"chi", 0x3C7, false},
    {"psi", 0x3C8, false}, {"omega", 0x3C9, false}, {"thetasym", 0x3D1, false},
    {"upsih", 0x3D2, false}, {"piv", 0x3D6, false}, {"bull", 0x2022, false},
    {"hellip", 0x2026, false}, {"prime", 0x2032, false}, {"Prime", 0x2033, false},
    {"oline", 0x203E, false}, {"frasl", 0x2044, false}, {"weierp", 0x2118, false},
    {"image", 0x2111, false}, {"real", 0x211C, false}, {"trade", 0x2122, false},
    {"alefsym", 0x2135, false}, {"larr", 0x2190, false}, {"uarr", 0x2191, false},
    {"rarr", 0x2192, false}, {"darr", 0x2193, false}, {"harr", 0x2194, false},
    {"crarr", 0x21B5, false}, {"lArr", 0x21D0, false}, {"uArr", 0x21D1, false},
    {"rArr", 0x21D2, false}, {"dArr", 0x21D3, false}, {"hArr", 0x21D4, false},
    {"forall", 0x2200, false}, {"part", 0x2202, false}, {"exist", 0x2203, false},
    {"empty", 0x2205, false}, {"nabla", 0x2207, false}, {"isin", 0x2208, false},
    {"notin", 0x2209, false}, {"ni", 0x220B, false}, {"prod", 0x220F, false},
    {"sum", 0x2211, false}, {"minus", 0x2212, false}, {"lowast", 0x2217, false},
    {"radic", 0x221A, false}, {"prop", 0x221D, false}, {"infin", 0x221E, false},
    {"ang", 0x2220, false}, {"and", 0x2227, false}, {"or", 0x2228, false},
    {"cap", 0x2229, false}, {"cup", 0x222A, false}, {"int", 0x222B, false},
    {"there4", 0x2234, false}, {"sim", 0x223C, false}, {"cong", 0x2245, false},
    {"asymp", 0x2248, false}, {"ne", 0x2260, false}, {"equiv", 0x2261, false},
    {"le", 0x2264, false}, {"ge", 0x2265, false}, {"sub", 0x2282, false},
    {"sup", 0x2283, false}, {"nsub", 0x2284, false}, {"sube", 0x2286, false},
    {"supe", 0x2287, false}, {"oplus", 0x2295, false}, {"otimes", 0x2297, false},
    {"perp", 0x22A5, false}, {"sdot", 0x22C5, false}, {"lceil", 0x2308, false},
    {"rceil", 0x2309, false}, {"lfloor", 0x230A, false}, {"rfloor", 0x230B, false},
    {"lang", 0x27E8, false}, {"rang", 0x27E9, false}, {"loz", 0x25CA, false},
    {"spades", 0x2660, false}, {"clubs", 0x2663, false}, {"hearts", 0x2665, false},
    {"diams", 0x2666, false},
    // HTML5 names of ASCII characters.
    {"apos", 0x27, false}, {"Tab", 0x09, false}, {"NewLine", 0x0A, false},
    {"excl", 0x21, false}, {"num", 0x23, false}, {"dollar", 0x24, false},
    {"percnt", 0x25, false}, {"lpar", 0x28, false}, {"rpar", 0x29, false},
    {"ast", 0x2A, false}, {"plus", 0x2B, false}, {"comma", 0x2C, false},
    {"period", 0x2E, false}, {"sol", 0x2F, false}, {"colon", 0x3A, false},
    {"semi", 0x3B, false}, {"equals", 0x3D, false}, {"quest", 0x3F, false},
    {"commat", 0x40, false}, {"lsqb", 0x5B, false}, {"lbrack", 0x5B, false},
    {"bsol", 0x5C, false}, {"rsqb", 0x5D, false}, {"rbrack", 0x5D, false},
    {"Hat", 0x5E, false}, {"lowbar", 0x5F, false}, {"grave", 0x60, false},
    {"lcub", 0x7B, false}, {"lbrace", 0x7B, false}, {"verbar", 0x7C, false},
    {"vert", 0x7C, false}, {"rcub", 0x7D, false}, {"rbrace", 0x7D, false},
    {"hyphen", 0x2010, false}, {"dash", 0x2010, false},
};

struct Key {
  std::string name;  // as matched after '&': "amp;" or (legacy only) "amp"
  char32_t value;
};

const std::vector<Key>& table() {
  static const std::vector<Key> t = [] {
    std::vector<Key> v;
    for (const auto& e : kEntities) {
      v.push_back({std::string(e.name) + ";", e.value});
      if (e.legacy) v.push_back({e.name, e.value});
    }
    std::sort(v.begin(), v.end(), [](const Key& a, const Key& b) { return a.name < b.name; });
    return v;
  }();
  return t;
}

}  // namespace

std::vector<std::string> html_entity_names() {
  std::vector<std::string> names;
  for (const auto& k : table()) names.push_back(k.name);
  return names;
}

int lookup_html_entity(std::u32string_view name, char32_t out[2]) {
  if (name.empty() || name.size() > 40) return 0;
  std::string ascii;
  ascii.reserve(name.size());
  for (char32_t c : name) {
    if (c >= 0x80) return 0;  // every known name is ASCII
    ascii.push_back(static_cast<char>(c));
  }
  const auto& t = table();
  const auto it = std::lower_bound(t.begin(), t.end(), ascii,
                                   [](const Key& k, const std::string& s) { return k.name < s; });
  if (it == t.end() || it->name != ascii) return 0;
  out[0] = it->value;
  return 1;
}

}  // namespace ovseg::detail
