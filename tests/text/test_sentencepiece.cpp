// SentencePieceTokenizer on models trained here (libsentencepiece's trainer) from a generated
// corpus: id ranges, encode/decode round trips, BOS/EOS handling, errors, threads.
#include <sentencepiece_trainer.h>

#include <thread>

#include <gtest/gtest.h>

#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"
#include "text_test_util.hpp"

namespace ovseg {
namespace {

using test::TempDir;

std::vector<std::string> make_corpus() {
  std::vector<std::string> words = {
      "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "window", "grass",
      "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
      "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
      "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
      "railing", "cushion", "café", "straße", "naïve", "東京", "photo", "small", "large", "the",
      "a", "of", "in", "scene", "this", "is", "there"};
  std::vector<std::string> lines;
  std::uint32_t state = 12345;
  const auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  // Plus made-up words from syllables, so there is enough material for the sub-word vocabulary.
  const std::vector<std::string> syllables = {"ka", "lo", "mi", "ter", "su", "van", "re", "do",
                                              "pli", "ghu", "zen", "tra", "bo", "che", "ny", "ö"};
  for (int i = 0; i < 400; ++i) {
    std::string w;
    const int n = 2 + static_cast<int>(next() % 3);
    for (int k = 0; k < n; ++k) w += syllables[next() % syllables.size()];
    words.push_back(w);
  }
  for (int i = 0; i < 3000; ++i) {
    std::string line;
    const int n = 3 + static_cast<int>(next() % 8);
    for (int k = 0; k < n; ++k) {
      if (k) line += ' ';
      line += words[next() % words.size()];
    }
    lines.push_back(line);
  }
  return lines;
}

// Trains a model into `dir` and returns the .model path.
std::string train(const TempDir& dir, const std::vector<std::string>& corpus, const std::string& name,
                  const std::string& extra) {
  std::string text;
  for (const auto& l : corpus) text += l + "\n";
  test::write_text(dir.file("corpus.txt"), text);
  const std::string prefix = dir.file(name);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + dir.file("corpus.txt") + " --model_prefix=" + prefix +
      " --vocab_size=150 --character_coverage=1.0 --minloglevel=2 " + extra);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return prefix + ".model";
}

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    corpus_ = new std::vector<std::string>(make_corpus());
    unigram_ = new std::string(train(*dir_, *corpus_, "unigram", "--model_type=unigram"));
    bpe_no_bos_ = new std::string(train(*dir_, *corpus_, "bpe", "--model_type=bpe --bos_id=-1"));
  }
  static void TearDownTestSuite() {
    delete unigram_;
    delete bpe_no_bos_;
    delete corpus_;
    delete dir_;
  }
  static TempDir* dir_;
  static std::vector<std::string>* corpus_;
  static std::string* unigram_;
  static std::string* bpe_no_bos_;
};

TempDir* SentencePieceTest::dir_ = nullptr;
std::vector<std::string>* SentencePieceTest::corpus_ = nullptr;
std::string* SentencePieceTest::unigram_ = nullptr;
std::string* SentencePieceTest::bpe_no_bos_ = nullptr;

TEST_F(SentencePieceTest, RoundTripsAndIdsInRange) {
  for (const std::string* path : {unigram_, bpe_no_bos_}) {
    const auto tok = SentencePieceTokenizer::from_file(*path);
    EXPECT_EQ(tok->kind(), "sentencepiece");
    EXPECT_EQ(tok->vocab_size(), 150);
    std::vector<std::string> texts(corpus_->begin(), corpus_->begin() + 500);
    texts.push_back("a photo of a mountain in the scene");
    texts.push_back("tree café straße 東京 rock");
    std::size_t pieces = 0;
    for (const auto& t : texts) {
      const auto ids = tok->encode(t);
      ASSERT_FALSE(ids.empty()) << t;
      for (const auto id : ids) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, tok->vocab_size());
      }
      pieces += ids.size();
      EXPECT_EQ(tok->decode(ids), t);
      EXPECT_EQ(tok->decode(tok->tokenize(t, 1000)), t);  // BOS/EOS are dropped by decode
    }
    // Sub-word units: fewer pieces than characters, more than words.
    EXPECT_GT(pieces, texts.size() * 3);
  }
}

TEST_F(SentencePieceTest, BosEosAndContext) {
  const auto tok = SentencePieceTokenizer::from_file(*unigram_);
  EXPECT_EQ(tok->sot(), 1);  // trainer defaults: unk 0, bos 1, eos 2
  EXPECT_EQ(tok->eot(), 2);
  const std::string text = "a photo of a large wardrobe in the scene";
  const auto body = tok->encode(text);
  const auto ids = tok->tokenize(text, 77);
  ASSERT_EQ(ids.size(), body.size() + 2);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_THROW(tok->tokenize(text, 4), Error);
  const auto cut = tok->tokenize(text, 4, true);
  EXPECT_EQ(cut, (std::vector<std::int32_t>{1, body[0], body[1], 2}));

  const auto no_bos = SentencePieceTokenizer::from_file(*bpe_no_bos_);
  EXPECT_EQ(no_bos->sot(), -1);
  const auto ids2 = no_bos->tokenize(text);
  EXPECT_EQ(ids2.size(), no_bos->encode(text).size() + 1);
  EXPECT_EQ(ids2.back(), no_bos->eot());

  const auto via_factory = make_tokenizer("sentencepiece", *unigram_);
  EXPECT_EQ(via_factory->tokenize(text), ids);
}

TEST_F(SentencePieceTest, Errors) {
  const auto tok = SentencePieceTokenizer::from_file(*unigram_);
  try {
    tok->encode("bad \xff byte");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_THROW(tok->decode({150}), Error);
  EXPECT_THROW(tok->decode({-3}), Error);
  try {
    SentencePieceTokenizer::from_file(dir_->file("nope.model"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("nope.model"), std::string::npos);
  }
  test::write_text(dir_->file("garbage.model"), "this is not a protobuf \x01\x02\x03");
  try {
    SentencePieceTokenizer::from_file(dir_->file("garbage.model"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadModel);
    EXPECT_NE(std::string(e.what()).find("garbage.model"), std::string::npos);
  }
}

TEST_F(SentencePieceTest, ConcurrentEncodingIsIdentical) {
  const auto tok = SentencePieceTokenizer::from_file(*unigram_);
  std::vector<std::vector<std::int32_t>> expected;
  for (const auto& t : *corpus_) expected.push_back(tok->tokenize(t, 1000));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < corpus_->size(); ++i)
        if (tok->tokenize((*corpus_)[i], 1000) != expected[i]) ++bad[static_cast<std::size_t>(t)];
    });
  for (auto& th : threads) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

}  // namespace
}  // namespace ovseg
