// Mask proposals (docs/reference-behaviour.md §3.1 steps 3–6 and §4): normalise, pad, run the proposal module.
#include <ATen/ATen.h>

#include "pipeline/pipeline.hpp"

namespace ovseg::detail {
namespace {

at::Tensor rgb_column(const std::array<float, 3>& v, c10::Device device) {
  return at::tensor(std::vector<float>(v.begin(), v.end()), at::kFloat).view({3, 1, 1}).to(device);
}

}  // namespace

ProposalInput prepare_proposal_input(const Image& resized, const Manifest& manifest, c10::Device device) {
  const int64_t h = resized.height;
  const int64_t w = resized.width;
  if (h <= 0 || w <= 0 || resized.rgb.size() != static_cast<std::size_t>(h * w * 3))
    throw Error(ErrorCode::kBadImage, "image: empty or inconsistent pixel buffer");
  // HWC uint8 → CHW float32 0–255 (integral values, exactly as the reference's to-tensor).
  const at::Tensor hwc = at::from_blob(const_cast<std::uint8_t*>(resized.rgb.data()), {h, w, 3}, at::kByte);
  ProposalInput in;
  in.image = hwc.permute({2, 0, 1}).to(device, at::kFloat).contiguous();  // [3,h,w]

  const at::Tensor normalised = (in.image - rgb_column(manifest.pixel_mean, device)) /
                                rgb_column(manifest.pixel_std, device);
  // Right/bottom padding with 0 AFTER normalisation (= the mean colour), to the size divisor.
  const int64_t div = manifest.size_divisibility;
  const int64_t hp = (h + div - 1) / div * div;
  const int64_t wp = (w + div - 1) / div * div;
  in.padded = at::zeros({1, 3, hp, wp}, normalised.options());
  in.padded[0].narrow(1, 0, h).narrow(2, 0, w).copy_(normalised);
  return in;
}

Proposals run_proposals(const Modules& modules, const at::Tensor& padded) {
  auto [emb, masks] = modules.proposals(padded);
  if (emb.size(0) != masks.size(0))
    throw Error(ErrorCode::kRuntime, "proposals module: class embeddings and masks disagree on the query count");
  // The reference upsamples the mask logits to the padded input's size, whatever their stride:
  // 4 with ov-seg's backbones, 2 with a Swin of PATCH_SIZE 2 (the demo model). One integer
  // stride for both axes.
  const int64_t mh = masks.size(1);
  const int64_t mw = masks.size(2);
  if (mh <= 0 || mw <= 0 || padded.size(2) % mh != 0 || padded.size(3) % mw != 0 ||
      padded.size(2) / mh != padded.size(3) / mw)
    throw Error(ErrorCode::kRuntime, "proposals module: mask logits [" + std::to_string(mh) + "," +
                                         std::to_string(mw) + "] are not at one integer stride of the padded input [" +
                                         std::to_string(padded.size(2)) + "," + std::to_string(padded.size(3)) + "]");
  return Proposals{emb.contiguous(), masks.contiguous()};
}

}  // namespace ovseg::detail
