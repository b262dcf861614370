// The paper's §3 oracle analyses (src/pipeline/oracle.*): ground-truth masks classified by CLIP,
// and proposals labelled by the ground truth. Synthetic cases with known results (perfect
// proposals + correct labels = mIoU 100, a swapped labelling = the computed value), and both
// modes on the fixture bundle against an independent recomputation from the dumped
// intermediates and the stages.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "image/image_ops.hpp"
#include "ovseg/eval.hpp"
#include "pipeline/oracle.hpp"
#include "pipeline/pipeline.hpp"
#include "pipeline_test_util.hpp"

namespace ovseg::test {
namespace {

const char* kFixture = "tiny_swin_vit";

// Pillow NEAREST written out again: the source of output pixel i is floor((i + 0.5) · in / out).
std::vector<std::uint16_t> nearest_reference(const std::vector<std::uint16_t>& v, int w0, int h0, int w, int h) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int sx = std::min(w0 - 1, static_cast<int>(std::floor((x + 0.5) * w0 / w)));
      const int sy = std::min(h0 - 1, static_cast<int>(std::floor((y + 0.5) * h0 / h)));
      out[static_cast<std::size_t>(y) * w + x] = v[static_cast<std::size_t>(sy) * w0 + sx];
    }
  return out;
}

at::Tensor bools(const std::vector<int>& v, int64_t h, int64_t w) {
  return at::tensor(v, at::kInt).view({h, w}).to(at::kBool);
}

eval::Metrics metrics_of(const std::vector<std::uint16_t>& pred, const std::vector<std::uint16_t>& gt, int k,
                         std::uint32_t ignore) {
  eval::ConfusionMatrix cm(k);
  cm.add(pred.data(), gt.data(), gt.size(), ignore);
  return eval::compute_metrics(cm);
}

TEST(Oracle, NearestLabelResizeIsPillowNearest) {
  // 4 → 2 picks 1 and 3; 2 → 5 picks 0 0 1 1 1 (floor((i + 0.5)·0.4): 0.2 0.6 1.0 1.4 1.8).
  const std::vector<std::uint16_t> row = {10, 11, 12, 13};
  EXPECT_EQ(detail::resize_labels_nearest(row.data(), 4, 1, 2, 1), (std::vector<std::uint16_t>{11, 13}));
  const std::vector<std::uint16_t> two = {7, 9};
  EXPECT_EQ(detail::resize_labels_nearest(two.data(), 2, 1, 5, 1), (std::vector<std::uint16_t>{7, 7, 9, 9, 9}));
  std::mt19937 rng(3);
  for (int t = 0; t < 30; ++t) {
    const int w0 = 1 + static_cast<int>(rng() % 40), h0 = 1 + static_cast<int>(rng() % 40);
    const int w = 1 + static_cast<int>(rng() % 60), h = 1 + static_cast<int>(rng() % 60);
    std::vector<std::uint16_t> v(static_cast<std::size_t>(w0) * h0);
    for (auto& x : v) x = static_cast<std::uint16_t>(rng() % 500);
    ASSERT_EQ(detail::resize_labels_nearest(v.data(), w0, h0, w, h), nearest_reference(v, w0, h0, w, h));
  }
}

TEST(Oracle, MajorityClassLowestOnTiesIgnoredPixelsDoNotCount) {
  c10::InferenceMode guard;
  // 1×6 labels: 2 2 1 1 255 0
  const std::vector<std::uint16_t> gt = {2, 2, 1, 1, 255, 0};
  at::Tensor b = at::zeros({4, 1, 6}, at::kBool);
  b[0][0].narrow(0, 0, 3).fill_(true);  // 2 2 1 → 2
  b[1][0].narrow(0, 0, 4).fill_(true);  // 2 2 1 1 → tie: 1
  b[2][0][4] = true;                    // only ignored → -1
  b[3][0].narrow(0, 3, 3).fill_(true);  // 1 255 0 → tie 0/1: 0
  EXPECT_EQ(detail::majority_classes(b, {0, 1, 2, 3}, gt, 3, 255), (std::vector<int64_t>{2, 1, -1, 0}));
  EXPECT_EQ(detail::majority_classes(b, {3}, gt, 3, 255), (std::vector<int64_t>{0}));
  const at::Tensor p = detail::one_hot_probs({2, -1}, 3, c10::Device(c10::kCPU));
  EXPECT_TRUE(at::equal(p, at::tensor(std::vector<float>{0, 0, 1, 0, 0, 0}).view({2, 3})));
}

TEST(Oracle, GroundTruthMasksOnePerClassAndLostClassesKeepAPixel) {
  c10::InferenceMode guard;
  // 8×2: class 3 only in one column, which a 8 → 2 resize drops; 255 ignored.
  const int w0 = 8, h0 = 2;
  const std::vector<std::uint16_t> gt = {0, 0, 0, 0, 1, 3, 1, 1,  //
                                         0, 0, 0, 0, 1, 1, 1, 255};
  const auto small = detail::resize_labels_nearest(gt.data(), w0, h0, 2, 2);  // picks columns 2 and 6
  const auto m = detail::ground_truth_masks(gt.data(), w0, h0, small, 2, 2, 5, 255, c10::Device(c10::kCPU));
  EXPECT_EQ(m.classes, (std::vector<int64_t>{0, 1, 3}));
  ASSERT_EQ(m.binary.sizes().vec(), (std::vector<int64_t>{3, 2, 2}));
  EXPECT_TRUE(at::equal(m.binary[0], bools({1, 0, 1, 0}, 2, 2)));
  EXPECT_TRUE(at::equal(m.binary[1], bools({0, 1, 0, 1}, 2, 2)));
  // class 3's first pixel (x=5, y=0) lands on x = floor(5·2/8) = 1, y = 0.
  EXPECT_TRUE(at::equal(m.binary[2], bools({0, 1, 0, 0}, 2, 2)));
  std::vector<std::uint16_t> bad = gt;
  bad[3] = 7;  // neither a class (K = 5) nor ignored
  EXPECT_THROW(detail::ground_truth_masks(bad.data(), w0, h0, small, 2, 2, 5, 255, c10::Device(c10::kCPU)), Error);
}

// Oracle labels on synthetic proposals: vertical stripes of 8 low-resolution columns per class
// (so the 4× bilinear upsampling never lets a neighbour win), logits ±40. Perfect proposals and
// the ground truth's labels give mIoU 100; swapping two classes' labels gives the computed value.
TEST(Oracle, PerfectProposalsWithGroundTruthLabelsGiveMiou100) {
  c10::InferenceMode guard;
  const int k = 6;
  const std::vector<int> stripe_class = {4, 1, 1, 0, 5, 2};  // low-res stripes of 8 columns; class 3 absent
  const int low_w = 8 * static_cast<int>(stripe_class.size()), low_h = 10;
  const int w = low_w * 4, h = low_h * 4;
  std::vector<std::uint16_t> gt(static_cast<std::size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) gt[static_cast<std::size_t>(y) * w + x] = static_cast<std::uint16_t>(stripe_class[x / 32]);
  for (int x = 0; x < w; x += 7) gt[static_cast<std::size_t>(3) * w + x] = 255;  // a few ignored pixels
  // One query per stripe (two stripes of class 1: two proposals), plus one query that is never valid.
  const int q = static_cast<int>(stripe_class.size()) + 1;
  at::Tensor logits = at::full({q, low_h, low_w}, -40.0f);
  for (int s = 0; s < static_cast<int>(stripe_class.size()); ++s) logits[s].narrow(1, 8 * s, 8).fill_(40.0f);
  const detail::SoftMasks masks(logits, h, w, h, w);
  detail::Manifest manifest;
  const at::Tensor image = at::zeros({3, h, w});
  const detail::Regions regions = detail::extract_regions(image, masks, 0.4f, manifest, /*with_crops=*/false);
  ASSERT_EQ(regions.queries.size(), stripe_class.size());
  const auto labels = detail::majority_classes(regions.binary, regions.queries, gt, k, 255);
  EXPECT_EQ(labels, std::vector<int64_t>(stripe_class.begin(), stripe_class.end()));

  const auto run = [&](const std::vector<int64_t>& assigned) {
    detail::EnsembleInput in;
    in.mf_logits = at::zeros({q, k + 1});
    in.masks = &masks;
    in.binary = regions.binary;
    in.valid = regions.valid;
    in.clip_logits = at::zeros({static_cast<int64_t>(regions.queries.size()), k + 1});
    in.ensemble_weight = 0.7;
    in.out_height = h;
    in.out_width = w;
    in.probs_override = detail::one_hot_probs(assigned, k, c10::Device(c10::kCPU));
    const detail::EnsembleOutput out = detail::ensemble(in);
    return std::vector<std::uint16_t>(out.argmax.begin(), out.argmax.end());
  };
  const auto pred = run(labels);
  const eval::Metrics perfect = metrics_of(pred, gt, k, 255);
  EXPECT_EQ(perfect.miou, 100.0);
  EXPECT_EQ(perfect.pacc, 100.0);

  // Deliberately wrong: the stripes of class 0 say 5 and those of class 5 say 0. Classes present:
  // 0, 1, 2, 4, 5 (5 with GT); 0 and 5 get IoU 0, the others 1 → mIoU = 3/5; pixel accuracy = the
  // share of non-ignored pixels outside the two swapped stripes.
  std::vector<int64_t> wrong = labels;
  for (auto& c : wrong) c = c == 0 ? 5 : (c == 5 ? 0 : c);
  const eval::Metrics swapped = metrics_of(run(wrong), gt, k, 255);
  EXPECT_DOUBLE_EQ(swapped.miou, 100.0 * 3 / 5);
  std::int64_t valid_px = 0, right_px = 0;
  for (auto v : gt)
    if (v != 255) {
      ++valid_px;
      right_px += (v != 0 && v != 5) ? 1 : 0;
    }
  EXPECT_DOUBLE_EQ(swapped.pacc, 100.0 * static_cast<double>(right_px) / static_cast<double>(valid_px));
}

// ---- on the fixture bundle ----------------------------------------------------------------------

struct Fixture {
  std::string bundle;
  Image image;
  std::vector<std::string> classes;
  bool ok = false;
};

Fixture fixture() {
  Fixture f;
  for (const auto& run : fixture_runs("eval"))
    if (run.name == kFixture) {
      f.bundle = run.bundle;
      f.image = load_image(fixture_image(run));
      f.classes = fixture_classes(run);
      f.ok = true;
    }
  return f;
}

// A ground truth on the fixture image: blocks of a few classes, an ignored band.
std::vector<std::uint16_t> synthetic_gt(int w, int h, int k) {
  std::vector<std::uint16_t> gt(static_cast<std::size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int c = ((x / 97) + 2 * (y / 83)) % std::min(k, 5);
      gt[static_cast<std::size_t>(y) * w + x] = static_cast<std::uint16_t>(y >= h / 2 && y < h / 2 + 4 ? 255 : c);
    }
  return gt;
}

TEST(OracleFixture, RegionsFromMasksIsTheRegionPathOfTheProposals) {
  const Fixture f = fixture();
  if (!f.ok) GTEST_SKIP() << "no fixture bundle " << kFixture;
  c10::InferenceMode guard;
  const detail::Manifest m = detail::read_manifest(f.bundle);
  const auto modules = detail::Modules::load(m, c10::Device(c10::kCPU), at::kFloat);
  const auto [h, w] = detail::test_resize_size(f.image.height, f.image.width, m.min_size_test, m.max_size_test);
  const Image resized = detail::resize_pillow_bilinear(f.image, w, h);
  const detail::ProposalInput input = detail::prepare_proposal_input(resized, m, c10::Device(c10::kCPU));
  const detail::Proposals p = detail::run_proposals(*modules, input.padded);
  const detail::SoftMasks masks(p.mask_logits, input.padded.size(2), input.padded.size(3), h, w);
  const detail::Regions a = detail::extract_regions(input.image, masks, m.eval.mask_threshold, m);
  ASSERT_GT(a.queries.size(), 0u);
  const at::Tensor idx = at::tensor(a.queries, at::kLong);
  const detail::Regions b = detail::regions_from_masks(input.image, a.binary.index_select(0, idx).contiguous(), m);
  ASSERT_EQ(b.boxes.size(), a.boxes.size());
  for (std::size_t r = 0; r < a.boxes.size(); ++r) {
    EXPECT_EQ(b.boxes[r].x0, a.boxes[r].x0);
    EXPECT_EQ(b.boxes[r].y1, a.boxes[r].y1);
    EXPECT_EQ(b.areas[r], a.areas[r]);
  }
  EXPECT_TRUE(at::equal(a.images, b.images));
  EXPECT_TRUE(at::equal(a.masks, b.masks));
}

TEST(OracleFixture, MasksModeLabelsEachGroundTruthRegionWithClipsBestClass) {
  const Fixture f = fixture();
  if (!f.ok) GTEST_SKIP() << "no fixture bundle " << kFixture;
  c10::InferenceMode guard;
  const Model& model = cached_model(f.bundle);
  const int w0 = f.image.width, h0 = f.image.height;
  const int k = static_cast<int>(f.classes.size());
  const auto gt = synthetic_gt(w0, h0, k);
  SegmentOptions so;
  const Result r = detail::segment_with_oracle(model, f.image.view(), f.classes, so, detail::Oracle::kMasks,
                                               {gt.data(), w0, h0, 255});
  ASSERT_EQ(r.labels.size(), gt.size());

  // Independently: the classes present, their masks at the resized size (nearest, written again
  // above), the region path and CLIP with the model's text features; argmax of the K logits.
  const detail::Manifest m = detail::read_manifest(f.bundle);
  const auto modules = detail::Modules::load(m, c10::Device(c10::kCPU), at::kFloat);
  const auto [h, w] = detail::test_resize_size(h0, w0, m.min_size_test, m.max_size_test);
  const Image resized = detail::resize_pillow_bilinear(f.image, w, h);
  const detail::ProposalInput input = detail::prepare_proposal_input(resized, m, c10::Device(c10::kCPU));
  const auto small = nearest_reference(gt, w0, h0, w, h);
  std::set<int> present;
  for (auto v : gt)
    if (v != 255) present.insert(v);
  at::Tensor binary = at::zeros({static_cast<int64_t>(present.size()), h, w}, at::kBool);
  std::map<int, int64_t> row;
  for (int c : present) row[c] = static_cast<int64_t>(row.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (const auto v = small[static_cast<std::size_t>(y) * w + x]; v != 255) binary[row[v]][y][x] = true;
  const detail::Regions regions = detail::regions_from_masks(input.image, binary, m);
  const std::vector<float> t = model.text_features(f.classes);
  const at::Tensor text = at::tensor(t).view({k + 1, -1});
  const at::Tensor logits = detail::clip_region_logits(*modules, regions, text, m.temperature, 4);
  const at::Tensor best = logits.narrow(1, 0, k).argmax(1);
  std::map<int, int> expected_class;
  for (int c : present) expected_class[c] = static_cast<int>(best[row[c]].item<int64_t>());

  for (std::size_t i = 0; i < gt.size(); ++i) {
    const std::uint16_t want = gt[i] == 255 ? kUnlabeled : static_cast<std::uint16_t>(expected_class[gt[i]]);
    if (r.labels[i] != want) {
      ADD_FAILURE() << "pixel " << i << ": " << r.labels[i] << " != " << want;
      break;
    }
  }
  EXPECT_EQ(r.segments.size(), present.size());
  EXPECT_EQ(r.timings.proposals_ms, 0.0);  // no MaskFormer pass

  // With one class, CLIP can only say that class: every annotated pixel is right (mIoU 100).
  std::vector<std::uint16_t> one(gt.size(), 0);
  for (std::size_t i = 0; i < one.size(); i += 11) one[i] = 255;
  const Result single = detail::segment_with_oracle(model, f.image.view(), {f.classes[0]}, so, detail::Oracle::kMasks,
                                                    {one.data(), w0, h0, 255});
  const eval::Metrics mm = metrics_of(single.labels, one, 1, 255);
  EXPECT_EQ(mm.miou, 100.0);
  EXPECT_EQ(mm.pacc, 100.0);

  // Errors: the demo path, another size.
  SegmentOptions demo;
  demo.mode = Mode::kDemo;
  EXPECT_THROW(detail::segment_with_oracle(model, f.image.view(), f.classes, demo, detail::Oracle::kMasks,
                                           {gt.data(), w0, h0, 255}),
               Error);
  EXPECT_THROW(detail::segment_with_oracle(model, f.image.view(), f.classes, so, detail::Oracle::kLabels,
                                           {gt.data(), w0 - 1, h0, 255}),
               Error);
}

TEST(OracleFixture, LabelsModeScoresAreTheOneHotSumOverTheValidProposals) {
  const Fixture f = fixture();
  if (!f.ok) GTEST_SKIP() << "no fixture bundle " << kFixture;
  c10::InferenceMode guard;
  const Model& model = cached_model(f.bundle);
  const int w0 = f.image.width, h0 = f.image.height;
  const int k = static_cast<int>(f.classes.size());
  const auto gt = synthetic_gt(w0, h0, k);
  SegmentOptions so;
  so.keep_scores = true;
  const std::string dir = scratch_dir("oracle-labels");
  so.dump_dir = dir;
  const Result r = detail::segment_with_oracle(model, f.image.view(), f.classes, so, detail::Oracle::kLabels,
                                               {gt.data(), w0, h0, 255});
  // From the dumped proposals: binary = M > thr, majority GT class (nearest-resized GT) per valid
  // query, S = Σ onehot·M over the valid queries, bilinear to the original size, argmax.
  const NpyArray low_npy = read_npy(dir + "/pred_masks_lowres.npy");
  const at::Tensor low = at::tensor(std::vector<float>(low_npy.values.begin(), low_npy.values.end())).view(low_npy.shape);
  const int h = r.resized_height, w = r.resized_width;
  const at::Tensor soft = detail::upsample_masks(low, low.size(1) * 4, low.size(2) * 4, h, w);
  const float thr = model.info().eval_mask_threshold;
  const at::Tensor binary = soft > thr;
  const auto small = nearest_reference(gt, w0, h0, w, h);
  const at::Tensor gt_small = at::tensor(std::vector<int64_t>(small.begin(), small.end())).view({h, w});
  at::Tensor z = at::zeros({soft.size(0), k});
  int valid = 0, labelled = 0;
  for (int64_t q = 0; q < soft.size(0); ++q) {
    if (!binary[q].any().item<bool>()) continue;
    ++valid;
    const at::Tensor covered = gt_small.masked_select(binary[q]);
    const at::Tensor kept = covered.masked_select(covered != 255);
    if (kept.numel() == 0) continue;
    const at::Tensor counts = at::bincount(kept, {}, k);
    z[q][counts.argmax().item<int64_t>()] = 1.0f;  // argmax: the first maximum = the lowest class
    ++labelled;
  }
  ASSERT_GT(valid, 0);
  EXPECT_GT(labelled, 0);
  const at::Tensor s = at::einsum("qc,qhw->chw", {z, soft});
  const at::Tensor big = at::upsample_bilinear2d(s.unsqueeze(0), {h0, w0}, false)[0];
  const at::Tensor scores = at::tensor(r.scores).view({k, h0, w0});
  EXPECT_LE((scores - big).abs().max().item<double>(), 1e-5);
  // Every predicted class comes from the ground truth's labels.
  std::set<int> gt_classes(gt.begin(), gt.end());
  for (auto v : r.labels) ASSERT_TRUE(gt_classes.count(v)) << v;
  // No CLIP forward: the dumped CLIP logits are the zeros of the skipped stage.
  const NpyArray clip = read_npy(dir + "/clip_logits.npy");
  EXPECT_TRUE(std::all_of(clip.values.begin(), clip.values.end(), [](double v) { return v == 0.0; }));
}

}  // namespace
}  // namespace ovseg::test
