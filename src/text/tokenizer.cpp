// The shared part of the Tokenizer interface and the factory used by bundles.
#include <filesystem>

#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text/text_util.hpp"

namespace ovseg {

std::vector<std::int32_t> Tokenizer::tokenize(std::string_view text, int context_length,
                                              bool truncate) const {
  if (context_length < 2)
    throw Error(ErrorCode::kInvalidArgument,
                "context length must be at least 2 (got " + std::to_string(context_length) + ")");
  const std::int32_t start = sot(), end = eot();
  std::vector<std::int32_t> body = encode(text);
  std::vector<std::int32_t> ids;
  ids.reserve(body.size() + 2);
  if (start >= 0) ids.push_back(start);
  ids.insert(ids.end(), body.begin(), body.end());
  if (end >= 0) ids.push_back(end);
  const auto limit = static_cast<std::size_t>(context_length);
  if (ids.size() > limit) {
    if (!truncate)
      throw Error(ErrorCode::kInvalidArgument,
                  "text is too long for the context length (" + std::to_string(ids.size()) +
                      " tokens > " + std::to_string(context_length) + "): \"" +
                      detail::text_preview(text) + "\"");
    ids.resize(limit);
    if (end >= 0) ids.back() = end;
  }
  return ids;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& file) {
  if (kind == "clip_bpe") {
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec))
      return ClipTokenizer::from_hf_files(file + "/vocab.json", file + "/merges.txt");
    return ClipTokenizer::from_bpe_file(file);
  }
  if (kind == "sentencepiece") return SentencePieceTokenizer::from_file(file);
  throw Error(ErrorCode::kInvalidArgument,
              file + ": unknown tokenizer kind '" + kind + "' (expected clip_bpe or sentencepiece)");
}

}  // namespace ovseg
