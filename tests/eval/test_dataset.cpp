// Dataset layouts, pairing, sharding, ground-truth reading and prediction writing.
#include <cctype>
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
namespace fs = std::filesystem;

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
  // ov-seg's register_pascal_context.py / register_voc_seg.py, and GETTING_STARTED's weights.
  const auto& pc59 = dataset_spec("pc59");
  EXPECT_EQ(pc59.num_classes, 59);
  EXPECT_EQ(pc59.ignore_label, 255u);
  EXPECT_EQ(pc59.label_bit_depth, 8);
  EXPECT_EQ(pc59.image_dir, "VOCdevkit/VOC2010/JPEGImages");
  EXPECT_EQ(pc59.label_dir, "VOCdevkit/VOC2010/annotations_detectron2/pc59_val");
  EXPECT_EQ(pc59.label_ext, ".png");
  EXPECT_EQ(pc59.ensemble_weight, 0.6f);
  const auto& pc459 = dataset_spec("pc459");
  EXPECT_EQ(pc459.num_classes, 459);
  EXPECT_EQ(pc459.ignore_label, 65535u);
  EXPECT_EQ(pc459.label_bit_depth, 16);
  EXPECT_EQ(pc459.image_dir, "VOCdevkit/VOC2010/JPEGImages");
  EXPECT_EQ(pc459.label_dir, "VOCdevkit/VOC2010/annotations_detectron2/pc459_val");
  EXPECT_EQ(pc459.label_ext, ".tif");
  EXPECT_EQ(pc459.ensemble_weight, 0.6f);
  const auto& voc20 = dataset_spec("voc20");
  EXPECT_EQ(voc20.num_classes, 20);
  EXPECT_EQ(voc20.ignore_label, 255u);
  EXPECT_EQ(voc20.image_dir, "VOCdevkit/VOC2012/JPEGImages");
  EXPECT_EQ(voc20.label_dir, "VOCdevkit/VOC2012/annotations_detectron2/val");
  EXPECT_EQ(voc20.label_ext, ".png");
  EXPECT_EQ(voc20.ensemble_weight, 0.45f);
  EXPECT_FALSE(a150.ensemble_weight.has_value());  // the config's 0.7, i.e. the bundle's
  EXPECT_FALSE(a847.ensemble_weight.has_value());
  for (const auto& name : dataset_names()) {
    const auto& spec = dataset_spec(name);
    EXPECT_EQ(spec.image_ext, ".jpg") << name;
    EXPECT_TRUE(spec.dataset_ids.empty()) << name;  // no stuff_dataset_id_to_contiguous_id registered
    // The class list of the same registration (the preset) has K names.
    EXPECT_EQ(spec.preset, name);
  }
  EXPECT_EQ(dataset_names(), (std::vector<std::string>{"ade150", "ade847", "pc59", "pc459", "voc20"}));
  try {
    dataset_spec("pc60");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("ade847"), std::string::npos) << e.what();
  }
}

class ListingTest : public ::testing::TestWithParam<std::string> {};

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST_P(ListingTest, PairsByStemSortedAndNamesTheUnpaired) {
  TempDir dir("listing");
  const auto spec = test::spec_for_test(GetParam(), dir.path());
  test::SyntheticDataset ds(spec, dir.path(), 1);
  ds.add_pair("ADE_val_00000003", 6, 5);
  ds.add_pair("ADE_val_00000001", 6, 5);
  ds.add_pair("ADE_val_00000010", 6, 5);
  ds.add_image_only("ADE_val_00000002");
  ds.add_image_only("ADE_val_00000000");
  ds.add_label_only("ADE_val_00000004");
  test::write_bytes(ds.image_dir() / "notes.txt", "not an image");  // other files are ignored
  // load_sem_seg matches the extension with a case-sensitive endswith: not an image, not counted.
  test::write_bytes(ds.image_dir() / ("UPPER" + upper(spec.image_ext)), "x");
  const auto listing = list_dataset(spec, ds.root(), "validation");
  ASSERT_EQ(listing.pairs.size(), 3u);
  EXPECT_EQ(listing.pairs[0].stem, "ADE_val_00000001");
  EXPECT_EQ(listing.pairs[1].stem, "ADE_val_00000003");
  EXPECT_EQ(listing.pairs[2].stem, "ADE_val_00000010");
  EXPECT_EQ(listing.pairs[0].label_path, (ds.label_dir() / ("ADE_val_00000001" + spec.label_ext)).string());
  // Images without annotation are left out and counted (the intersection of load_sem_seg).
  EXPECT_EQ(listing.images_left_out, 2);
  ASSERT_EQ(listing.unpaired.size(), 1u);
  EXPECT_NE(listing.unpaired[0].name.find("ADE_val_00000004" + spec.label_ext), std::string::npos);
  EXPECT_NE(listing.unpaired[0].reason.find("label without image"), std::string::npos);
}

TEST_P(ListingTest, MissingDirectoryIsABadDataErrorNamingIt) {
  TempDir dir("missing");
  const auto spec = test::spec_for_test(GetParam(), dir.path());
  try {
    list_dataset(spec, dir.str(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    const std::string first_dir = fs::path(spec.image_dir).filename().string() == "{split}"
                                      ? std::string("validation")
                                      : fs::path(spec.image_dir).filename().string();
    EXPECT_NE(std::string(e.what()).find(first_dir), std::string::npos) << e.what();
  }
  test::SyntheticDataset ds(spec, dir.path(), 2);
  // No annotation at all: load_sem_seg's assertion, as an error naming the folder.
  try {
    list_dataset(spec, dir.str(), "validation");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("no annotations"), std::string::npos) << e.what();
  }
  ds.add_pair("a", 4, 3);
  EXPECT_NO_THROW(list_dataset(spec, dir.str(), "validation"));
  if (spec.image_dir.find("{split}") != std::string::npos) {  // PC / VOC name one split in their paths
    EXPECT_THROW(list_dataset(spec, dir.str(), "training"), Error);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ListingTest,
                         ::testing::Values("ade150", "ade847", "pc59", "pc459", "voc20", "custom", "custom16"));

TEST(CustomDataset, SpecFromTheFlagsAndItsErrors) {
  const auto s = custom_dataset_spec("/d/img", "/d/gt", 59, 255);
  EXPECT_EQ(s.name, "custom");
  EXPECT_EQ(s.image_ext, ".jpg");
  EXPECT_EQ(s.label_ext, ".png");
  EXPECT_EQ(s.label_bit_depth, 8);
  EXPECT_EQ(s.ignore_label, 255u);
  EXPECT_FALSE(s.ensemble_weight.has_value());
  const auto t = custom_dataset_spec("/d/img", "/d/gt", 459, 65535, "png", "tif");
  EXPECT_EQ(t.image_ext, ".png");
  EXPECT_EQ(t.label_ext, ".tif");
  EXPECT_EQ(t.label_bit_depth, 16);
  EXPECT_EQ(custom_dataset_spec("/d/img", "/d/gt", 10, 300).label_bit_depth, 16);  // 300 needs 16 bits
  for (const auto& bad : {std::make_pair(0, 255u), std::make_pair(59, 30u), std::make_pair(59, 70000u),
                          std::make_pair(70000, 70001u)}) {
    try {
      custom_dataset_spec("/d/img", "/d/gt", bad.first, bad.second);
      ADD_FAILURE() << bad.first << " " << bad.second;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_THROW(custom_dataset_spec("", "/d/gt", 5, 255), Error);
}

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
  EXPECT_EQ(gt.values, v8);
  const std::vector<std::uint16_t> v16 = {0, 846, 65535, 300, 512, 1};
  test::write_label_file(dir.path() / "a.tif", 2, 3, v16, 16);
  EXPECT_EQ(read_ground_truth(a847, (dir.path() / "a.tif").string()).values, v16);

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
  LabelImage p{3, 2, 16, {0, 149, kUnlabeled, 7, 8, 9}};
  const auto png = (dir.path() / prediction_file_name(a150, "ADE_val_1")).string();
  EXPECT_EQ(png, (dir.path() / "ADE_val_1.png").string());
  write_prediction(a150, png, p);
  const cv::Mat m8 = cv::imread(png, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(m8.type(), CV_8UC1);
  EXPECT_EQ(m8.at<std::uint8_t>(0, 1), 149);
  EXPECT_EQ(m8.at<std::uint8_t>(0, 2), 255);
  EXPECT_EQ(m8.at<std::uint8_t>(1, 2), 9);

  LabelImage q{2, 3, 16, {0, 846, kUnlabeled, 300, 512, 1}};
  const auto tif = (dir.path() / prediction_file_name(a847, "ADE_val_2")).string();
  EXPECT_EQ(tif, (dir.path() / "ADE_val_2.tif").string());
  write_prediction(a847, tif, q);
  const cv::Mat m16 = cv::imread(tif, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(m16.type(), CV_16UC1);
  EXPECT_EQ(m16.at<std::uint16_t>(0, 1), 846);
  EXPECT_EQ(m16.at<std::uint16_t>(1, 0), 65535);
  EXPECT_EQ(m16.at<std::uint16_t>(2, 0), 512);

  LabelImage too_big{1, 1, 16, {300}};
  EXPECT_THROW(write_prediction(a150, (dir.path() / "x.png").string(), too_big), Error);
  LabelImage wrong_size{2, 2, 16, {1}};
  EXPECT_THROW(write_prediction(a150, (dir.path() / "y.png").string(), wrong_size), Error);
}

}  // namespace
}  // namespace ovseg::eval
