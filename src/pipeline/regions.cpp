// Mask upsampling (SPEC §4.6) and the CLIP regions (§6.1–§6.4): valid queries, tight boxes,
// mean-filled crops, CLIP normalisation, bicubic/nearest resize to R×R. Every resize goes through
// the ATen kernel the reference's F.interpolate calls, in the reference's order, so the values
// match bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

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

}  // namespace

at::Tensor upsample_masks(const at::Tensor& mask_logits, int64_t hp, int64_t wp, int64_t h, int64_t w) {
  // [Q,Hp/4,Wp/4] → [1,Q,Hp,Wp] (bilinear, align_corners false, sizes given, no scale factors)
  at::Tensor up = at::upsample_bilinear2d(mask_logits.unsqueeze(0), {hp, wp}, /*align_corners=*/false);
  // The crop is materialised before the sigmoid: the reference applies it to a contiguous
  // tensor, and the vectorised and scalar sigmoid paths can differ in the last bit. In place, and
  // the padded map freed first: two [Q,Hp,Wp] float maps at most (221 MB each at 640×864).
  at::Tensor masks = up[0].narrow(1, 0, h).narrow(2, 0, w).contiguous();
  up.reset();
  return masks.sigmoid_();  // M [Q,h,w]
}

Regions extract_regions(const at::Tensor& image, const at::Tensor& masks, float threshold, const Manifest& manifest) {
  const c10::Device device = masks.device();
  const int64_t h = masks.size(1);
  const int64_t w = masks.size(2);
  const int64_t res = manifest.region_resolution;
  Regions out;
  const at::Tensor binary = masks > threshold;       // B [Q,h,w], strict (SPEC §6.1)
  out.valid = binary.flatten(1).any(1);              // [Q]
  const at::Tensor valid_cpu = out.valid.to(at::kCPU);
  const auto valid_acc = valid_cpu.accessor<bool, 1>();
  for (int64_t q = 0; q < valid_acc.size(0); ++q)
    if (valid_acc[q]) out.queries.push_back(q);
  const auto nv = static_cast<int64_t>(out.queries.size());
  const auto float_opts = at::TensorOptions().dtype(at::kFloat).device(device);
  out.images = at::empty({nv, 3, res, res}, float_opts);
  out.masks = at::empty({nv, 1, res, res}, float_opts);
  if (nv == 0) return out;

  // Tight boxes of the binary masks, exclusive ends (detectron2 BitMasks.get_bounding_boxes).
  const at::Tensor index = at::tensor(out.queries, at::kLong).to(device);
  const at::Tensor bin_valid = binary.index_select(0, index);                  // [Nv,h,w]
  const at::Tensor x_any = bin_valid.any(1).to(at::kCPU);                       // [Nv,w]
  const at::Tensor y_any = bin_valid.any(2).to(at::kCPU);                       // [Nv,h]
  const at::Tensor areas = bin_valid.flatten(1).sum(1).to(at::kCPU, at::kLong);  // [Nv]
  const auto xa = x_any.accessor<bool, 2>();
  const auto ya = y_any.accessor<bool, 2>();
  const auto ar = areas.accessor<int64_t, 1>();
  for (int64_t r = 0; r < nv; ++r) {
    const auto [x0, x1] = true_span(xa[r]);
    const auto [y0, y1] = true_span(ya[r]);
    // MASK_EXPAND_RATIO 1.0 and the clamp to the image are exact no-ops on integer boxes.
    out.boxes.push_back(RegionBox{std::max<int64_t>(x0, 0), std::max<int64_t>(y0, 0), std::min(x1, w),
                                  std::min(y1, h)});
    out.areas.push_back(ar[r]);
  }

  const at::Tensor fill = rgb_column(manifest.clip_fill, device);    // 255 × CLIP mean, float32
  const at::Tensor mean = rgb_column(manifest.clip_mean255, device); // float32(mean) × 255: one ulp
  const at::Tensor stdv = rgb_column(manifest.clip_std255, device);  // off the fill in R and G

  // One region at a time (each has its own size), in parallel on the CPU.
  auto one_region = [&](int64_t r) {
    const RegionBox& b = out.boxes[static_cast<std::size_t>(r)];
    // MASK_MATTING is off: the binary mask B[q] is the fill mask.
    const at::Tensor m = bin_valid[r].narrow(0, b.y0, b.y1 - b.y0).narrow(1, b.x0, b.x1 - b.x0);  // [bh,bw] bool
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
  return out;
}

}  // namespace ovseg::detail
