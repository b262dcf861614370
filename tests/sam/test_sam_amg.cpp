// The generator's bookkeeping (sam_amg.cpp) against values of the official algorithm, and the
// generator's parameters' effects on every SAM fixture (bundles from sam.export_bundles).
// Cost: ≈ 10–20 s per fixture (a dozen generator runs of the reduced model).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "ovseg/sam.hpp"
#include "pipeline/sam_amg.hpp"

namespace fs = std::filesystem;
using namespace ovseg;
namespace sam = ovseg::detail::sam;

TEST(SamAmg, PointGridMatchesNumpyLinspace) {
  // np.linspace(1/16, 1-1/16, 8): 0.0625 + i * 0.125, the last exactly 0.9375.
  const auto g = sam::point_grid(8);
  ASSERT_EQ(g.size(), 64u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_DOUBLE_EQ(g[static_cast<size_t>(i)][0], 0.0625 + 0.125 * i);
    EXPECT_DOUBLE_EQ(g[static_cast<size_t>(i)][1], 0.0625);
    EXPECT_DOUBLE_EQ(g[static_cast<size_t>(i * 8)][1], 0.0625 + 0.125 * i);
  }
  // n = 32: numpy gives 0.015625 + 31 * (0.96875/31) → stop set exactly.
  const auto g32 = sam::point_grid(32);
  EXPECT_EQ(g32[31][0], 1.0 - 1.0 / 64);
  EXPECT_EQ(sam::point_grid(1)[0][0], 0.5);
  // Layers: int(32 / 2**i) points per side.
  const auto layers = sam::layer_point_grids(32, 2, 2);
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[1].size(), 16u * 16u);
  EXPECT_EQ(layers[2].size(), 8u * 8u);
  EXPECT_EQ(sam::layer_point_grids(7, 1, 2)[1].size(), 9u);  // int(3.5) = 3
}

TEST(SamAmg, CropBoxesLikeTheOfficialGenerator) {
  // generate_crop_boxes((1280, 1276), 1, 512/1500): overlap int(0.3413·1276·1) = 435,
  // crop_w = ceil((435 + 1276) / 2) = 856, crop_h = ceil((435 + 1280) / 2) = 858.
  const auto b = sam::crop_boxes(1280, 1276, 1, 512.0 / 1500.0);
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b[0].xyxy, (std::array<int64_t, 4>{0, 0, 1276, 1280}));
  EXPECT_EQ(b[1].xyxy, (std::array<int64_t, 4>{0, 0, 856, 858}));
  EXPECT_EQ(b[2].xyxy, (std::array<int64_t, 4>{0, 423, 856, 1280}));  // y varies fastest
  EXPECT_EQ(b[3].xyxy, (std::array<int64_t, 4>{421, 0, 1276, 858}));
  EXPECT_EQ(b[4].layer, 1);
  EXPECT_EQ(sam::crop_boxes(100, 50, 2, 0.3).size(), 1u + 4u + 16u);
}

TEST(SamAmg, PreprocessShape) {
  EXPECT_EQ(sam::preprocess_shape(1280, 1276, 1024), (std::pair<int64_t, int64_t>{1024, 1021}));
  EXPECT_EQ(sam::preprocess_shape(402, 401, 1024), (std::pair<int64_t, int64_t>{1024, 1021}));
  EXPECT_EQ(sam::preprocess_shape(10, 1000, 1024), (std::pair<int64_t, int64_t>{10, 1024}));
}

TEST(SamAmg, NmsOrderTiesAndThreshold) {
  // Equal scores keep index order (stable sort); strict ">" threshold.
  std::vector<std::array<float, 4>> boxes = {{0, 0, 10, 10}, {20, 20, 30, 30}, {0, 0, 10, 10}, {0, 0, 10, 5}};
  std::vector<float> scores = {0.5f, 0.9f, 0.5f, 0.7f};
  auto keep = sam::nms(boxes, scores, 0.7);
  EXPECT_EQ(keep, (std::vector<int64_t>{1, 3, 0}));  // 2 duplicates 0; 0 vs 3: IoU 0.5 ≤ 0.7
  keep = sam::nms(boxes, scores, 0.5);               // IoU exactly 0.5 is not > 0.5
  EXPECT_EQ(keep, (std::vector<int64_t>{1, 3, 0}));
  keep = sam::nms(boxes, scores, 0.49);
  EXPECT_EQ(keep, (std::vector<int64_t>{1, 3}));
  EXPECT_TRUE(sam::nms({}, {}, 0.7).empty());
}

TEST(SamAmg, NearCropEdge) {
  // A box touching an inner crop edge is dropped; one touching the image edge is kept.
  const std::array<int64_t, 4> crop{0, 0, 500, 500}, image{0, 0, 1000, 800};
  EXPECT_TRUE(sam::box_near_crop_edge({100, 100, 485, 200}, crop, image));
  EXPECT_FALSE(sam::box_near_crop_edge({5, 5, 200, 200}, crop, image));
  EXPECT_FALSE(sam::box_near_crop_edge({100, 100, 479, 200}, crop, image));
  // Crop coordinates are uncropped first.
  EXPECT_TRUE(sam::box_near_crop_edge({2, 100, 50, 200}, {400, 0, 900, 500}, image));
}

TEST(SamAmg, RemoveSmallRegions) {
  const int h = 20, w = 20;
  std::vector<uint8_t> m(h * w, 0);
  for (int y = 2; y < 12; ++y)
    for (int x = 2; x < 12; ++x) m[y * w + x] = 1;  // 100-pixel square
  m[5 * w + 5] = 0;                                 // a 1-pixel hole
  m[17 * w + 17] = 1;                               // a 1-pixel island
  auto holes = m;
  EXPECT_TRUE(sam::remove_small_regions(holes, h, w, 4, true));
  EXPECT_EQ(holes[5 * w + 5], 1);
  EXPECT_EQ(holes[17 * w + 17], 1);
  auto islands = holes;
  EXPECT_TRUE(sam::remove_small_regions(islands, h, w, 4, false));
  EXPECT_EQ(islands[17 * w + 17], 0);
  EXPECT_EQ(std::count(islands.begin(), islands.end(), 1), 100);
  EXPECT_FALSE(sam::remove_small_regions(islands, h, w, 4, false));
  // All islands small: the largest survives (np.argmax).
  std::vector<uint8_t> two(h * w, 0);
  two[0] = 1;
  two[10 * w + 10] = two[10 * w + 11] = 1;
  EXPECT_TRUE(sam::remove_small_regions(two, h, w, 100, false));
  EXPECT_EQ(two[0], 0);
  EXPECT_EQ(two[10 * w + 11], 1);
}

TEST(SamAmg, MaskBox) {
  std::vector<uint8_t> m(6 * 8, 0);
  EXPECT_EQ(sam::mask_box(m.data(), 6, 8), (std::array<int64_t, 4>{0, 0, 0, 0}));
  m[1 * 8 + 2] = m[4 * 8 + 6] = 1;
  EXPECT_EQ(sam::mask_box(m.data(), 6, 8), (std::array<int64_t, 4>{2, 1, 6, 4}));
}

TEST(SamAmg, OptionsValidation) {
  SamGeneratorOptions o;
  EXPECT_NO_THROW(validate(o));
  o.points_per_side = 0;
  EXPECT_THROW(validate(o), Error);
  o = {};
  o.pred_iou_thresh = 1.5;
  EXPECT_THROW(validate(o), Error);
  o = {};
  o.crop_n_layers = 2;
  o.points_per_side = 3;
  o.crop_n_points_downscale_factor = 2;  // layer 2: int(3 / 4) = 0 points
  EXPECT_THROW(validate(o), Error);
}
