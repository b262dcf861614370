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

namespace ovseg::cli {

// `ovseg bench --sam-model DIR -i IMAGE`: the generator's stages (median of `repeat` runs after
// `warmup`), as a table or JSON.
int run_sam_bench(const std::string& sam_model, const std::string& image, const SamGeneratorOptions& options,
                  const std::string& device, int threads, int repeat, int warmup, bool json);

}  // namespace ovseg::cli
