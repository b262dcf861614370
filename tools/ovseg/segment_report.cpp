// The JSON report of one segmented image (`ovseg segment --json`, STEM.json).
#include "segment_output.hpp"

#include "ovseg/io.hpp"

#include <cmath>

namespace ovseg::cli {

nlohmann::json make_segment_report(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                                   const OutputSet& outputs, const Result& r, int bit_depth, double decode_ms,
                                   const std::vector<SamRegion>* regions) {
  using nlohmann::json;
  const double total = static_cast<double>(r.width) * r.height;
  json j;
  j["input"] = in.path;
  j["width"] = r.width;
  j["height"] = r.height;
  j["model"] = {{"name", info.name}, {"bundle", info.bundle_dir}};
  j["mode"] = to_string(r.settings.mode);
  j["device"] = info.device;
  j["precision"] = info.precision;
  j["mask_threshold"] = round_to(r.settings.mask_threshold, 1e-6);
  j["ensemble_weight"] = round_to(r.settings.ensemble_weight, 1e-6);
  j["clip_ensemble"] = r.settings.clip_ensemble;
  j["classes"] = r.classes;
  if (r.score_classes != r.classes) j["score_classes"] = r.score_classes;
  j["label_map"] = {{"path", outputs.label_map},
                    {"bit_depth", bit_depth},
                    {"unlabeled_value", unlabeled_value(bit_depth)}};
  if (!outputs.overlay.empty()) j["overlay"] = outputs.overlay;
  if (!outputs.report.empty()) j["report"] = outputs.report;
  if (!outputs.scores.empty())
    j["scores"] = {{"path", outputs.scores},
                   {"shape", {r.score_classes.size(), r.height, r.width}},
                   {"dtype", "float32"}};
  json share = json::array();
  for (std::size_t c = 0; c < r.classes.size() && c < r.class_pixels.size(); ++c)
    if (r.class_pixels[c] > 0)
      share.push_back({{"index", c},
                       {"class", r.classes[c]},
                       {"pixels", r.class_pixels[c]},
                       {"share", round_to(r.class_pixels[c] / total, 1e-7)}});
  j["pixel_share"] = share;
  j["unlabeled"] = {{"pixels", r.unlabeled_pixels}, {"share", round_to(r.unlabeled_pixels / total, 1e-7)}};
  json segs = json::array();
  for (const auto& s : r.segments) {
    const std::size_t ci = static_cast<std::size_t>(s.class_index);
    const std::string name = ci < r.score_classes.size() ? r.score_classes[ci]
                             : ci < r.classes.size()      ? r.classes[ci]
                                                          : std::string();
    json sj = {{"query", s.query},
               {"class_index", s.class_index},
               {"class", name},
               {"score", round_to(s.score, 1e-6)},
               {"area", s.area},
               {"box", {s.box.x0, s.box.y0, s.box.x1, s.box.y1}}};
    if (r.settings.mode == Mode::kDemo || request.sam) sj["selected"] = s.selected;
    if (request.sam) {  // the SAM masks: the generator's scores too
      sj["predicted_iou"] = s.predicted_iou;
      sj["stability_score"] = s.stability_score;
    }
    segs.push_back(std::move(sj));
  }
  j["segments"] = segs;
  j["resized"] = {{"width", r.resized_width}, {"height", r.resized_height}};
  if (request.sam) {
    j["proposals"] = "sam";
    j["sam_model"] = request.sam->sam_model;
    j["sam_classifier"] = request.sam->classifier;
    j["granularity"] = request.sam->granularity;
    json regs = json::array();
    if (regions)
      for (const auto& g : *regions)
        regs.push_back({{"index", g.index},
                        {"class_index", g.class_index},
                        {"score", g.score},
                        {"probs", g.probs},
                        {"selected", g.selected},
                        {"area", g.area},
                        {"box", {g.box.x0, g.box.y0, g.box.x1, g.box.y1}},
                        {"predicted_iou", g.predicted_iou},
                        {"stability_score", g.stability_score}});
    j["sam_regions"] = regs;  // boxes and areas at the SAM input size (the demo's 1280 resize)
  }
  const auto& t = r.timings;
  json timings = {{"decode", round_to(decode_ms, 1e-3)}, {"segment_total", round_to(t.total_ms, 1e-3)}};
  for (const StageInfo& st : kStageTable) timings[st.name] = round_to(t.*st.ms, 1e-3);
  j["timings_ms"] = timings;
  return j;
}

}  // namespace ovseg::cli
