// `ovseg eval`: the reference's evaluation on the paper's five benchmarks (A-150, A-847, PC-59,
// PC-459, PAS-20) or a custom dataset in the same style, resumable and shardable.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "class_list.hpp"
#include "commands.hpp"
#include "model_flags.hpp"
#include "cli_log.hpp"
#include "ovseg/eval.hpp"
#include "ovseg/io.hpp"
#include "ovseg/ovseg.hpp"
#include "progress.hpp"
#include "stop_signal.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

struct EvalArgs {
  std::string model;
  std::string dataset;
  std::string root;
  std::string split;  // default: the dataset's
  // --dataset custom
  std::string images_dir;
  std::string labels_dir;
  std::string classes_file;
  std::uint32_t ignore_label = 255;
  std::string image_ext = "jpg";
  std::string label_ext = "png";
  long limit = -1;
  std::string shard = "0/1";
  int shards = 0;
  bool resume = false;
  std::string output;
  bool save_predictions = false;
  bool save_json = false;
  ModelFlags model_flags;
  SegmentFlags segment_flags;
  std::string oracle = "none";
  int checkpoint_every = 20;
  bool strict = false;
  std::string presets_file;
};

// The bundle's identity: its manifest lists every file with its sha256 (checked at load).
std::string bundle_checksum(const std::string& bundle_dir) {
  return sha256_file((fs::path(bundle_dir) / "manifest.json").string());
}

std::string fixed6(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", static_cast<double>(v));
  return buf;
}

int run_eval(const EvalArgs& a, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  const auto& log = cli_log();

  // 1. Everything that can be checked before the (slow) model load.
  const bool custom = a.dataset == "custom";
  const auto need = [&](bool given, const char* flag) {
    if (!given)
      throw Error(ErrorCode::kInvalidArgument, std::string("--dataset ") + a.dataset + " needs " + flag);
  };
  std::vector<std::string> classes;
  eval::DatasetSpec spec;
  if (custom) {
    need(!a.images_dir.empty(), "--images DIR");
    need(!a.labels_dir.empty(), "--labels DIR");
    need(!a.classes_file.empty(), "--classes-file FILE");
    if (!a.root.empty()) throw Error(ErrorCode::kInvalidArgument, "--root does not apply to --dataset custom");
    classes = read_class_file(a.classes_file);
    check_class_list(classes, a.classes_file);
    spec = eval::custom_dataset_spec(a.images_dir, a.labels_dir, static_cast<int>(classes.size()), a.ignore_label,
                                     a.image_ext, a.label_ext);
  } else {
    need(!a.root.empty(), "--root DIR");
    for (const char* flag : {"--images", "--labels", "--classes-file", "--ignore-label", "--image-ext", "--label-ext"})
      if (root.get_subcommand("eval")->count(flag))
        throw Error(ErrorCode::kInvalidArgument, std::string(flag) + " applies to --dataset custom only");
    spec = eval::dataset_spec(a.dataset);
    classes = preset_classes(spec.preset, a.presets_file);
  }
  const std::string split = a.split.empty() ? spec.default_split : a.split;
  const eval::ShardSpec shard = eval::resolve_shard(a.shard, a.shards);
  const int shard_index = shard.index, shard_count = shard.count;
  if (shard_count > 1) log.info("shard {}/{} ({})", shard_index, shard_count, shard.source);
  const ModelOptions mo = model_options(a.model_flags);  // a bad --device fails before any work
  const eval::DatasetListing listing = eval::list_dataset(spec, a.root, split);  // missing directory → exit 4
  std::string output = a.output;
  if (output.empty()) {
    output = "eval-" + spec.name + "-" + split;
    if (shard_count > 1) output += "-shard" + std::to_string(shard_index) + "of" + std::to_string(shard_count);
  }
  const std::string checkpoint = (fs::path(output) / eval::kCheckpointFile).string();
  // Temporaries that a killed earlier run (kill -9 during a checkpoint or report write) left.
  if (const std::size_t swept = sweep_stale_temporaries(output) +
                                sweep_stale_temporaries((fs::path(output) / eval::kPredictionsDir).string()) +
                                sweep_stale_temporaries((fs::path(output) / eval::kSemSegJsonPartsDir).string());
      swept > 0)
    log.info("eval: removed {} stale temporary file(s) of an interrupted run", swept);
  if (!a.resume && fs::exists(checkpoint))
    throw Error(ErrorCode::kInvalidArgument, checkpoint + ": a checkpoint of an earlier run exists; pass --resume to "
                                                          "continue it, or choose another --output");
  SegmentOptions so = segment_options(a.segment_flags);
  const eval::Oracle oracle = eval::parse_oracle(a.oracle);
  if (oracle != eval::Oracle::kNone && so.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "--oracle runs on the evaluation path; it cannot be combined with --mode demo");
  // The ensemble weight: -w, else the dataset's (ov-seg GETTING_STARTED: 0.6 PC, 0.45 PAS-20) on
  // the evaluation path, else the bundle's (the config's 0.7, the commands).
  std::string weight_source = "bundle";
  if (so.ensemble_weight) {
    weight_source = "--ensemble-weight";
  } else if (so.mode == Mode::kEval && spec.ensemble_weight) {
    so.ensemble_weight = *spec.ensemble_weight;
    weight_source = "dataset default (ov-seg GETTING_STARTED)";
  }
  if (so.clip_ensemble == false && so.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "eval: --maskformer-only needs --mode eval");
  if (so.clip_ensemble == false && oracle != eval::Oracle::kNone)
    throw Error(ErrorCode::kInvalidArgument, "eval: --oracle needs the CLIP branch; it cannot be combined with --maskformer-only");
  so.progress = [](const char*, float) { return !StopSignals::stop_requested(); };
  if (so.mode == Mode::kDemo)
    log.warn("--mode demo is not the reference's evaluation path; unlabeled pixels count as predicted nothing "
             "(row K of the confusion matrix, left out of the metrics as detectron2 would)");

  // 2. Model, and the text features of the dataset's classes once for the whole run.
  double text_ms = 0;
  const Model model = load_model(a.model, mo, classes, &text_ms);
  const auto& info = model.info();

  const SegmentSettings settings = model.settings(so);

  eval::EvalOptions o;
  o.dataset = spec.name;
  if (custom) o.spec = spec;
  o.root = a.root;
  o.split = split;
  o.output_dir = output;
  o.class_names = classes;
  // What the numbers depend on: a resumed run and merged shards must agree on all of it.
  o.settings = {{"model", info.name},
                {"model_sha256", info.source_sha256},
                {"bundle_sha256", bundle_checksum(info.bundle_dir)},
                {"mode", to_string(settings.mode)},
                {"mask_threshold", fixed6(settings.mask_threshold)},
                {"ensemble_weight", fixed6(settings.ensemble_weight)},
                {"ensemble_weight_source", weight_source},
                {"oracle", eval::to_string(oracle)},
                {"precision", info.precision}};
  // What an oracle does not use is recorded as such (the numbers do not depend on it).
  if (oracle == eval::Oracle::kMasks) o.settings["mask_threshold"] = "unused (oracle masks)";
  if (oracle != eval::Oracle::kNone) {
    o.settings["ensemble_weight"] = "unused (oracle " + std::string(eval::to_string(oracle)) + ")";
    o.settings["ensemble_weight_source"] = "-";
  }
  if (custom) {
    o.settings["images"] = a.images_dir;
    o.settings["labels"] = a.labels_dir;
    o.settings["ignore_label"] = std::to_string(spec.ignore_label);
  }
  if (!settings.clip_ensemble) o.settings["clip_ensemble"] = "false";
  o.limit = a.limit;
  o.shard_index = shard_index;
  o.shard_count = shard_count;
  o.resume = a.resume;
  o.save_predictions = a.save_predictions;
  o.save_json = a.save_json;
  o.checkpoint_every = a.checkpoint_every;
  o.strict = a.strict;
  o.text_prepare_ms = text_ms;
  std::unique_ptr<Progress> progress;
  o.on_start = [&](long todo, long done_before) {
    if (done_before > 0) log.info("resuming: {} images done, {} to go", done_before, todo);
    progress = std::make_unique<Progress>("images", todo, !quiet);
  };
  o.on_image = [&](const eval::ImagePair& pair, const std::string&) {
    if (progress) progress->step(pair.stem);
  };
  o.should_stop = [] { return StopSignals::stop_requested(); };

  const eval::Predictor predict = [&](const eval::ImagePair& pair, int label_w, int label_h) {
    const Image image = load_image(pair.image_path, a.model_flags.max_pixels);
    if (image.width != label_w || image.height != label_h)
      throw Error(ErrorCode::kBadData, pair.image_path + ": image is " + std::to_string(image.width) + "x" +
                                           std::to_string(image.height) + " but its label " + pair.label_path +
                                           " is " + std::to_string(label_w) + "x" + std::to_string(label_h));
    Result r;
    if (oracle == eval::Oracle::kNone) {
      r = model.segment(image.view(), classes, so);
    } else {
      const eval::LabelImage gt = eval::read_ground_truth(spec, pair.label_path);
      const eval::GroundTruthView view{gt.values.data(), gt.width, gt.height, spec.ignore_label};
      r = eval::segment_with_oracle(model, image.view(), classes, so, oracle, view);
    }
    eval::Prediction p;
    p.labels.width = r.width;
    p.labels.height = r.height;
    p.labels.bit_depth = 16;
    p.labels.values = std::move(r.labels);
    p.timings = r.timings;
    return p;
  };

  eval::EvalSummary s;
  {
    // First SIGINT/SIGTERM (e.g. from a scheduler): finish the image in flight, checkpoint, exit 130.
    const StopSignals stop_signals;
    s = eval::run_evaluation(o, predict);
  }
  if (progress) progress->finish();

  const auto problems = s.problems();
  const auto& t = s.state.timings;
  if (!quiet)
    std::fprintf(stderr, "eval: %zu images evaluated (%ld now), %zu skipped or failed, %lld images without "
                         "annotation left out; %.3f images/s on %s (%s); reports in %s\n",
                 s.state.finished.size(), s.evaluated_now, problems.size(),
                 static_cast<long long>(s.state.images_left_out),
                 t.wall_s > 0 ? static_cast<double>(t.images) / t.wall_s : 0.0, info.device.c_str(),
                 info.precision.c_str(), output.c_str());
  if (!problems.empty()) {
    std::fprintf(stderr, "eval: %zu files skipped or failed:\n", problems.size());
    for (const auto& p : problems)
      std::fprintf(stderr, "  %s: %s\n", printable(p.name).c_str(), printable(p.reason).c_str());
  }
  if (s.interrupted) {
    std::fprintf(stderr, "eval: interrupted after %zu of %lld images; continue with --resume (checkpoint %s)\n",
                 s.state.finished.size() + s.state.failed.size(), static_cast<long long>(s.state.pairs_total),
                 checkpoint.c_str());
    return kExitInterrupted;
  }
  if (s.aborted) {
    std::fprintf(stderr, "eval: --strict: stopped at the first failed image (%s); metrics.json is marked incomplete\n",
                 s.state.failed.empty() ? "?" : s.state.failed.back().name.c_str());
    return kExitSomeFailed;
  }
  if (a.strict && !problems.empty()) {
    std::fprintf(stderr, "eval: --strict: %zu files were skipped (unpaired); metrics.json is marked incomplete\n",
                 problems.size());
    return kExitSomeFailed;
  }
  if (!s.state.complete())
    std::fprintf(stderr, "eval: incomplete: %zu of %lld images evaluated, %zu failed (metrics.json \"complete\": false)\n",
                 s.state.finished.size(), static_cast<long long>(s.state.pairs_total), s.state.failed.size());
  std::printf("mIoU_gt_classes=%.2f\n%s\n", s.metrics.miou_gt_classes, eval::headline(s.metrics).c_str());
  std::fflush(stdout);
  return problems.empty() ? kExitOk : kExitSomeFailed;
}

}  // namespace

Command add_eval_command(CLI::App& parent) {
  auto args = std::make_shared<EvalArgs>();
  EvalArgs& a = *args;
  Command c;
  CLI::App* app = parent.add_subcommand(
      "eval", "Evaluate on A-150, A-847, PC-59, PC-459, PAS-20 or a custom dataset with the reference's metrics "
              "(resumable, shardable)");
  c.app = app;
  app->footer(
      "Layouts (as ov-seg's preparation scripts leave them; images and labels paired by file stem, images\n"
      "without annotation left out and counted, as detectron2's load_sem_seg does):\n"
      "  ade150: ROOT/ADEChallengeData2016/images/SPLIT/*.jpg + annotations_detectron2/SPLIT/*.png (255 ignore)\n"
      "  ade847: ROOT/ADE20K_2021_17_01/images_detectron2/SPLIT/*.jpg + annotations_detectron2/SPLIT/*.tif "
      "(65535 ignore)\n"
      "  pc59:   ROOT/VOCdevkit/VOC2010/JPEGImages/*.jpg + annotations_detectron2/pc59_val/*.png (255 ignore; -w 0.6)\n"
      "  pc459:  ROOT/VOCdevkit/VOC2010/JPEGImages/*.jpg + annotations_detectron2/pc459_val/*.tif "
      "(16-bit, 65535 ignore; -w 0.6)\n"
      "  voc20:  ROOT/VOCdevkit/VOC2012/JPEGImages/*.jpg + annotations_detectron2/val/*.png (255 ignore; -w 0.45)\n"
      "  custom: --images DIR --labels DIR --classes-file F [--ignore-label N --image-ext jpg --label-ext png]\n"
      "Outputs in --output: metrics.json, per_class.csv, metrics.md, checkpoint.json (and predictions/,\n"
      "sem_seg_predictions.json with its per-image parts in sem_seg_json/).\n"
      "mIoU is detectron2 0.6's formula as ov-seg reports it (classes predicted but absent from the GT count);\n"
      "mIoU_gt_classes averages over the classes present in the GT (detectron2 since July 2022).\n"
      "Shards: run --shard I/N for I = 0..N-1, or --shard auto in each task of a Slurm array (sbatch --array=0-15)\n"
      "or a Kubernetes Indexed Job, with --resume so a requeued task continues; then 'ovseg eval-merge'.\n"
      "Exit codes: 0 done; 1 done, some files failed (named); 2 usage error or the model could not be loaded;\n"
      "4 the dataset or output directory is unusable; 5 the computation failed; 130 stopped by SIGINT/SIGTERM\n"
      "after writing the checkpoint (run again with --resume).");
  app->add_option("-m,--model", a.model, "Model bundle directory (written by ovseg-export)")->required();
  app->add_option("--dataset", a.dataset, "ade150, ade847, pc59, pc459, voc20 or custom")
      ->required()
      ->check(CLI::IsMember({"ade150", "ade847", "pc59", "pc459", "voc20", "custom"}));
  app->add_option("--root", a.root, "Datasets directory (detectron2's DETECTRON2_DATASETS)");
  app->add_option("--split", a.split,
                  "Split directory name (ADE) [default: validation; PC / PAS-20 / custom: val, a label only]");
  app->add_option("--images", a.images_dir, "custom: the images folder");
  app->add_option("--labels", a.labels_dir, "custom: the label maps folder (one per image stem)");
  app->add_option("--classes-file", a.classes_file, "custom: class names in label order, one per line");
  app->add_option("--ignore-label", a.ignore_label, "custom: label value to ignore (>= the number of classes)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app->add_option("--image-ext", a.image_ext, "custom: image file extension")->capture_default_str();
  app->add_option("--label-ext", a.label_ext, "custom: label file extension (png, or tif for 16-bit)")
      ->capture_default_str();
  app->add_option("--limit", a.limit, "Evaluate only the first N images (of the shard)")->check(CLI::NonNegativeNumber);
  app->add_option("--shard", a.shard,
                  "I/N: evaluate images with index % N == I (over the sorted pairs); auto: I and N of the Slurm "
                  "array task or Kubernetes Indexed Job this runs in")
      ->capture_default_str();
  app->add_option("--shards", a.shards,
                  "With --shard auto in a Kubernetes Indexed Job: N (the Job's completions) [default: "
                  "$OVSEG_SHARD_COUNT]; elsewhere a check of N")
      ->check(CLI::PositiveNumber);
  app->add_flag("--resume", a.resume, "Continue from OUTPUT/checkpoint.json (same numbers as one uninterrupted run)");
  app->add_option("-o,--output", a.output, "Output directory [default: eval-DATASET-SPLIT[-shardIofN]]");
  app->add_flag("--save-predictions", a.save_predictions,
                "Write each label map to OUTPUT/predictions/STEM.png, or .tif for the 16-bit datasets");
  app->add_flag("--save-json", a.save_json,
                "Write OUTPUT/sem_seg_predictions.json as detectron2's SemSegEvaluator does (file_name, category_id, "
                "COCO RLE with pycocotools' compressed counts)");
  add_model_flags(*app, a.model_flags);
  add_segment_flags(*app, a.segment_flags);
  app->add_option("--oracle", a.oracle,
                  "The paper's §3 analysis. masks: the ground-truth segments (one per class present) replace the "
                  "proposals and are classified by CLIP through the region path (measures CLIP on masked images; "
                  "paper: 20.1 mIoU on A-150 with pretrained CLIP). labels: each proposal takes the ground-truth "
                  "class covering most of its mask, one-hot (measures the proposals; paper: 66.5)")
      ->check(CLI::IsMember({"none", "masks", "labels"}))
      ->capture_default_str();
  // eval's weight default depends on the dataset too.
  a.segment_flags.ensemble_weight_opt->description(
      "Weight of the CLIP branch [default: 0.6 PC-59/459, 0.45 PAS-20 (ov-seg's commands); else the bundle's "
      "for --mode, 'ovseg info' shows it]");
  app->add_flag("--strict", a.strict,
                "Fail the run (exit 1) at the first image that fails, and on unpaired files; without it, failed "
                "images are listed and metrics.json says \"complete\": false");
  app->add_option("--checkpoint-every", a.checkpoint_every, "Write the checkpoint every N images")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app->add_option("--presets-file", a.presets_file,
                  "Class lists JSON [default: $OVSEG_PRESETS, else PREFIX/share/ovseg/class_lists.json]");
  c.run = [args, &parent] { return run_eval(*args, parent); };
  return c;
}

}  // namespace ovseg::cli
