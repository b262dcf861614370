// A small synthetic dataset in the layout of one of the benchmarks (A-150, A-847, PC-59, PC-459,
// PAS-20) or of a custom spec, with predictions stored beside it as raw files, plus the broken
// cases an evaluation must survive.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "eval/eval_test_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::test {

// The spec of a layout under test: a benchmark's, or "custom" (K = 33, ignore 200, 8-bit PNG) and
// "custom16" (K = 300, ignore 65535, 16-bit TIFF, PNG images) in folders of `root`.
inline eval::DatasetSpec spec_for_test(const std::string& name, const fs::path& root) {
  if (name == "custom")
    return eval::custom_dataset_spec((root / "my images").string(), (root / "my labels").string(), 33, 200);
  if (name == "custom16")
    return eval::custom_dataset_spec((root / "imgs").string(), (root / "gts").string(), 300, 65535, "png", "tif");
  return eval::dataset_spec(name);
}

class SyntheticDataset {
 public:
  SyntheticDataset(const eval::DatasetSpec& spec, const fs::path& root, unsigned seed)
      : spec_(spec), root_(root), rng_(seed) {
    image_dir_ = root / replace_split(spec.image_dir);
    label_dir_ = root / replace_split(spec.label_dir);
    pred_dir_ = root / "synthetic_predictions";
    fs::create_directories(image_dir_);
    fs::create_directories(label_dir_);
    fs::create_directories(pred_dir_);
    // GT uses the first K-10 classes; predictions also use K-10..K-6 (predicted, never in GT).
    for (int c = 0; c < spec.num_classes - 10; c += step()) gt_pool_.push_back(c);
    pred_pool_ = gt_pool_;
    for (int c = spec.num_classes - 10; c < spec.num_classes - 5; ++c) pred_pool_.push_back(c);
  }

  // A valid pair (image, label, prediction).
  void add_pair(const std::string& stem, int w, int h) {
    const auto gt = random_labels(rng_, w, h, gt_pool_, 0.1, spec_.ignore_label);
    const auto pred = noisy_copy(rng_, gt, spec_.ignore_label, pred_pool_, 0.35);
    write_image(stem, w, h);
    write_label(stem, w, h, gt);
    write_raw_u16(pred_dir_ / (stem + ".u16"), pred);
    predictions_[stem] = pred;
    sizes_[stem] = {w, h};
    valid_.push_back(stem);
  }
  void add_image_only(const std::string& stem) { write_image(stem, 8, 6); }
  void add_label_only(const std::string& stem) {
    write_label(stem, 8, 6, std::vector<std::uint16_t>(48, 0));
  }
  // A label file that does not decode.
  void add_corrupt_label(const std::string& stem) {
    write_image(stem, 10, 8);
    write_prediction_for(stem, 10, 8);
    write_bytes(label_dir_ / (stem + spec_.label_ext), "this is not an image file at all");
  }
  // An image file that does not decode (the predictor fails on it).
  void add_corrupt_image(const std::string& stem) {
    write_bytes(image_dir_ / (stem + spec_.image_ext), std::string("\xff\xd8\xff\xe0 truncated", 14));
    write_label(stem, 10, 8, std::vector<std::uint16_t>(80, 0));
    write_prediction_for(stem, 10, 8);
  }
  // Label 3 pixels wider than the image.
  void add_size_mismatch(const std::string& stem) {
    write_image(stem, 10, 8);
    write_label(stem, 13, 8, std::vector<std::uint16_t>(13 * 8, 1));
    write_prediction_for(stem, 10, 8);
  }
  // A label value that is neither a class nor the ignore label.
  void add_bad_label_value(const std::string& stem) {
    write_image(stem, 10, 8);
    std::vector<std::uint16_t> gt(80, 0);
    gt[17] = static_cast<std::uint16_t>(spec_.num_classes + 3);
    write_label(stem, 10, 8, gt);
    write_prediction_for(stem, 10, 8);
  }

  // The predictor of the tests: decodes the image (so a corrupt one fails as with the model)
  // and returns the stored prediction at the image's size.
  eval::Predictor predictor(double proposals_ms = 2.0, double clip_ms = 3.0) const {
    return [this, proposals_ms, clip_ms](const eval::ImagePair& pair, int, int) {
      const cv::Mat img = cv::imread(pair.image_path, cv::IMREAD_COLOR);
      if (img.empty()) throw Error(ErrorCode::kBadImage, pair.image_path + ": cannot decode image");
      eval::Prediction p;
      p.labels.width = img.cols;
      p.labels.height = img.rows;
      p.labels.values = read_raw_u16(pred_dir_ / (pair.stem + ".u16"));
      if (p.labels.values.size() != img.total())
        throw Error(ErrorCode::kRuntime, pair.stem + ": stored prediction has the wrong size");
      p.timings.proposals_ms = proposals_ms;
      p.timings.clip_ms = clip_ms;
      p.timings.total_ms = proposals_ms + clip_ms;
      return p;
    };
  }

  // numpy's inputs for the given valid stems (all valid ones by default).
  std::vector<ExpectedImage> expected(std::vector<std::string> stems = {}) const {
    if (stems.empty()) stems = valid_;
    std::vector<ExpectedImage> v;
    for (const auto& s : stems)
      v.push_back({(label_dir_ / (s + spec_.label_ext)).string(), (pred_dir_ / (s + ".u16")).string(),
                   sizes_.at(s).first, sizes_.at(s).second});
    return v;
  }

  const std::vector<std::string>& valid_stems() const { return valid_; }
  const std::vector<std::uint16_t>& prediction(const std::string& stem) const { return predictions_.at(stem); }
  const fs::path& image_dir() const { return image_dir_; }
  const fs::path& label_dir() const { return label_dir_; }
  const eval::DatasetSpec& spec() const { return spec_; }
  std::string root() const { return root_.string(); }
  std::vector<std::string> class_names() const {
    std::vector<std::string> v;
    for (int c = 0; c < spec_.num_classes; ++c) v.push_back("class " + std::to_string(c) + (c % 7 == 0 ? ", alias" : ""));
    return v;
  }

 private:
  int step() const { return spec_.num_classes > 200 ? 3 : 1; }
  std::string replace_split(std::string pattern) const {
    const auto pos = pattern.find("{split}");
    return pos == std::string::npos ? pattern : pattern.replace(pos, 7, "validation");
  }
  void write_image(const std::string& stem, int w, int h) {
    write_noise_jpeg(image_dir_ / (stem + spec_.image_ext), w, h, rng_);
  }
  void write_label(const std::string& stem, int w, int h, const std::vector<std::uint16_t>& v) {
    write_label_file(label_dir_ / (stem + spec_.label_ext), w, h, v, spec_.label_bit_depth);
  }
  void write_prediction_for(const std::string& stem, int w, int h) {
    write_raw_u16(pred_dir_ / (stem + ".u16"), std::vector<std::uint16_t>(static_cast<std::size_t>(w) * h, 0));
  }

  eval::DatasetSpec spec_;
  fs::path root_, image_dir_, label_dir_, pred_dir_;
  std::mt19937 rng_;
  std::vector<int> gt_pool_, pred_pool_;
  std::vector<std::string> valid_;
  std::map<std::string, std::vector<std::uint16_t>> predictions_;
  std::map<std::string, std::pair<int, int>> sizes_;
};

}  // namespace ovseg::test
