// Each generator parameter's effect, on every SAM fixture's bundle (sam.export_bundles) and a
// 320-px copy of its image (cheap: ≈ 1 s a run). The fixture's own parameters are checked against
// the official output by sam.masks_cli; here the direction of each parameter's effect.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/test_env.hpp"
#include "image/image_ops.hpp"
#include "ovseg/sam.hpp"
#include "pipeline/sam_amg.hpp"

namespace fs = std::filesystem;
using namespace ovseg;

namespace {

std::string sam_bundle_root() {
  return test::env_or("OVSEG_SAM_BUNDLE_DIR", (test::binary_dir() + "/test-bundles-sam").c_str());
}

struct Fx {
  std::string name;
  std::unique_ptr<SamModel> model;
  Image small;
  SamGeneratorOptions base;
};

std::vector<Fx>& fixtures() {
  static std::vector<Fx> all = [] {
    std::vector<Fx> out;
    const fs::path dir = fs::path(test::shared_dir()) / "fixtures";
    if (!fs::is_directory(dir)) return out;
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(dir)) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs) {
      if (!fs::is_regular_file(d / "meta.json")) continue;
      const auto meta = nlohmann::json::parse(detail::read_text_file((d / "meta.json").string()), nullptr, false);
      if (!meta.is_object() || !meta.contains("sam_commit") || !meta.contains("amg_params")) continue;
      const fs::path bundle = fs::path(sam_bundle_root()) / d.filename();
      if (!fs::is_directory(bundle)) continue;
      Fx f;
      f.name = d.filename().string();
      ModelOptions mo;
      f.model = std::make_unique<SamModel>(SamModel::load(bundle.string(), mo));
      // The original image, else the generator's input (meta.json "amg_input", first word).
      std::string image = (d / "image.png").string();
      if (!fs::is_regular_file(image)) {
        const std::string in = meta.value("amg_input", std::string("image.png"));
        image = (d / in.substr(0, in.find(' '))).string();
      }
      const Image img = load_image(image);
      const double s = 320.0 / std::max(img.width, img.height);
      f.small = detail::resize_pillow_bilinear(img, std::max(1, static_cast<int>(img.width * s)),
                                               std::max(1, static_cast<int>(img.height * s)));
      f.base.points_per_side = meta["amg_params"].value("points_per_side", 8);
      f.base.points_per_batch = 64;
      out.push_back(std::move(f));
    }
    return out;
  }();
  return all;
}

#define FOR_EACH_FIXTURE(f)                                                               \
  if (fixtures().empty()) GTEST_SKIP() << "no SAM fixture / bundle (" << sam_bundle_root() << ")"; \
  for (auto& f : fixtures())

// A mask's identity: its prompt point and predicted IoU (unique per candidate).
std::set<std::pair<std::pair<double, double>, float>> keys(const SamResult& r) {
  std::set<std::pair<std::pair<double, double>, float>> k;
  for (const auto& m : r.masks) k.insert({{m.point_x, m.point_y}, m.predicted_iou});
  return k;
}

bool subset(const SamResult& a, const SamResult& b) {
  const auto ka = keys(a), kb = keys(b);
  return std::includes(kb.begin(), kb.end(), ka.begin(), ka.end());
}

}  // namespace

TEST(SamGenerator, ThresholdsKeepSubsets) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions lo = f.base;
    lo.pred_iou_thresh = 0.5;
    lo.stability_score_thresh = 0.5;
    const SamResult all = f.model->generate(f.small.view(), lo);
    ASSERT_FALSE(all.masks.empty());
    SamGeneratorOptions o = lo;
    o.pred_iou_thresh = 0.9;
    const SamResult iou = f.model->generate(f.small.view(), o);
    for (const auto& m : iou.masks) EXPECT_GT(m.predicted_iou, 0.9f);
    o = lo;
    o.stability_score_thresh = 0.97;
    const SamResult stab = f.model->generate(f.small.view(), o);
    for (const auto& m : stab.masks) EXPECT_GE(m.stability_score, 0.97f);
    EXPECT_LT(iou.masks.size(), all.masks.size() + 1);
    EXPECT_LT(stab.masks.size(), all.masks.size() + 1);
  }
}

TEST(SamGenerator, StabilityOffsetLowersScores) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions o = f.base;
    o.stability_score_thresh = 0.0;
    o.pred_iou_thresh = 0.0;
    o.box_nms_thresh = 1.0;  // keep every candidate so both runs list the same masks
    const SamResult a = f.model->generate(f.small.view(), o);
    o.stability_score_offset = 4.0;
    const SamResult b = f.model->generate(f.small.view(), o);
    ASSERT_EQ(a.masks.size(), b.masks.size());
    std::map<std::pair<double, double>, std::vector<float>> sa, sb;
    for (const auto& m : a.masks) sa[{m.point_x, m.point_y}].push_back(m.stability_score);
    for (const auto& m : b.masks) sb[{m.point_x, m.point_y}].push_back(m.stability_score);
    bool lower = false;
    for (auto& [k, v] : sa) {
      auto w = sb[k];
      std::sort(v.begin(), v.end());
      std::sort(w.begin(), w.end());
      ASSERT_EQ(v.size(), w.size());
      for (size_t i = 0; i < v.size(); ++i) {
        EXPECT_LE(w[i], v[i] + 1e-6f);
        lower = lower || w[i] < v[i];
      }
    }
    EXPECT_TRUE(lower);
  }
}

TEST(SamGenerator, BoxNmsThresholdRemovesOverlaps) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions o = f.base;
    o.box_nms_thresh = 1.0;
    const SamResult none = f.model->generate(f.small.view(), o);
    o.box_nms_thresh = 0.3;
    const SamResult strict = f.model->generate(f.small.view(), o);
    EXPECT_LE(strict.masks.size(), none.masks.size());
    EXPECT_TRUE(subset(strict, none));
    // Output order = descending predicted IoU (the NMS order).
    for (size_t i = 1; i < strict.masks.size(); ++i)
      EXPECT_GE(strict.masks[i - 1].predicted_iou, strict.masks[i].predicted_iou);
  }
}

TEST(SamGenerator, PointsPerSideAndBatch) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions o = f.base;
    o.points_per_side = 2;
    const SamResult few = f.model->generate(f.small.view(), o);
    std::set<std::pair<double, double>> pts;
    for (const auto& m : few.masks) pts.insert({m.point_x, m.point_y});
    EXPECT_LE(pts.size(), 4u);
    for (const auto& p : pts) {  // grid (i + 0.5) / 2 of the 320-px image
      EXPECT_TRUE(p.first == 0.25 * f.small.width || p.first == 0.75 * f.small.width);
      EXPECT_TRUE(p.second == 0.25 * f.small.height || p.second == 0.75 * f.small.height);
    }
    o = f.base;
    o.points_per_batch = 7;
    const SamResult b7 = f.model->generate(f.small.view(), o);
    const SamResult b64 = f.model->generate(f.small.view(), f.base);
    ASSERT_EQ(b7.masks.size(), b64.masks.size());
    for (size_t i = 0; i < b7.masks.size(); ++i) EXPECT_NEAR(b7.masks[i].predicted_iou, b64.masks[i].predicted_iou, 1e-5);
  }
}

TEST(SamGenerator, CropLayers) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions o = f.base;
    o.crop_n_layers = 1;
    o.crop_n_points_downscale_factor = 2;
    const SamResult r = f.model->generate(f.small.view(), o);
    EXPECT_EQ(r.crops, 5);
    std::set<std::array<int64_t, 4>> crops;
    for (const auto& m : r.masks) crops.insert(m.crop_box);
    for (const auto& c : crops) {  // every crop box is one of generate_crop_boxes'
      EXPECT_GE(c[0], 0);
      EXPECT_LE(c[0] + c[2], f.small.width);
      EXPECT_LE(c[1] + c[3], f.small.height);
    }
    for (const auto& m : r.masks) {  // uncropped: the point and box lie inside the crop box
      EXPECT_GE(m.point_x, m.crop_box[0]);
      EXPECT_LE(m.point_x, m.crop_box[0] + m.crop_box[2]);
      EXPECT_GE(m.bbox[0], m.crop_box[0]);
      EXPECT_LE(m.bbox[0] + m.bbox[2], m.crop_box[0] + m.crop_box[2]);
    }
    // A stricter crop NMS keeps no more masks; another overlap moves the layer-1 crops.
    o.crop_nms_thresh = 0.1;
    EXPECT_LE(f.model->generate(f.small.view(), o).masks.size(), r.masks.size());
    o.crop_nms_thresh = 0.7;
    o.crop_overlap_ratio = 0.05;
    const SamResult r2 = f.model->generate(f.small.view(), o);
    std::set<std::array<int64_t, 4>> crops2;
    for (const auto& m : r2.masks) crops2.insert(m.crop_box);
    bool differ = false;
    for (const auto& c : crops2)
      if (c[2] != f.small.width || c[3] != f.small.height) differ = differ || !crops.count(c);
    EXPECT_TRUE(differ || crops2.size() <= 1);
  }
}

TEST(SamGenerator, MinMaskRegionAreaRemovesSmallHolesAndIslands) {
  FOR_EACH_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    SamGeneratorOptions o = f.base;
    o.min_mask_region_area = 400;
    const SamResult r = f.model->generate(f.small.view(), o);
    for (const auto& m : r.masks) {
      auto copy = m.segmentation;
      // Nothing left to remove: a second pass changes nothing.
      EXPECT_FALSE(detail::sam::remove_small_regions(copy, r.height, r.width, 400, true));
      EXPECT_FALSE(detail::sam::remove_small_regions(copy, r.height, r.width, 400, false));
      int64_t a = 0;
      for (auto v : m.segmentation) a += v;
      EXPECT_EQ(a, m.area);
    }
  }
}
