// The soft masks are never held whole (to bound peak memory): regions and score maps read them
// through SoftMasks in chunks of queries. These tests use a full-size map (640×853, more queries
// than one chunk holds) and check the chunked stages against the whole map computed here with
// the reference's op sequence (docs/reference-behaviour.md §4.6, §6.1–§6.2, §7.1–§7.2).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <gtest/gtest.h>

#include "pipeline/pipeline.hpp"

namespace ovseg::test {
namespace {

constexpr int64_t kQueries = 24;
constexpr int64_t kH = 640, kW = 853;    // resized size
constexpr int64_t kHp = 640, kWp = 864;  // padded to 32
constexpr float kThr = 0.4f;

struct Fixture {
  at::Tensor logits;  // [Q,Hp/4,Wp/4]
  at::Tensor whole;   // M [Q,h,w], computed in one piece
  Fixture() {
    at::manual_seed(7);
    // Smooth blobs (a low-resolution field upsampled) so masks have real boxes, and a few queries
    // far below the threshold everywhere (invalid).
    logits = at::upsample_bilinear2d(at::randn({1, kQueries, 10, 14}) * 6, {kHp / 4, kWp / 4}, false)[0].contiguous();
    logits.narrow(0, 3, 2).fill_(-30.0f);
    logits.narrow(0, 17, 1).fill_(-30.0f);
    whole = at::upsample_bilinear2d(logits.unsqueeze(0), {kHp, kWp}, false)[0]
                .narrow(1, 0, kH).narrow(2, 0, kW).contiguous().sigmoid();
  }
};

detail::Manifest test_manifest() {
  detail::Manifest m;
  m.region_resolution = 32;
  m.clip_mean255 = {122.77f, 116.75f, 104.09f};
  m.clip_std255 = {68.5f, 66.63f, 70.32f};
  m.clip_fill = {122.77f, 116.75f, 104.09f};
  return m;
}

TEST(ChunkedMasks, RowsEqualTheWholeMap) {
  c10::InferenceMode guard;
  const Fixture f;
  const detail::SoftMasks soft(f.logits, kHp, kWp, kH, kW);
  ASSERT_LT(soft.rows_per_chunk(), kQueries) << "the map must need several chunks for this test";
  // The resize is exact per channel; the sigmoid's vectorised and scalar paths may differ in the
  // last bit where a tensor's (or a thread's) range ends, hence 1e-7 rather than bit equality.
  const auto max_diff = [](const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); };
  const at::Tensor some = at::tensor(std::vector<int64_t>{0, 5, 6, 23, 11}, at::kLong);
  EXPECT_LE(max_diff(soft.rows(some), f.whole.index_select(0, some)), 1e-7);
  EXPECT_LE(max_diff(soft.rows(at::arange(kQueries, at::kLong)), f.whole), 1e-7);
  EXPECT_LE(max_diff(detail::upsample_masks(f.logits, kHp, kWp, kH, kW), f.whole), 1e-7);
}

TEST(ChunkedMasks, RegionsMatchTheWholeMap) {
  c10::InferenceMode guard;
  const Fixture f;
  const detail::SoftMasks soft(f.logits, kHp, kWp, kH, kW);
  const at::Tensor image = at::rand({3, kH, kW}) * 255;
  const detail::Regions r = detail::extract_regions(image, soft, kThr, test_manifest());

  const at::Tensor binary = f.whole > kThr;
  EXPECT_TRUE(at::equal(r.binary, binary));
  EXPECT_TRUE(at::equal(r.valid, binary.flatten(1).any(1)));
  std::vector<int64_t> expected_queries;
  for (int64_t q = 0; q < kQueries; ++q) {
    const at::Tensor on = binary[q].nonzero();  // [n,2] (y, x)
    if (on.size(0) == 0) continue;
    expected_queries.push_back(q);
    const auto i = static_cast<std::size_t>(expected_queries.size() - 1);
    ASSERT_LT(i, r.boxes.size());
    EXPECT_EQ(r.boxes[i].y0, on.select(1, 0).min().item<int64_t>()) << "query " << q;
    EXPECT_EQ(r.boxes[i].y1, on.select(1, 0).max().item<int64_t>() + 1) << "query " << q;
    EXPECT_EQ(r.boxes[i].x0, on.select(1, 1).min().item<int64_t>()) << "query " << q;
    EXPECT_EQ(r.boxes[i].x1, on.select(1, 1).max().item<int64_t>() + 1) << "query " << q;
    EXPECT_EQ(r.areas[i], on.size(0)) << "query " << q;
  }
  EXPECT_EQ(r.queries, expected_queries);
  EXPECT_EQ(r.queries.size(), static_cast<std::size_t>(kQueries - 3));
  EXPECT_EQ(r.images.size(0), static_cast<int64_t>(r.queries.size()));
}

// The score map before the resize, accumulated over query chunks: equal to the one-piece einsum
// up to the order of the float additions.
void expect_scores_match(const detail::EnsembleOutput& out, const at::Tensor& z, const at::Tensor& maps) {
  const at::Tensor s = at::einsum("qc,qhw->chw", {z, maps});
  const at::Tensor expected = at::upsample_bilinear2d(s.unsqueeze(0), {kH / 2, kW / 2}, false)[0];
  ASSERT_EQ(out.scores.sizes(), expected.sizes());
  const double diff = (out.scores - expected).abs().max().item<double>();
  EXPECT_LE(diff, 1e-5 * std::max(1.0, expected.abs().max().item<double>()));
  EXPECT_GT(expected.abs().max().item<double>(), 0.0);
  const at::Tensor labels = at::tensor(out.argmax, at::kInt);
  const double same = (labels == expected.argmax(0).flatten().to(at::kInt)).to(at::kDouble).mean().item<double>();
  EXPECT_GE(same, 0.999);
}

TEST(ChunkedMasks, ScoreMapsMatchTheWholeMap) {
  c10::InferenceMode guard;
  const Fixture f;
  const detail::SoftMasks soft(f.logits, kHp, kWp, kH, kW);
  const at::Tensor image = at::rand({3, kH, kW}) * 255;
  const detail::Regions r = detail::extract_regions(image, soft, kThr, test_manifest());
  const int64_t k = 5;
  const auto nv = static_cast<int64_t>(r.queries.size());
  const at::Tensor valid_index = at::tensor(r.queries, at::kLong);

  detail::EnsembleInput in;
  in.mf_logits = at::randn({kQueries, k + 1}) * 3;
  in.masks = &soft;
  in.binary = r.binary;
  in.valid = r.valid;
  in.clip_logits = at::randn({nv, k + 1}) * 3;
  in.out_height = kH / 2;
  in.out_width = kW / 2;
  in.keep_scores = true;
  const at::Tensor p_mf = at::softmax(in.mf_logits, -1).narrow(1, 0, k);
  const at::Tensor p_clip = at::softmax(in.clip_logits.narrow(1, 0, k), -1);

  {  // eval, w > 0: every query, p = p_mf^(1−w)·C^w with C = 1 for invalid queries
    SCOPED_TRACE("eval w=0.6");
    in.mode = Mode::kEval;
    in.ensemble_weight = 0.6;
    at::Tensor c = at::ones_like(p_mf);
    c.index_copy_(0, valid_index, p_clip);
    expect_scores_match(detail::ensemble(in), p_mf.pow(0.4) * c.pow(0.6), f.whole);
  }
  {  // eval, w = 0: the valid queries with their CLIP probabilities
    SCOPED_TRACE("eval w=0");
    in.ensemble_weight = 0.0;
    expect_scores_match(detail::ensemble(in), p_clip, f.whole.index_select(0, valid_index));
  }
  {  // demo, w = 0: the best region per class, its whole row, on the binary masks
    SCOPED_TRACE("demo w=0");
    in.mode = Mode::kDemo;
    at::Tensor z = at::zeros({nv, k});
    const at::Tensor best = p_clip.argmax(0);
    for (int64_t c = 0; c < k; ++c) z[best[c].item<int64_t>()].copy_(p_clip[best[c].item<int64_t>()]);
    const at::Tensor bbin = (f.whole.index_select(0, valid_index) > kThr).to(at::kFloat);
    expect_scores_match(detail::ensemble(in), z, bbin);
  }
}

}  // namespace
}  // namespace ovseg::test
