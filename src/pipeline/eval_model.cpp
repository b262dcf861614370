// Evaluating a Model: the options, the settings the numbers depend on, and the predictor that
// `ovseg eval` (and any program calling run_evaluation) uses. No torch here: Model's public API.
#include <cstdio>
#include <string>

#include "common/fs_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {

namespace {

std::string fixed6(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", static_cast<double>(v));
  return buf;
}

}  // namespace

SegmentOptions evaluation_options(const DatasetSpec& spec, SegmentOptions options, std::string* weight_source) {
  std::string source = "bundle";
  if (options.ensemble_weight) {
    source = "--ensemble-weight";
  } else if (options.mode == Mode::kEval && spec.ensemble_weight) {
    options.ensemble_weight = *spec.ensemble_weight;
    source = "dataset default (ov-seg GETTING_STARTED)";
  }
  if (weight_source) *weight_source = source;
  return options;
}

std::map<std::string, std::string> evaluation_settings(const Model& model, const DatasetSpec& spec,
                                                       const SegmentOptions& options, Oracle oracle,
                                                       const std::string& weight_source) {
  const ModelInfo& info = model.info();
  const SegmentSettings settings = model.settings(options);
  // The bundle's identity: its manifest lists every file with its sha256 (checked at load).
  std::map<std::string, std::string> s = {{"model", info.name},
                                          {"model_sha256", info.source_sha256},
                                          {"bundle_sha256", detail::sha256_file(info.bundle_dir + "/manifest.json")},
                                          {"mode", to_string(settings.mode)},
                                          {"mask_threshold", fixed6(settings.mask_threshold)},
                                          {"ensemble_weight", fixed6(settings.ensemble_weight)},
                                          {"ensemble_weight_source", weight_source},
                                          {"oracle", to_string(oracle)},
                                          {"precision", info.precision}};
  // What an oracle does not use is recorded as such (the numbers do not depend on it).
  if (oracle == Oracle::kMasks) s["mask_threshold"] = "unused (oracle masks)";
  if (oracle != Oracle::kNone) {
    s["ensemble_weight"] = "unused (oracle " + std::string(to_string(oracle)) + ")";
    s["ensemble_weight_source"] = "-";
  }
  if (spec.name == "custom") {
    s["images"] = spec.image_dir;
    s["labels"] = spec.label_dir;
    s["ignore_label"] = std::to_string(spec.ignore_label);
  }
  if (!settings.clip_ensemble) s["clip_ensemble"] = "false";
  return s;
}

Predictor model_predictor(const Model& model, const DatasetSpec& spec, const std::vector<std::string>& classes,
                          const SegmentOptions& options, Oracle oracle, std::uint64_t max_pixels,
                          AnalysisProvider provider) {
  if (provider && oracle != Oracle::kNone)
    throw Error(ErrorCode::kInvalidArgument, "evaluation: shared analyses do not apply to the oracle analyses");
  return [&model, spec, classes, options, oracle, max_pixels, provider](const ImagePair& pair, int label_w,
                                                                         int label_h) {
    const Image image = load_image(pair.image_path, max_pixels);
    if (image.width != label_w || image.height != label_h)
      throw Error(ErrorCode::kBadData, pair.image_path + ": image is " + std::to_string(image.width) + "x" +
                                           std::to_string(image.height) + " but its label " + pair.label_path +
                                           " is " + std::to_string(label_w) + "x" + std::to_string(label_h));
    Result r;
    if (oracle != Oracle::kNone) {
      const LabelImage gt = read_ground_truth(spec, pair.label_path);
      const GroundTruthView view{gt.values.data(), gt.width, gt.height, spec.ignore_label};
      r = segment_with_oracle(model, image.view(), classes, options, oracle, view);
    } else if (provider) {
      // Keyed by the file's content: two datasets' copies of an image share an analysis only
      // when their bytes are equal.
      const std::string key = model.analysis_key(detail::sha256_file(pair.image_path), options);
      const auto analysis = provider(key, [&] { return model.analyze(image.view(), options); });
      r = model.classify(*analysis, classes, options);
    } else {
      r = model.segment(image.view(), classes, options);
    }
    Prediction p;
    p.labels.width = r.width;
    p.labels.height = r.height;
    p.labels.bit_depth = 16;
    p.labels.values = std::move(r.labels);
    p.timings = r.timings;
    return p;
  };
}

}  // namespace ovseg::eval
