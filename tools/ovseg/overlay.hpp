// The picture `ovseg segment --overlay` writes: the image blended with one colour per class,
// region boundaries, class names written on the regions, and a legend panel on the right that
// lists each class present with its colour and its share of the image.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "ovseg/ovseg.hpp"

namespace ovseg::cli {

// A stable colour for class `index` (golden-ratio hue steps, so neighbouring indices differ
// strongly and a class keeps its colour whatever the list's length). RGB.
std::array<std::uint8_t, 3> class_colour(int index);

// Hershey fonts only draw ASCII: other characters become '?' (the JSON keeps the exact names).
std::string ascii_label(const std::string& utf8);

// Renders the overlay. `image` is the decoded RGB input at the result's size. The output is
// image.height tall (taller only when the legend needs it) and wider than the image by the
// legend panel; the image occupies its top-left image.width × image.height corner.
Image render_overlay(const Image& image, const Result& result);

}  // namespace ovseg::cli
