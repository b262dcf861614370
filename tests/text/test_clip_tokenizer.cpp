// ClipTokenizer: exactness against the reference's golden ids, the vocabulary layout of
// docs/reference-behaviour.md §5.3, the Hugging Face and plain-text loaders, context handling, errors and threads.
#include <algorithm>
#include <memory>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text/text_util.hpp"
#include "text_test_util.hpp"

namespace ovseg {
namespace {

using test::TempDir;

// One tokenizer from the shared merges file for the whole suite (loading takes ~0.1 s).
const ClipTokenizer& shared_tokenizer() {
  static const std::unique_ptr<ClipTokenizer> tok = ClipTokenizer::from_bpe_file(test::clip_bpe_path());
  return *tok;
}

#define REQUIRE_BPE() OVSEG_REQUIRE_PATH(test::clip_bpe_path())

struct GoldenEntry {
  std::string text;
  std::vector<std::int32_t> ids;
};

std::vector<GoldenEntry> golden() {
  const auto j = nlohmann::json::parse(test::read_text(test::shared_dir() + "/tokenizer_golden_public.json"));
  std::vector<GoldenEntry> out;
  for (const auto& e : j) out.push_back({e["text"].get<std::string>(), e["ids"].get<std::vector<std::int32_t>>()});
  return out;
}

// ------------------------------------------------------------------------------------------------
// Without the shared data: BPE mechanics on a tiny merges file written here.
// ------------------------------------------------------------------------------------------------
TEST(ClipTokenizerTiny, BpeMergesByRankAndVocabularyLayout) {
  TempDir dir;
  // Ranks: 0 "a b" → "ab" (id 512), 1 "ab c</w>" → "abc</w>" (513), 2 "b b" (514).
  test::write_text(dir.file("merges.txt"), "#version: test\na b\nab c</w>\nb b\n");
  const auto tok = ClipTokenizer::from_bpe_file(dir.file("merges.txt"));
  EXPECT_EQ(tok->vocab_size(), 512 + 3 + 2);
  EXPECT_EQ(tok->sot(), 515);
  EXPECT_EQ(tok->eot(), 516);
  // Byte ids per docs/reference-behaviour.md §5.3: printable bytes first ("!" = 0, "a" = 64), "</w>" forms at +256.
  EXPECT_EQ(tok->encode("abc"), (std::vector<std::int32_t>{513}));
  // "ab" ends in "b</w>", which "a b" does not match.
  EXPECT_EQ(tok->encode("ab"), (std::vector<std::int32_t>{64, 256 + 65}));
  // a b a b</w>: only the first pair is "a b" (the last symbol is b</w>) → ab a b</w>.
  EXPECT_EQ(tok->encode("abab"), (std::vector<std::int32_t>{512, 64, 256 + 65}));
  // Non-overlapping occurrences of "b b": b b b b</w> → bb b b</w>; then no rule applies.
  EXPECT_EQ(tok->encode("bbbb"), (std::vector<std::int32_t>{514, 65, 256 + 65}));
  EXPECT_EQ(tok->encode("x"), (std::vector<std::int32_t>{256 + ('x' - 33)}));
  EXPECT_EQ(tok->decode({515, 513, 64, 256 + 65, 516}), "abc ab ");
}

TEST(ClipTokenizerTiny, LoaderErrorsNameTheFile) {
  TempDir dir;
  try {
    ClipTokenizer::from_bpe_file(dir.file("missing.txt.gz"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("missing.txt.gz"), std::string::npos) << e.what();
  }
  test::write_text(dir.file("bad.txt"), "#version\na b\na b c\n");
  try {
    ClipTokenizer::from_bpe_file(dir.file("bad.txt"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadModel);
    EXPECT_NE(std::string(e.what()).find("bad.txt: line 3"), std::string::npos) << e.what();
  }
  test::write_text(dir.file("vocab.json"), "{not json");
  test::write_text(dir.file("merges.txt"), "#version\n");
  EXPECT_THROW(ClipTokenizer::from_hf_files(dir.file("vocab.json"), dir.file("merges.txt")), Error);
  EXPECT_THROW(make_tokenizer("wordpiece", dir.file("merges.txt")), Error);
}

// ------------------------------------------------------------------------------------------------
// The real vocabulary.
// ------------------------------------------------------------------------------------------------
TEST(ClipTokenizer, GoldenIdsMatchTheReference) {
  const std::string path = test::shared_dir() + "/tokenizer_golden_public.json";
  OVSEG_REQUIRE_PATH(path);
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  const auto entries = golden();
  ASSERT_GT(entries.size(), 300u);
  int mismatches = 0;
  for (const auto& e : entries) {
    const auto ids = tok.tokenize(e.text);
    if (ids != e.ids) ++mismatches;
    EXPECT_EQ(ids, e.ids) << "text: \"" << e.text << "\"";
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(ClipTokenizer, VocabularyLayoutFromSpec) {
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.sot(), 49406);
  EXPECT_EQ(tok.eot(), 49407);
  EXPECT_EQ(tok.kind(), "clip_bpe");
  // docs/reference-behaviour.md §5.3 example.
  EXPECT_EQ(tok.tokenize("a photo of a cat."),
            (std::vector<std::int32_t>{49406, 320, 1125, 539, 320, 2368, 269, 49407}));
  EXPECT_EQ(tok.decode({0}), "!");
  EXPECT_EQ(tok.decode({64}), "a");
  EXPECT_EQ(tok.decode({220}), " ");  // "Ġ" stands for the space byte
  EXPECT_EQ(tok.decode({320}), "a ");
  EXPECT_EQ(tok.decode({49406, 320, 49407}), "a ");  // specials are dropped
  EXPECT_EQ(tok.decode(tok.encode("There is a T-shirt in the scene.")), "there is a t - shirt in the scene . ");
  EXPECT_THROW(tok.decode({49408}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  // Digits are one token each; specials inside text are recognised.
  EXPECT_EQ(tok.encode("2024").size(), 4u);
  EXPECT_EQ(tok.encode("a <|endoftext|> b"), (std::vector<std::int32_t>{320, 49407, 321}));
}

TEST(ClipTokenizer, ReferenceRegexQuirks) {
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  // U+001C..U+001F: str.strip() removes them at the ends, but the `regex` module's \s does not
  // match them, so inside the text each is a punctuation run of its own byte (0x1C is remapped
  // byte #28 → id 188 + 28 + 256).
  EXPECT_EQ(tok.encode("\x1c a\x1c" "b \x1f"), (std::vector<std::int32_t>{320, 188 + 28 + 256, 321}));
  // U+0345 matches no alternative of the IGNORECASE pattern, so it separates words like a space.
  EXPECT_EQ(tok.encode("a\xcd\x85" "b"), tok.encode("a b"));
  // Simple case folding lets LONG S stand for 's' in contractions and in the special tokens,
  // which then are ordinary text (their bytes differ from the cached special string). Expected
  // ids: the reference formulation run with Python's `regex` module.
  EXPECT_EQ(tok.encode("it'\xc5\xbf"), (std::vector<std::int32_t>{585, 6, 129, 379}));
  EXPECT_EQ(tok.encode("<|\xc5\xbftartoftext|>"),
            (std::vector<std::int32_t>{27, 91, 129, 123, 2002, 6659, 18169, 91, 285}));
  // A punctuation run swallows the start of a special token.
  EXPECT_EQ(tok.encode("!<|endoftext|>"), (std::vector<std::int32_t>{0, 27, 347, 40786, 4160, 91, 285}));
}

TEST(ClipTokenizer, ContextLengthAndTruncation) {
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  std::string text75, text76;
  for (int i = 0; i < 75; ++i) text75 += "cat ";
  text76 = text75 + "dog";
  const auto ids75 = tok.tokenize(text75);
  ASSERT_EQ(ids75.size(), 77u);
  EXPECT_EQ(ids75.back(), 49407);
  try {
    tok.tokenize(text76);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("78 tokens > 77"), std::string::npos) << e.what();
  }
  const auto cut = tok.tokenize(text76 + " and more words", 77, true);
  ASSERT_EQ(cut.size(), 77u);
  EXPECT_EQ(cut.front(), 49406);
  EXPECT_EQ(cut.back(), 49407);
  EXPECT_TRUE(std::equal(cut.begin(), cut.end() - 1, ids75.begin()));
  // Other context lengths.
  EXPECT_EQ(tok.tokenize("cat cat cat", 5).size(), 5u);
  EXPECT_THROW(tok.tokenize("cat cat cat cat", 5), Error);
  EXPECT_EQ(tok.tokenize("cat cat cat cat", 5, true), (std::vector<std::int32_t>{49406, ids75[1], ids75[2], ids75[3], 49407}));
  EXPECT_THROW(tok.tokenize("cat", 1), Error);
}

TEST(ClipTokenizer, InvalidUtf8IsRejected) {
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  const std::vector<std::string> bad = {
      std::string("caf\xe9"),              // Latin-1, not UTF-8
      std::string("\xc0\xaf"),             // overlong '/'
      std::string("\xe0\x80\xaf"),         // overlong
      std::string("\xed\xa0\x80"),         // surrogate U+D800
      std::string("\xf4\x90\x80\x80"),     // above U+10FFFF
      std::string("\xe2\x82"),             // truncated
      std::string("ok \x80 continuation"), // stray continuation byte
      std::string("\xff"),
  };
  for (const auto& s : bad) {
    try {
      tok.tokenize(s);
      ADD_FAILURE() << "no error for " << detail::text_preview(s);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos);
    }
    EXPECT_THROW(ClipTokenizer::normalize(s), Error);
  }
  EXPECT_NO_THROW(tok.tokenize("\xf0\x9f\x99\x82 \xe2\x82\xac \xc3\xa9"));
}

TEST(ClipTokenizer, AdePromptsFitTheContext) {
  OVSEG_REQUIRE_PATH(test::shared_dir() + "/class_lists.json");
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  const auto prompts = test::ade847_prompts();
  ASSERT_EQ(prompts.size(), 847u * 14u);
  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, tok.tokenize(p).size());
  EXPECT_EQ(longest, 40u);  // docs/reference-behaviour.md §5.3: the longest ADE-847 prompt is 40 tokens
}

// decode(encode(text)) gives the normalised text back, up to the spaces decode() puts after
// word-final tokens, for the text of every token whose bytes are valid UTF-8 on their own.
TEST(ClipTokenizer, EveryTokenRoundTrips) {
  REQUIRE_BPE();
  const auto& tok = shared_tokenizer();
  const auto strip_spaces = [](std::string s) {
    s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
    return s;
  };
  int checked = 0, word_tokens = 0, word_exact = 0;
  for (std::int32_t id = 0; id < tok.vocab_size(); ++id) {
    const std::string text = tok.decode({id});
    if (id == tok.sot() || id == tok.eot()) {
      EXPECT_EQ(text, "");
      continue;
    }
    if (text.find("\xef\xbf\xbd") != std::string::npos) continue;  // a partial UTF-8 sequence
    const std::string norm = ClipTokenizer::normalize(text);
    const auto ids = tok.encode(text);
    EXPECT_EQ(strip_spaces(tok.decode(ids)), strip_spaces(norm)) << "token " << id << " \"" << text << "\"";
    ++checked;
    // BPE need not reproduce every vocabulary entry from its text, but with CLIP's merges every
    // word-final token of lower-case letters does (32875 of them).
    if (text.size() > 1 && text.back() == ' ' &&
        std::all_of(text.begin(), text.end() - 1, [](char c) { return c >= 'a' && c <= 'z'; })) {
      ++word_tokens;
      if (ids == std::vector<std::int32_t>{id}) ++word_exact;
    }
  }
  EXPECT_GT(checked, 45000);
  EXPECT_GT(word_tokens, 20000);
  EXPECT_EQ(word_exact, word_tokens);
  RecordProperty("word_tokens_exact", std::to_string(word_exact) + "/" + std::to_string(word_tokens));
}

TEST(ClipTokenizer, ConcurrentTokenizationIsIdentical) {
  REQUIRE_BPE();
  std::vector<std::string> texts;
  if (std::filesystem::exists(test::shared_dir() + "/class_lists.json")) texts = test::ade847_prompts();
  if (std::filesystem::exists(test::shared_dir() + "/tokenizer_golden_public.json"))
    for (const auto& e : golden()) texts.push_back(e.text);
  if (texts.empty()) texts = {"a photo of a cat.", "There is a large t-shirt in the scene."};
  std::vector<std::vector<std::int32_t>> expected;
  for (const auto& t : texts) expected.push_back(shared_tokenizer().tokenize(t));

  // A fresh tokenizer, so the threads fill its cache concurrently.
  const auto tok = ClipTokenizer::from_bpe_file(test::clip_bpe_path());
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 2; ++round) {
        // Each thread walks the list from a different start.
        for (std::size_t k = 0; k < texts.size(); ++k) {
          const std::size_t i = (k + static_cast<std::size_t>(t) * texts.size() / kThreads) % texts.size();
          if (tok->tokenize(texts[i]) != expected[i]) ++mismatches[static_cast<std::size_t>(t)];
        }
        if (t == 0 && round == 0) tok->clear_cache();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[static_cast<std::size_t>(t)], 0) << "thread " << t;
  EXPECT_GT(tok->cache_size(), 0u);
}

// ------------------------------------------------------------------------------------------------
// Other file forms, written by Python from the .gz with the byte-map rules of docs/reference-behaviour.md §5.3.
// ------------------------------------------------------------------------------------------------
const char* const kMakeFilesPy = R"PY(
import gzip, json, sys
src, out = sys.argv[1], sys.argv[2]
text = gzip.open(src).read().decode('utf-8')
open(out + '/plain_merges.txt', 'w', encoding='utf-8').write(text)
lines = text.split('\n')[1:48895]
merges = [tuple(l.split()) for l in lines]
# docs/reference-behaviour.md §5.3: printable bytes map to themselves; the other 68, ascending, to 256, 257, ...
printable = list(range(0x21, 0x7f)) + list(range(0xa1, 0xad)) + list(range(0xae, 0x100))
others = [b for b in range(256) if b not in printable]
chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
vocab = chars + [c + '</w>' for c in chars] + [a + b for a, b in merges]
vocab += ['<|startoftext|>', '<|endoftext|>']
json.dump({t: i for i, t in enumerate(vocab)}, open(out + '/vocab.json', 'w', encoding='utf-8'))
with open(out + '/merges.txt', 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n')
    for a, b in merges:
        f.write(a + ' ' + b + '\n')
)PY";

TEST(ClipTokenizer, HuggingFaceAndPlainTextFilesGiveIdenticalIds) {
  REQUIRE_BPE();
  if (!test::have_python()) GTEST_SKIP() << "python not found: " << test::python();
  TempDir dir;
  ASSERT_EQ(test::run_python(dir, kMakeFilesPy, "'" + test::clip_bpe_path() + "' '" + dir.str() + "'"), 0);
  const auto hf = ClipTokenizer::from_hf_files(dir.file("vocab.json"), dir.file("merges.txt"));
  const auto plain = ClipTokenizer::from_bpe_file(dir.file("plain_merges.txt"));
  const auto via_factory = make_tokenizer("clip_bpe", dir.str());  // a directory → HF pair
  const auto& gz = shared_tokenizer();
  EXPECT_EQ(hf->vocab_size(), 49408);
  EXPECT_EQ(hf->sot(), 49406);
  EXPECT_EQ(hf->eot(), 49407);
  EXPECT_EQ(plain->vocab_size(), 49408);

  std::vector<std::string> texts = {"a photo of a cat.", "naïve façade", "&amp; 10,000 <|endoftext|>"};
  if (std::filesystem::exists(test::shared_dir() + "/class_lists.json"))
    for (const auto& p : test::ade847_prompts()) texts.push_back(p);
  if (std::filesystem::exists(test::shared_dir() + "/tokenizer_golden_public.json")) {
    for (const auto& e : golden()) {
      EXPECT_EQ(hf->tokenize(e.text), e.ids) << e.text;
      EXPECT_EQ(plain->tokenize(e.text), e.ids) << e.text;
      texts.push_back(e.text);
    }
  }
  for (const auto& t : texts) {
    const auto ids = gz.tokenize(t);
    EXPECT_EQ(hf->tokenize(t), ids) << t;
    EXPECT_EQ(plain->tokenize(t), ids) << t;
    EXPECT_EQ(via_factory->tokenize(t), ids) << t;
  }
  for (std::int32_t id = 0; id < 49408; id += 97) EXPECT_EQ(hf->decode({id}), gz.decode({id})) << id;
}

}  // namespace
}  // namespace ovseg
