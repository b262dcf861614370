// The automatic mask generator's bookkeeping without torch (segment_anything/utils/amg.py,
// re-derived): point grids, crop boxes, box NMS, small-region removal. Internal.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace ovseg::detail::sam {

// build_point_grid(n): n² points in [0,1]², x fastest, float64 exactly as numpy.linspace.
std::vector<std::array<double, 2>> point_grid(int n_per_side);
// build_all_layer_point_grids: layer i has int(n / scale**i) points per side.
std::vector<std::vector<std::array<double, 2>>> layer_point_grids(int n_per_side, int n_layers, int scale_per_layer);

struct CropBox {
  std::array<int64_t, 4> xyxy{};  // x0, y0, x1, y1 (exclusive ends)
  int layer = 0;
};
// generate_crop_boxes(im_size, n_layers, overlap_ratio): the full image first, then layer by
// layer, x0 outer and y0 inner.
std::vector<CropBox> crop_boxes(int64_t im_h, int64_t im_w, int n_layers, double overlap_ratio);

// ResizeLongestSide.get_preprocess_shape: (h, w).
std::pair<int64_t, int64_t> preprocess_shape(int64_t h, int64_t w, int64_t long_side);

// torchvision.ops.nms on CPU (as batched_nms with one category): boxes XYXY float32, the order of
// a stable descending sort of the scores, IoU in float32 compared in double with `iou_threshold`
// (suppress when IoU > threshold). Returns the kept indices in that order.
std::vector<int64_t> nms(const std::vector<std::array<float, 4>>& boxes, const std::vector<float>& scores,
                         double iou_threshold);

// is_box_near_crop_edge for one uncropped box (XYXY, inclusive maxima as batched_mask_to_box).
bool box_near_crop_edge(const std::array<int64_t, 4>& box, const std::array<int64_t, 4>& crop_box,
                        const std::array<int64_t, 4>& orig_box, double atol = 20.0);

// remove_small_regions(mask, area_thresh, mode) on an h×w 0/1 mask, in place (OpenCV connected
// components, 8-connectivity). Returns whether anything changed.
bool remove_small_regions(std::vector<uint8_t>& mask, int h, int w, double area_thresh, bool holes);

// batched_mask_to_box for one h×w 0/1 mask: XYXY with inclusive maxima; zeros when empty.
std::array<int64_t, 4> mask_box(const uint8_t* mask, int h, int w);

}  // namespace ovseg::detail::sam
