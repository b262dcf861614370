// The outputs of `ovseg segment` for one image: which files (OutputRequest → OutputSet), the JSON
// report (segment_report.cpp) and writing them all (segment_output.cpp).
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "inputs.hpp"
#include "overlay.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/sam.hpp"

namespace ovseg::cli {

// A value rounded to a multiple of `step`, as the JSON reports write times, shares and settings.
inline double round_to(double v, double step) { return std::round(v / step) * step; }

// --proposals sam: what the report says about the SAM run.
struct SamReport {
  std::string sam_model;   // the SAM bundle directory
  std::string classifier;  // demo | ovseg
  double granularity = 1.0;
};

// What the flags ask for, for every image.
struct OutputRequest {
  std::string dir;  // --output
  bool overlay = false;
  bool json = false;
  bool save_scores = false;
  std::optional<SamReport> sam;  // set with --proposals sam
  // The overlays' colours, shared by every image of the run (a class keeps its colour).
  std::shared_ptr<Palette> palette = std::make_shared<Palette>();
};

// The paths of one image's outputs; empty = not written.
struct OutputSet {
  std::string label_map;
  std::string overlay;
  std::string report;
  std::string scores;
};

// STEM.json: input, model, settings applied, classes, pixel shares, segments, timings; with
// request.sam also the SAM run and its regions (`sam_regions`, at the SAM input size).
nlohmann::json make_segment_report(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                                   const OutputSet& outputs, const Result& r, int bit_depth, double decode_ms,
                                   const std::vector<SamRegion>* regions = nullptr);

// Writes every output of one image, each atomically; the label map last, so that --skip-existing
// never skips an image whose other outputs a crash left unwritten.
void write_segment_outputs(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                           const Image& image, const Result& r, double decode_ms,
                           const std::vector<SamRegion>* regions = nullptr);

}  // namespace ovseg::cli
