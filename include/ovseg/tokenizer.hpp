// Text tokenizers, usable on their own (no torch). ClipTokenizer is CLIP's byte-level BPE, exact to
// the reference `SimpleTokenizer` (docs/reference-behaviour.md §5.3); SentencePieceTokenizer serves
// text towers that use SentencePiece models. Both are immutable after construction and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ovseg/export.hpp"

namespace ovseg {

class OVSEG_API Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ids of the text without start/end tokens and without padding.
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  // Text of a list of ids (special tokens dropped).
  virtual std::string decode(const std::vector<std::int32_t>& ids) const = 0;

  // [SOT] + encode(text) + [EOT], unpadded. A sequence longer than `context_length` throws
  // Error(kInvalidArgument) naming the text, unless `truncate`, which keeps the first
  // context_length ids with the last one forced to EOT. (A tokenizer whose sot()/eot() is -1,
  // e.g. a SentencePiece model without BOS, leaves that end out.) Invalid UTF-8 throws
  // Error(kInvalidArgument); so does a context_length below 2.
  std::vector<std::int32_t> tokenize(std::string_view text, int context_length = 77,
                                     bool truncate = false) const;

  virtual std::int32_t sot() const = 0;
  virtual std::int32_t eot() const = 0;
  virtual std::int32_t vocab_size() const = 0;
  virtual std::string kind() const = 0;  // "clip_bpe" | "sentencepiece"
};

class OVSEG_API ClipTokenizer final : public Tokenizer {
 public:
  // CLIP's merges file, gzip-compressed (bpe_simple_vocab_16e6.txt.gz) or plain text.
  static std::unique_ptr<ClipTokenizer> from_bpe_file(const std::string& path);
  // The Hugging Face pair (vocab.json + merges.txt).
  static std::unique_ptr<ClipTokenizer> from_hf_files(const std::string& vocab_json,
                                                       const std::string& merges_txt);
  ~ClipTokenizer() override;

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t sot() const override;
  std::int32_t eot() const override;
  std::int32_t vocab_size() const override;
  std::string kind() const override { return "clip_bpe"; }

  // The normalisation applied before pre-tokenisation, docs/reference-behaviour.md §5.3 steps 2-5 with Python
  // semantics: html.unescape twice, strip, Unicode whitespace runs → one space, strip, str.lower()
  // (full mapping, Final_Sigma). ftfy (step 1) is not applied: the reference's golden ids keep
  // e.g. U+01C5 as it is, which ftfy >= 5.2 would have split. Throws Error(kInvalidArgument) on
  // invalid UTF-8.
  static std::string normalize(std::string_view text);

  // The per-pre-token BPE cache (shared by all threads; bounded). clear_cache() empties it, e.g.
  // to measure cold-cache speed; results never depend on it.
  void clear_cache() const;
  std::size_t cache_size() const;

  struct Impl;

 private:
  explicit ClipTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class OVSEG_API SentencePieceTokenizer final : public Tokenizer {
 public:
  // A SentencePiece model file (.model). sot/eot are the model's BOS/EOS ids.
  static std::unique_ptr<SentencePieceTokenizer> from_file(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::int32_t sot() const override;
  std::int32_t eot() const override;
  std::int32_t vocab_size() const override;
  std::string kind() const override { return "sentencepiece"; }

  struct Impl;

 private:
  explicit SentencePieceTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Makes the tokenizer a bundle names: kind "clip_bpe" (file = merges .txt(.gz), or a directory
// holding the Hugging Face vocab.json + merges.txt) or "sentencepiece" (file = .model).
// Throws Error naming the file (kInvalidArgument for an unknown kind).
OVSEG_API std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& file);

}  // namespace ovseg
