// The paper's §3 analysis as evaluation modes (`ovseg eval --oracle masks|labels`): an internal,
// torch-free entry point into the pipeline for the CLI and the tests.
//
//   oracle masks:  the ground-truth segments (one region per class present) replace the MaskFormer
//                  proposals; each is classified by CLIP through the region path (crop, fill, R×R,
//                  mask prompts) and its pixels take the winning class. Measures CLIP on masked
//                  regions alone (the paper: 20.1 mIoU on A-150 with pretrained CLIP).
//   oracle labels: the MaskFormer proposals (the valid regions of the eval path) each take the
//                  ground-truth class covering most of their binary mask; the score map is then
//                  computed as usual with those one-hot probabilities. Measures the proposals
//                  (the paper: 66.5 mIoU on A-150).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ovseg/ovseg.hpp"

namespace ovseg::detail {

enum class Oracle { kNone, kMasks, kLabels };
const char* to_string(Oracle o) noexcept;           // "none" | "masks" | "labels"
Oracle parse_oracle(const std::string& s);          // throws Error(kInvalidArgument)

struct GroundTruthView {
  const std::uint16_t* labels = nullptr;  // height × width at the image's decoded size
  int width = 0;
  int height = 0;
  std::uint32_t ignore_label = 255;
};

// Model::segment on the evaluation path with an oracle. Pixels the ground truth ignores are
// kUnlabeled in the oracle-masks result. Throws Error(kInvalidArgument) for the demo mode, a
// ground truth of another size than the image, or a label that is neither a class nor ignored.
__attribute__((visibility("default"))) Result segment_with_oracle(const Model& model, const ImageView& image,
                                                                  const std::vector<std::string>& classes,
                                                                  const SegmentOptions& options, Oracle oracle,
                                                                  const GroundTruthView& ground_truth);

}  // namespace ovseg::detail
