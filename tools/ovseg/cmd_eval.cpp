// `ovseg eval`: the reference's evaluation on the paper's five benchmarks (A-150, A-847, PC-59,
// PC-459, PAS-20) or a custom dataset in the same style, resumable and shardable.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
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

// One dataset's evaluation within a run (`--dataset ade150,ade847` runs several).
struct DatasetRun {
  eval::DatasetSpec spec;
  std::vector<std::string> classes;
  std::string split;
  std::string output;
  std::string checkpoint;
  SegmentOptions so;
  std::string weight_source;
  eval::EvalOptions o;
  eval::EvalSummary summary;
  std::unique_ptr<Progress> progress;
  std::exception_ptr error;
};

// The datasets of --dataset: one name, or several separated by commas (shared images analyzed once).
std::vector<std::string> dataset_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ',') {
      const auto b = cur.find_first_not_of(" \t"), e = cur.find_last_not_of(" \t");
      const std::string name = b == std::string::npos ? std::string() : cur.substr(b, e - b + 1);
      if (name.empty()) throw Error(ErrorCode::kInvalidArgument, "--dataset " + text + ": an empty name");
      if (std::find(out.begin(), out.end(), name) != out.end())
        throw Error(ErrorCode::kInvalidArgument, "--dataset " + text + ": " + name + " is given twice");
      if (name != "custom") (void)eval::dataset_spec(name);  // unknown: kInvalidArgument listing the known
      out.push_back(name);
      cur.clear();
    } else {
      cur += text[i];
    }
  }
  if (out.size() > 1 && std::find(out.begin(), out.end(), "custom") != out.end())
    throw Error(ErrorCode::kInvalidArgument, "--dataset custom cannot be combined with other datasets");
  return out;
}

// Analyses shared between the datasets' runs, by key (image content, model, settings): the first
// run to need one computes it, the others wait for it. Bounded: the runs walk the same sorted
// images, so a few entries suffice (an evicted one is computed again, the same numbers).
class SharedAnalyses {
 public:
  explicit SharedAnalyses(std::size_t capacity) : capacity_(capacity) {}
  std::shared_ptr<const Analysis> get(const std::string& key, const std::function<Analysis()>& analyze) {
    std::promise<std::shared_ptr<const Analysis>> promise;
    std::shared_future<std::shared_ptr<const Analysis>> future;
    bool mine = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = entries_.find(key);
      if (it != entries_.end()) {
        ++reused_;
        future = it->second;
      } else {
        mine = true;
        future = promise.get_future().share();
        entries_.emplace(key, future);
        order_.push_back(key);
        while (order_.size() > capacity_) {
          entries_.erase(order_.front());
          order_.pop_front();
        }
      }
    }
    if (mine) {
      try {
        promise.set_value(std::make_shared<const Analysis>(analyze()));
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    }
    return future.get();  // an image that failed to analyze fails in every run
  }
  long reused() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return reused_;
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_future<std::shared_ptr<const Analysis>>> entries_;
  std::deque<std::string> order_;
  long reused_ = 0;
};

int report_run(DatasetRun& r, const ModelInfo& info, bool quiet, bool strict, bool several) {
  const auto& s = r.summary;
  const std::string tag = several ? "eval " + r.spec.name : "eval";
  const auto problems = s.problems();
  const auto& t = s.state.timings;
  if (!quiet)
    std::fprintf(stderr, "%s: %zu images evaluated (%ld now), %zu skipped or failed, %lld images without "
                         "annotation left out; %.3f images/s on %s (%s); reports in %s\n",
                 tag.c_str(), s.state.finished.size(), s.evaluated_now, problems.size(),
                 static_cast<long long>(s.state.images_left_out),
                 t.wall_s > 0 ? static_cast<double>(t.images) / t.wall_s : 0.0, info.device.c_str(),
                 info.precision.c_str(), r.output.c_str());
  if (!problems.empty()) {
    std::fprintf(stderr, "%s: %zu files skipped or failed:\n", tag.c_str(), problems.size());
    for (const auto& p : problems)
      std::fprintf(stderr, "  %s: %s\n", printable(p.name).c_str(), printable(p.reason).c_str());
  }
  if (s.interrupted) {
    std::fprintf(stderr, "%s: interrupted after %zu of %lld images; continue with --resume (checkpoint %s)\n",
                 tag.c_str(), s.state.finished.size() + s.state.failed.size(),
                 static_cast<long long>(s.state.pairs_total), r.checkpoint.c_str());
    return kExitInterrupted;
  }
  if (s.aborted) {
    std::fprintf(stderr, "%s: --strict: stopped at the first failed image (%s); metrics.json is marked incomplete\n",
                 tag.c_str(), s.state.failed.empty() ? "?" : printable(s.state.failed.back().name).c_str());
    return kExitSomeFailed;
  }
  if (strict && !problems.empty()) {
    std::fprintf(stderr, "%s: --strict: %zu files were skipped (unpaired); metrics.json is marked incomplete\n",
                 tag.c_str(), problems.size());
    return kExitSomeFailed;
  }
  if (!s.state.complete())
    std::fprintf(stderr, "%s: incomplete: %zu of %lld images evaluated, %zu failed (metrics.json \"complete\": false)\n",
                 tag.c_str(), s.state.finished.size(), static_cast<long long>(s.state.pairs_total),
                 s.state.failed.size());
  if (several) std::printf("dataset=%s\n", r.spec.name.c_str());
  std::printf("mIoU_gt_classes=%.2f\n%s\n", s.metrics.miou_gt_classes, eval::headline(s.metrics).c_str());
  std::fflush(stdout);
  return problems.empty() ? kExitOk : kExitSomeFailed;
}

int run_eval(const EvalArgs& a, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  const auto& log = cli_log();

  // 1. Everything that can be checked before the (slow) model load, for every dataset.
  const std::vector<std::string> names = dataset_list(a.dataset);
  const bool several = names.size() > 1;
  const auto need = [&](bool given, const char* flag) {
    if (!given)
      throw Error(ErrorCode::kInvalidArgument, std::string("--dataset ") + a.dataset + " needs " + flag);
  };
  const eval::ShardSpec shard = eval::resolve_shard(a.shard, a.shards);
  const int shard_index = shard.index, shard_count = shard.count;
  if (shard_count > 1) log.info("shard {}/{} ({})", shard_index, shard_count, shard.source);
  const ModelOptions mo = model_options(a.model_flags);  // a bad --device fails before any work
  const eval::Oracle oracle = eval::parse_oracle(a.oracle);
  const SegmentOptions base = segment_options(a.segment_flags);
  if (oracle != eval::Oracle::kNone && base.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "--oracle runs on the evaluation path; it cannot be combined with --mode demo");
  if (base.clip_ensemble == false && base.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "eval: --maskformer-only needs --mode eval");
  if (base.clip_ensemble == false && oracle != eval::Oracle::kNone)
    throw Error(ErrorCode::kInvalidArgument, "eval: --oracle needs the CLIP branch; it cannot be combined with --maskformer-only");
  if (several && oracle != eval::Oracle::kNone)
    throw Error(ErrorCode::kInvalidArgument, "eval: --oracle evaluates one dataset at a time");
  if (several && !a.split.empty())
    throw Error(ErrorCode::kInvalidArgument, "eval: --split applies to one dataset at a time");

  std::vector<std::unique_ptr<DatasetRun>> runs;
  for (const auto& name : names) {
    auto r = std::make_unique<DatasetRun>();
    if (name == "custom") {
      need(!a.images_dir.empty(), "--images DIR");
      need(!a.labels_dir.empty(), "--labels DIR");
      need(!a.classes_file.empty(), "--classes-file FILE");
      if (!a.root.empty()) throw Error(ErrorCode::kInvalidArgument, "--root does not apply to --dataset custom");
      r->classes = read_class_file(a.classes_file);
      check_class_list(r->classes, a.classes_file);
      r->spec = eval::custom_dataset_spec(a.images_dir, a.labels_dir, static_cast<int>(r->classes.size()),
                                          a.ignore_label, a.image_ext, a.label_ext);
    } else {
      need(!a.root.empty(), "--root DIR");
      for (const char* flag : {"--images", "--labels", "--classes-file", "--ignore-label", "--image-ext", "--label-ext"})
        if (root.get_subcommand("eval")->count(flag))
          throw Error(ErrorCode::kInvalidArgument, std::string(flag) + " applies to --dataset custom only");
      r->spec = eval::dataset_spec(name);
      r->classes = preset_classes(r->spec.preset, a.presets_file);
    }
    r->split = a.split.empty() ? r->spec.default_split : a.split;
    (void)eval::list_dataset(r->spec, a.root, r->split);  // missing directory → exit 4
    std::string output = a.output;
    if (output.empty()) {
      output = "eval-" + r->spec.name + "-" + r->split;
      if (shard_count > 1) output += "-shard" + std::to_string(shard_index) + "of" + std::to_string(shard_count);
    } else if (several) {
      output = (fs::path(a.output) / r->spec.name).string();  // each dataset's outputs as its own run's
    }
    r->output = output;
    r->checkpoint = (fs::path(output) / eval::kCheckpointFile).string();
    // Temporaries that a killed earlier run (kill -9 during a checkpoint or report write) left.
    if (const std::size_t swept = sweep_stale_temporaries(output) +
                                  sweep_stale_temporaries((fs::path(output) / eval::kPredictionsDir).string()) +
                                  sweep_stale_temporaries((fs::path(output) / eval::kSemSegJsonPartsDir).string());
        swept > 0)
      log.info("eval: removed {} stale temporary file(s) of an interrupted run", swept);
    if (!a.resume && fs::exists(r->checkpoint))
      throw Error(ErrorCode::kInvalidArgument, r->checkpoint + ": a checkpoint of an earlier run exists; pass --resume "
                                                               "to continue it, or choose another --output");
    // The ensemble weight: -w, else the dataset's on the evaluation path, else the bundle's (the
    // library decides: eval::evaluation_options).
    r->so = eval::evaluation_options(r->spec, base, &r->weight_source);
    r->so.progress = [](const char*, float) { return !StopSignals::stop_requested(); };
    runs.push_back(std::move(r));
  }
  if (base.mode == Mode::kDemo)
    log.warn("--mode demo is not the reference's evaluation path; unlabeled pixels count as predicted nothing "
             "(row K of the confusion matrix, left out of the metrics as detectron2 would)");

  // 2. Model, and the text features of the datasets' classes once for the whole run.
  double text_ms = 0;
  const Model model = load_model(a.model, mo, runs.front()->classes, &text_ms);
  const auto& info = model.info();
  SharedAnalyses shared(runs.size() + 2);  // the runs walk the same images nearly in step
  eval::AnalysisProvider provider;
  if (several)
    provider = [&shared](const std::string& key, const std::function<Analysis()>& analyze) {
      return shared.get(key, analyze);
    };

  for (std::size_t i = 0; i < runs.size(); ++i) {
    DatasetRun& r = *runs[i];
    eval::EvalOptions& o = r.o;
    o.dataset = r.spec.name;
    if (r.spec.name == "custom") o.spec = r.spec;
    o.root = a.root;
    o.split = r.split;
    o.output_dir = r.output;
    o.class_names = r.classes;
    o.settings = eval::evaluation_settings(model, r.spec, r.so, oracle, r.weight_source);
    o.limit = a.limit;
    o.shard_index = shard_index;
    o.shard_count = shard_count;
    o.resume = a.resume;
    o.save_predictions = a.save_predictions;
    o.save_json = a.save_json;
    o.checkpoint_every = a.checkpoint_every;
    o.strict = a.strict;
    o.text_prepare_ms = i == 0 ? text_ms : model.prepare_classes(r.classes);
    // One progress bar: the first dataset's (the others walk the same images right behind it).
    const bool bar = i == 0 && !quiet;
    o.on_start = [&r, &log, bar, several](long todo, long done_before) {
      if (done_before > 0)
        log.info("{}resuming: {} images done, {} to go", several ? r.spec.name + ": " : "", done_before, todo);
      r.progress = std::make_unique<Progress>("images", todo, bar);
    };
    o.on_image = [&r](const eval::ImagePair& pair, const std::string&) {
      if (r.progress) r.progress->step(pair.stem);
    };
    o.should_stop = [] { return StopSignals::stop_requested(); };
  }

  {
    // First SIGINT/SIGTERM (e.g. from a scheduler): finish the image in flight, checkpoint, exit 130.
    const StopSignals stop_signals;
    auto evaluate = [&](DatasetRun& r) {
      try {
        r.summary = eval::run_evaluation(
            r.o, eval::model_predictor(model, r.spec, r.classes, r.so, oracle, a.model_flags.max_pixels, provider));
      } catch (...) {
        r.error = std::current_exception();
      }
    };
    if (!several) {
      evaluate(*runs.front());
    } else {
      // The datasets' runs side by side: each image is analyzed once, by whichever run reaches it
      // first, and classified by each with its own classes and weight.
      std::vector<std::thread> threads;
      for (auto& r : runs) threads.emplace_back(evaluate, std::ref(*r));
      for (auto& t : threads) t.join();
    }
  }
  for (auto& r : runs) {
    if (r->progress) r->progress->finish();
    if (r->error) std::rethrow_exception(r->error);
  }
  if (several && !quiet)
    std::fprintf(stderr, "eval: %zu datasets, %ld analyses shared between them\n", runs.size(), shared.reused());
  int code = kExitOk;
  for (auto& r : runs) {
    const int c = report_run(*r, info, quiet, a.strict, several);
    if (c == kExitInterrupted || (c != kExitOk && code == kExitOk)) code = c;
  }
  return code;
}

// "a, b, c"
std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The help's layout lines, from the library's dataset table (eval::dataset_spec): one owner.
std::string dataset_layouts() {
  std::string out;
  for (const std::string& name : eval::dataset_names()) {
    const eval::DatasetSpec& d = eval::dataset_spec(name);
    auto split = [](std::string dir) {
      const auto at = dir.find("{split}");
      if (at != std::string::npos) dir.replace(at, 7, "SPLIT");
      return dir;
    };
    std::string notes = (d.label_bit_depth == 16 ? "16-bit, " : "") + std::to_string(d.ignore_label) + " ignore";
    if (d.ensemble_weight) {
      char w[32];
      std::snprintf(w, sizeof w, "; -w %g", static_cast<double>(*d.ensemble_weight));
      notes += w;
    }
    out += "  " + name + ":" + std::string(name.size() < 7 ? 7 - name.size() : 1, ' ') + "ROOT/" + split(d.image_dir) +
           "/*" + d.image_ext + " + ROOT/" + split(d.label_dir) + "/*" + d.label_ext + " (" + notes + ")\n";
  }
  return out;
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
      "without annotation left out and counted, as detectron2's load_sem_seg does):\n" +
      dataset_layouts() +
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
  app->add_option("--dataset", a.dataset,
                  join(eval::dataset_names()) + " or custom; several separated by commas (ade150,ade847 or "
                  "pc59,pc459: each image analyzed once, each dataset's outputs in OUTPUT/DATASET)")
      ->required();
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
