// The report files of an evaluation: metrics.json, per_class.csv, metrics.md.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "ovseg/eval.hpp"

namespace ovseg::eval {

namespace {

using nlohmann::json;

// NaN (a class without GT) is null in JSON; nlohmann would write null too, but say it explicitly.
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Shortest text that reads back as the same double.
std::string exact(double v) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string fixed2(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += '\\';
    out += (c == '\n' ? ' ' : c);
  }
  return out;
}

std::string class_name(const EvalState& s, int c) {
  return c < static_cast<int>(s.class_names.size()) ? s.class_names[c] : "class " + std::to_string(c);
}

std::string dataset_title(const std::string& name) {
  try {
    return dataset_spec(name).title;
  } catch (const Error&) {
    return name;
  }
}

double safe_div(double a, double b) { return b > 0 ? a / b : 0.0; }

json timing_json(const TimingTotals& t) {
  const double n = static_cast<double>(t.images);
  const auto mean = [&](double total) { return safe_div(total, n); };
  const double model_total = t.model.total_ms;
  json mean_ms = {{"model_total", mean(model_total)}, {"step", mean(t.step_ms)}};
  json share = json::object();
  for (const StageInfo& st : kStageTable) {
    mean_ms[st.name] = mean(t.model.*st.ms);
    share[st.name] = safe_div(t.model.*st.ms, model_total);
  }
  return {
      {"images", t.images},
      {"wall_s", t.wall_s},
      {"images_per_s", safe_div(n, t.wall_s)},
      {"text_prepare_ms", t.text_prepare_ms},
      {"mean_ms_per_image", mean_ms},
      {"share_of_model_time", share},
  };
}

}  // namespace

void write_reports(const std::string& dir, const EvalState& s, const Metrics& m,
                   const std::vector<std::string>& extra_problems) {
  const std::filesystem::path out(dir);
  const auto skipped = static_cast<std::int64_t>(s.unpaired.size() + s.failed.size());

  // ---- metrics.json
  json j;
  j["dataset"] = s.dataset;
  j["dataset_title"] = dataset_title(s.dataset);
  j["split"] = s.split;
  j["num_classes"] = m.num_classes;
  j["shard"] = {{"index", s.shard_index}, {"count", s.shard_count}};
  j["settings"] = s.settings;
  j["mIoU"] = number_or_null(m.miou);
  j["mIoU_gt_classes"] = number_or_null(m.miou_gt_classes);
  j["fwIoU"] = number_or_null(m.fwiou);
  j["mACC"] = number_or_null(m.macc);
  j["pACC"] = number_or_null(m.pacc);
  j["formulas"] = {
      {"mIoU",
       "detectron2 0.6 SemSegEvaluator (as ov-seg reports): sum of IoU over classes with GT pixels / number of "
       "classes with GT or predicted pixels"},
      {"mIoU_gt_classes", "detectron2 since July 2022: mean IoU over the classes with GT pixels"},
      {"scale", "all values x100; per-class null = no GT pixels"}};
  j["counts"] = {{"images_selected", s.pairs_total},
                 {"images_evaluated", static_cast<std::int64_t>(s.finished.size())},
                 {"images_failed", static_cast<std::int64_t>(s.failed.size())},
                 {"images_not_attempted",
                  std::max<std::int64_t>(0, s.pairs_total - static_cast<std::int64_t>(s.finished.size() + s.failed.size()))},
                 {"files_unpaired", static_cast<std::int64_t>(s.unpaired.size())},
                 {"images_without_annotation", s.images_left_out},
                 {"skipped_total", skipped},
                 {"complete", s.complete() && extra_problems.empty()},
                 {"classes_with_gt", m.classes_with_gt},
                 {"classes_with_gt_or_pred", m.classes_with_gt_or_pred},
                 {"pixels_evaluated", m.pixels},
                 {"pixels_ignored", m.ignored_pixels},
                 {"pixels_predicted_unlabeled", m.unlabeled_predictions}};
  json per_class = json::array();
  for (int c = 0; c < m.num_classes; ++c)
    per_class.push_back({{"index", c},
                         {"name", class_name(s, c)},
                         {"IoU", number_or_null(m.iou[c])},
                         {"ACC", number_or_null(m.acc[c])},
                         {"gt_pixels", m.gt_pixels[c]},
                         {"pred_pixels", m.pred_pixels[c]},
                         {"tp", m.tp[c]}});
  j["per_class"] = per_class;
  json skipped_json = json::array();
  for (const auto& p : s.unpaired) skipped_json.push_back({{"name", p.name}, {"reason", p.reason}});
  for (const auto& p : s.failed) skipped_json.push_back({{"name", p.name}, {"reason", p.reason}});
  j["skipped"] = skipped_json;
  // "complete" above is true only when every selected image was evaluated; these did not.
  json failed_json = json::array();
  for (const auto& p : s.failed) failed_json.push_back({{"name", p.name}, {"reason", p.reason}});
  j["failed"] = failed_json;
  j["problems"] = extra_problems;
  j["merged_from"] = s.merged_from;
  j["timing"] = timing_json(s.timings);
  detail::write_file_atomic((out / "metrics.json").string(), j.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

  // ---- per_class.csv
  std::string csv = "index,name,IoU,ACC,gt_pixels,pred_pixels,tp\n";
  for (int c = 0; c < m.num_classes; ++c)
    csv += std::to_string(c) + "," + csv_field(class_name(s, c)) + "," + exact(m.iou[c]) + "," + exact(m.acc[c]) +
           "," + std::to_string(m.gt_pixels[c]) + "," + std::to_string(m.pred_pixels[c]) + "," +
           std::to_string(m.tp[c]) + "\n";
  detail::write_file_atomic((out / "per_class.csv").string(), csv);

  // ---- metrics.md
  std::string md = "# ovseg evaluation: " + md_cell(dataset_title(s.dataset)) + ", split " + md_cell(s.split) + "\n\n";
  md += "| metric | value |\n|---|---:|\n";
  md += "| mIoU (detectron2 0.6, as ov-seg reports) | " + fixed2(m.miou) + " |\n";
  md += "| mIoU_gt_classes (detectron2 since 2022-07) | " + fixed2(m.miou_gt_classes) + " |\n";
  md += "| fwIoU | " + fixed2(m.fwiou) + " |\n";
  md += "| mACC | " + fixed2(m.macc) + " |\n";
  md += "| pACC | " + fixed2(m.pacc) + " |\n\n";
  md += "Images evaluated: " + std::to_string(s.finished.size()) + " of " + std::to_string(s.pairs_total) +
        " selected; skipped or failed: " + std::to_string(skipped) + "; images without annotation (left out, as " +
        "load_sem_seg does): " + std::to_string(s.images_left_out) + ". Classes with GT: " +
        std::to_string(m.classes_with_gt) + ", with GT or prediction: " + std::to_string(m.classes_with_gt_or_pred) +
        ".";
  if (s.timings.wall_s > 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " Throughput: %.3f images/s.", safe_div(double(s.timings.images), s.timings.wall_s));
    md += buf;
  }
  md += "\n";
  if (!extra_problems.empty() || skipped > 0) {
    md += "\n## Problems\n\n";
    for (const auto& p : extra_problems) md += "- " + md_cell(p) + "\n";
    for (const auto& p : s.unpaired) md += "- `" + md_cell(p.name) + "`: " + md_cell(p.reason) + "\n";
    for (const auto& p : s.failed) md += "- `" + md_cell(p.name) + "`: " + md_cell(p.reason) + "\n";
  }
  md += "\n## Per class\n\n| # | class | IoU | ACC | GT pixels | predicted pixels |\n|---:|---|---:|---:|---:|---:|\n";
  for (int c = 0; c < m.num_classes; ++c)
    md += "| " + std::to_string(c) + " | " + md_cell(class_name(s, c)) + " | " + fixed2(m.iou[c]) + " | " +
          fixed2(m.acc[c]) + " | " + std::to_string(m.gt_pixels[c]) + " | " + std::to_string(m.pred_pixels[c]) +
          " |\n";
  detail::write_file_atomic((out / "metrics.md").string(), md);
}

}  // namespace ovseg::eval
