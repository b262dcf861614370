// `ovseg bench --sam-model`: the stages of segment-anything's automatic mask generator.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "ovseg/sam.hpp"
#include "sam_flags.hpp"

namespace ovseg::cli {

int run_sam_bench(const std::string& sam_model, const std::string& image_path, const SamGeneratorOptions& gen,
                  const std::string& device, int threads, int repeat, int warmup, bool json) {
  if (image_path.empty()) throw Error(ErrorCode::kInvalidArgument, "bench --sam-model needs -i IMAGE");
  validate(gen);
  ModelOptions mo;
  mo.device = device;
  mo.threads = threads;
  const SamModel sam = SamModel::load(sam_model, mo);
  const Image img = load_image(image_path);
  for (int i = 0; i < warmup; ++i) sam.generate(img.view(), gen);
  std::vector<SamResult> runs;
  for (int i = 0; i < std::max(repeat, 1); ++i) runs.push_back(sam.generate(img.view(), gen));
  auto med = [&](double SamTimings::*field) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r.timings.*field);
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  const std::pair<const char*, double SamTimings::*> stages[] = {
      {"preprocess", &SamTimings::preprocess_ms},   {"image_encoder", &SamTimings::encoder_ms},
      {"prompt+mask_decoder", &SamTimings::decoder_ms}, {"postprocess", &SamTimings::postprocess_ms},
      {"nms", &SamTimings::nms_ms},                 {"small_regions", &SamTimings::small_regions_ms},
      {"total", &SamTimings::total_ms}};
  const auto& info = sam.info();
  if (json) {
    nlohmann::json j;
    j["sam_model"] = info.name;
    j["image"] = image_path;
    j["width"] = img.width;
    j["height"] = img.height;
    j["masks"] = runs.back().masks.size();
    j["crops"] = runs.back().crops;
    j["repeat"] = runs.size();
    for (const auto& [name, field] : stages) j["stages_ms"][name] = med(field);
    std::printf("%s\n", j.dump(1).c_str());
  } else {
    std::printf("SAM %s (ViT width %d, depth %d) on %s, %dx%d, %zu masks, %d crop(s), median of %zu run(s)\n",
                info.name.c_str(), info.embed_dim, info.depth, info.device.c_str(), img.width, img.height,
                runs.back().masks.size(), runs.back().crops, runs.size());
    for (const auto& [name, field] : stages) std::printf("  %-22s %10.1f ms\n", name, med(field));
  }
  return kExitOk;
}

}  // namespace ovseg::cli
