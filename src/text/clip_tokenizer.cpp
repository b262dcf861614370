// CLIP's byte-level BPE tokenizer, exact to the reference SimpleTokenizer (docs/reference-behaviour.md §5.3).
//
// BPE runs on token ids instead of strings: every symbol that can appear during BPE is a
// vocabulary entry, so a merge rule becomes (left id, right id) → (rank, merged id) and a word is
// a short vector of ints. Results are cached per pre-token (the reference does the same); the
// cache is shared between threads behind a shared_mutex.
#include <utf8proc.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text/clip_internal.hpp"
#include "text/text_util.hpp"

namespace ovseg {
namespace {

// Number of merges the reference uses: 49152 - 256 - 2 (file lines 1..48894).
constexpr std::size_t kMaxMerges = 49152 - 256 - 2;
// The cache is dropped when it grows past this many pre-tokens (bounded memory for long-running
// processes fed arbitrary text; the class-name workloads need a few thousand entries).
constexpr std::size_t kMaxCacheEntries = 1 << 18;

const char* const kSotText = "<|startoftext|>";
const char* const kEotText = "<|endoftext|>";

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
         static_cast<std::uint32_t>(b);
}

struct Merge {
  std::int32_t rank;
  std::int32_t id;
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (true) {
    const std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

// Python's str.split() for the ASCII whitespace that can occur in a merges file.
std::vector<std::string> split_ws(const std::string& line) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < line.size()) {
    while (i < line.size() && ws(line[i])) ++i;
    const std::size_t b = i;
    while (i < line.size() && !ws(line[i])) ++i;
    if (i > b) parts.push_back(line.substr(b, i - b));
  }
  return parts;
}

// CLIP's merges file is 1.4 MB decompressed; anything above this is not one.
constexpr std::size_t kMaxVocabBytes = std::size_t{256} << 20;

// Whole file through zlib: gzread passes non-gzip files through unchanged, so this reads both
// the .gz and the plain-text form.
std::string read_maybe_gzip(const std::string& path) {
  // A regular file only (a FIFO would block gzopen); the decompressed size is capped below.
  detail::check_regular_file(path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(ErrorCode::kIo, path + ": cannot open file");
  std::string out;
  char buf[1 << 16];
  while (true) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      const std::string what = msg ? msg : "read error";
      gzclose(f);
      throw Error(ErrorCode::kBadModel, path + ": cannot decompress (" + what + ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > kMaxVocabBytes) {
      gzclose(f);
      throw Error(ErrorCode::kBadModel, path + ": more than " + std::to_string(kMaxVocabBytes) +
                                            " bytes once decompressed (not a BPE merges file)");
    }
  }
  gzclose(f);
  return out;
}

}  // namespace

namespace detail {

const std::array<char32_t, 256>& clip_byte_to_unicode() {
  static const std::array<char32_t, 256> map = [] {
    std::array<char32_t, 256> m{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      m[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return m;
  }();
  return map;
}

std::u32string clip_normalize(std::u32string_view text) {
  std::u32string s = html_unescape(html_unescape(text));
  // strip (str.isspace), fold \s+ (regex White_Space) to ' ', strip again.
  std::size_t b = 0, e = s.size();
  while (b < e && is_python_space(s[b])) ++b;
  while (e > b && is_python_space(s[e - 1])) --e;
  std::u32string folded;
  folded.reserve(e - b);
  for (std::size_t i = b; i < e;) {
    if (is_white_space(s[i])) {
      while (i < e && is_white_space(s[i])) ++i;
      folded.push_back(U' ');
    } else {
      folded.push_back(s[i++]);
    }
  }
  b = 0;
  e = folded.size();
  while (b < e && is_python_space(folded[b])) ++b;
  while (e > b && is_python_space(folded[e - 1])) --e;
  std::u32string lowered;
  python_lower(std::u32string_view(folded).substr(b, e - b), lowered);
  return lowered;
}

namespace {

enum class CharClass { kSpace, kLetter, kNumber, kOther, kNone };

CharClass classify(char32_t c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::kLetter;
    if (c >= '0' && c <= '9') return CharClass::kNumber;
    if ((c >= 0x09 && c <= 0x0D) || c == 0x20) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (is_white_space(c)) return CharClass::kSpace;
  // U+0345 (Mn, lower-case-mappable to iota): under IGNORECASE the `regex` module matches it
  // with neither [\p{L}] nor [^\s\p{L}\p{N}], so the reference silently drops it.
  if (c == 0x0345) return CharClass::kNone;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return CharClass::kNumber;
    default:
      return CharClass::kOther;
  }
}

// Case-insensitive match of a literal (lower-case ASCII) as the `regex` module does it with
// simple case folding: U+017F LONG S folds to 's'.
bool literal_at(std::u32string_view t, std::size_t i, const char* lit) {
  for (std::size_t k = 0; lit[k]; ++k, ++i) {
    if (i >= t.size()) return false;
    const char32_t c = t[i];
    const auto l = static_cast<char32_t>(lit[k]);
    if (c == l) continue;
    if (l >= 'a' && l <= 'z' && c == l - 32) continue;
    if (l == 's' && c == 0x017F) continue;
    return false;
  }
  return true;
}

}  // namespace

void clip_pretokenize(std::u32string_view t, std::vector<std::pair<std::size_t, std::size_t>>& spans) {
  static const char* const kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  spans.clear();
  const std::size_t n = t.size();
  std::size_t i = 0;
  while (i < n) {
    const char32_t c = t[i];
    if (c == '<') {
      if (literal_at(t, i, kSotText)) {
        spans.emplace_back(i, i + 15);
        i += 15;
        continue;
      }
      if (literal_at(t, i, kEotText)) {
        spans.emplace_back(i, i + 13);
        i += 13;
        continue;
      }
    } else if (c == '\'') {
      bool matched = false;
      for (const char* con : kContractions) {
        if (literal_at(t, i, con)) {
          const std::size_t len = std::strlen(con);
          spans.emplace_back(i, i + len);
          i += len;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    const CharClass cls = classify(c);
    switch (cls) {
      case CharClass::kLetter: {
        std::size_t j = i + 1;
        while (j < n && classify(t[j]) == CharClass::kLetter) ++j;
        spans.emplace_back(i, j);
        i = j;
        break;
      }
      case CharClass::kNumber:
        spans.emplace_back(i, i + 1);
        ++i;
        break;
      case CharClass::kOther: {
        std::size_t j = i + 1;
        while (j < n && classify(t[j]) == CharClass::kOther) ++j;
        spans.emplace_back(i, j);
        i = j;
        break;
      }
      case CharClass::kSpace:
      case CharClass::kNone:
        ++i;
        break;
    }
  }
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------
// ClipTokenizer::Impl
// ------------------------------------------------------------------------------------------------
struct ClipTokenizer::Impl {
  std::string source;                         // file name(s), for messages
  std::vector<std::string> token_bytes;       // id → bytes its text decodes to ("</w>" kept)
  std::array<std::int32_t, 256> byte_id{};    // byte → id of its character
  std::array<std::int32_t, 256> byte_end_id{};// byte → id of its character + "</w>"
  std::unordered_map<std::uint64_t, Merge> merges;
  std::int32_t sot = -1;
  std::int32_t eot = -1;
  std::int32_t vocab_size = 0;

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> cache;

  // Builds everything from token strings (UTF-8 of the byte-level characters) and merge pairs.
  void build(const std::unordered_map<std::string, std::int32_t>& encoder,
             const std::vector<std::pair<std::string, std::string>>& merge_pairs,
             const std::string& merges_file);
  void bpe(const char* bytes, std::size_t n, std::vector<std::int32_t>& out) const;
  void encode_pretoken(const std::string& bytes, std::vector<std::int32_t>& out) const;
};

void ClipTokenizer::Impl::build(const std::unordered_map<std::string, std::int32_t>& encoder,
                                const std::vector<std::pair<std::string, std::string>>& merge_pairs,
                                const std::string& merges_file) {
  const auto& b2u = detail::clip_byte_to_unicode();
  std::unordered_map<char32_t, int> u2b;
  for (int b = 0; b < 256; ++b) u2b[b2u[static_cast<std::size_t>(b)]] = b;

  std::int32_t max_id = -1;
  for (const auto& kv : encoder) max_id = std::max(max_id, kv.second);
  vocab_size = max_id + 1;
  token_bytes.assign(static_cast<std::size_t>(vocab_size), std::string());
  for (const auto& [tok, id] : encoder) {
    if (id < 0) throw Error(ErrorCode::kBadModel, source + ": negative token id for '" + tok + "'");
    std::u32string cps;
    std::string bytes;
    bool mapped = detail::utf8_to_u32(tok, cps);
    if (mapped) {
      for (char32_t c : cps) {
        const auto it = u2b.find(c);
        if (it == u2b.end()) {
          mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(it->second));
      }
    }
    // A token outside the byte alphabet (only the specials, in practice) decodes as its text.
    token_bytes[static_cast<std::size_t>(id)] = mapped ? bytes : tok;
  }

  const auto find = [&](const std::string& tok) -> std::int32_t {
    const auto it = encoder.find(tok);
    return it == encoder.end() ? -1 : it->second;
  };
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    detail::append_utf8(ch, b2u[static_cast<std::size_t>(b)]);
    byte_id[static_cast<std::size_t>(b)] = find(ch);
    byte_end_id[static_cast<std::size_t>(b)] = find(ch + "</w>");
    if (byte_id[static_cast<std::size_t>(b)] < 0 || byte_end_id[static_cast<std::size_t>(b)] < 0)
      throw Error(ErrorCode::kBadModel, source + ": vocabulary lacks the byte token for byte " +
                                            std::to_string(b));
  }
  sot = find(kSotText);
  eot = find(kEotText);
  if (sot < 0 || eot < 0)
    throw Error(ErrorCode::kBadModel, source + ": vocabulary lacks <|startoftext|> / <|endoftext|>");

  merges.reserve(merge_pairs.size() * 2);
  for (std::size_t r = 0; r < merge_pairs.size(); ++r) {
    const auto& [a, b] = merge_pairs[r];
    const std::int32_t ia = find(a), ib = find(b);
    // A merge of a symbol that is not in the vocabulary can never fire.
    if (ia < 0 || ib < 0) continue;
    const std::int32_t im = find(a + b);
    if (im < 0)
      throw Error(ErrorCode::kBadModel, merges_file + ": merge " + std::to_string(r + 1) + " ('" +
                                            a + "' '" + b + "') makes a token not in the vocabulary");
    // Later duplicates win, as in the reference's dict(zip(merges, range(...))).
    merges[pair_key(ia, ib)] = Merge{static_cast<std::int32_t>(r), im};
  }
}

void ClipTokenizer::Impl::bpe(const char* bytes, std::size_t n, std::vector<std::int32_t>& out) const {
  if (n == 0) return;
  std::int32_t local[64];
  std::vector<std::int32_t> heap;
  std::int32_t* w = local;
  if (n > 64) {
    heap.resize(n);
    w = heap.data();
  }
  for (std::size_t i = 0; i + 1 < n; ++i) w[i] = byte_id[static_cast<unsigned char>(bytes[i])];
  w[n - 1] = byte_end_id[static_cast<unsigned char>(bytes[n - 1])];
  std::size_t len = n;
  while (len > 1) {
    std::int32_t best_rank = INT32_MAX;
    Merge best{};
    std::int32_t left = -1, right = -1;
    for (std::size_t i = 0; i + 1 < len; ++i) {
      const auto it = merges.find(pair_key(w[i], w[i + 1]));
      if (it != merges.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best = it->second;
        left = w[i];
        right = w[i + 1];
      }
    }
    if (best_rank == INT32_MAX) break;
    // Merge every non-overlapping occurrence, left to right.
    std::size_t j = 0;
    for (std::size_t i = 0; i < len;) {
      if (i + 1 < len && w[i] == left && w[i + 1] == right) {
        w[j++] = best.id;
        i += 2;
      } else {
        w[j++] = w[i++];
      }
    }
    len = j;
  }
  out.insert(out.end(), w, w + len);
}

void ClipTokenizer::Impl::encode_pretoken(const std::string& bytes, std::vector<std::int32_t>& out) const {
  // The reference pre-seeds its cache with the two specials, so they map to their ids.
  if (bytes.size() == 15 && bytes == kSotText) {
    out.push_back(sot);
    return;
  }
  if (bytes.size() == 13 && bytes == kEotText) {
    out.push_back(eot);
    return;
  }
  {
    std::shared_lock lock(cache_mutex);
    const auto it = cache.find(bytes);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids;
  bpe(bytes.data(), bytes.size(), ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::unique_lock lock(cache_mutex);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(bytes, std::move(ids));
}

// ------------------------------------------------------------------------------------------------
// ClipTokenizer
// ------------------------------------------------------------------------------------------------
ClipTokenizer::ClipTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClipTokenizer::~ClipTokenizer() = default;

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_bpe_file(const std::string& path) {
  const std::string text = read_maybe_gzip(path);
  std::vector<std::string> lines = split_lines(text);
  // Python: text.split('\n')[1:48895]; a trailing empty line of a short file is not a merge.
  const std::size_t last = std::min(lines.size(), kMaxMerges + 1);
  std::vector<std::pair<std::string, std::string>> merge_pairs;
  merge_pairs.reserve(last);
  for (std::size_t i = 1; i < last; ++i) {
    if (i + 1 == lines.size() && lines[i].empty()) break;
    auto parts = split_ws(lines[i]);
    if (parts.size() != 2)
      throw Error(ErrorCode::kBadModel, path + ": line " + std::to_string(i + 1) +
                                            ": expected two space-separated symbols");
    merge_pairs.emplace_back(std::move(parts[0]), std::move(parts[1]));
  }
  if (lines.empty() || merge_pairs.empty())
    throw Error(ErrorCode::kBadModel, path + ": no BPE merges found");

  // The reference's vocabulary: 256 byte characters, the same with "</w>", one token per merge,
  // then the two specials. A dict keeps the last id of a repeated string.
  const auto& b2u = detail::clip_byte_to_unicode();
  std::vector<std::string> vocab;
  vocab.reserve(512 + merge_pairs.size() + 2);
  std::vector<char32_t> order;
  for (int b = 0; b < 256; ++b)
    if (b2u[static_cast<std::size_t>(b)] == static_cast<char32_t>(b)) order.push_back(static_cast<char32_t>(b));
  for (int b = 0; b < 256; ++b)
    if (b2u[static_cast<std::size_t>(b)] != static_cast<char32_t>(b)) order.push_back(b2u[static_cast<std::size_t>(b)]);
  for (char32_t c : order) {
    std::string s;
    detail::append_utf8(s, c);
    vocab.push_back(s);
  }
  for (std::size_t i = 0; i < 256; ++i) vocab.push_back(vocab[i] + "</w>");
  for (const auto& [a, b] : merge_pairs) vocab.push_back(a + b);
  vocab.emplace_back(kSotText);
  vocab.emplace_back(kEotText);
  std::unordered_map<std::string, std::int32_t> encoder;
  encoder.reserve(vocab.size() * 2);
  for (std::size_t i = 0; i < vocab.size(); ++i) encoder[vocab[i]] = static_cast<std::int32_t>(i);

  auto impl = std::make_unique<Impl>();
  impl->source = path;
  impl->build(encoder, merge_pairs, path);
  detail::log().debug("clip tokenizer: {} merges, vocabulary {} ({})", merge_pairs.size(),
                      impl->vocab_size, path);
  return std::unique_ptr<ClipTokenizer>(new ClipTokenizer(std::move(impl)));
}

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_hf_files(const std::string& vocab_json,
                                                            const std::string& merges_txt) {
  std::unordered_map<std::string, std::int32_t> encoder;
  {
    const std::string text = detail::read_text_file(vocab_json, kMaxVocabBytes);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::kBadModel, vocab_json + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object())
      throw Error(ErrorCode::kBadModel, vocab_json + ": expected an object {token: id}");
    encoder.reserve(j.size() * 2);
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_number_integer())
        throw Error(ErrorCode::kBadModel, vocab_json + ": id of '" + it.key() + "' is not an integer");
      encoder[it.key()] = it.value().get<std::int32_t>();
    }
  }
  const std::string text = read_maybe_gzip(merges_txt);
  std::vector<std::string> lines = split_lines(text);
  // Like Hugging Face's CLIPTokenizer: the first line is the "#version" header, and at most the
  // reference's 48894 merges are used.
  std::vector<std::pair<std::string, std::string>> merge_pairs;
  for (std::size_t i = 0; i < lines.size() && merge_pairs.size() < kMaxMerges; ++i) {
    if (i == 0 && !lines[i].empty() && lines[i][0] == '#') continue;
    auto parts = split_ws(lines[i]);
    if (parts.empty()) continue;
    if (parts.size() != 2)
      throw Error(ErrorCode::kBadModel, merges_txt + ": line " + std::to_string(i + 1) +
                                            ": expected two space-separated symbols");
    merge_pairs.emplace_back(std::move(parts[0]), std::move(parts[1]));
  }
  auto impl = std::make_unique<Impl>();
  impl->source = vocab_json + " + " + merges_txt;
  impl->build(encoder, merge_pairs, merges_txt);
  detail::log().debug("clip tokenizer (HF): {} merges, vocabulary {} ({})", merge_pairs.size(),
                      impl->vocab_size, impl->source);
  return std::unique_ptr<ClipTokenizer>(new ClipTokenizer(std::move(impl)));
}

std::string ClipTokenizer::normalize(std::string_view text) {
  return detail::u32_to_utf8(detail::clip_normalize(detail::utf8_to_u32_or_throw(text)));
}

std::vector<std::int32_t> ClipTokenizer::encode(std::string_view text) const {
  const std::u32string norm = detail::clip_normalize(detail::utf8_to_u32_or_throw(text));
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  detail::clip_pretokenize(norm, spans);
  std::vector<std::int32_t> ids;
  ids.reserve(spans.size() * 2);
  std::string bytes;
  for (const auto& [b, e] : spans) {
    bytes.clear();
    for (std::size_t i = b; i < e; ++i) detail::append_utf8(bytes, norm[i]);
    impl_->encode_pretoken(bytes, ids);
  }
  return ids;
}

std::string ClipTokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string bytes;
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= impl_->vocab_size)
      throw Error(ErrorCode::kInvalidArgument,
                  "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                      std::to_string(impl_->vocab_size) + ")");
    if (id == impl_->sot || id == impl_->eot) continue;
    bytes += impl_->token_bytes[static_cast<std::size_t>(id)];
  }
  // Python: bytes.decode('utf-8', errors='replace').replace('</w>', ' ').
  std::string text = detail::utf8_decode_replace(bytes);
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, "</w>") == 0) {
      out.push_back(' ');
      i += 4;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

std::int32_t ClipTokenizer::sot() const { return impl_->sot; }
std::int32_t ClipTokenizer::eot() const { return impl_->eot; }
std::int32_t ClipTokenizer::vocab_size() const { return impl_->vocab_size; }

void ClipTokenizer::clear_cache() const {
  std::unique_lock lock(impl_->cache_mutex);
  impl_->cache.clear();
}

std::size_t ClipTokenizer::cache_size() const {
  std::shared_lock lock(impl_->cache_mutex);
  return impl_->cache.size();
}

}  // namespace ovseg
