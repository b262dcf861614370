// Degenerate proposals (docs/reference-behaviour.md §6.5, §7.1), the demo's "others" mechanism (§7.3), option
// overrides, cancellation, precision/device errors and bad images — through the public API, with
// the expected scores recomputed here from the dumped intermediates (SegmentOptions::dump_dir).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "pipeline/pipeline.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

const char* kFixture = "tiny_swin_vit";

at::Tensor to_tensor(const NpyArray& a) {
  std::vector<float> v(a.values.begin(), a.values.end());
  return at::tensor(v, at::kFloat).view(a.shape).clone();
}

struct Dumped {
  Result result;
  std::string dir;
  at::Tensor file(const std::string& name) const { return to_tensor(read_npy(dir + "/" + name)); }
};

Dumped segment_dumped(const Model& model, const Image& image, const std::vector<std::string>& classes,
                      SegmentOptions opts, const std::string& tag) {
  Dumped d;
  d.dir = scratch_dir("edge-" + tag);
  opts.keep_scores = true;
  opts.dump_dir = d.dir;
  d.result = model.segment(image.view(), classes, opts);
  return d;
}

// docs/reference-behaviour.md §7.1 written out directly: p = p_mf^(1−w)·C^w with C = 1 for invalid queries, S = Σ p·M,
// bilinear resize to the original size. From the dumped intermediates of the same run.
at::Tensor expected_eval_scores(const Dumped& d, double w) {
  c10::InferenceMode guard;
  const at::Tensor emb = d.file("pred_embeddings.npy");
  const at::Tensor text = d.file("text_features.npy");
  const at::Tensor low = d.file("pred_masks_lowres.npy");
  const at::Tensor valid = d.file("valid_flag.npy") > 0.5f;
  const at::Tensor clip = d.file("clip_logits.npy");
  const int64_t k = text.size(0) - 1;
  const at::Tensor e = emb / emb.norm(2, {-1}, true);
  const at::Tensor p_mf = at::softmax(at::matmul(e * 100.0, text.t()), -1).narrow(1, 0, k);
  at::Tensor c = at::ones_like(p_mf);
  if (clip.size(0) > 0) c.index_put_({valid}, at::softmax(clip.narrow(1, 0, k), -1));
  const at::Tensor p = p_mf.pow(1.0 - w) * c.pow(w);
  const Result& r = d.result;
  const at::Tensor m = detail::upsample_masks(low, low.size(1) * 4, low.size(2) * 4, r.resized_height, r.resized_width);
  const at::Tensor s = at::einsum("qc,qhw->chw", {p, m});
  return at::upsample_bilinear2d(s.unsqueeze(0), {r.height, r.width}, false)[0];
}

double max_diff_to(const Result& r, const at::Tensor& expected) {
  const at::Tensor got = at::tensor(r.scores, at::kFloat).view(expected.sizes());
  return (got - expected).abs().max().item<double>();
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

class EdgeCases : public ::testing::Test {
 protected:
  void SetUp() override {
    OVSEG_REQUIRE_BUNDLE(kFixture);
    model_ = &cached_model(bundle_dir(kFixture));
    image_ = load_image(fixture_dir(kFixture) + "/image.png");
    classes_ = read_class_list(fixture_dir(kFixture) + "/classes.txt");
  }
  const Model* model_ = nullptr;
  Image image_;
  std::vector<std::string> classes_;
};

Image gradient_image(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.rgb[(static_cast<std::size_t>(y) * w + x) * 3 + c] = static_cast<std::uint8_t>(x * 255 / (w - 1));
  return img;
}

// ------------------------------------------------------------------------------------------------
TEST_F(EdgeCases, NoValidRegionEvalKeepsMaskFormerProbabilities) {
  SegmentOptions o;
  o.mask_threshold = 1.0f;  // strict >: no sigmoid exceeds 1
  const Dumped d = segment_dumped(*model_, image_, classes_, o, "nv0-eval");
  EXPECT_TRUE(d.result.segments.empty());
  EXPECT_EQ(d.file("valid_flag.npy").sum().item<float>(), 0.0f);
  EXPECT_EQ(d.file("clip_logits.npy").size(0), 0);
  ASSERT_TRUE(all_finite(d.result.scores));
  // docs/reference-behaviour.md §7.1 recommendation: every query gets C = 1, so p = p_mf^(1−w).
  const double diff = max_diff_to(d.result, expected_eval_scores(d, model_->info().eval_ensemble_weight));
  EXPECT_LE(diff, 1e-5);
  EXPECT_EQ(d.result.unlabeled_pixels, 0);
}

TEST_F(EdgeCases, NoValidRegionWithoutEnsembleGivesZeroScoresAndNoLabels) {
  SegmentOptions o;
  o.mask_threshold = 1.0f;
  o.ensemble_weight = 0.0f;
  o.keep_scores = true;
  const Result r = model_->segment(image_.view(), classes_, o);
  ASSERT_EQ(r.scores.size(), classes_.size() * r.width * r.height);
  EXPECT_TRUE(std::all_of(r.scores.begin(), r.scores.end(), [](float v) { return v == 0.0f; }));
  EXPECT_EQ(r.unlabeled_pixels, static_cast<int64_t>(r.width) * r.height);
  EXPECT_TRUE(std::all_of(r.labels.begin(), r.labels.end(), [](std::uint16_t l) { return l == kUnlabeled; }));
}

TEST_F(EdgeCases, NoValidRegionDemoLeavesEveryPixelUnlabeled) {
  SegmentOptions o;
  o.mode = Mode::kDemo;
  o.mask_threshold = 1.0f;
  o.keep_scores = true;
  const Result r = model_->segment(image_.view(), classes_, o);
  EXPECT_TRUE(r.segments.empty());
  EXPECT_TRUE(std::all_of(r.scores.begin(), r.scores.end(), [](float v) { return v == 0.0f; }));
  EXPECT_EQ(r.unlabeled_pixels, static_cast<int64_t>(r.width) * r.height);
}

// A threshold just at the second-highest mask maximum leaves exactly one valid query (the
// reference crashes on Nv = 1, docs/reference-behaviour.md §6.5; the recommended behaviour is the ordinary path).
TEST_F(EdgeCases, ExactlyOneValidRegion) {
  std::vector<std::pair<std::string, Image>> candidates = {{"fixture", image_}, {"gradient", gradient_image(336, 336)}};
  for (auto& [name, img] : candidates) {
    SegmentOptions probe;
    probe.mask_threshold = 1.0f;
    const Dumped d = segment_dumped(*model_, img, classes_, probe, "nv1-probe-" + name);
    at::Tensor maxima;
    {
      c10::InferenceMode guard;
      const at::Tensor low = d.file("pred_masks_lowres.npy");
      const at::Tensor m = detail::upsample_masks(low, low.size(1) * 4, low.size(2) * 4, d.result.resized_height,
                                                  d.result.resized_width);
      maxima = std::get<0>(std::get<0>(m.flatten(1).max(1)).sort(0, /*descending=*/true));
    }
    const float top = maxima[0].item<float>();
    const float second = maxima[1].item<float>();
    if (!(top > second)) continue;  // saturated masks tie at 1.0: no threshold isolates one query
    SCOPED_TRACE(name + ": threshold " + std::to_string(second));
    SegmentOptions o;
    o.mask_threshold = second;
    const Dumped e = segment_dumped(*model_, img, classes_, o, "nv1-eval-" + name);
    ASSERT_EQ(e.result.segments.size(), 1u);
    EXPECT_EQ(e.file("clip_logits.npy").size(0), 1);
    ASSERT_TRUE(all_finite(e.result.scores));
    EXPECT_LE(max_diff_to(e.result, expected_eval_scores(e, model_->info().eval_ensemble_weight)), 1e-5);

    o.mode = Mode::kDemo;
    o.keep_scores = true;
    const Result r = model_->segment(img.view(), classes_, o);
    ASSERT_EQ(r.segments.size(), 1u);
    EXPECT_TRUE(r.segments[0].selected);
    ASSERT_TRUE(all_finite(r.scores));
    // One region: every covered pixel carries that region's probability row, so its best class.
    int64_t labelled = 0;
    for (auto l : r.labels) {
      if (l == kUnlabeled) continue;
      ++labelled;
      EXPECT_EQ(l, r.segments[0].class_index);
      if (l != r.segments[0].class_index) break;
    }
    EXPECT_GT(labelled, 0);
    return;
  }
  GTEST_SKIP() << "no candidate image has a unique most confident mask";
}

TEST_F(EdgeCases, EnsembleWeightOverrideReachesTheEnsemble) {
  SegmentOptions o;
  o.ensemble_weight = 0.45f;
  const Dumped d = segment_dumped(*model_, image_, classes_, o, "w045");
  EXPECT_LE(max_diff_to(d.result, expected_eval_scores(d, 0.45)), 1e-5);
  SegmentOptions dflt;
  dflt.keep_scores = true;
  const Result base = model_->segment(image_.view(), classes_, dflt);
  double diff = 0;
  for (std::size_t i = 0; i < base.scores.size(); ++i)
    diff = std::max(diff, static_cast<double>(std::fabs(base.scores[i] - d.result.scores[i])));
  EXPECT_GT(diff, 1e-3) << "the weight override changed nothing";
}

TEST_F(EdgeCases, ResultCarriesTheSettingsItApplied) {
  const ModelInfo& info = model_->info();
  SegmentOptions o;
  o.mode = Mode::kDemo;
  const SegmentSettings demo = model_->settings(o);
  EXPECT_EQ(demo.mode, Mode::kDemo);
  EXPECT_EQ(demo.mask_threshold, info.demo_mask_threshold);
  EXPECT_EQ(demo.ensemble_weight, info.demo_ensemble_weight);
  o.mode = Mode::kEval;
  o.mask_threshold = 0.25f;
  const SegmentSettings eval = model_->settings(o);
  EXPECT_EQ(eval.mask_threshold, 0.25f);
  EXPECT_EQ(eval.ensemble_weight, info.eval_ensemble_weight);
  EXPECT_EQ(info.defaults(Mode::kEval).mask_threshold, info.eval_mask_threshold);

  o.ensemble_weight = 0.5f;
  const Result r = model_->segment(image_.view(), classes_, o);
  EXPECT_EQ(r.settings.mode, Mode::kEval);
  EXPECT_EQ(r.settings.mask_threshold, 0.25f);
  EXPECT_EQ(r.settings.ensemble_weight, 0.5f);
  SegmentOptions d;
  d.mode = Mode::kDemo;
  const Result rd = model_->segment(image_.view(), classes_, d);
  EXPECT_EQ(rd.settings.mode, Mode::kDemo);
  EXPECT_EQ(rd.settings.mask_threshold, info.demo_mask_threshold);
  EXPECT_EQ(rd.settings.ensemble_weight, info.demo_ensemble_weight);
}

TEST_F(EdgeCases, SingleClassDemoAppendsOthersInternally) {
  SegmentOptions o;
  o.mode = Mode::kDemo;
  o.keep_scores = true;
  const Result r = model_->segment(image_.view(), {"dog"}, o);
  EXPECT_EQ(r.classes, std::vector<std::string>{"dog"});
  EXPECT_EQ(r.score_classes, (std::vector<std::string>{"dog", "others"}));
  ASSERT_EQ(r.class_pixels.size(), 1u);
  const std::size_t hw = static_cast<std::size_t>(r.width) * r.height;
  ASSERT_EQ(r.scores.size(), 2 * hw);
  int64_t others_won = 0;
  for (std::size_t i = 0; i < hw; ++i) {
    const float s0 = r.scores[i], s1 = r.scores[hw + i];
    const bool unlabeled = s0 == 0.0f || s1 > s0;
    others_won += s0 != 0.0f && s1 > s0;
    ASSERT_EQ(r.labels[i], unlabeled ? kUnlabeled : 0) << "pixel " << i;
  }
  EXPECT_EQ(r.class_pixels[0] + r.unlabeled_pixels, static_cast<int64_t>(hw));
  // Only "dog" selects a region.
  const auto selected = std::count_if(r.segments.begin(), r.segments.end(), [](const Segment& s) { return s.selected; });
  if (!r.segments.empty()) {
    EXPECT_EQ(selected, 1);
  }

  // The caller's own ("dog", "others"): same selection rule, but "others" is a real class then.
  const Result two = model_->segment(image_.view(), {"dog", "others"}, o);
  EXPECT_EQ(two.score_classes, (std::vector<std::string>{"dog", "others"}));
  ASSERT_EQ(two.scores, r.scores);
  for (std::size_t i = 0; i < hw; ++i)
    if (r.scores[i] != 0.0f && r.scores[hw + i] > r.scores[i]) {
      ASSERT_EQ(two.labels[i], 1);
    }
  std::printf("[edge] single-class demo: %lld pixel(s) won by the internal \"others\"\n",
              static_cast<long long>(others_won));
}

TEST_F(EdgeCases, ProgressReportsStagesAndCanCancel) {
  std::vector<std::string> stages;
  std::vector<float> fractions;
  SegmentOptions o;
  o.progress = [&](const char* stage, float f) {
    stages.emplace_back(stage);
    fractions.push_back(f);
    return true;
  };
  model_->segment(image_.view(), classes_, o);
  // Every stage of the table, in its order, then "done".
  std::vector<std::string> expected;
  for (const StageInfo& st : kStageTable) expected.emplace_back(st.name);
  expected.emplace_back("done");
  EXPECT_EQ(stages, expected);
  EXPECT_TRUE(std::is_sorted(fractions.begin(), fractions.end()));
  EXPECT_EQ(fractions.back(), 1.0f);

  o.progress = [](const char* stage, float) { return std::string(stage) != "clip"; };
  try {
    model_->segment(image_.view(), classes_, o);
    FAIL() << "expected Error(kCancelled)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCancelled);
  }
}

// The debug tap writes each stage's outputs right after the stage: a run stopped before "clip"
// leaves what the earlier stages computed, and nothing of the later ones.
TEST_F(EdgeCases, DumpDirHoldsTheStagesThatRanBeforeACancel) {
  const std::string dir = scratch_dir("tap-cancel-at-clip");
  SegmentOptions o;
  o.dump_dir = dir;
  o.progress = [](const char* stage, float) { return std::string(stage) != "clip"; };
  EXPECT_THROW(model_->segment(image_.view(), classes_, o), Error);
  namespace fs = std::filesystem;
  for (const char* f : {"text_features.npy", "pred_embeddings.npy", "pred_masks_lowres.npy", "valid_flag.npy"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(dir) / f)) << f;
  for (const char* f : {"clip_logits.npy", "sem_seg.npy"}) EXPECT_FALSE(fs::exists(fs::path(dir) / f)) << f;
  // The text features written after "text" are the model's own.
  const NpyArray t = read_npy(dir + "/text_features.npy");
  const std::vector<float> expected = model_->text_features(classes_);
  ASSERT_EQ(t.values.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(static_cast<float>(t.values[i]), expected[i]) << i;
  // The old environment switch is gone: without the option nothing is written.
  const std::string none = scratch_dir("tap-off");
  {
    ScopedEnv env("OVSEG_DUMP_DIR", none);
    model_->segment(image_.view(), classes_, {});
  }
  EXPECT_TRUE(fs::is_empty(none));
}

TEST_F(EdgeCases, ConcurrentCallsGiveTheSameResult) {
  SegmentOptions o;
  o.keep_scores = true;
  Result a, b;
  std::thread t1([&] { a = model_->segment(image_.view(), classes_, o); });
  std::thread t2([&] { b = model_->segment(image_.view(), classes_, o); });
  t1.join();
  t2.join();
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.scores, b.scores);
}

TEST_F(EdgeCases, SegmentsDescribeTheValidRegionsAtTheOriginalSize) {
  const Result r = model_->segment(image_.view(), classes_, {});
  ASSERT_FALSE(r.segments.empty());
  for (const auto& s : r.segments) {
    EXPECT_GE(s.box.x0, 0);
    EXPECT_GE(s.box.y0, 0);
    EXPECT_LE(s.box.x1, r.width);
    EXPECT_LE(s.box.y1, r.height);
    EXPECT_LT(s.box.x0, s.box.x1);
    EXPECT_LT(s.box.y0, s.box.y1);
    EXPECT_GT(s.area, 0);
    EXPECT_LE(s.area, static_cast<int64_t>(s.box.x1 - s.box.x0) * (s.box.y1 - s.box.y0));
    EXPECT_GE(s.class_index, 0);
    EXPECT_LT(s.class_index, static_cast<int>(classes_.size()));
    EXPECT_GT(s.score, 0.0f);
  }
  EXPECT_TRUE(std::is_sorted(r.segments.begin(), r.segments.end(),
                             [](const Segment& x, const Segment& y) { return x.query < y.query; }));
}

// ------------------------------------------------------------------------------------------------
TEST_F(EdgeCases, BadImagesAndArgumentsThroughThePublicApi) {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kRuntime;  // "no error" is reported as a mismatch below
  };
  const std::string dir = scratch_dir("bad-images");
  const std::string not_image = dir + "/not_an_image.png";
  std::ofstream(not_image) << "this is not a PNG file";
  EXPECT_EQ(code_of([&] { model_->segment_file(not_image, classes_); }), ErrorCode::kBadImage);
  const std::string truncated = dir + "/truncated.png";
  {
    std::ifstream in(fixture_dir(kFixture) + "/image.png", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, 64);
  }
  EXPECT_EQ(code_of([&] { model_->segment_file(truncated, classes_); }), ErrorCode::kBadImage);

  ImageView empty;
  EXPECT_EQ(code_of([&] { model_->segment(empty, classes_); }), ErrorCode::kBadImage);
  ImageView zero{image_.rgb.data(), 0, 10, PixelFormat::kRgb, 0};
  EXPECT_EQ(code_of([&] { model_->segment(zero, classes_); }), ErrorCode::kBadImage);
  ImageView short_stride{image_.rgb.data(), image_.width, image_.height, PixelFormat::kRgb, 5};
  EXPECT_EQ(code_of([&] { model_->segment(short_stride, classes_); }), ErrorCode::kBadImage);

  EXPECT_EQ(code_of([&] { model_->segment(image_.view(), {}); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { model_->segment(image_.view(), {"cat", "  "}); }), ErrorCode::kInvalidArgument);
  SegmentOptions o;
  o.mask_threshold = 1.5f;
  EXPECT_EQ(code_of([&] { model_->segment(image_.view(), classes_, o); }), ErrorCode::kInvalidArgument);
  o.mask_threshold.reset();
  o.ensemble_weight = -0.1f;
  EXPECT_EQ(code_of([&] { model_->segment(image_.view(), classes_, o); }), ErrorCode::kInvalidArgument);
}

TEST_F(EdgeCases, OtherPixelFormatsGiveTheSameLabels) {
  // BGR input is converted to RGB before anything else (docs/reference-behaviour.md §3.2).
  Image bgr = image_;
  for (std::size_t i = 0; i < bgr.rgb.size(); i += 3) std::swap(bgr.rgb[i], bgr.rgb[i + 2]);
  const ImageView view{bgr.rgb.data(), bgr.width, bgr.height, PixelFormat::kBgr, 0};
  EXPECT_EQ(model_->segment(view, classes_).labels, model_->segment(image_.view(), classes_).labels);
}

// ------------------------------------------------------------------------------------------------
TEST(Precision, Fp16OnTheCpuIsRefusedClearly) {
  OVSEG_REQUIRE_BUNDLE(kFixture);
  ModelOptions mo;
  mo.precision = Precision::kFp16;
  mo.text_disk_cache = false;
  try {
    Model::load(bundle_dir(kFixture), mo);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos) << e.what();
  }
}

// bf16 is mixed precision: only the CLIP visual tower runs in bf16 (see Modules::load). With
// every module in bf16 the fixture's labels agreed with fp32 on only ~50 % of the pixels (mask
// logits in the hundreds, temperature-100 logits over near-tied random-weight classes).
TEST(Precision, Bf16KeepsTheProposalsAndTextInFloat32AndTheArgmax) {
  OVSEG_REQUIRE_BUNDLE(kFixture);
  // Without native bf16, bf16 is refused (Precision.Bf16IsRefusedWithoutNativeBf16): the
  // emulated kernels are > 10x slower and less exact (98.4 % label agreement on a Zen 3).
  if (!cpu_features().native_bf16())
    GTEST_SKIP() << "this CPU has no native bf16 (" << cpu_features().summary() << ")";
  ModelOptions mo;
  mo.precision = Precision::kBf16;
  mo.text_disk_cache = false;
  const Model bf16 = Model::load(bundle_dir(kFixture), mo);
  EXPECT_EQ(bf16.info().precision, "bf16");
  const Model& fp32 = cached_model(bundle_dir(kFixture));
  const Image image = load_image(fixture_dir(kFixture) + "/image.png");
  const auto classes = read_class_list(fixture_dir(kFixture) + "/classes.txt");

  // The text tower runs in float32 whatever the precision: the same features bit for bit.
  EXPECT_EQ(bf16.text_features(classes), fp32.text_features(classes));

  for (const Mode mode : {Mode::kEval, Mode::kDemo}) {
    SegmentOptions o;
    o.mode = mode;
    o.keep_scores = true;
    const Result r = bf16.segment(image.view(), classes, o);
    const Result ref = fp32.segment(image.view(), classes, o);
    ASSERT_TRUE(all_finite(r.scores));
    // The proposals are float32: the same valid regions, with the same boxes.
    ASSERT_EQ(r.segments.size(), ref.segments.size());
    for (std::size_t i = 0; i < r.segments.size(); ++i) {
      EXPECT_EQ(r.segments[i].query, ref.segments[i].query);
      EXPECT_EQ(r.segments[i].box.x0, ref.segments[i].box.x0);
      EXPECT_EQ(r.segments[i].area, ref.segments[i].area);
    }
    // The CLIP features are bf16: scores move a little, but the labels must not.
    double max_diff = 0;
    for (std::size_t i = 0; i < r.scores.size(); ++i)
      max_diff = std::max(max_diff, static_cast<double>(std::abs(r.scores[i] - ref.scores[i])));
    EXPECT_GT(max_diff, 0.0) << "bf16 gave float32's scores exactly: the visual tower did not run in bf16";
    EXPECT_LT(max_diff, 0.01);
    int64_t same = 0;
    for (std::size_t i = 0; i < r.labels.size(); ++i) same += r.labels[i] == ref.labels[i];
    const double agreement = static_cast<double>(same) / static_cast<double>(r.labels.size());
    std::printf("[precision] bf16 vs fp32 label agreement on the fixture (%s): %.5f, max score diff %.2e\n",
                mode == Mode::kEval ? "eval" : "demo", agreement, max_diff);
    EXPECT_GE(agreement, 0.99) << (mode == Mode::kEval ? "eval" : "demo");
  }
}

TEST(Device, UnknownOrUnavailableDevicesAreRefused) {
  OVSEG_REQUIRE_BUNDLE(kFixture);
  ModelOptions mo;
  mo.text_disk_cache = false;
  mo.device = "gpu0";
  try {
    Model::load(bundle_dir(kFixture), mo);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  if (!at::hasCUDA()) {
    mo.device = "cuda:0";
    try {
      Model::load(bundle_dir(kFixture), mo);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kRuntime);
      EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ovseg::test

namespace ovseg::test {
namespace {

// Sets an environment variable for the scope of a test (unset again after).
struct ScopedEnvVar {
  ScopedEnvVar(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
  ~ScopedEnvVar() { ::unsetenv(name); }
  const char* name;
};

TEST(Precision, Bf16IsRefusedWithoutNativeBf16AndAutoPicksFp32) {
  OVSEG_REQUIRE_BUNDLE(kFixture);
  ScopedEnvVar no_bf16("OVSEG_CPU_NO_NATIVE_BF16", "1");
  EXPECT_FALSE(cpu_features().native_bf16());
  EXPECT_EQ(resolve_precision(Precision::kAuto, "cpu"), Precision::kFp32);
  EXPECT_EQ(resolve_precision(Precision::kAuto, "cuda"), Precision::kFp16);
  ModelOptions mo;
  mo.precision = Precision::kBf16;
  mo.text_disk_cache = false;
  try {
    (void)Model::load(bundle_dir(kFixture), mo);
    FAIL() << "bf16 loaded on a CPU without native bf16";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("AVX512_BF16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
  mo.precision = Precision::kAuto;
  EXPECT_EQ(Model::load(bundle_dir(kFixture), mo).info().precision, "fp32");
}

TEST(Precision, AutoPicksBf16OnlyWithNativeBf16) {
  unsetenv("OVSEG_CPU_NO_NATIVE_BF16");
  const Precision p = resolve_precision(Precision::kAuto, "cpu");
  EXPECT_EQ(p, cpu_features().native_bf16() ? Precision::kBf16 : Precision::kFp32) << cpu_features().summary();
  EXPECT_EQ(parse_precision("auto"), Precision::kAuto);
  EXPECT_STREQ(to_string(Precision::kAuto), "auto");
}

}  // namespace
}  // namespace ovseg::test
