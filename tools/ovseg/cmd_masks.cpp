// `ovseg masks`: segment-anything's automatic mask generator alone, writing what the official
// scripts/amg.py writes: OUT/STEM/N.png (one 0/255 mask per file, in the generator's order) and
// OUT/STEM/metadata.csv, or with --convert-to-rle OUT/STEM.json (COCO RLE, amg.py's keys).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "commands.hpp"
#include "ovseg/io.hpp"
#include "cli_log.hpp"
#include "inputs.hpp"
#include "model_flags.hpp"
#include "ovseg/sam.hpp"
#include "sam_flags.hpp"
#include "sam_output.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

struct MasksArgs {
  std::string sam_model;
  std::string output = ".";
  bool rle = false;
  bool recursive = false;
  ModelFlags model_flags;
  SamGeneratorOptions gen;
  std::vector<std::string> inputs;
};

// Whether `dir` is a folder this command writes: only regular files named metadata.csv and N.png.
// Anything else there is someone else's, and is never deleted or replaced.
bool is_mask_folder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) return false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool png = name.size() > 4 && name.compare(name.size() - 4, 4, ".png") == 0 &&
                     name.find_first_not_of("0123456789") == name.size() - 4;
    if (!fs::is_regular_file(e.symlink_status(ec)) || !(png || name == "metadata.csv")) return false;
  }
  return !ec;
}

// Writes DIR atomically: a temporary sibling, renamed into place. A previous DIR is replaced only
// when it is a mask folder (is_mask_folder); any other file or folder of that name is refused.
void check_replaceable(const fs::path& target) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(target, ec)) && !is_mask_folder(target))
    throw Error(ErrorCode::kIo, target.string() + ": exists and is not a mask folder written by 'ovseg masks' (only "
                                                  "metadata.csv and N.png): not replaced; choose another --output");
}

void write_mask_folder(const std::string& dir, const SamResult& r) {
  const fs::path target(dir);
  fs::create_directories(target.parent_path().empty() ? fs::path(".") : target.parent_path());
  std::error_code ec;
  check_replaceable(target);  // again: the folder may have appeared while the masks were computed
  const fs::path tmp = target.parent_path() / (target.filename().string() + ".tmp-" + std::to_string(::getpid()));
  if (fs::exists(fs::symlink_status(tmp, ec))) {
    if (!is_mask_folder(tmp))
      throw Error(ErrorCode::kIo, tmp.string() + ": exists and is not a mask folder: not replaced");
    fs::remove_all(tmp, ec);
  }
  fs::create_directories(tmp);
  try {
    for (std::size_t i = 0; i < r.masks.size(); ++i) {
      LabelMap map;
      map.width = r.width;
      map.height = r.height;
      map.bit_depth = 8;
      map.values.resize(r.masks[i].segmentation.size());
      for (std::size_t p = 0; p < map.values.size(); ++p) map.values[p] = r.masks[i].segmentation[p] ? 255 : 0;
      write_label_map((tmp / (std::to_string(i) + ".png")).string(), map);
    }
    write_file_atomic((tmp / "metadata.csv").string(), amg_metadata_csv(r));
    const fs::path old = target.parent_path() / (target.filename().string() + ".old-" + std::to_string(::getpid()));
    const bool had = fs::exists(target);
    if (had) fs::rename(target, old);
    fs::rename(tmp, target);
    if (had) fs::remove_all(old, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

int run_masks(const MasksArgs& a) {
  check_device(a.model_flags.device);
  validate(a.gen);
  const auto images = expand_inputs(a.inputs, a.recursive, std::cin, a.output);
  if (images.empty()) throw Error(ErrorCode::kInvalidArgument, "masks: no input images");
  const SamModel sam = SamModel::load(a.sam_model, model_options(a.model_flags));
  std::vector<std::string> failed;
  for (const auto& in : images) {
    try {
      const std::string base = (fs::path(a.output) / in.out_stem).string();
      if (!a.rle) check_replaceable(base);  // before the (slow) generator: nothing is computed for nothing
      const Image img = load_image(in.path);
      const SamResult r = sam.generate(img.view(), a.gen);
      if (a.rle) {
        fs::create_directories(fs::path(base).parent_path());
        write_file_atomic(base + ".json", amg_rle_json(r));
      } else {
        write_mask_folder(base, r);
      }
      cli_log().info("{}: {} masks in {:.2f} s ({} crop{})", in.path, r.masks.size(), r.timings.total_ms / 1000.0,
                         r.crops, r.crops == 1 ? "" : "s");
    } catch (const Error& e) {
      cli_log().error("{}: {}", in.path, e.what());
      failed.push_back(in.path);
    } catch (const std::exception& e) {
      cli_log().error("{}: {}", in.path, e.what());
      failed.push_back(in.path);
    }
  }
  if (!failed.empty()) {
    std::fprintf(stderr, "ovseg masks: %zu of %zu images failed:\n", failed.size(), images.size());
    for (const auto& f : failed) std::fprintf(stderr, "  %s\n", f.c_str());
    return kExitSomeFailed;
  }
  return kExitOk;
}

}  // namespace

Command add_masks_command(CLI::App& parent) {
  auto args = std::make_shared<MasksArgs>();
  CLI::App* app = parent.add_subcommand(
      "masks", "segment-anything's automatic mask generator alone; writes scripts/amg.py's layout "
               "(OUT/STEM/N.png + metadata.csv, or OUT/STEM.json with --convert-to-rle)");
  app->add_option("--sam-model", args->sam_model, "SAM bundle directory (tools/ovseg-export-sam)")->required();
  app->add_option("-o,--output", args->output, "Output directory")->capture_default_str();
  app->add_flag("--convert-to-rle", args->rle, "Write COCO RLE JSON (amg.py --convert-to-rle) instead of PNGs");
  app->add_flag("-r,--recursive", args->recursive, "Descend into subdirectories of directory inputs");
  add_model_flags(*app, args->model_flags);
  add_sam_generator_flags(*app, args->gen);
  app->add_option("inputs", args->inputs, "Images, directories, or - for a list on stdin")->required();
  return Command{app, [args] { return run_masks(*args); }};
}

}  // namespace ovseg::cli
