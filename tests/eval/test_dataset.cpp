// Dataset layouts, pairing, sharding, ground-truth reading and prediction writing.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "eval/eval_test_util.hpp"
#include "eval/synthetic_dataset.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using test::TempDir;

TEST(DatasetSpec, KnownDatasetsFollowTheSpecLayouts) {
  const auto& a150 = dataset_spec("ade150");
  EXPECT_EQ(a150.num_classes, 150);
  EXPECT_EQ(a150.ignore_label, 255u);
  EXPECT_EQ(a150.label_bit_depth, 8);
  EXPECT_EQ(a150.image_dir, "ADEChallengeData2016/images/{split}");
  EXPECT_EQ(a150.label_dir, "ADEChallengeData2016/annotations_detectron2/{split}");
  EXPECT_EQ(a150.label_ext, ".png");
  const auto& a847 = dataset_spec("ade847");
  EXPECT_EQ(a847.num_classes, 847);
  EXPECT_EQ(a847.ignore_label, 65535u);
  EXPECT_EQ(a847.label_bit_depth, 16);
  EXPECT_EQ(a847.image_dir, "ADE20K_2021_17_01/images_detectron2/{split}");
  EXPECT_EQ(a847.label_dir, "ADE20K_2021_17_01/annotations_detectron2/{split}");
  EXPECT_EQ(a847.label_ext, ".tif");
  try {
    dataset_spec("pc59");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("ade847"), std::string::npos) << e.what();
  }
}

class ListingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ListingTest, PairsByStemSortedAndNamesTheUnpaired) {
  const auto& spec = dataset_spec(GetParam());
  TempDir dir("listing");
  test::SyntheticDataset ds(spec, dir.path(), 1);
  ds.add_pair("ADE_val_00000003", 6, 5);
  ds.add_pair("ADE_val_00000001", 6, 5);
  ds.add_pair("ADE_val_00000010", 6, 5);
  ds.add_image_only("ADE_val_00000002");
  ds.add_label_only("ADE_val_00000004");
  test::write_bytes(ds.image_dir() / "notes.txt", "not an image");  // other files are ignored
  const auto listing = list_dataset(spec, ds.root(), "validation");
  ASSERT_EQ(listing.pairs.size(), 3u);
  EXPECT_EQ(listing.pairs[0].stem, "ADE_val_00000001");
  EXPECT_EQ(listing.pairs[1].stem, "ADE_val_00000003");
  EXPECT_EQ(listing.pairs[2].stem, "ADE_val_00000010");
  EXPECT_EQ(listing.pairs[0].label_path, (ds.label_dir() / ("ADE_val_00000001" + spec.label_ext)).string());
  ASSERT_EQ(listing.unpaired.size(), 2u);
  EXPECT_NE(listing.unpaired[0].name.find("ADE_val_00000002" + spec.image_ext), std::string::npos);
  EXPECT_NE(listing.unpaired[0].reason.find("image without label"), std::string::npos);
  EXPECT_NE(listing.unpaired[1].name.find("ADE_val_00000004" + spec.label_ext), std::string::npos);
  EXPECT_NE(listing.unpaired[1].reason.find("label without image"), std::string::npos);
}

TEST_P(ListingTest, MissingDirectoryIsABadDataErrorNamingIt) {
  const auto& spec = dataset_spec(GetParam());
  TempDir dir("missing");
  try {
    list_dataset(spec, dir.str(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("validation"), std::string::npos) << e.what();
  }
  test::SyntheticDataset ds(spec, dir.path(), 2);
  EXPECT_NO_THROW(list_dataset(spec, dir.str(), "validation"));
  EXPECT_THROW(list_dataset(spec, dir.str(), "training"), Error);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ListingTest, ::testing::Values("ade150", "ade847"));

TEST(Shard, EveryNthImageAndTheShardsPartitionTheList) {
  std::vector<ImagePair> pairs;
  for (int i = 0; i < 11; ++i) pairs.push_back({"s" + std::to_string(i), "", ""});
  std::vector<std::string> seen;
  for (int s = 0; s < 3; ++s) {
    const auto part = select_shard(pairs, s, 3);
    for (std::size_t j = 0; j < part.size(); ++j) {
      EXPECT_EQ(part[j].stem, "s" + std::to_string(s + 3 * j));
      seen.push_back(part[j].stem);
    }
  }
  EXPECT_EQ(seen.size(), 11u);
  EXPECT_EQ(select_shard(pairs, 0, 1).size(), 11u);
  EXPECT_THROW(select_shard(pairs, 3, 3), Error);
  EXPECT_EQ(parse_shard("1/4"), std::make_pair(1, 4));
  EXPECT_EQ(parse_shard("0/1"), std::make_pair(0, 1));
  for (const char* bad : {"4/4", "1/0", "-1/2", "1", "/2", "1/", "a/b", "1/2/3", " 1/2"})
    EXPECT_THROW(parse_shard(bad), Error) << bad;
}

TEST(GroundTruth, ReadsBothFormatsAndRejectsValuesOutsideTheClasses) {
  TempDir dir("gt");
  const auto& a150 = dataset_spec("ade150");
  const auto& a847 = dataset_spec("ade847");
  const std::vector<std::uint16_t> v8 = {0, 149, 255, 7, 8, 9};
  test::write_label_file(dir.path() / "a.png", 3, 2, v8, 8);
  const auto gt = read_ground_truth(a150, (dir.path() / "a.png").string());
  EXPECT_EQ(gt.width, 3);
  EXPECT_EQ(gt.height, 2);
  EXPECT_EQ(gt.labels, v8);
  const std::vector<std::uint16_t> v16 = {0, 846, 65535, 300, 512, 1};
  test::write_label_file(dir.path() / "a.tif", 2, 3, v16, 16);
  EXPECT_EQ(read_ground_truth(a847, (dir.path() / "a.tif").string()).labels, v16);

  const std::vector<std::uint16_t> bad = {0, 150, 255, 7, 8, 9};  // 150 is no class of A-150
  test::write_label_file(dir.path() / "bad.png", 3, 2, bad, 8);
  try {
    read_ground_truth(a150, (dir.path() / "bad.png").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("bad.png"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("150"), std::string::npos) << e.what();
  }
  test::write_bytes(dir.path() / "corrupt.png", "garbage");
  EXPECT_THROW(read_ground_truth(a150, (dir.path() / "corrupt.png").string()), Error);
  EXPECT_THROW(read_ground_truth(a150, (dir.path() / "absent.png").string()), Error);
}

TEST(Prediction, WrittenInTheDatasetFormatWithUnlabeledAsIgnore) {
  TempDir dir("pred");
  const auto& a150 = dataset_spec("ade150");
  const auto& a847 = dataset_spec("ade847");
  LabelImage p{3, 2, {0, 149, kUnlabeled, 7, 8, 9}};
  const auto png = (dir.path() / prediction_file_name(a150, "ADE_val_1")).string();
  EXPECT_EQ(png, (dir.path() / "ADE_val_1.png").string());
  write_prediction(a150, png, p);
  const cv::Mat m8 = cv::imread(png, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(m8.type(), CV_8UC1);
  EXPECT_EQ(m8.at<std::uint8_t>(0, 1), 149);
  EXPECT_EQ(m8.at<std::uint8_t>(0, 2), 255);
  EXPECT_EQ(m8.at<std::uint8_t>(1, 2), 9);

  LabelImage q{2, 3, {0, 846, kUnlabeled, 300, 512, 1}};
  const auto tif = (dir.path() / prediction_file_name(a847, "ADE_val_2")).string();
  EXPECT_EQ(tif, (dir.path() / "ADE_val_2.tif").string());
  write_prediction(a847, tif, q);
  const cv::Mat m16 = cv::imread(tif, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(m16.type(), CV_16UC1);
  EXPECT_EQ(m16.at<std::uint16_t>(0, 1), 846);
  EXPECT_EQ(m16.at<std::uint16_t>(1, 0), 65535);
  EXPECT_EQ(m16.at<std::uint16_t>(2, 0), 512);

  LabelImage too_big{1, 1, {300}};
  EXPECT_THROW(write_prediction(a150, (dir.path() / "x.png").string(), too_big), Error);
  LabelImage wrong_size{2, 2, {1}};
  EXPECT_THROW(write_prediction(a150, (dir.path() / "y.png").string(), wrong_size), Error);
}

}  // namespace
}  // namespace ovseg::eval
