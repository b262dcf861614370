// Class logits of both branches: MaskFormer embeddings (docs/reference-behaviour.md §4.5) and the CLIP visual encoder
// with mask prompts over the valid regions (§6.5–§6.6), batched by memory.
#include <ATen/ATen.h>

#include <algorithm>

#include "common/log.hpp"
#include "pipeline/pipeline.hpp"

namespace ovseg::detail {

at::Tensor similarity_logits(const at::Tensor& features, const at::Tensor& text, double temperature) {
  // Scale first, then the product: (100 · x) @ Tᵀ, as the reference writes it.
  return at::matmul(features * temperature, text.t());
}

at::Tensor maskformer_logits(const at::Tensor& class_embeddings, const at::Tensor& text, double temperature) {
  const at::Tensor normalised = class_embeddings / class_embeddings.norm(2, {-1}, /*keepdim=*/true);  // no epsilon
  return similarity_logits(normalised, text, temperature);  // [Q,K+1]
}

int choose_region_batch(const Manifest& manifest, c10::Device device, c10::ScalarType dtype, int requested,
                        int64_t num_regions) {
  if (requested > 0) return requested;
  // Peak activation memory of one region through the ViT, roughly: the residual stream, the
  // MLP's 4× hidden layer, q/k/v and every head's attention matrix, in the module dtype.
  const int64_t grid = manifest.region_resolution / manifest.patch_size;
  const int64_t tokens = grid * grid + 1;
  const int64_t width = manifest.vision_width;
  const int64_t heads = std::max(1, manifest.vision_heads);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t per_region = elem * (tokens * width * 10 + 2 * heads * tokens * tokens);
  // The reference runs every region in one batch (≈ 2 GB of activations for 100 ViT-L/14 regions
  // in float32). On the CPU a small budget is faster (the GEMMs still have over a thousand rows:
  // ≥ 6 regions × 197 tokens for ViT-B/16 in float32, and the element-wise layers' tensors stay
  // nearer the caches) and keeps the peak memory low: measured on R101c + ViT-B/16, 853×640,
  // 100 regions, 2 threads, a 256 MB budget ran 25.0 s at a 620 MB rise of the resident set,
  // 64 MB 21.4 s at 270 MB (the estimate below is about half of the real peak). GPUs get large
  // batches.
  const int64_t budget = device.is_cuda() ? (int64_t{3} << 30) : (int64_t{64} << 20);
  const int64_t batch = std::max<int64_t>(1, budget / std::max<int64_t>(per_region, 1));
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(num_regions, 1), std::min<int64_t>(batch, 1024)));
}

at::Tensor clip_region_features(const Modules& modules, const Regions& regions, int batch) {
  const int64_t nv = regions.images.defined() ? regions.images.size(0) : 0;
  const int64_t e = modules.non_object_embedding().size(1);
  if (nv == 0) return at::empty({0, e}, at::TensorOptions().dtype(at::kFloat).device(modules.device()));
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < nv; start += batch) {
    const int64_t count = std::min<int64_t>(batch, nv - start);
    parts.push_back(modules.clip_visual(regions.images.narrow(0, start, count), regions.masks.narrow(0, start, count)));
  }
  at::Tensor features = parts.size() == 1 ? parts[0] : at::cat(parts, 0);  // [Nv,E], L2-normalised
  if (features.dim() != 2 || features.size(0) != nv || features.size(1) != e)
    throw Error(ErrorCode::kRuntime, "clip_visual module: unexpected output shape");
  return features;
}

at::Tensor clip_region_logits(const Modules& modules, const Regions& regions, const at::Tensor& text,
                              double temperature, int batch) {
  const int64_t nv = regions.images.defined() ? regions.images.size(0) : 0;
  if (nv == 0) return at::empty({0, text.size(0)}, text.options());
  const at::Tensor features = clip_region_features(modules, regions, batch);
  if (features.size(1) != text.size(1)) throw Error(ErrorCode::kRuntime, "clip_visual module: unexpected output shape");
  return similarity_logits(features.to(text.device()), text, temperature);  // [Nv,K+1]
}

}  // namespace ovseg::detail
