// Analyze once, classify many (Model::analyze / Model::classify / Analysis::save, load): the
// Result of classify(analyze(x)) equals segment(x) byte for byte, on every fixture bundle and on
// the repository's demo model, over both modes, MaskFormer-only, one class (the "others" rule) and
// many; one analysis serves many class lists and weights; a saved and loaded analysis too; every
// refusal (another model, another threshold, MaskFormer-only asked for CLIP, corrupt files).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "common/fs_util.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

namespace fs = std::filesystem;

std::string demo_dir() { return source_dir() + "/models/demo"; }

const Model& demo_model() { return cached_model(demo_dir()); }

Image demo_image(const char* name = "heldout_2026_00001.png") {
  return load_image(demo_dir() + "/examples/images/" + name);
}

std::vector<std::string> demo_classes() { return read_class_list(demo_dir() + "/examples/classes.txt"); }

void expect_same_result(const Result& got, const Result& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.width, want.width);
  EXPECT_EQ(got.height, want.height);
  EXPECT_EQ(got.resized_width, want.resized_width);
  EXPECT_EQ(got.resized_height, want.resized_height);
  EXPECT_EQ(got.classes, want.classes);
  EXPECT_EQ(got.score_classes, want.score_classes);
  EXPECT_TRUE(got.labels == want.labels) << "labels differ";
  EXPECT_TRUE(got.scores == want.scores) << "scores differ (" << got.scores.size() << " vs " << want.scores.size() << ")";
  EXPECT_EQ(got.class_pixels, want.class_pixels);
  EXPECT_EQ(got.unlabeled_pixels, want.unlabeled_pixels);
  ASSERT_EQ(got.segments.size(), want.segments.size());
  for (std::size_t i = 0; i < got.segments.size(); ++i) {
    const Segment &a = got.segments[i], &b = want.segments[i];
    EXPECT_EQ(a.query, b.query);
    EXPECT_EQ(a.class_index, b.class_index);
    EXPECT_EQ(a.score, b.score);  // exact
    EXPECT_EQ(a.area, b.area);
    EXPECT_EQ(a.box.x0, b.box.x0);
    EXPECT_EQ(a.box.y0, b.box.y0);
    EXPECT_EQ(a.box.x1, b.box.x1);
    EXPECT_EQ(a.box.y1, b.box.y1);
    EXPECT_EQ(a.selected, b.selected);
  }
  EXPECT_EQ(got.settings.mode, want.settings.mode);
  EXPECT_EQ(got.settings.mask_threshold, want.settings.mask_threshold);
  EXPECT_EQ(got.settings.ensemble_weight, want.settings.ensemble_weight);
  EXPECT_EQ(got.settings.clip_ensemble, want.settings.clip_ensemble);
}

// The option sets the equality is checked over.
struct Case {
  std::string name;
  SegmentOptions options;
  bool one_class = false;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const Mode mode : {Mode::kEval, Mode::kDemo}) {
    for (const bool one : {false, true}) {
      Case c;
      c.name = std::string(to_string(mode)) + (one ? ", one class" : ", all classes");
      c.options.mode = mode;
      c.options.keep_scores = true;
      c.one_class = one;
      out.push_back(c);
    }
  }
  Case weight{"eval, weight 0.25", {}, false};
  weight.options.ensemble_weight = 0.25f;
  weight.options.keep_scores = true;
  out.push_back(weight);
  Case zero{"eval, weight 0", {}, false};
  zero.options.ensemble_weight = 0.0f;
  zero.options.keep_scores = true;
  out.push_back(zero);
  Case mf{"eval, MaskFormer-only", {}, false};
  mf.options.clip_ensemble = false;
  mf.options.keep_scores = true;
  out.push_back(mf);
  return out;
}

void check_model(const Model& model, const Image& image, const std::vector<std::string>& all_classes) {
  for (const Case& c : cases()) {
    const std::vector<std::string> classes =
        c.one_class ? std::vector<std::string>{all_classes.front()} : all_classes;
    const Result want = model.segment(image.view(), classes, c.options);
    const Analysis analysis = model.analyze(image.view(), c.options);
    expect_same_result(model.classify(analysis, classes, c.options), want, c.name);
    // Saved and loaded: the same again.
    const std::string file = scratch_dir("analysis-roundtrip") + "/a.ovsa";
    analysis.save(file);
    const Analysis loaded = Analysis::load(file);
    EXPECT_EQ(loaded.bytes(), analysis.bytes());
    expect_same_result(model.classify(loaded, classes, c.options), want, c.name + " (saved and loaded)");
  }
}

TEST(Analysis, ClassifyOfAnalyzeIsSegmentOnTheDemoModel) {
  check_model(demo_model(), demo_image(), demo_classes());
}

TEST(Analysis, ClassifyOfAnalyzeIsSegmentOnEveryFixtureBundle) {
  const auto runs = fixture_runs("eval");
  if (runs.empty()) GTEST_SKIP() << "no fixture bundle (../shared and ctest's export_fixture_bundles)";
  for (const auto& run : runs) {
    SCOPED_TRACE(run.name);
    check_model(cached_model(run.bundle), load_image(fixture_image(run)), fixture_classes(run));
  }
}

TEST(Analysis, OneAnalysisServesManyClassListsAndWeights) {
  const Model& model = demo_model();
  const Image image = demo_image("seen_2026_00001.png");
  SegmentOptions eval;
  eval.keep_scores = true;
  const Analysis analysis = model.analyze(image.view(), eval);
  EXPECT_GT(analysis.num_regions(), 0);
  EXPECT_EQ(analysis.width(), image.width);
  EXPECT_GT(analysis.bytes(), 0u);
  EXPECT_GT(analysis.timings().proposals_ms, 0.0);
  const auto all = demo_classes();
  const std::vector<std::vector<std::string>> lists = {
      {"grass", "red circle", "green star"}, {"sky"}, std::vector<std::string>(all.rbegin(), all.rend())};
  std::vector<std::pair<std::vector<std::string>, std::optional<float>>> runs;
  for (const auto& classes : lists) runs.emplace_back(classes, std::nullopt);
  for (const float w : {0.0f, 0.5f, 1.0f}) runs.emplace_back(all, w);
  for (const auto& [classes, w] : runs) {
    {
      SegmentOptions o = eval;
      o.ensemble_weight = w;
      const Result r = model.classify(analysis, classes, o);
      expect_same_result(r, model.segment(image.view(), classes, o),
                         std::to_string(classes.size()) + " classes, w " + (w ? std::to_string(*w) : "default"));
      // Only the class-dependent stages ran.
      EXPECT_EQ(r.timings.preprocess_ms, 0.0);
      EXPECT_EQ(r.timings.proposals_ms, 0.0);
      EXPECT_EQ(r.timings.regions_ms, 0.0);
      EXPECT_EQ(r.timings.clip_ms, 0.0);
      EXPECT_GT(r.timings.post_ms, 0.0);
    }
  }
  // An eval analysis serves demo mode when the thresholds agree (the demo model's are equal).
  SegmentOptions demo;
  demo.mode = Mode::kDemo;
  if (model.settings(demo).mask_threshold == analysis.mask_threshold())
    expect_same_result(model.classify(analysis, all, demo), model.segment(image.view(), all, demo), "demo");
  // A full analysis serves MaskFormer-only.
  SegmentOptions mf;
  mf.clip_ensemble = false;
  expect_same_result(model.classify(analysis, all, mf), model.segment(image.view(), all, mf), "MaskFormer-only");
}

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Analysis, RefusesAnotherThresholdAndMaskFormerOnlyForClip) {
  const Model& model = demo_model();
  const Image image = demo_image();
  const auto classes = demo_classes();
  SegmentOptions o;
  o.mask_threshold = 0.3f;
  const Analysis a = model.analyze(image.view(), o);
  SegmentOptions other;
  other.mask_threshold = 0.6f;
  expect_invalid([&] { model.classify(a, classes, other); }, "mask_threshold");
  expect_invalid([&] { model.classify(a, classes, {}); }, "mask_threshold");  // the default differs
  SegmentOptions mf;
  mf.clip_ensemble = false;
  mf.mask_threshold = 0.3f;
  const Analysis only = model.analyze(image.view(), mf);
  EXPECT_FALSE(only.clip_ensemble());
  EXPECT_EQ(only.num_regions(), 0);
  expect_invalid([&] { model.classify(only, classes, o); }, "clip_ensemble");
  // Invalid classify arguments are refused as segment() refuses them.
  expect_invalid([&] { model.classify(a, {}, o); }, "empty");
  SegmentOptions bad = o;
  bad.ensemble_weight = 1.5f;
  expect_invalid([&] { model.classify(a, classes, bad); }, "ensemble_weight");
}

TEST(Analysis, RefusesAnotherModelOrPrecision) {
  const Model& model = demo_model();
  const Image image = demo_image();
  const Analysis a = model.analyze(image.view());
  // The same bundle loaded again is the same model.
  ModelOptions mo;
  mo.text_disk_cache = false;
  const Model again = Model::load(demo_dir(), mo);
  EXPECT_EQ(again.info().fingerprint, model.info().fingerprint);
  EXPECT_NO_THROW(again.classify(a, demo_classes()));
  // Another bundle: a fixture bundle when there is one, else the demo bundle with another test size.
  const std::string other_dir = scratch_dir("analysis-other-bundle");
  for (const auto& e : fs::directory_iterator(demo_dir()))
    if (e.is_regular_file()) fs::copy_file(e.path(), fs::path(other_dir) / e.path().filename());
  {
    auto manifest = nlohmann::json::parse(detail::read_text_file(other_dir + "/manifest.json"));
    manifest["preprocess"]["min_size_test"] = 64;
    manifest["preprocess"]["max_size_test"] = 64;
    std::ofstream(other_dir + "/manifest.json") << manifest.dump(1);
  }
  const Model other = Model::load(other_dir, mo);
  EXPECT_NE(other.info().fingerprint, model.info().fingerprint);
  expect_invalid([&] { other.classify(a, demo_classes()); }, "another model");
  // Another precision of the same bundle (bf16 where this CPU runs it).
  if (cpu_features().native_bf16()) {
    ModelOptions b = mo;
    b.precision = Precision::kBf16;
    const Model bf16 = Model::load(demo_dir(), b);
    expect_invalid([&] { bf16.classify(a, demo_classes()); }, "another model");
  }
}

TEST(Analysis, CorruptTruncatedAndForeignFilesAreRefused) {
  const Model& model = demo_model();
  const Analysis a = model.analyze(demo_image().view());
  const std::string dir = scratch_dir("analysis-corrupt");
  const std::string good = dir + "/good.ovsa";
  a.save(good);
  const auto bytes = detail::read_file(good);
  auto write = [&](const std::string& name, const std::vector<std::uint8_t>& b) {
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return p;
  };
  auto expect_bad = [&](const std::string& path, const std::string& needle) {
    try {
      (void)Analysis::load(path);
      ADD_FAILURE() << path << " loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kBadData) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  expect_bad(write("flipped.ovsa", flipped), "checksum");
  expect_bad(write("truncated.ovsa", std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + bytes.size() * 2 / 3)),
             "checksum");
  expect_bad(write("tiny.ovsa", std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 10)), "too short");
  auto foreign = bytes;
  foreign[0] = 'X';
  expect_bad(write("foreign.ovsa", foreign), "signature");
  auto future = bytes;
  future[8] = 99;
  expect_bad(write("future.ovsa", future), "format version");
  expect_bad(write("empty.ovsa", {}), "too short");
  EXPECT_THROW((void)Analysis::load(dir + "/absent.ovsa"), Error);
  // The good file still classifies.
  EXPECT_NO_THROW(model.classify(Analysis::load(good), demo_classes()));
}

TEST(Analysis, ProgressOfAnalyzeAndClassify) {
  const Model& model = demo_model();
  std::vector<std::string> stages;
  SegmentOptions o;
  o.progress = [&](const char* stage, float) {
    stages.emplace_back(stage);
    return true;
  };
  const Analysis a = model.analyze(demo_image().view(), o);
  EXPECT_EQ(stages, (std::vector<std::string>{"preprocess", "proposals", "regions", "clip", "done"}));
  stages.clear();
  (void)model.classify(a, demo_classes(), o);
  EXPECT_EQ(stages, (std::vector<std::string>{"text", "post", "done"}));
  o.progress = [](const char* stage, float) { return std::string(stage) != "post"; };
  try {
    (void)model.classify(a, demo_classes(), o);
    FAIL() << "expected kCancelled";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCancelled);
  }
}

}  // namespace
}  // namespace ovseg::test
