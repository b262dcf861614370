// Confusion matrix and metrics against hand-computed values and numpy (docs/reference-behaviour.md §8.3, §8.4).
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "eval/eval_test_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {
namespace {

using test::TempDir;

TEST(ConfusionMatrix, RowIsPredictionColumnIsGroundTruthIgnoreGoesToLastColumn) {
  ConfusionMatrix cm(3);
  const std::vector<std::uint16_t> pred = {0, 2, 1, 1, 0, kUnlabeled};
  const std::vector<std::uint16_t> gt = {0, 0, 1, 255, 1, 2};
  cm.add(pred.data(), gt.data(), pred.size(), 255);
  EXPECT_EQ(cm.at(0, 0), 1);
  EXPECT_EQ(cm.at(2, 0), 1);
  EXPECT_EQ(cm.at(1, 1), 1);
  EXPECT_EQ(cm.at(1, 3), 1);  // GT ignore → column K
  EXPECT_EQ(cm.at(0, 1), 1);
  EXPECT_EQ(cm.at(3, 2), 1);  // kUnlabeled → row K
  EXPECT_EQ(cm.total(), 6);
}

TEST(ConfusionMatrix, BadValuesThrowAndLeaveTheMatrixUnchanged) {
  ConfusionMatrix cm(3);
  const std::vector<std::uint16_t> ok = {0, 1, 2};
  cm.add(ok.data(), ok.data(), ok.size(), 255);
  const auto before = cm;
  const std::vector<std::uint16_t> bad_gt = {0, 1, 7};  // neither class nor ignore
  try {
    cm.add(ok.data(), bad_gt.data(), ok.size(), 255);
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("ground-truth value 7"), std::string::npos) << e.what();
  }
  const std::vector<std::uint16_t> bad_pred = {0, 3, 1};  // K is not a class
  EXPECT_THROW(cm.add(bad_pred.data(), ok.data(), ok.size(), 255), Error);
  const std::vector<std::uint16_t> gt_ignore_other = {0, 1, 255};
  EXPECT_THROW(cm.add(ok.data(), gt_ignore_other.data(), ok.size(), 65535), Error);  // 255 is no ignore here
  EXPECT_TRUE(cm == before);
}

TEST(ConfusionMatrix, MergeSumsAndChecksTheClassCount) {
  ConfusionMatrix a(2), b(2), c(3);
  a.at(0, 0) = 5;
  a.at(2, 1) = 1;
  b.at(0, 0) = 2;
  b.at(1, 2) = 4;
  a.merge(b);
  EXPECT_EQ(a.at(0, 0), 7);
  EXPECT_EQ(a.at(2, 1), 1);
  EXPECT_EQ(a.at(1, 2), 4);
  EXPECT_THROW(a.merge(c), Error);
  EXPECT_THROW(ConfusionMatrix(0), Error);
}

// Worked by hand from the formulas of docs/reference-behaviour.md §8.4 (K = 3):
//   GT 0 0 1 1 (+ one ignored pixel), prediction 0 2 1 1 (+ 2 on the ignored pixel).
//   class 0: tp 1, gt 2, pred 1 → IoU 1/2, ACC 1/2;  class 1: tp 2, gt 2, pred 2 → IoU 1, ACC 1;
//   class 2: predicted once, never in GT → adds 1 to the mIoU denominator only.
TEST(Metrics, HandWorkedExampleWithThePredictedButAbsentClassQuirk) {
  ConfusionMatrix cm(3);
  const std::vector<std::uint16_t> pred = {0, 2, 1, 1, 2};
  const std::vector<std::uint16_t> gt = {0, 0, 1, 1, 255};
  cm.add(pred.data(), gt.data(), pred.size(), 255);
  const Metrics m = compute_metrics(cm);
  EXPECT_DOUBLE_EQ(m.miou, 100.0 * 1.5 / 3);  // detectron2 0.6: ÷ #classes with GT or prediction
  EXPECT_DOUBLE_EQ(m.miou_gt_classes, 100.0 * 1.5 / 2);
  EXPECT_DOUBLE_EQ(m.fwiou, 100.0 * (0.5 * 0.5 + 1.0 * 0.5));
  EXPECT_DOUBLE_EQ(m.macc, 75.0);
  EXPECT_DOUBLE_EQ(m.pacc, 75.0);
  EXPECT_DOUBLE_EQ(m.iou[0], 50.0);
  EXPECT_DOUBLE_EQ(m.iou[1], 100.0);
  EXPECT_TRUE(std::isnan(m.iou[2]));
  EXPECT_TRUE(std::isnan(m.acc[2]));
  EXPECT_EQ(m.classes_with_gt, 2);
  EXPECT_EQ(m.classes_with_gt_or_pred, 3);
  EXPECT_EQ(m.pixels, 4);
  EXPECT_EQ(m.ignored_pixels, 1);
  EXPECT_EQ(m.pred_pixels[2], 1);  // the prediction on the ignored pixel is not counted
  EXPECT_EQ(headline(m), "mIoU=50.00 fwIoU=75.00 mACC=75.00 pACC=75.00");
}

TEST(Metrics, EmptyMatrixGivesNaNNotACrash) {
  const Metrics m = compute_metrics(ConfusionMatrix(4));
  EXPECT_TRUE(std::isnan(m.miou));
  EXPECT_TRUE(std::isnan(m.pacc));
  EXPECT_EQ(m.classes_with_gt, 0);
}

// Random predictions against random GT, compared with numpy to the bit. K = 847 with most classes
// present exercises numpy's recursive pairwise summation (more than 128 terms).
void random_case_matches_numpy(int k, std::uint32_t ignore, int images, int side, unsigned seed) {
  OVSEG_REQUIRE_NUMPY();
  TempDir dir("metrics");
  std::mt19937 rng(seed);
  // GT never contains the last 5 classes; the prediction uses them (the quirk) and the last
  // 2 classes appear nowhere; a few predictions are kUnlabeled (demo mode).
  std::vector<int> gt_pool, pred_pool;
  for (int c = 0; c < k - 5; ++c) gt_pool.push_back(c);
  for (int c = 0; c < k - 2; ++c) pred_pool.push_back(c);
  pred_pool.push_back(kUnlabeled);
  ConfusionMatrix cm(k);
  std::vector<test::ExpectedImage> expected;
  for (int i = 0; i < images; ++i) {
    const int w = side + i, h = side - i;
    const auto gt = test::random_labels(rng, w, h, gt_pool, 0.05, ignore);
    const auto pred = test::noisy_copy(rng, gt, ignore, pred_pool, 0.3);
    const auto gt_path = dir.path() / ("gt" + std::to_string(i) + ".u16");
    const auto pred_path = dir.path() / ("pred" + std::to_string(i) + ".u16");
    test::write_raw_u16(gt_path, gt);
    test::write_raw_u16(pred_path, pred);
    expected.push_back({gt_path.string(), pred_path.string(), w, h});
    cm.add(pred.data(), gt.data(), gt.size(), ignore);
  }
  const auto e = test::numpy_expected(dir.path(), k, ignore, expected);
  ASSERT_FALSE(e.is_null());
  test::expect_matrix_matches(cm, e);
  const Metrics m = compute_metrics(cm);
  test::expect_metrics_match(m, e);
  EXPECT_GT(m.classes_with_gt_or_pred, m.classes_with_gt);  // the quirk is exercised
  EXPECT_GT(m.unlabeled_predictions, 0);
  EXPECT_NE(m.miou, m.miou_gt_classes);
}

TEST(Metrics, Ade150SizedRandomCaseMatchesNumpy) { random_case_matches_numpy(150, 255, 4, 40, 11); }
TEST(Metrics, Ade847SizedRandomCaseMatchesNumpy) { random_case_matches_numpy(847, 65535, 3, 120, 12); }
TEST(Metrics, FewClassesMatchNumpy) { random_case_matches_numpy(9, 255, 2, 16, 13); }

}  // namespace
}  // namespace ovseg::eval
