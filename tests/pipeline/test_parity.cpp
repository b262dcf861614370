// Parity with the reference ov-seg on every shared fixture that has a bundle: final scores,
// label maps and (through SegmentOptions::dump_dir) the intermediates, for both paths.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/pipeline.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

constexpr double kScoreTolerance = 1e-4;     // |Δ| on the final [K,H0,W0] scores
constexpr double kLabelAgreement = 0.9999;   // fraction of pixels with the reference's label

at::Tensor to_tensor(const NpyArray& a) {
  std::vector<float> v(a.values.begin(), a.values.end());
  return at::tensor(v, at::kFloat).view(a.shape).clone();
}

// Pixels whose binary mask (M > thr at the resized size) differs between the reference's mask
// logits and ours. The proposal module's float rounding (≈1e-5 relative) can move a sigmoid
// across the threshold; a flipped pixel changes a crop (CLIP logits) and, in the demo path, the
// hard masks of the score map, and no later stage can undo it.
int64_t mask_flips(const FixtureRun& run, const std::string& dump, float thr, const Result& r) {
  c10::InferenceMode guard;
  const at::Tensor ref = to_tensor(read_npy(run.file("pred_masks_lowres.npy")));
  const at::Tensor ours = to_tensor(read_npy(dump + "/pred_masks_lowres.npy"));
  const int64_t hp = ref.size(1) * 4, wp = ref.size(2) * 4;
  const at::Tensor a = detail::upsample_masks(ref, hp, wp, r.resized_height, r.resized_width) > thr;
  const at::Tensor b = detail::upsample_masks(ours, hp, wp, r.resized_height, r.resized_width) > thr;
  return (a != b).sum().item<int64_t>();
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Compares one dumped intermediate with the reference's file of the same name.
void expect_close(const FixtureRun& run, const std::string& dump_dir, const std::string& file, double tol,
                  const char* what) {
  SCOPED_TRACE(file);
  const NpyArray ref = read_npy(run.file(file));
  const NpyArray got = read_npy(dump_dir + "/" + file);
  ASSERT_EQ(ref.shape, got.shape) << what;
  const double d = max_abs_diff(ref.values, got.values);
  std::printf("[parity] %s/%s %-24s max|diff| = %.3g\n", run.name.c_str(), run.mode_dir.c_str(), file.c_str(), d);
  EXPECT_LE(d, tol) << what;
}

void check_run(const FixtureRun& run) {
  SCOPED_TRACE(run.name + "/" + run.mode_dir);
  const Model& model = cached_model(run.bundle);
  const Image image = load_image(fixture_image(run));
  const auto classes = fixture_classes(run);
  SegmentOptions opts = fixture_options(run);
  const std::string dump = scratch_dir("dump-" + run.name + "-" + run.mode_dir);
  opts.dump_dir = dump;  // the debug tap: every stage's intermediates
  const Result r = model.segment(image.view(), classes, opts);
  const auto& meta = run.meta;
  const Timings& t = r.timings;
  std::printf("[parity] %s/%s timings (ms): preprocess %.1f, text %.1f, proposals %.1f, regions %.1f, clip %.1f, "
              "post %.1f, total %.1f\n",
              run.name.c_str(), run.mode_dir.c_str(), t.preprocess_ms, t.text_ms, t.proposals_ms, t.regions_ms,
              t.clip_ms, t.post_ms, t.total_ms);

  // Sizes and class lists.
  const auto orig = meta.at("original_size_hw").get<std::vector<int>>();
  EXPECT_EQ(r.height, orig[0]);
  EXPECT_EQ(r.width, orig[1]);
  if (meta.contains("resized_size_hw")) {
    const auto rs = meta["resized_size_hw"].get<std::vector<int>>();
    EXPECT_EQ(r.resized_height, rs[0]);
    EXPECT_EQ(r.resized_width, rs[1]);
  }
  EXPECT_EQ(r.classes, classes);
  const auto used = meta.at("classes_used_by_model").get<std::vector<std::string>>();
  EXPECT_EQ(r.score_classes, used);

  // Final scores.
  const NpyArray sem = read_npy(run.file("sem_seg.npy"));
  const int64_t k = static_cast<int64_t>(used.size());
  const int64_t hw = static_cast<int64_t>(r.height) * r.width;
  ASSERT_EQ(sem.shape, (std::vector<int64_t>{k, r.height, r.width}));
  ASSERT_EQ(r.scores.size(), static_cast<std::size_t>(k * hw));
  double max_diff = 0;
  bool finite = true;
  for (std::size_t i = 0; i < r.scores.size(); ++i) {
    finite = finite && std::isfinite(r.scores[i]);
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(r.scores[i]) - sem.values[i]));
  }
  EXPECT_TRUE(finite);
  const float thr = r.settings.mask_threshold;
  const int64_t flips = mask_flips(run, dump, thr, r);
  int64_t off = 0;
  for (std::size_t i = 0; i < r.scores.size(); ++i)
    off += std::fabs(static_cast<double>(r.scores[i]) - sem.values[i]) > kScoreTolerance;
  std::printf("[parity] %s/%s %-24s max|diff| = %.3g (%lld of %zu values > %.0e; %lld mask pixel(s) flipped by the "
              "proposal module's rounding)\n",
              run.name.c_str(), run.mode_dir.c_str(), "sem_seg (Result::scores)", max_diff, static_cast<long long>(off),
              r.scores.size(), kScoreTolerance, static_cast<long long>(flips));
  if (flips == 0) {
    EXPECT_LE(max_diff, kScoreTolerance);
  } else {
    // Only the values within the bilinear reach of a flipped pixel may differ.
    EXPECT_LE(static_cast<double>(off), (1.0 - kLabelAgreement) * static_cast<double>(r.scores.size()));
  }

  // Label maps: the raw argmax of our scores against label.npy, then Result::labels against the
  // reference labels with the demo's "unlabelled" rule applied (S[0] == 0, internal "others").
  const NpyArray label = read_npy(run.file("label.npy"));
  ASSERT_EQ(label.numel(), hw);
  int64_t raw_same = 0, final_same = 0;
  const bool demo = run.mode() == Mode::kDemo;
  const auto caller_k = static_cast<int64_t>(classes.size());
  for (int64_t i = 0; i < hw; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < k; ++c)
      if (r.scores[c * hw + i] > r.scores[best * hw + i]) best = c;
    const auto ref = static_cast<int64_t>(label.values[i]);
    raw_same += best == ref;
    int64_t expected = ref;
    if (demo && (sem.values[i] == 0.0 || ref >= caller_k)) expected = kUnlabeled;
    final_same += r.labels[i] == expected;
  }
  const double raw_agree = static_cast<double>(raw_same) / hw;
  const double final_agree = static_cast<double>(final_same) / hw;
  std::printf("[parity] %s/%s label agreement: raw argmax %.6f, Result::labels %.6f\n", run.name.c_str(),
              run.mode_dir.c_str(), raw_agree, final_agree);
  EXPECT_GE(raw_agree, kLabelAgreement);
  EXPECT_GE(final_agree, kLabelAgreement);

  // Pixel counts are consistent with the label map.
  int64_t counted = r.unlabeled_pixels;
  for (auto n : r.class_pixels) counted += n;
  EXPECT_EQ(counted, hw);

  // Intermediates. The proposal module's outputs are checked relative to their magnitude (the
  // fixture's random weights give mask logits in the hundreds).
  {
    const NpyArray ref = read_npy(run.file("pred_masks_lowres.npy"));
    double mag = 0;
    for (double v : ref.values) mag = std::max(mag, std::fabs(v));
    expect_close(run, dump, "pred_masks_lowres.npy", 2e-5 * std::max(mag, 1.0), "proposal module: mask logits");
  }
  expect_close(run, dump, "pred_embeddings.npy", 1e-4, "proposal module: class embeddings");
  // Text features: docs/reference-behaviour.md §5.5; CLIP region logits (below): §6.6.
  expect_close(run, dump, "text_features.npy", 1e-5, "text features");
  {
    const NpyArray ref = read_npy(run.file("valid_flag.npy"));
    const NpyArray got = read_npy(dump + "/valid_flag.npy");
    EXPECT_EQ(ref.values, got.values) << "valid regions differ";
    int64_t nv = 0;
    for (double v : got.values) nv += v != 0;
    EXPECT_EQ(static_cast<int64_t>(r.segments.size()), nv);
    if (meta.contains("num_valid_regions")) {
      EXPECT_EQ(nv, meta["num_valid_regions"].get<int64_t>());
    }
  }
  // A flipped mask pixel changes its region's crop: its logits then differ by up to ~1e-2.
  expect_close(run, dump, "clip_logits.npy", flips == 0 ? 1e-4 : 2e-2, "CLIP region logits");
  if (flips == 0) expect_close(run, dump, "sem_seg.npy", kScoreTolerance, "dumped scores");
}

void check_mode(const std::string& mode_dir) {
  OVSEG_REQUIRE_PATH(shared_dir() + "/fixtures");
  const auto runs = fixture_runs(mode_dir);
  if (runs.empty())
    GTEST_SKIP() << "no fixture with a bundle and " << mode_dir << "/meta.json (bundles: " << bundle_dir("") << ")";
  for (const auto& run : runs) check_run(run);
}

TEST(Parity, EvalPathMatchesReferenceOnEveryFixture) { check_mode("eval"); }
TEST(Parity, DemoPathMatchesReferenceOnEveryFixture) { check_mode("demo"); }

}  // namespace
}  // namespace ovseg::test
