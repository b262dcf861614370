// The paper's §3 analysis (why mask prompt tuning exists): ground-truth segments as region
// proposals classified by CLIP ("oracle masks"), and the MaskFormer proposals labelled by the
// ground truth ("oracle labels"). Helpers for Model::Impl::segment's oracle paths.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "pipeline/pipeline.hpp"

namespace ovseg::detail {

namespace {

// Pillow's affine NEAREST: the source pixel of output index i is floor((i + 0.5) · in / out).
std::vector<int> nearest_index(int in, int out) {
  std::vector<int> idx(static_cast<std::size_t>(out));
  const double scale = static_cast<double>(in) / out;
  for (int i = 0; i < out; ++i) idx[static_cast<std::size_t>(i)] = std::min(in - 1, static_cast<int>((i + 0.5) * scale));
  return idx;
}

}  // namespace

std::vector<uint16_t> resize_labels_nearest(const uint16_t* labels, int w0, int h0, int w, int h) {
  if (w0 <= 0 || h0 <= 0 || w <= 0 || h <= 0)
    throw Error(ErrorCode::kInvalidArgument, "resize_labels_nearest: empty size");
  const auto xs = nearest_index(w0, w);
  const auto ys = nearest_index(h0, h);
  std::vector<uint16_t> out(static_cast<std::size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    const uint16_t* row = labels + static_cast<std::size_t>(ys[static_cast<std::size_t>(y)]) * w0;
    uint16_t* dst = out.data() + static_cast<std::size_t>(y) * w;
    for (int x = 0; x < w; ++x) dst[x] = row[xs[static_cast<std::size_t>(x)]];
  }
  return out;
}

ClassMasks ground_truth_masks(const uint16_t* labels, int w0, int h0, const std::vector<uint16_t>& resized, int w,
                              int h, int64_t num_classes, uint32_t ignore_label, c10::Device device) {
  // Which classes, and where each first appears (raster order) at the original size.
  std::vector<int64_t> first(static_cast<std::size_t>(num_classes), -1);
  const std::size_t n0 = static_cast<std::size_t>(w0) * h0;
  for (std::size_t i = 0; i < n0; ++i) {
    const uint16_t v = labels[i];
    if (v == ignore_label) continue;
    if (v >= num_classes)
      throw Error(ErrorCode::kBadData, "ground truth: label " + std::to_string(v) + " is neither a class nor the ignore label");
    if (first[v] < 0) first[v] = static_cast<int64_t>(i);
  }
  ClassMasks out;
  std::vector<int64_t> row_of(static_cast<std::size_t>(num_classes), -1);
  for (int64_t c = 0; c < num_classes; ++c)
    if (first[static_cast<std::size_t>(c)] >= 0) {
      row_of[static_cast<std::size_t>(c)] = static_cast<int64_t>(out.classes.size());
      out.classes.push_back(c);
    }
  const auto n = static_cast<int64_t>(out.classes.size());
  at::Tensor binary = at::zeros({n, h, w}, at::TensorOptions().dtype(at::kBool));
  auto* b = binary.data_ptr<bool>();
  const std::size_t plane = static_cast<std::size_t>(w) * h;
  std::vector<char> seen(static_cast<std::size_t>(n), 0);
  for (std::size_t i = 0; i < plane; ++i) {
    const uint16_t v = resized[i];
    if (v == ignore_label || v >= num_classes) continue;
    const int64_t r = row_of[v];
    b[static_cast<std::size_t>(r) * plane + i] = true;
    seen[static_cast<std::size_t>(r)] = 1;
  }
  for (int64_t r = 0; r < n; ++r) {
    if (seen[static_cast<std::size_t>(r)]) continue;
    // Lost by a downscaling resize: one pixel, where its first pixel lands.
    const int64_t i = first[static_cast<std::size_t>(out.classes[static_cast<std::size_t>(r)])];
    const int x = std::min(w - 1, static_cast<int>(static_cast<double>(i % w0) * w / w0));
    const int y = std::min(h - 1, static_cast<int>(static_cast<double>(i / w0) * h / h0));
    b[static_cast<std::size_t>(r) * plane + static_cast<std::size_t>(y) * w + x] = true;
  }
  out.binary = binary.to(device);
  return out;
}

std::vector<int64_t> majority_classes(const at::Tensor& binary, const std::vector<int64_t>& queries,
                                      const std::vector<uint16_t>& resized, int64_t num_classes,
                                      uint32_t ignore_label) {
  std::vector<int64_t> out;
  if (queries.empty()) return out;
  const int64_t h = binary.size(1);
  const int64_t w = binary.size(2);
  const std::size_t plane = static_cast<std::size_t>(h) * static_cast<std::size_t>(w);
  if (resized.size() != plane) throw Error(ErrorCode::kInvalidArgument, "majority_classes: label map size differs");
  const at::Tensor index = at::tensor(queries, at::TensorOptions().dtype(at::kLong)).to(binary.device());
  const at::Tensor rows = binary.index_select(0, index).to(at::kCPU).contiguous();
  const bool* b = rows.data_ptr<bool>();
  std::vector<int64_t> counts(static_cast<std::size_t>(num_classes));
  for (std::size_t r = 0; r < queries.size(); ++r) {
    std::fill(counts.begin(), counts.end(), 0);
    const bool* m = b + r * plane;
    for (std::size_t i = 0; i < plane; ++i) {
      const uint16_t v = resized[i];
      if (m[i] && v != ignore_label && v < num_classes) ++counts[v];
    }
    int64_t best = -1;
    for (int64_t c = 0; c < num_classes; ++c)
      if (counts[static_cast<std::size_t>(c)] > 0 && (best < 0 || counts[static_cast<std::size_t>(c)] > counts[static_cast<std::size_t>(best)]))
        best = c;
    out.push_back(best);
  }
  return out;
}

at::Tensor one_hot_probs(const std::vector<int64_t>& classes, int64_t num_classes, c10::Device device) {
  at::Tensor p = at::zeros({static_cast<int64_t>(classes.size()), num_classes}, at::TensorOptions().dtype(at::kFloat));
  auto a = p.accessor<float, 2>();
  for (std::size_t r = 0; r < classes.size(); ++r)
    if (classes[r] >= 0) a[static_cast<int64_t>(r)][classes[r]] = 1.0f;
  return p.to(device);
}

}  // namespace ovseg::detail
