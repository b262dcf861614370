// The flags that every model-running subcommand shares (segment, eval, bench): the model's
// (device, precision, threads, cache) and the segmentation's (mode, threshold, ensemble weight),
// and loading the model with them, so that the flags mean the same everywhere.
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

// Checks the device's syntax (ovseg::check_device) before the slow model load, so that a typo
// costs nothing.
ModelOptions model_options(const ModelFlags& flags);

struct SegmentFlags {
  std::string mode = "eval";
  float mask_threshold = 0;
  float ensemble_weight = 0;
  bool maskformer_only = false;               // --maskformer-only: SegmentOptions::clip_ensemble = false
  CLI::Option* mask_threshold_opt = nullptr;  // to ask after parsing whether they were given
  CLI::Option* ensemble_weight_opt = nullptr;
};

// Adds --mode, -t/--mask-threshold, -w/--ensemble-weight and --maskformer-only to a subcommand.
void add_segment_flags(CLI::App& app, SegmentFlags& flags);

// The options the flags ask for; a threshold or weight not given stays unset (the bundle's default,
// Model::settings tells which).
SegmentOptions segment_options(const SegmentFlags& flags);

// Where the class names come from: exactly one of -c/--classes, -f/--classes-file and
// -p/--dataset-classes (a dataset's list; --preset is its deprecated old name).
struct ClassFlags {
  std::string classes;
  std::string classes_file;
  std::string dataset_classes;
  CLI::Option* classes_opt = nullptr;
  CLI::Option* classes_file_opt = nullptr;
  CLI::Option* dataset_classes_opt = nullptr;
  CLI::Option* preset_opt = nullptr;  // the deprecated spelling
};

void add_class_flags(CLI::App& app, ClassFlags& flags);

// The class list the flags name; throws Error(kInvalidArgument) when none (or more than one) is given.
std::vector<std::string> choose_classes(const ClassFlags& flags);

// Loads the bundle and computes the text features of `classes` once for the whole run; both are
// logged with their times (the text time also lands in *text_ms when given).
Model load_model(const std::string& bundle_dir, const ModelOptions& options, const std::vector<std::string>& classes,
                 double* text_ms = nullptr);

}  // namespace ovseg::cli
