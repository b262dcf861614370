// Writing the outputs of one segmented image: label map, overlay, JSON report, score maps.
#include "segment_output.hpp"

#include <cstdint>

#include "ovseg/io.hpp"
#include "class_list.hpp"
#include "inputs.hpp"
#include "overlay.hpp"

namespace ovseg::cli {
namespace {

std::string hex_bytes(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

}  // namespace

// Writes every output of one image; the label map last, so that --skip-existing never skips an
// image whose other outputs a crash left unwritten.
void write_segment_outputs(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                           const Image& image, const Result& r, double decode_ms,
                           const std::vector<SamRegion>* regions) {
  const auto paths = output_paths(request.dir, in.out_stem, request.overlay, request.json, request.save_scores);
  OutputSet outputs;
  std::size_t next = 0;
  outputs.label_map = paths[next++];
  if (request.overlay) outputs.overlay = paths[next++];
  if (request.json) outputs.report = paths[next++];
  if (request.save_scores) outputs.scores = paths[next++];
  const LabelMap labels = label_map(r);  // 8-bit (255 = unlabeled) up to 255 classes, else 16-bit
  const int bit_depth = labels.bit_depth;
  if (request.overlay) write_image(outputs.overlay, render_overlay(image, r, OverlayFonts::defaults(), request.palette.get()));
  if (request.json) {
    // Paths are bytes on Linux: a name that is not UTF-8 is written with U+FFFD in place of each
    // invalid byte (README, "JSON reports"); the name itself is kept in "input_bytes" (hex).
    nlohmann::json report = make_segment_report(info, request, in, outputs, r, bit_depth, decode_ms, regions);
    if (!is_valid_utf8(in.path)) report["input_bytes"] = hex_bytes(in.path);
    const std::string text = report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    write_file_atomic(outputs.report, text);
  }
  if (request.save_scores) write_scores_npy(outputs.scores, r);
  write_label_map(outputs.label_map, labels);
}

}  // namespace ovseg::cli
