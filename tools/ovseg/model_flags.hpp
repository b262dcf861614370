// The model flags that every model-running subcommand shares (segment, eval, bench), and loading
// the model with them, so that the flags mean the same everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

struct ModelFlags {
  std::string device = "cpu";
  std::string precision = "fp32";
  int threads = 0;
  bool no_text_cache = false;
  std::uint64_t max_pixels = kDefaultMaxPixels;  // images above it are refused from their header
};

// Adds -d/--device, --precision, -j/--threads, --no-text-cache and --max-pixels to a subcommand.
void add_model_flags(CLI::App& app, ModelFlags& flags);

// Throws Error(kInvalidArgument) for a device that is not cpu, cuda or cuda:N — before the slow
// model load, so that a typo costs nothing.
void check_device(const std::string& device);

ModelOptions model_options(const ModelFlags& flags);

// Loads the bundle and computes the text features of `classes` once for the whole run; both are
// logged with their times (the text time also lands in *text_ms when given).
Model load_model(const std::string& bundle_dir, const ModelOptions& options, const std::vector<std::string>& classes,
                 double* text_ms = nullptr);

}  // namespace ovseg::cli
