// sem_seg_predictions.json: COCO RLE (pycocotools' maskApi: rleEncode, rleToString, rleFrString)
// on hand-made masks with hand-computed counts and strings, round trips on random masks, and the
// records of encode_json_sem_seg. (Debian has no python3-pycocotools; the CLI test decodes the
// file with an independent Python implementation of the published algorithm.)
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using Counts = std::vector<std::uint32_t>;

TEST(Rle, HandMadeMasksColumnMajorStartingWithZeros) {
  // 2×3, row-major:  0 1 1 / 0 1 0  → column-major 0 0 | 1 1 | 1 0 → runs 2 zeros, 3 ones, 1 zero.
  const std::vector<std::uint8_t> a = {0, 1, 1, 0, 1, 0};
  EXPECT_EQ(rle_encode(a.data(), 3, 2), (Counts{2, 3, 1}));
  EXPECT_EQ(rle_to_string(Counts{2, 3, 1}), "231");
  // Starting with a one: an empty run of zeros first. Any nonzero value counts as 1.
  const std::vector<std::uint8_t> b = {7, 0, 1, 1};  // 2×2: column-major 7 1 | 0 1
  EXPECT_EQ(rle_encode(b.data(), 2, 2), (Counts{0, 2, 1, 1}));
  const std::vector<std::uint8_t> zeros(12, 0), ones(12, 1);
  EXPECT_EQ(rle_encode(zeros.data(), 4, 3), (Counts{12}));
  EXPECT_EQ(rle_encode(ones.data(), 4, 3), (Counts{0, 12}));
  EXPECT_EQ(rle_encode(nullptr, 0, 0), (Counts{0}));
}

TEST(Rle, CompressedStringsAsPycocotoolsWritesThem) {
  // Five bits a character (+48), 0x20 = more follows, 0x10 of the last = negative; counts from the
  // fourth on as differences to the count two before ([QUIRK] maskApi's i > 2).
  EXPECT_EQ(rle_to_string(Counts{0, 5, 3, 7, 2}), "0532O");  // 7-5 = 2 → '2'; 2-3 = -1 → 31+48 = 'O'
  EXPECT_EQ(rle_to_string(Counts{100}), "T3");                // 100 = 4 + 3·32: (4|0x20)+48 = 'T', 3 → '3'
  EXPECT_EQ(rle_to_string(Counts{16}), "`0");                 // 16 has the sign bit set: one more char
  EXPECT_EQ(rle_to_string(Counts{1, 1, 40}), "11X1");         // the third count whole: 40 = 8 + 1·32
  EXPECT_EQ(rle_to_string(Counts{}), "");
  EXPECT_EQ(rle_from_string("0532O"), (Counts{0, 5, 3, 7, 2}));
  EXPECT_EQ(rle_from_string("T3"), (Counts{100}));
  EXPECT_EQ(rle_from_string("11X1"), (Counts{1, 1, 40}));
  EXPECT_THROW(rle_from_string("T"), Error);        // ends inside a number
  EXPECT_THROW(rle_from_string("0 1"), Error);      // ' ' is below '0'
}

TEST(Rle, RoundTripOnRandomMasks) {
  std::mt19937 rng(11);
  for (int t = 0; t < 200; ++t) {
    const int w = 1 + static_cast<int>(rng() % 70), h = 1 + static_cast<int>(rng() % 70);
    const double p = (rng() % 100) / 100.0;
    std::bernoulli_distribution bit(p);
    std::vector<std::uint8_t> m(static_cast<std::size_t>(w) * h);
    // Long runs too (differences of large counts, negative and positive).
    for (auto& v : m) v = bit(rng) ? 1 : 0;
    if (t % 3 == 0)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w / 2; ++x) m[static_cast<std::size_t>(y) * w + x] = 1;
    const Counts counts = rle_encode(m.data(), w, h);
    std::uint64_t total = 0;
    for (auto c : counts) total += c;
    ASSERT_EQ(total, m.size());
    const std::string s = rle_to_string(counts);
    ASSERT_EQ(rle_from_string(s), counts) << s;
    // Decode back to the mask.
    std::vector<std::uint8_t> back(m.size());
    std::size_t i = 0;
    std::uint8_t v = 0;
    for (auto c : counts) {
      for (std::uint32_t k = 0; k < c; ++k, ++i) back[(i % h) * w + i / h] = v;
      v ^= 1;
    }
    ASSERT_EQ(back, m);
  }
}

TEST(SemSegJson, RecordsOfEncodeJsonSemSeg) {
  DatasetSpec spec = dataset_spec("voc20");
  // 2×3 prediction: classes 4 and 1, one unlabeled pixel (demo mode) that belongs to no record.
  LabelImage pred{3, 2, 16, {4, 1, 1, 4, 1, kUnlabeled}};
  const std::string text = "[" + sem_seg_json_records(pred, "d/VOC2012/JPEGImages/a\xc3\xa9\"b.jpg", spec) + "]";
  // The exact text of json.dumps (", " and ": " separators, ASCII escapes), classes ascending.
  // Column-major: 4 4 | 1 1 | 1 U.  Class 1: 0 0 1 1 1 0 → {2,3,1} → "231"; class 4: 1 1 0 0 0 0 → {0,2,4}.
  const std::string want =
      "[{\"file_name\": \"d/VOC2012/JPEGImages/a\\u00e9\\\"b.jpg\", \"category_id\": 1, \"segmentation\": "
      "{\"size\": [2, 3], \"counts\": \"231\"}}, "
      "{\"file_name\": \"d/VOC2012/JPEGImages/a\\u00e9\\\"b.jpg\", \"category_id\": 4, \"segmentation\": "
      "{\"size\": [2, 3], \"counts\": \"024\"}}]";
  EXPECT_EQ(text, want);
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j[0]["file_name"].get<std::string>(), "d/VOC2012/JPEGImages/a\xc3\xa9\"b.jpg");

  // category_id through the reverse of the contiguous mapping, when a dataset has one.
  spec.dataset_ids.resize(20);
  for (int c = 0; c < 20; ++c) spec.dataset_ids[c] = 100 + 3 * c;
  const auto k = nlohmann::json::parse("[" + sem_seg_json_records(pred, "x.jpg", spec) + "]");
  EXPECT_EQ(k[0]["category_id"].get<int>(), 103);
  EXPECT_EQ(k[1]["category_id"].get<int>(), 112);
  // A label outside the classes is refused; an all-unlabeled map has no record.
  EXPECT_THROW(sem_seg_json_records(LabelImage{1, 1, 16, {20}}, "x.jpg", spec), Error);
  EXPECT_EQ(sem_seg_json_records(LabelImage{1, 1, 16, {kUnlabeled}}, "x.jpg", spec), "");
}

TEST(SemSegJson, PythonJsonStringEscapes) {
  EXPECT_EQ(python_json_string("a/b c.jpg"), "\"a/b c.jpg\"");
  EXPECT_EQ(python_json_string("q\"\\\n\t\x01\x7f"), "\"q\\\"\\\\\\n\\t\\u0001\\u007f\"");
  EXPECT_EQ(python_json_string("\xf0\x9f\x98\x80"), "\"\\ud83d\\ude00\"");  // above the BMP: a surrogate pair
  EXPECT_EQ(python_json_string("x\xffy"), "\"x\\udcffy\"");                  // not UTF-8: surrogateescape
}

}  // namespace
}  // namespace ovseg::eval
