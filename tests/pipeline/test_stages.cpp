// The stages after the proposal module, fed with the reference's own intermediates (mask logits,
// class embeddings, text features): isolates this library's arithmetic — mask upsampling, valid
// regions, crops, the CLIP visual call, both ensembles — from the proposal module's float rounding.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdio>

#include <gtest/gtest.h>

#include "image/image_ops.hpp"
#include "pipeline/pipeline.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

at::Tensor to_tensor(const NpyArray& a) {
  std::vector<float> v(a.values.begin(), a.values.end());
  return at::tensor(v, at::kFloat).view(a.shape).clone();
}

struct Stages {
  detail::Manifest manifest;
  std::unique_ptr<detail::Modules> modules;
  explicit Stages(const std::string& bundle)
      : manifest(detail::read_manifest(bundle)),
        modules(detail::Modules::load(manifest, c10::Device(c10::kCPU), at::kFloat)) {}
};

void check_stages(const FixtureRun& run) {
  SCOPED_TRACE(run.name + "/" + run.mode_dir);
  c10::InferenceMode guard;
  const Stages st(run.bundle);
  const auto& m = st.manifest;
  const detail::PathDefaults& defaults = m.defaults(run.mode());
  const float thr = static_cast<float>(fixture_override(run, "MASK_THR").value_or(defaults.mask_threshold));
  const double w_ens = fixture_override(run, "CLIP_ENSEMBLE_WEIGHT").value_or(defaults.ensemble_weight);

  const Image image = load_image(fixture_image(run));
  const auto [h, w] = detail::test_resize_size(image.height, image.width, m.min_size_test, m.max_size_test);
  const Image resized = detail::resize_pillow_bilinear(image, w, h);
  const detail::ProposalInput input = detail::prepare_proposal_input(resized, m, c10::Device(c10::kCPU));

  const at::Tensor lowres = to_tensor(read_npy(run.file("pred_masks_lowres.npy")));
  const at::Tensor embeddings = to_tensor(read_npy(run.file("pred_embeddings.npy")));
  const at::Tensor text = to_tensor(read_npy(run.file("text_features.npy")));
  const NpyArray ref_valid = read_npy(run.file("valid_flag.npy"));
  const NpyArray ref_clip = read_npy(run.file("clip_logits.npy"));
  const NpyArray ref_sem = read_npy(run.file("sem_seg.npy"));
  const NpyArray ref_label = read_npy(run.file("label.npy"));

  const detail::SoftMasks masks(lowres, input.padded.size(2), input.padded.size(3), h, w);
  const detail::Regions regions = detail::extract_regions(input.image, masks, thr, m);
  const at::Tensor valid = regions.valid.to(at::kFloat);
  ASSERT_EQ(valid.numel(), static_cast<int64_t>(ref_valid.values.size()));
  for (int64_t q = 0; q < valid.numel(); ++q) EXPECT_EQ(valid[q].item<float>(), ref_valid.values[q]) << "query " << q;

  const at::Tensor clip = detail::clip_region_logits(*st.modules, regions, text, m.temperature, 4);
  ASSERT_EQ(std::vector<int64_t>(clip.sizes().begin(), clip.sizes().end()), ref_clip.shape);
  const double clip_diff = (clip - to_tensor(ref_clip)).abs().max().item<double>();
  std::printf("[stages] %s/%s clip_logits max|diff| = %.3g\n", run.name.c_str(), run.mode_dir.c_str(), clip_diff);
  EXPECT_LE(clip_diff, 1e-4);

  detail::EnsembleInput in;
  in.mf_logits = detail::maskformer_logits(embeddings, text, m.temperature);
  in.masks = &masks;
  in.binary = regions.binary;
  in.valid = regions.valid;
  in.clip_logits = to_tensor(ref_clip);  // isolate the ensemble from the CLIP module's rounding
  in.ensemble_weight = w_ens;
  in.mode = run.mode();
  const auto used = run.meta.at("classes_used_by_model").get<std::vector<std::string>>();
  EXPECT_EQ(used, detail::model_classes(run.mode(), fixture_classes(run)));
  in.skip_last_selection = detail::others_selects_no_region(run.mode(), used);
  in.out_height = image.height;
  in.out_width = image.width;
  in.keep_scores = true;
  const detail::EnsembleOutput out = detail::ensemble(in);
  const at::Tensor sem = to_tensor(ref_sem);
  ASSERT_EQ(out.scores.sizes(), sem.sizes());
  const double sem_diff = (out.scores - sem).abs().max().item<double>();
  std::printf("[stages] %s/%s sem_seg max|diff| = %.3g\n", run.name.c_str(), run.mode_dir.c_str(), sem_diff);
  EXPECT_LE(sem_diff, 1e-4);
  int64_t same = 0;
  for (std::size_t i = 0; i < out.argmax.size(); ++i) same += out.argmax[i] == static_cast<int32_t>(ref_label.values[i]);
  EXPECT_GE(static_cast<double>(same) / static_cast<double>(out.argmax.size()), 0.9999);
}

void check_mode(const std::string& mode_dir) {
  OVSEG_REQUIRE_PATH(shared_dir() + "/fixtures");
  const auto runs = fixture_runs(mode_dir);
  if (runs.empty()) GTEST_SKIP() << "no fixture with a bundle and " << mode_dir << "/meta.json";
  for (const auto& run : runs) check_stages(run);
}

TEST(Stages, EvalStagesFromReferenceIntermediates) { check_mode("eval"); }
TEST(Stages, DemoStagesFromReferenceIntermediates) { check_mode("demo"); }

TEST(Stages, FormatTemplateFillsThePlaceholderLikePythonFormat) {
  EXPECT_EQ(detail::format_template("a photo of a {}.", "cat"), "a photo of a cat.");
  EXPECT_EQ(detail::format_template("There is a {} in the scene", "road, route"), "There is a road, route in the scene");
  EXPECT_EQ(detail::format_template("{{literal}} {}", "x"), "{literal} x");
}

}  // namespace
}  // namespace ovseg::test
