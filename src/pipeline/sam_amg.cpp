// See sam_amg.hpp. Every float64 step is written in the order the official Python evaluates it,
// so that points and crop boxes are bit-identical.
#include "pipeline/sam_amg.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <opencv2/imgproc.hpp>

namespace ovseg::detail::sam {

std::vector<std::array<double, 2>> point_grid(int n) {
  std::vector<std::array<double, 2>> out;
  if (n <= 0) return out;
  // numpy.linspace(start, stop, n): i * step + start with step = (stop − start) / (n − 1), the last
  // element set to stop exactly; for n = 1 just start.
  const double offset = 1.0 / (2 * n);
  const double start = offset;
  const double stop = 1.0 - offset;
  std::vector<double> side(static_cast<size_t>(n));
  if (n == 1) {
    side[0] = start;
  } else {
    const double step = (stop - start) / static_cast<double>(n - 1);
    for (int i = 0; i < n; ++i) {
      volatile double prod = static_cast<double>(i) * step;  // no fused multiply-add
      side[static_cast<size_t>(i)] = prod + start;
    }
    side[static_cast<size_t>(n - 1)] = stop;
  }
  out.reserve(static_cast<size_t>(n) * static_cast<size_t>(n));
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) out.push_back({side[static_cast<size_t>(x)], side[static_cast<size_t>(y)]});
  return out;
}

std::vector<std::vector<std::array<double, 2>>> layer_point_grids(int n_per_side, int n_layers, int scale) {
  std::vector<std::vector<std::array<double, 2>>> out;
  for (int i = 0; i <= n_layers; ++i) {
    double div = 1;
    for (int k = 0; k < i; ++k) div *= scale;  // Python int ** int, exact for these sizes
    out.push_back(point_grid(static_cast<int>(static_cast<double>(n_per_side) / div)));
  }
  return out;
}

std::vector<CropBox> crop_boxes(int64_t im_h, int64_t im_w, int n_layers, double overlap_ratio) {
  std::vector<CropBox> out;
  out.push_back({{0, 0, im_w, im_h}, 0});
  const int64_t short_side = std::min(im_h, im_w);
  auto crop_len = [](int64_t orig, int64_t n, int64_t overlap) {
    return static_cast<int64_t>(std::ceil(static_cast<double>(overlap * (n - 1) + orig) / static_cast<double>(n)));
  };
  for (int layer = 0; layer < n_layers; ++layer) {
    const int64_t n = int64_t{1} << (layer + 1);
    const double a = overlap_ratio * static_cast<double>(short_side);
    const int64_t overlap = static_cast<int64_t>(a * (2.0 / static_cast<double>(n)));
    const int64_t cw = crop_len(im_w, n, overlap);
    const int64_t ch = crop_len(im_h, n, overlap);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t x0 = (cw - overlap) * i;
        const int64_t y0 = (ch - overlap) * j;
        out.push_back({{x0, y0, std::min(x0 + cw, im_w), std::min(y0 + ch, im_h)}, layer + 1});
      }
    }
  }
  return out;
}

std::pair<int64_t, int64_t> preprocess_shape(int64_t h, int64_t w, int64_t long_side) {
  const double scale = static_cast<double>(long_side) * 1.0 / static_cast<double>(std::max(h, w));
  const double nh = static_cast<double>(h) * scale;
  const double nw = static_cast<double>(w) * scale;
  return {static_cast<int64_t>(nh + 0.5), static_cast<int64_t>(nw + 0.5)};
}

std::vector<int64_t> nms(const std::vector<std::array<float, 4>>& boxes, const std::vector<float>& scores,
                         double iou_threshold) {
  const size_t n = boxes.size();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    if (std::isnan(sa) || std::isnan(sb)) return std::isnan(sa) && !std::isnan(sb);  // torch: NaN first
    return sa > sb;
  });
  std::vector<float> areas(n);
  for (size_t i = 0; i < n; ++i) areas[i] = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]);
  std::vector<char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (size_t oi = 0; oi < n; ++oi) {
    const auto i = static_cast<size_t>(order[oi]);
    if (suppressed[i]) continue;
    keep.push_back(static_cast<int64_t>(i));
    const auto& bi = boxes[i];
    for (size_t oj = oi + 1; oj < n; ++oj) {
      const auto j = static_cast<size_t>(order[oj]);
      if (suppressed[j]) continue;
      const auto& bj = boxes[j];
      const float xx1 = std::max(bi[0], bj[0]);
      const float yy1 = std::max(bi[1], bj[1]);
      const float xx2 = std::min(bi[2], bj[2]);
      const float yy2 = std::min(bi[3], bj[3]);
      const float iw = std::max(0.0f, xx2 - xx1);
      const float ih = std::max(0.0f, yy2 - yy1);
      const float inter = iw * ih;
      const float ovr = inter / (areas[i] + areas[j] - inter);
      if (static_cast<double>(ovr) > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

bool box_near_crop_edge(const std::array<int64_t, 4>& box, const std::array<int64_t, 4>& crop_box,
                        const std::array<int64_t, 4>& orig_box, double atol) {
  // The box is in crop coordinates: uncrop it first (x0, y0 offsets), then torch.isclose with
  // rtol 0 in float32: |a − b| <= atol.
  const std::array<int64_t, 4> off{crop_box[0], crop_box[1], crop_box[0], crop_box[1]};
  for (int k = 0; k < 4; ++k) {
    const auto b = static_cast<float>(box[static_cast<size_t>(k)] + off[static_cast<size_t>(k)]);
    const bool near_crop = std::fabs(b - static_cast<float>(crop_box[static_cast<size_t>(k)])) <= atol;
    const bool near_image = std::fabs(b - static_cast<float>(orig_box[static_cast<size_t>(k)])) <= atol;
    if (near_crop && !near_image) return true;
  }
  return false;
}

bool remove_small_regions(std::vector<uint8_t>& mask, int h, int w, double area_thresh, bool holes) {
  cv::Mat working(h, w, CV_8U);
  for (int64_t i = 0, n = int64_t{h} * w; i < n; ++i)
    working.data[i] = static_cast<uint8_t>((mask[static_cast<size_t>(i)] != 0) != holes ? 1 : 0);
  cv::Mat labels, stats, centroids;
  const int n_labels = cv::connectedComponentsWithStats(working, labels, stats, centroids, 8, CV_32S);
  std::vector<char> fill(static_cast<size_t>(std::max(n_labels, 1)), 0);
  bool any_small = false;
  int best = -1;
  int best_size = -1;
  for (int l = 1; l < n_labels; ++l) {
    const int size = stats.at<int>(l, cv::CC_STAT_AREA);
    if (static_cast<double>(size) < area_thresh) {
      fill[static_cast<size_t>(l)] = 1;
      any_small = true;
    }
    if (size > best_size) {  // np.argmax: the first maximum
      best_size = size;
      best = l;
    }
  }
  if (!any_small) return false;
  std::vector<char> keep(static_cast<size_t>(n_labels), 0);
  if (holes) {
    keep = fill;
    keep[0] = 1;  // label 0 of the inverted mask = the mask itself
  } else {
    bool any = false;
    for (int l = 1; l < n_labels; ++l)
      if (!fill[static_cast<size_t>(l)]) keep[static_cast<size_t>(l)] = 1, any = true;
    if (!any && best > 0) keep[static_cast<size_t>(best)] = 1;
  }
  const int* lab = labels.ptr<int>(0);
  for (int64_t i = 0, n = int64_t{h} * w; i < n; ++i) mask[static_cast<size_t>(i)] = keep[static_cast<size_t>(lab[i])] ? 1 : 0;
  return true;
}

std::array<int64_t, 4> mask_box(const uint8_t* mask, int h, int w) {
  int64_t x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = mask + static_cast<int64_t>(y) * w;
    for (int x = 0; x < w; ++x) {
      if (!row[x]) continue;
      x0 = std::min<int64_t>(x0, x);
      x1 = std::max<int64_t>(x1, x);
      y0 = std::min<int64_t>(y0, y);
      y1 = std::max<int64_t>(y1, y);
    }
  }
  if (x1 < 0) return {0, 0, 0, 0};
  return {x0, y0, x1, y1};
}

}  // namespace ovseg::detail::sam
