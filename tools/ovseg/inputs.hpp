// Turning the INPUT arguments of `ovseg segment` (files, directories, "-" for a list on stdin)
// into a list of images and the output names they map to.
#pragma once

#include <istream>
#include <string>
#include <vector>

namespace ovseg::cli {

struct InputImage {
  std::string path;      // as given, or directory + relative path
  std::string out_stem;  // output name without extension, relative to --output ("sub/photo")
};

// True for the extensions OpenCV's imread decodes (case-insensitive; `ext` includes the dot).
bool is_image_extension(const std::string& ext);

// Expands the arguments in order:
//  - a file → itself, out_stem = its stem (whatever its extension: the user named it);
//  - a directory → the images in it (sorted; subdirectories too with `recursive`), out_stem =
//    the path relative to that directory without the extension;
//  - "-" → each non-blank line of `list` is handled like an argument;
//  - a path that does not exist is kept (its failure is reported with the other images).
// `exclude_dir`, when it lies inside a scanned directory, is not descended into, so that
// outputs of an earlier run are not read back as inputs.
std::vector<InputImage> expand_inputs(const std::vector<std::string>& args, bool recursive, std::istream& list,
                                      const std::string& exclude_dir = {});

// Every output name a run writes for one image (the label map and the optional files).
std::vector<std::string> output_paths(const std::string& output_dir, const std::string& out_stem, bool overlay,
                                      bool json, bool scores);

// Throws Error(kInvalidArgument) naming both inputs if two images map to the same output, and
// naming the input if an output would overwrite an input image.
void check_output_collisions(const std::vector<InputImage>& images, const std::string& output_dir, bool overlay,
                             bool json, bool scores);

}  // namespace ovseg::cli
