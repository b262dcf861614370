// segment-anything's scripts/amg.py output formats: metadata.csv and the COCO-RLE JSON.
#pragma once

#include <string>
#include <vector>

#include "ovseg/sam.hpp"

namespace ovseg::cli {

// Python's repr() of a float (shortest round-trip digits; exponent below 1e-4 and from 1e16).
std::string python_float(double v);
// amg.py's metadata.csv (header + one row per mask, "\n"-joined, no final newline).
std::string amg_metadata_csv(const SamResult& r);
// pycocotools' compressed RLE string of an H×W 0/1 mask (column-major runs).
std::string coco_rle_string(const std::vector<std::uint8_t>& mask, int height, int width);
// json.dump of the generator's records with output_mode="coco_rle".
std::string amg_rle_json(const SamResult& r);

}  // namespace ovseg::cli
