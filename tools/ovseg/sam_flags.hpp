// The automatic mask generator's flags (official parameter names, official defaults), shared by
// `ovseg masks`, `ovseg segment --proposals sam` and `ovseg bench --sam-model`.
#pragma once

#include <CLI/CLI.hpp>

#include "ovseg/sam.hpp"

namespace ovseg::cli {

// Adds --points-per-side, --points-per-batch, --pred-iou-thresh, --stability-score-thresh,
// --stability-score-offset, --box-nms-thresh, --crop-n-layers, --crop-nms-thresh,
// --crop-overlap-ratio, --crop-n-points-downscale-factor, --min-mask-region-area.
void add_sam_generator_flags(CLI::App& app, SamGeneratorOptions& options);

}  // namespace ovseg::cli
