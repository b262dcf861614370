// SamSegmenter::analyze / classify (segment() split into a cacheable class-agnostic analysis and a
// classification per class list): on every SAM fixture with a classification (its SAM bundle and
// its ov-seg bundle) and a 320-px copy of its image, one analysis classified with two granularities
// and two class lists equals segment() byte for byte (labels, regions' probabilities and boxes,
// segments); the class-agnostic stages do not run in classify(); an analysis made with another
// classifier, resize or generator option is refused, naming the option.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/test_env.hpp"
#include "image/image_ops.hpp"
#include "ovseg/sam.hpp"

namespace fs = std::filesystem;
using namespace ovseg;

namespace {

struct SamFx {
  std::string name;
  std::unique_ptr<SamSegmenter> segmenter;
  Image small;
  SamSegmentOptions options;
  std::vector<std::string> classes;
};

std::vector<SamFx>& sam_fixtures() {
  static std::vector<SamFx> all = [] {
    std::vector<SamFx> out;
    const fs::path dir = fs::path(test::shared_dir()) / "fixtures";
    if (!fs::is_directory(dir)) return out;
    const std::string sam_root =
        test::env_or("OVSEG_SAM_BUNDLE_DIR", (test::binary_dir() + "/test-bundles-sam").c_str());
    for (const auto& e : fs::directory_iterator(dir)) {
      const fs::path d = e.path();
      if (!fs::is_regular_file(d / "meta.json") || !fs::is_regular_file(d / "image.png")) continue;
      const auto meta = nlohmann::json::parse(detail::read_text_file((d / "meta.json").string()), nullptr, false);
      if (!meta.is_object() || !meta.contains("sam_commit") || !meta.contains("classify")) continue;
      const auto& cl = meta["classify"];
      if (!cl.is_object() || !cl.contains("checkpoint") || !cl.contains("runs")) continue;
      const fs::path sam_bundle = fs::path(sam_root) / d.filename();
      const fs::path ov_bundle =
          fs::path(test::bundle_dir("x")).parent_path() / fs::path(cl["checkpoint"].get<std::string>()).parent_path().filename();
      if (!fs::is_directory(sam_bundle) || !fs::is_directory(ov_bundle)) continue;
      SamFx f;
      f.name = d.filename().string();
      ModelOptions mo;
      mo.text_disk_cache = false;
      f.segmenter = std::make_unique<SamSegmenter>(SamSegmenter::load(ov_bundle.string(), sam_bundle.string(), mo));
      const Image img = load_image((d / "image.png").string());
      const double s = 320.0 / std::max(img.width, img.height);
      f.small = detail::resize_pillow_bilinear(img, std::max(1, static_cast<int>(img.width * s)),
                                               std::max(1, static_cast<int>(img.height * s)));
      f.options.generator.points_per_side = meta.contains("amg_params")
                                                ? meta["amg_params"].value("points_per_side", 8)
                                                : 8;
      f.options.generator.pred_iou_thresh = 0.5;  // keep enough masks on the small copy
      f.options.generator.stability_score_thresh = 0.5;
      f.options.long_side = 320;
      for (const auto& [name, run] : cl["runs"].items()) {
        for (const auto& c : run["classes"]) f.classes.push_back(c.get<std::string>());
        break;
      }
      if (f.classes.size() < 2) f.classes = {"sky", "tree", "person"};
      out.push_back(std::move(f));
    }
    return out;
  }();
  return all;
}

#define FOR_EACH_SAM_FIXTURE(f)                                                                  \
  if (sam_fixtures().empty()) GTEST_SKIP() << "no SAM fixture with a classification and bundles"; \
  for (auto& f : sam_fixtures())

void expect_same(const SamSegmentation& a, const SamSegmentation& b) {
  EXPECT_EQ(a.result.labels, b.result.labels);
  EXPECT_EQ(a.result.class_pixels, b.result.class_pixels);
  EXPECT_EQ(a.result.unlabeled_pixels, b.result.unlabeled_pixels);
  EXPECT_EQ(a.result.scores, b.result.scores);
  EXPECT_EQ(a.message, b.message);
  ASSERT_EQ(a.regions.size(), b.regions.size());
  for (std::size_t i = 0; i < a.regions.size(); ++i) {
    EXPECT_EQ(a.regions[i].probs, b.regions[i].probs) << i;
    EXPECT_EQ(a.regions[i].selected, b.regions[i].selected) << i;
    EXPECT_EQ(a.regions[i].box.x0, b.regions[i].box.x0) << i;
    EXPECT_EQ(a.regions[i].box.y1, b.regions[i].box.y1) << i;
    EXPECT_EQ(a.regions[i].area, b.regions[i].area) << i;
  }
  ASSERT_EQ(a.result.segments.size(), b.result.segments.size());
  for (std::size_t i = 0; i < a.result.segments.size(); ++i) {
    EXPECT_EQ(a.result.segments[i].class_index, b.result.segments[i].class_index) << i;
    EXPECT_EQ(a.result.segments[i].score, b.result.segments[i].score) << i;
    EXPECT_EQ(a.result.segments[i].area, b.result.segments[i].area) << i;
  }
}

}  // namespace

TEST(SamAnalysis, ClassifyEqualsSegmentForAnyGranularityAndClassList) {
  FOR_EACH_SAM_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    const SamAnalysis a = f.segmenter->analyze(f.small.view(), f.options);
    EXPECT_GT(a.bytes(), 0u);
    EXPECT_EQ(a.width(), f.small.width);
    const std::vector<std::vector<std::string>> lists = {f.classes, {f.classes[0]}};
    for (const auto& classes : lists)
      for (double g : {1.0, 0.5}) {
        SamSegmentOptions o = f.options;
        o.granularity = g;
        o.keep_scores = true;
        const SamSegmentation direct = f.segmenter->segment(f.small.view(), classes, o);
        const SamSegmentation from = f.segmenter->classify(a, classes, o);
        expect_same(direct, from);
        EXPECT_EQ(from.result.timings.proposals_ms, 0.0);  // the generator did not run again
        EXPECT_GT(direct.result.timings.proposals_ms, 0.0);
      }
  }
}

TEST(SamAnalysis, AnAnalysisOfOtherSettingsIsRefusedNamingTheOption) {
  FOR_EACH_SAM_FIXTURE(f) {
    SCOPED_TRACE(f.name);
    const SamAnalysis a = f.segmenter->analyze(f.small.view(), f.options);
    auto refused = [&](const SamSegmentOptions& o, const std::string& option) {
      try {
        f.segmenter->classify(a, f.classes, o);
        ADD_FAILURE() << "not refused: " << option;
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
        EXPECT_NE(std::string(e.what()).find(option), std::string::npos) << e.what();
      }
    };
    SamSegmentOptions o = f.options;
    o.classifier = SamClassifier::kOvseg;
    refused(o, "classifier");
    o = f.options;
    o.long_side = 0;
    refused(o, "long_side");
    o = f.options;
    o.generator.pred_iou_thresh = 0.6;
    refused(o, "pred_iou_thresh");
    o = f.options;
    o.generator.points_per_batch = 7;  // memory only: accepted
    EXPECT_NO_THROW(f.segmenter->classify(a, f.classes, o));
    o = f.options;
    o.granularity = 1.5;
    try {
      f.segmenter->classify(a, f.classes, o);
      ADD_FAILURE() << "granularity 1.5 accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
}
