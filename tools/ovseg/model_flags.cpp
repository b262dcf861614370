#include "model_flags.hpp"

#include "class_list.hpp"
#include "ovseg/eval.hpp"

#include <chrono>

#include "cli_log.hpp"

namespace ovseg::cli {

void add_model_flags(CLI::App& app, ModelFlags& flags) {
  app.add_option("-d,--device", flags.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--precision", flags.precision,
                 "fp32, bf16 (the CLIP visual tower in bfloat16, the rest fp32; CPUs with native bf16 only), "
                 "fp16 (CUDA) or auto (fp16 on CUDA, bf16 with native bf16, else fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "auto"}))
      ->capture_default_str();
  app.add_option("-j,--threads", flags.threads, "CPU threads of the model (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--no-text-cache", flags.no_text_cache, "Do not read or write the on-disk text feature cache");
  app.add_option("--max-pixels", flags.max_pixels,
                 "Refuse images of more pixels, from their header before decoding (decompression bombs); 0 = no "
                 "limit")
      ->capture_default_str();
}

ModelOptions model_options(const ModelFlags& flags) {
  check_device(flags.device);  // throws kInvalidArgument
  ModelOptions mo;
  mo.device = flags.device;
  mo.precision = parse_precision(flags.precision);
  mo.threads = flags.threads;
  mo.text_disk_cache = !flags.no_text_cache;
  return mo;
}

void add_segment_flags(CLI::App& app, SegmentFlags& flags) {
  app.add_option("--mode", flags.mode,
                 "eval: the reference's evaluation path (ensemble of both branches); demo: one region per "
                 "class, pixels may stay unlabeled")
      ->check(CLI::IsMember({"eval", "demo"}))
      ->capture_default_str();
  flags.mask_threshold_opt =
      app.add_option("-t,--mask-threshold", flags.mask_threshold,
                     "Mask probability threshold of a valid region [default: the bundle's for --mode; "
                     "'ovseg info' shows it]")
          ->check(CLI::Range(0.0f, 1.0f));
  flags.ensemble_weight_opt =
      app.add_option("-w,--ensemble-weight", flags.ensemble_weight,
                     "Weight of the CLIP branch in the ensemble [default: the bundle's for --mode; "
                     "'ovseg info' shows it]")
          ->check(CLI::Range(0.0f, 1.0f));
  app.add_flag("--maskformer-only", flags.maskformer_only,
               "No CLIP branch (CLIP_ENSEMBLE False, the paper's Table 6 ablation): MaskFormer's class scores "
               "only; --mode eval [default: the bundle's]");
}

SegmentOptions segment_options(const SegmentFlags& flags) {
  SegmentOptions so;
  so.mode = parse_mode(flags.mode);
  if (flags.mask_threshold_opt && flags.mask_threshold_opt->count()) so.mask_threshold = flags.mask_threshold;
  if (flags.ensemble_weight_opt && flags.ensemble_weight_opt->count()) so.ensemble_weight = flags.ensemble_weight;
  if (flags.maskformer_only) so.clip_ensemble = false;
  return so;
}

void add_class_flags(CLI::App& app, ClassFlags& flags) {
  flags.classes_opt = app.add_option("-c,--classes", flags.classes,
                                     "Comma-separated class names, e.g. \"sky,tree,red car\" (whitespace trimmed)");
  flags.classes_file_opt =
      app.add_option("-f,--classes-file", flags.classes_file,
                     "File with one class name per line (UTF-8; # comments; a comma stays in the name: \"road, route\"); "
                     "- reads it from stdin");
  flags.dataset_classes_opt =
      app.add_option("-p,--dataset-classes", flags.dataset_classes,
                     "Class list of a dataset: " + [] {
                       std::string names;
                       for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
                       return names;
                     }());
  // The old spelling, hidden: "preset" also names the exporter's model presets (swinB_vitL14).
  flags.preset_opt = app.add_option("--preset", flags.dataset_classes, "Deprecated: --dataset-classes")->group("");
  flags.classes_opt->excludes(flags.classes_file_opt)->excludes(flags.dataset_classes_opt)->excludes(flags.preset_opt);
  flags.classes_file_opt->excludes(flags.dataset_classes_opt)->excludes(flags.preset_opt);
  flags.dataset_classes_opt->excludes(flags.preset_opt);
}

std::vector<std::string> choose_classes(const ClassFlags& flags) {
  if (flags.classes_opt->count()) return parse_class_string(flags.classes);
  if (flags.classes_file_opt->count()) return read_class_file(flags.classes_file);
  if (flags.preset_opt->count())
    cli_log().warn("--preset is deprecated for class lists: use --dataset-classes {}", flags.dataset_classes);
  if (flags.dataset_classes_opt->count() || flags.preset_opt->count()) return preset_classes(flags.dataset_classes);
  throw Error(ErrorCode::kInvalidArgument,
              "no classes given: use --classes \"sky,tree,red car\", --classes-file FILE or --dataset-classes NAME");
}

Model load_model(const std::string& bundle_dir, const ModelOptions& options, const std::vector<std::string>& classes,
                 double* text_ms_out) {
  const auto& log = cli_log();
  const auto start = std::chrono::steady_clock::now();
  Model model = Model::load(bundle_dir, options);
  const auto& info = model.info();
  log.info("model {} loaded from {} on {} ({}) in {:.2f} s", info.name, info.bundle_dir, info.device, info.precision,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  const double text_ms = model.prepare_classes(classes);
  log.info("text features of {} classes in {:.0f} ms", classes.size(), text_ms);
  if (text_ms_out) *text_ms_out = text_ms;
  return model;
}

}  // namespace ovseg::cli
