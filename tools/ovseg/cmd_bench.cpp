// `ovseg bench`: where the time of one image goes, stage by stage, and how close the CLIP stage
// runs to the machine's matmul peak. Timings come from the library's own stage clocks
// (Result::timings); the median over --repeat runs is reported.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "class_list.hpp"
#include "commands.hpp"
#include "model_flags.hpp"
#include "ovseg/eval.hpp"
#include "ovseg/ovseg.hpp"
#include "sam_flags.hpp"

namespace ovseg::cli {
namespace {

struct BenchOptions {
  std::string model;
  std::string image;
  ClassFlags class_flags;
  ModelFlags model_flags;
  SegmentFlags segment_flags;
  int repeat = 3;
  int warmup = 1;
  bool json = false;
  bool quick = false;
  bool text_only = false;
  std::string labels_out;
  std::string sam_model;  // --sam-model: the SAM generator's stages instead
  SamGeneratorOptions sam;
  std::string size;  // "WxH": the image resized to this first (a large-image benchmark)
};

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// VmHWM of /proc/self/status: the high-water mark of this process image. getrusage's ru_maxrss
// would do on its own, but Linux carries it over exec() from the forked parent, so a child of a
// 2.5 GB Python benchmark would report the parent's peak instead of its own.
double peak_rss_mib() {
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long kib = -1;
    while (std::fgets(line, sizeof(line), f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    std::fclose(f);
    if (kib >= 0) return static_cast<double>(kib) / 1024.0;
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

// FLOPs (2 per multiply-add) of one CLIP ViT forward pass on one region, from the bundle's
// architecture: patch embedding, Lv blocks of (QKV + out projection + attention + 4× MLP), proj.
double clip_visual_gflop_per_region(const nlohmann::json& clip) {
  const double w = clip.value("vision_width", 0);
  const double layers = clip.value("vision_layers", 0);
  const double patch = clip.value("patch_size", 0);
  const double grid = clip.value("grid", 0);
  const double e = clip.value("embed_dim", 0);
  const double t = grid * grid + 1;  // tokens incl. the class token
  const double patch_embed = grid * grid * (3 * patch * patch) * w;
  const double per_layer = 12 * t * w * w + 2 * t * t * w;
  return 2.0 * (patch_embed + layers * per_layer + w * e) / 1e9;
}

// A stage's key in "stages_ms": its name, except where the bench reports more than one figure of
// a stage (text: cold, warm and inside segment()) or says what was timed (clip over the regions).
std::string bench_key(Stage s) {
  if (s == Stage::kText) return "text_in_segment";
  if (s == Stage::kClip) return "clip_regions";
  return to_string(s);
}

// Text features only: cold (no cache at all), warm (the model's memory cache) and from the disk
// cache (a fresh model reading what the cold run wrote to an empty temporary cache directory).
int run_text_bench(const BenchOptions& o, const std::vector<std::string>& classes) {
  namespace fs = std::filesystem;
  const fs::path cache = fs::temp_directory_path() / ("ovseg-bench-text-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(cache, ec);
  ModelOptions mo = model_options(o.model_flags);
  mo.text_disk_cache = true;
  mo.text_cache_dir = cache.string();
  double load_ms = 0, cold_ms = 0, warm_ms = 0, disk_ms = 0;
  std::string name;
  {
    const double t0 = now_ms();
    const Model model = Model::load(o.model, mo);
    load_ms = now_ms() - t0;
    name = model.info().name;
    cold_ms = model.prepare_classes(classes);
    warm_ms = model.prepare_classes(classes);
  }
  {
    const Model model = Model::load(o.model, mo);
    disk_ms = model.prepare_classes(classes);
  }
  fs::remove_all(cache, ec);
  const nlohmann::json out = {
      {"model", name},
      {"bundle", o.model},
      {"classes", classes.size()},
      {"device", o.model_flags.device},
      {"precision", o.model_flags.precision},
      {"threads", o.model_flags.threads},
      {"load_ms", load_ms},
      {"stages_ms", {{"text_cold", cold_ms}, {"text_warm", warm_ms}, {"text_disk_cache", disk_ms}}},
      {"peak_rss_mib", peak_rss_mib()},
  };
  if (o.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::printf("ovseg bench --text-only: %s, %zu classes, %s/%s\n", name.c_str(), classes.size(),
              o.model_flags.device.c_str(), o.model_flags.precision.c_str());
  std::printf("  text cold %.1f ms, warm (memory cache) %.3f ms, fresh model from the disk cache %.1f ms\n", cold_ms,
              warm_ms, disk_ms);
  std::printf("  model load %.0f ms, peak RSS %.0f MiB\n", load_ms, out["peak_rss_mib"].get<double>());
  return kExitOk;
}

int run_bench(const BenchOptions& o) {
  const auto classes = choose_classes(o.class_flags);
  if (o.text_only) return run_text_bench(o, classes);
  if (o.image.empty()) throw Error(ErrorCode::kInvalidArgument, "--image is required (except with --text-only)");
  ModelOptions mo = model_options(o.model_flags);
  mo.text_disk_cache = false;  // "cold" must mean cold (whatever --no-text-cache says)

  const double t_load = now_ms();
  Model model = Model::load(o.model, mo);
  const double load_ms = now_ms() - t_load;
  const auto manifest = nlohmann::json::parse(model.info().manifest_json);
  const auto& clip = manifest.at("architecture").at("clip");

  const double t_decode = now_ms();
  Image image = load_image(o.image, o.model_flags.max_pixels);
  if (!o.size.empty()) {
    int w = 0, h = 0;
    char x = 0;
    if (std::sscanf(o.size.c_str(), "%d%c%d", &w, &x, &h) != 3 || (x != 'x' && x != 'X') || w <= 0 || h <= 0)
      throw Error(ErrorCode::kInvalidArgument, "--size: \"" + o.size + "\" is not WIDTHxHEIGHT");
    if (const std::string too_large = o.model_flags.max_pixels && static_cast<std::uint64_t>(w) * h > o.model_flags.max_pixels
                                          ? "--size " + o.size + " exceeds --max-pixels " + std::to_string(o.model_flags.max_pixels)
                                          : std::string();
        !too_large.empty())
      throw Error(ErrorCode::kInvalidArgument, too_large);
    Image big;
    big.width = w;
    big.height = h;
    big.rgb.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    const cv::Mat src(image.height, image.width, CV_8UC3, image.rgb.data());
    cv::Mat dst(h, w, CV_8UC3, big.rgb.data());
    cv::resize(src, dst, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    image = std::move(big);
  }
  const double decode_ms = now_ms() - t_decode;

  const double text_cold_ms = model.prepare_classes(classes);
  const double text_warm_ms = model.prepare_classes(classes);

  const SegmentOptions so = segment_options(o.segment_flags);
  const int warmup = o.quick ? 0 : o.warmup;
  const int repeat = o.quick ? 1 : std::max(1, o.repeat);
  for (int i = 0; i < warmup; ++i) (void)model.segment(image.view(), classes, so);

  std::vector<double> per_stage[kNumStages], total;
  std::size_t regions = 0;
  for (int i = 0; i < repeat; ++i) {
    const Result r = model.segment(image.view(), classes, so);
    for (const StageInfo& st : kStageTable) per_stage[static_cast<std::size_t>(st.stage)].push_back(r.timings.*st.ms);
    total.push_back(r.timings.total_ms);
    regions = r.segments.size();
    if (i + 1 == repeat && !o.labels_out.empty()) {
      // The label map as a .npy (uint16, H×W), e.g. to compare precisions pixel by pixel.
      std::string header = "{'descr': '<u2', 'fortran_order': False, 'shape': (" + std::to_string(r.height) + ", " +
                           std::to_string(r.width) + "), }";
      while ((10 + header.size() + 1) % 64 != 0) header += ' ';
      header += '\n';
      std::FILE* f = std::fopen(o.labels_out.c_str(), "wb");
      if (!f) throw Error(ErrorCode::kIo, o.labels_out + ": cannot write");
      const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
      const std::uint16_t len = static_cast<std::uint16_t>(header.size());
      std::fwrite(magic, 1, 8, f);
      std::fwrite(&len, 2, 1, f);
      std::fwrite(header.data(), 1, header.size(), f);
      std::fwrite(r.labels.data(), sizeof(r.labels[0]), r.labels.size(), f);
      if (std::fclose(f) != 0) throw Error(ErrorCode::kIo, o.labels_out + ": cannot write");
    }
  }
  const double clip_med = median(per_stage[static_cast<std::size_t>(Stage::kClip)]);
  const double gflop = clip_visual_gflop_per_region(clip) * static_cast<double>(regions);
  const double total_med = median(total);

  nlohmann::json stages_ms = {
      {"decode", decode_ms}, {"text_cold", text_cold_ms}, {"text_warm", text_warm_ms}, {"total", total_med}};
  for (const StageInfo& st : kStageTable) stages_ms[bench_key(st.stage)] = median(per_stage[static_cast<std::size_t>(st.stage)]);
  nlohmann::json out = {
      {"model", model.info().name},
      {"bundle", o.model},
      {"image", o.image},
      {"image_size", {image.width, image.height}},
      {"classes", classes.size()},
      {"mode", to_string(so.mode)},
      {"device", model.info().device},
      {"precision", model.info().precision},
      {"threads", o.model_flags.threads},
      {"repeat", repeat},
      {"load_ms", load_ms},
      {"stages_ms", stages_ms},
      {"valid_regions", regions},
      {"images_per_s", total_med > 0 ? 1000.0 / total_med : 0.0},
      {"regions_per_s", clip_med > 0 ? 1000.0 * static_cast<double>(regions) / clip_med : 0.0},
      {"clip_gflop", gflop},
      {"clip_gflop_per_s", clip_med > 0 ? gflop / (clip_med / 1000.0) : 0.0},
      {"peak_rss_mib", peak_rss_mib()},
  };
  if (o.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  const auto& s = out["stages_ms"];
  std::printf("ovseg bench: %s on %s (%dx%d), %zu classes, %s, %s/%s, median of %d\n",
              model.info().name.c_str(), o.image.c_str(), image.width, image.height, classes.size(),
              to_string(so.mode), model.info().device.c_str(), model.info().precision.c_str(), repeat);
  std::printf("  %-22s %10s\n", "stage", "ms");
  // decode, the text figures outside segment(), every stage of the table, the total.
  std::vector<std::string> rows = {"decode", "text_cold", "text_warm"};
  for (const StageInfo& st : kStageTable) rows.push_back(bench_key(st.stage));
  rows.push_back("total");
  for (const std::string& k : rows) std::printf("  %-22s %10.1f\n", k.c_str(), s[k].get<double>());
  std::printf("  valid regions %zu, %.2f regions/s, CLIP %.1f GFLOP at %.1f GFLOP/s\n", regions,
              out["regions_per_s"].get<double>(), gflop, out["clip_gflop_per_s"].get<double>());
  std::printf("  %.3f images/s, model load %.0f ms, peak RSS %.0f MiB\n",
              out["images_per_s"].get<double>(), load_ms, out["peak_rss_mib"].get<double>());
  return kExitOk;
}

}  // namespace

Command add_bench_command(CLI::App& parent) {
  auto o = std::make_shared<BenchOptions>();
  Command c;
  c.app = parent.add_subcommand("bench", "Per-stage timings of one image (median of --repeat runs)");
  auto* app = c.app;
  app->add_option("-m,--model", o->model, "Bundle directory (required unless --sam-model)");
  app->add_option("--sam-model", o->sam_model, "SAM bundle: time the automatic mask generator's stages instead");
  add_sam_generator_flags(*app, o->sam);
  app->add_option("-i,--image", o->image, "Image file (required unless --text-only)");
  add_class_flags(*app, o->class_flags);
  add_model_flags(*app, o->model_flags);
  add_segment_flags(*app, o->segment_flags);
  app->add_option("-r,--repeat", o->repeat, "Timed runs")->capture_default_str();
  app->add_option("--warmup", o->warmup, "Untimed runs first")->capture_default_str();
  app->add_flag("--json", o->json, "Print the results as JSON");
  app->add_flag("--quick", o->quick, "One run, no warm-up (for CI smoke tests)");
  app->add_option("--labels-out", o->labels_out, "Write the last run's label map to this .npy file (uint16)");
  app->add_option("--size", o->size,
                  "Resize the image to WIDTHxHEIGHT first, e.g. 12000x9000 to bench a large photo (the post stage "
                  "runs at the original size)");
  app->add_flag("--text-only", o->text_only,
                "Only the text features of the class list: cold, warm and from a fresh disk cache");
  c.run = [o] {
    if (!o->sam_model.empty())
      return run_sam_bench(o->sam_model, o->image, o->sam, o->model_flags.device, o->model_flags.threads, o->quick ? 1 : o->repeat,
                           o->quick ? 0 : o->warmup, o->json);
    if (o->model.empty()) throw Error(ErrorCode::kInvalidArgument, "bench: --model is required (or --sam-model)");
    return run_bench(*o);
  };
  return c;
}

}  // namespace ovseg::cli
