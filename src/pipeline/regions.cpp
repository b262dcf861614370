// Mask upsampling (docs/reference-behaviour.md §4.6) and the CLIP regions (§6.1–§6.4): valid queries, tight boxes,
// mean-filled crops, CLIP normalisation, bicubic/nearest resize to R×R. Every resize goes through
// the ATen kernel the reference's F.interpolate calls, in the reference's order, so the values
// match bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <utility>

#include "pipeline/pipeline.hpp"

namespace ovseg::detail {
namespace {

at::Tensor rgb_column(const std::array<float, 3>& v, c10::Device device) {
  return at::tensor(std::vector<float>(v.begin(), v.end()), at::kFloat).view({3, 1, 1}).to(device);
}

// First and one-past-last index of the true entries of a 1-D bool accessor row.
std::pair<int64_t, int64_t> true_span(const at::TensorAccessor<bool, 1>& row) {
  int64_t first = -1, last = -1;
  for (int64_t i = 0; i < row.size(0); ++i) {
    if (row[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  return {first, last + 1};
}

// Crops, fills and resizes the regions out.queries (boxes out.boxes, masks out.binary) to R×R
// (docs/reference-behaviour.md §6.3, §6.4) into out.images / out.masks; with `crops` false only empty tensors.
void crop_regions(const at::Tensor& image, Regions& out, const Manifest& manifest, bool crops) {
  const c10::Device device = image.device();
  const int64_t res = manifest.region_resolution;
  const auto nv = crops ? static_cast<int64_t>(out.queries.size()) : 0;
  const auto float_opts = at::TensorOptions().dtype(at::kFloat).device(device);
  out.images = at::empty({nv, 3, res, res}, float_opts);
  out.masks = at::empty({nv, 1, res, res}, float_opts);
  if (nv == 0) return;

  const at::Tensor fill = rgb_column(manifest.clip_fill, device);    // 255 × CLIP mean, float32
  const at::Tensor mean = rgb_column(manifest.clip_mean255, device); // float32(mean) × 255: one ulp
  const at::Tensor stdv = rgb_column(manifest.clip_std255, device);  // off the fill in R and G

  // One region at a time (each has its own size), in parallel on the CPU.
  auto one_region = [&](int64_t r) {
    const RegionBox& b = out.boxes[static_cast<std::size_t>(r)];
    // MASK_MATTING is off: the binary mask B[q] is the fill mask.
    const at::Tensor m = out.binary[out.queries[static_cast<std::size_t>(r)]].narrow(0, b.y0, b.y1 - b.y0).narrow(1, b.x0, b.x1 - b.x0);  // [bh,bw] bool
    const at::Tensor crop = image.narrow(1, b.y0, b.y1 - b.y0).narrow(2, b.x0, b.x1 - b.x0);       // [3,bh,bw]
    // crop·m + (1 − m)·fill with m ∈ {0,1} is exactly crop or fill.
    const at::Tensor region = at::where(m.unsqueeze(0), crop, fill);
    const at::Tensor normalised = ((region - mean) / stdv).unsqueeze(0);   // normalise, THEN resize
    at::Tensor img_out = out.images.narrow(0, r, 1);
    at::Tensor mask_out = out.masks.narrow(0, r, 1);
    at::upsample_bicubic2d_out(img_out, normalised, {res, res}, /*align_corners=*/false);
    at::upsample_nearest2d_out(mask_out, m.to(at::kFloat).unsqueeze(0).unsqueeze(0).contiguous(), {res, res});
  };
  if (device.is_cpu()) {
    at::parallel_for(0, nv, 1, [&](int64_t begin, int64_t end) {
      c10::InferenceMode guard;  // thread-local: the pool's threads need their own
      for (int64_t r = begin; r < end; ++r) one_region(r);
    });
  } else {
    for (int64_t r = 0; r < nv; ++r) one_region(r);
  }
}

}  // namespace

at::Tensor upsample_masks(const at::Tensor& mask_logits, int64_t hp, int64_t wp, int64_t h, int64_t w) {
  const SoftMasks masks(mask_logits, hp, wp, h, w);
  return masks.rows(at::arange(masks.num_queries(), mask_logits.options().dtype(at::kLong)));
}

SoftMasks::SoftMasks(at::Tensor mask_logits, int64_t hp, int64_t wp, int64_t h, int64_t w)
    : logits_(std::move(mask_logits)), hp_(hp), wp_(wp), h_(h), w_(w) {}

at::Tensor SoftMasks::rows(const at::Tensor& queries) const {
  // [n,Hp/s,Wp/s] → [1,n,Hp,Wp] (bilinear, align_corners false, sizes given, no scale factors)
  at::Tensor up = at::upsample_bilinear2d(logits_.index_select(0, queries).unsqueeze(0), {hp_, wp_},
                                          /*align_corners=*/false);
  // The crop is materialised before the sigmoid: the reference applies it to a contiguous
  // tensor, and the vectorised and scalar sigmoid paths can differ in the last bit. In place, and
  // the padded map freed first.
  at::Tensor masks = up[0].narrow(1, 0, h_).narrow(2, 0, w_).contiguous();
  up.reset();
  return masks.sigmoid_();  // [n,h,w]
}

int64_t SoftMasks::rows_per_chunk() const {
  // 64 MB: the padded map and the crop of a handful of rows (≈ 14 at 640×853) — large enough for
  // the kernels' threads and the score-map GEMM, small next to the weights.
  constexpr int64_t kChunkBytes = int64_t{64} << 20;
  const int64_t per_row = (hp_ * wp_ + h_ * w_) * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, std::min<int64_t>(num_queries(), kChunkBytes / std::max<int64_t>(per_row, 1)));
}

Regions extract_regions(const at::Tensor& image, const SoftMasks& soft, float threshold, const Manifest& manifest,
                        bool with_crops) {
  const c10::Device device = image.device();
  const int64_t q_all = soft.num_queries();
  const int64_t h = soft.height();
  const int64_t w = soft.width();
  Regions out;
  // B [Q,h,w], strict (docs/reference-behaviour.md §6.1), one chunk of soft masks at a time: only the bool map stays.
  // The boxes' row/column spans and the areas are reduced per chunk too (a bool sum converts
  // its input to int64 first: 8 bytes a pixel for the whole map otherwise).
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device);
  out.binary = at::empty({q_all, h, w}, bool_opts);
  at::Tensor x_any = at::empty({q_all, w}, bool_opts);
  at::Tensor y_any = at::empty({q_all, h}, bool_opts);
  at::Tensor areas = at::empty({q_all}, bool_opts.dtype(at::kLong));
  const int64_t chunk = soft.rows_per_chunk();
  for (int64_t q0 = 0; q0 < q_all; q0 += chunk) {
    const int64_t n = std::min(chunk, q_all - q0);
    at::Tensor b = out.binary.narrow(0, q0, n);
    at::gt_out(b, soft.rows(at::arange(q0, q0 + n, bool_opts.dtype(at::kLong))), threshold);
    x_any.narrow(0, q0, n).copy_(b.any(1));
    y_any.narrow(0, q0, n).copy_(b.any(2));
    areas.narrow(0, q0, n).copy_(b.flatten(1).sum(1));
  }
  out.valid = x_any.any(1);  // [Q]
  const at::Tensor valid_cpu = out.valid.to(at::kCPU);
  const auto valid_acc = valid_cpu.accessor<bool, 1>();
  for (int64_t q = 0; q < valid_acc.size(0); ++q)
    if (valid_acc[q]) out.queries.push_back(q);
  const auto nv = static_cast<int64_t>(out.queries.size());
  if (nv == 0) {
    crop_regions(image, out, manifest, false);
    return out;
  }

  // Tight boxes of the binary masks, exclusive ends (detectron2 BitMasks.get_bounding_boxes).
  const at::Tensor x_cpu = x_any.to(at::kCPU);
  const at::Tensor y_cpu = y_any.to(at::kCPU);
  const at::Tensor areas_cpu = areas.to(at::kCPU);
  const auto xa = x_cpu.accessor<bool, 2>();
  const auto ya = y_cpu.accessor<bool, 2>();
  const auto ar = areas_cpu.accessor<int64_t, 1>();
  for (const int64_t q : out.queries) {
    const auto [x0, x1] = true_span(xa[q]);
    const auto [y0, y1] = true_span(ya[q]);
    // MASK_EXPAND_RATIO 1.0 and the clamp to the image are exact no-ops on integer boxes.
    out.boxes.push_back(RegionBox{std::max<int64_t>(x0, 0), std::max<int64_t>(y0, 0), std::min(x1, w),
                                  std::min(y1, h)});
    out.areas.push_back(ar[q]);
  }

  crop_regions(image, out, manifest, with_crops);
  return out;
}

Regions regions_from_masks(const at::Tensor& image, const at::Tensor& binary, const Manifest& manifest) {
  Regions out;
  const int64_t n = binary.size(0);
  const int64_t h = binary.size(1);
  const int64_t w = binary.size(2);
  out.binary = binary;
  out.valid = binary.flatten(1).any(1);
  const at::Tensor x_cpu = binary.any(1).to(at::kCPU);
  const at::Tensor y_cpu = binary.any(2).to(at::kCPU);
  const at::Tensor areas_cpu = binary.flatten(1).sum(1).to(at::kCPU);
  const auto xa = x_cpu.accessor<bool, 2>();
  const auto ya = y_cpu.accessor<bool, 2>();
  const auto ar = areas_cpu.accessor<int64_t, 1>();
  for (int64_t q = 0; q < n; ++q) {
    const auto [x0, x1] = true_span(xa[q]);
    const auto [y0, y1] = true_span(ya[q]);
    if (x0 < 0 || y0 < 0) throw Error(ErrorCode::kInvalidArgument, "regions_from_masks: mask " + std::to_string(q) + " is empty");
    out.queries.push_back(q);
    out.boxes.push_back(RegionBox{x0, y0, std::min(x1, w), std::min(y1, h)});
    out.areas.push_back(ar[q]);
  }
  crop_regions(image, out, manifest, true);
  return out;
}

}  // namespace ovseg::detail
