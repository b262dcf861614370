// What Model::analyze keeps of one image (everything that does not depend on the class names)
// and its file format. Internal header WITH torch: src/pipeline/*.cpp and tests/pipeline only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ovseg/ovseg.hpp"
#include "pipeline/pipeline.hpp"

namespace ovseg::detail {

struct AnalysisData {
  std::string model_fingerprint;  // ModelInfo::fingerprint of the model that made it
  float mask_threshold = 0;       // the threshold the valid regions were taken with
  bool clip_branch = true;        // false: MaskFormer-only (no regions, no CLIP features)
  int width = 0, height = 0;      // original size (W0, H0)
  int resized_width = 0, resized_height = 0;  // (w, h)
  std::int64_t padded_height = 0, padded_width = 0;  // (Hp, Wp)
  at::Tensor class_embeddings;  // [Q,E] float32, before L2 normalisation
  at::Tensor mask_logits;       // [Q,Hp/s,Wp/s] float32
  at::Tensor valid;             // [Q] bool
  at::Tensor binary_valid;      // [Nv,h,w] bool: B of the valid queries, in query order (CLIP branch)
  at::Tensor clip_features;     // [Nv,E] float32, L2-normalised CLIP region embeddings (CLIP branch)
  std::vector<std::int64_t> queries;  // valid query indices, ascending
  std::vector<RegionBox> boxes;       // per valid region, resized coordinates
  std::vector<std::int64_t> areas;    // per valid region, pixels at the resized size
  Timings timings;                    // the class-agnostic stages when it was made

  std::size_t bytes() const;
};

// The file (Analysis::save/load), little-endian:
//   "OVSEGANA" | u32 format version (1) | u64 header length | header JSON (the fields above but the
//   tensors, and a table of the tensors: name, dtype, shape, byte offset, byte length) |
//   the tensors' raw bytes (C order) | the sha256 of everything before it (64 hex characters).
inline constexpr std::uint32_t kAnalysisFormatVersion = 1;
std::vector<std::uint8_t> serialize_analysis(const AnalysisData& a);
// Throws Error(kBadData) naming `name` for a truncated, corrupt or foreign file.
AnalysisData deserialize_analysis(const std::uint8_t* bytes, std::size_t size, const std::string& name);

// Builds the public handle around the data, and reads it back (segmenter.cpp).
struct AnalysisAccess {
  static Analysis make(AnalysisData data);
  static const AnalysisData& data(const Analysis& analysis);
};

}  // namespace ovseg::detail
