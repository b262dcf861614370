// Confusion matrix and the detectron2 0.6 SemSegEvaluator metrics (docs/reference-behaviour.md §8.3, §8.4).
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "ovseg/eval.hpp"

namespace ovseg::eval {

ConfusionMatrix::ConfusionMatrix(int num_classes) : num_classes_(num_classes) {
  if (num_classes <= 0 || num_classes >= 65535)
    throw Error(ErrorCode::kInvalidArgument,
                "confusion matrix: number of classes must be in 1..65534, got " + std::to_string(num_classes));
  counts_.assign(static_cast<std::size_t>(num_classes + 1) * (num_classes + 1), 0);
}

void ConfusionMatrix::add(const std::uint16_t* pred, const std::uint16_t* gt, std::size_t n,
                          std::uint32_t ignore_label) {
  const auto k = static_cast<std::uint32_t>(num_classes_);
  // Validate everything first so a bad image never leaves a partial count behind.
  for (std::size_t i = 0; i < n; ++i) {
    if (pred[i] >= k && pred[i] != kUnlabeled)
      throw Error(ErrorCode::kBadData, "prediction value " + std::to_string(pred[i]) + " at pixel " +
                                           std::to_string(i) + " is not a class index (K = " +
                                           std::to_string(k) + ")");
    if (gt[i] >= k && gt[i] != ignore_label)
      throw Error(ErrorCode::kBadData, "ground-truth value " + std::to_string(gt[i]) + " at pixel " +
                                           std::to_string(i) + " is neither a class (0.." +
                                           std::to_string(k - 1) + ") nor the ignore label " +
                                           std::to_string(ignore_label));
  }
  const std::size_t stride = k + 1;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t p = pred[i] < k ? pred[i] : k;
    const std::size_t g = gt[i] < k ? gt[i] : k;
    ++counts_[p * stride + g];
  }
}

void ConfusionMatrix::merge(const ConfusionMatrix& other) {
  if (other.num_classes_ != num_classes_)
    throw Error(ErrorCode::kInvalidArgument, "confusion matrix: cannot add a matrix of " +
                                                 std::to_string(other.num_classes_) + " classes to one of " +
                                                 std::to_string(num_classes_));
  for (std::size_t i = 0; i < counts_.size(); ++i)
    if (__builtin_add_overflow(counts_[i], other.counts_[i], &counts_[i]))
      throw Error(ErrorCode::kBadData, "confusion matrix: a count overflows 64 bits (tampered or corrupt counts)");
}

std::int64_t ConfusionMatrix::total() const {
  std::int64_t s = 0;
  for (auto c : counts_) s += c;
  return s;
}

namespace {

// numpy's pairwise summation of a contiguous float64 array (numpy/core/src/umath/loops_utils.h),
// which np.sum uses; the reduction starts from the identity 0. Reproduced so the metrics agree
// with the reference's evaluator to the last bit, not just to rounding.
double pairwise_sum(const double* a, std::size_t n) {
  if (n < 8) {
    double res = 0.;
    for (std::size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    std::size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

double np_sum(const std::vector<double>& v) { return 0.0 + pairwise_sum(v.data(), v.size()); }

}  // namespace

Metrics compute_metrics(const ConfusionMatrix& cm) {
  const int k = cm.num_classes();
  Metrics m;
  m.num_classes = k;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  m.iou.assign(k, nan);
  m.acc.assign(k, nan);
  m.tp.assign(k, 0);
  m.gt_pixels.assign(k, 0);
  m.pred_pixels.assign(k, 0);
  for (int p = 0; p < k; ++p)
    for (int g = 0; g < k; ++g) {
      const std::int64_t c = cm.at(p, g);
      m.gt_pixels[g] += c;
      m.pred_pixels[p] += c;
    }
  for (int c = 0; c < k; ++c) m.tp[c] = cm.at(c, c);
  for (int p = 0; p <= k; ++p) m.ignored_pixels += cm.at(p, k);
  for (int g = 0; g < k; ++g) m.unlabeled_predictions += cm.at(k, g);

  // detectron2 0.6: everything in float64 from the int64 sums, in this order.
  std::vector<double> tp(k), pos_gt(k), pos_pred(k);
  for (int c = 0; c < k; ++c) {
    tp[c] = static_cast<double>(m.tp[c]);
    pos_gt[c] = static_cast<double>(m.gt_pixels[c]);
    pos_pred[c] = static_cast<double>(m.pred_pixels[c]);
    m.pixels += m.gt_pixels[c];
  }
  const double sum_gt = np_sum(pos_gt);
  std::vector<double> acc_valid_acc, acc_valid_iou, weighted_iou;
  for (int c = 0; c < k; ++c) {
    const bool acc_valid = pos_gt[c] > 0;
    const bool iou_valid = (pos_gt[c] + pos_pred[c]) > 0;
    if (iou_valid) ++m.classes_with_gt_or_pred;
    if (!acc_valid) continue;
    ++m.classes_with_gt;
    const double acc = tp[c] / pos_gt[c];
    const double iou = tp[c] / (pos_gt[c] + pos_pred[c] - tp[c]);
    const double class_weight = pos_gt[c] / sum_gt;
    acc_valid_acc.push_back(acc);
    acc_valid_iou.push_back(iou);
    weighted_iou.push_back(iou * class_weight);
    m.acc[c] = 100 * acc;
    m.iou[c] = 100 * iou;
  }
  const double sum_iou = np_sum(acc_valid_iou);
  const double macc = np_sum(acc_valid_acc) / static_cast<double>(m.classes_with_gt);
  const double miou = sum_iou / static_cast<double>(m.classes_with_gt_or_pred);
  const double miou_gt = sum_iou / static_cast<double>(m.classes_with_gt);
  const double fiou = np_sum(weighted_iou);
  const double pacc = np_sum(tp) / sum_gt;
  m.miou = 100 * miou;
  m.miou_gt_classes = 100 * miou_gt;
  m.fwiou = 100 * fiou;
  m.macc = 100 * macc;
  m.pacc = 100 * pacc;
  return m;
}

std::string headline(const Metrics& m) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "mIoU=%.2f fwIoU=%.2f mACC=%.2f pACC=%.2f", m.miou, m.fwiou, m.macc, m.pacc);
  return buf;
}

}  // namespace ovseg::eval
