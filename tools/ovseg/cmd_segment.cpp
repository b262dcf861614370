// `ovseg segment`: images in, label maps (and optional overlays, JSON reports, score maps) out.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <set>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "class_list.hpp"
#include "commands.hpp"
#include "model_flags.hpp"
#include "ovseg/io.hpp"
#include "cli_log.hpp"
#include "inputs.hpp"
#include "ovseg/eval.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/sam.hpp"
#include "progress.hpp"
#include "sam_flags.hpp"
#include "segment_output.hpp"
#include "stop_signal.hpp"
#include "video.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

struct SegmentArgs {
  std::string model;
  ClassFlags class_flags;
  SegmentFlags segment_flags;
  ModelFlags model_flags;
  std::string output = ".";
  bool save_scores = false;
  bool overlay = false;
  bool json = false;
  bool recursive = false;
  bool skip_existing = false;
  std::string shard;  // empty: every image
  int shards = 0;
  std::vector<std::string> inputs;
  // --proposals sam (ov-seg's online demo): SAM masks classified with the bundle's CLIP.
  std::string proposals = "maskformer";
  std::string sam_model;
  double granularity = 1.0;
  std::string sam_classifier = "demo";
  std::string analysis_cache;  // --analysis-cache DIR: analyses by image content, bundle and settings
  SamGeneratorOptions sam_generator = SamSegmentOptions::demo_generator_options();
  // Video inputs (video.hpp): --every, --max-frames, --start.
  int every = 1;
  long max_frames = 0;
  double start_s = 0.0;
};

// A library message usually starts with the file it is about; don't repeat the path.
std::string reason_for(const std::string& path, const std::string& message) {
  if (message.rfind(path, 0) == 0 && message.size() > path.size() + 2 && message[path.size()] == ':')
    return message.substr(path.size() + 2);
  return message;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Decoded {
  bool ok = false;
  std::string error;
  Image image;
  double decode_ms = 0;
  std::string sha256;  // of the file's bytes (--analysis-cache)
  bool video = false;  // a video file: segmented frame by frame (video.hpp), not decoded here
};

// --analysis-cache: what a run reused and wrote.
struct AnalysisCacheStats {
  long reused = 0;
  long analyzed = 0;
  long refused = 0;  // unreadable cache files, analyzed again
  std::uint64_t bytes_written = 0;
};

// The analysis of one image through the cache: DIR/<2 hex>/<key>.ovsa, keyed by the image's
// content, the model's fingerprint and the settings (Model::analysis_key), never by its name. A
// file that does not load (corrupt, truncated, another format version) is analyzed again and
// replaced; writes are atomic, so concurrent runs (a Slurm array) never leave a torn file.
Analysis cached_analysis(const Model& model, const std::string& cache_dir, const Decoded& d,
                         const SegmentOptions& so, const std::string& path, AnalysisCacheStats& stats) {
  const std::string key = model.analysis_key(d.sha256, so);
  const std::string file = (fs::path(cache_dir) / key.substr(0, 2) / (key + ".ovsa")).string();
  std::error_code ec;
  if (fs::is_regular_file(file, ec)) {
    try {
      Analysis a = Analysis::load(file);
      ++stats.reused;
      cli_log().debug("{}: analysis reused from {} ({:.1f} MB)", path, file, static_cast<double>(a.bytes()) / 1e6);
      return a;
    } catch (const Error& e) {
      ++stats.refused;
      cli_log().warn("{}: cached analysis refused ({}); analyzing again", path, e.what());
    }
  }
  Analysis a = model.analyze(d.image.view(), so);
  a.save(file);
  ++stats.analyzed;
  const auto size = fs::file_size(file, ec);
  if (!ec) stats.bytes_written += size;
  cli_log().debug("{}: analysis written to {} ({:.1f} MB)", path, file, ec ? 0.0 : static_cast<double>(size) / 1e6);
  return a;
}

int run_segment(SegmentArgs& a, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  const auto& log = cli_log();

  // 1. Classes.
  if (a.class_flags.classes_file_opt->count() && a.class_flags.classes_file == "-" &&
      std::find(a.inputs.begin(), a.inputs.end(), "-") != a.inputs.end())
    throw Error(ErrorCode::kInvalidArgument,
                "segment: stdin can hold the class list (-f -) or the list of images (-), not both");
  const std::vector<std::string> classes = choose_classes(a.class_flags);

  // 2. Options that the library would only reject after the model is loaded (and a bundle path
  // that is plainly wrong: a resumed run that finds nothing to do never loads the model).
  {
    std::error_code ec;
    if (!fs::is_directory(a.model, ec))
      throw Error(ErrorCode::kBadModel, a.model + ": bundle directory not found");
  }
  const ModelOptions mo = model_options(a.model_flags);
  SegmentOptions so = segment_options(a.segment_flags);
  if (so.clip_ensemble == false && so.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "segment: --maskformer-only needs --mode eval (the reference's demo "
                                             "path uses the CLIP branch's regions)");
  so.keep_scores = a.save_scores;
  so.progress = [](const char*, float) { return !StopSignals::stop_requested(); };

  // 3. Inputs and their output names, checked before the (slow) model load.
  if (a.inputs.empty())
    throw Error(ErrorCode::kInvalidArgument,
                "segment: no INPUT given (image files, directories, or - to read a list of paths from stdin)");
  if (a.shards > 0 && a.shard.empty()) throw Error(ErrorCode::kInvalidArgument, "segment: --shards needs --shard auto");
  const eval::ShardSpec shard = a.shard.empty() ? eval::ShardSpec{} : eval::resolve_shard(a.shard, a.shards);
  auto images = expand_inputs(a.inputs, a.recursive, std::cin, a.output);
  if (images.empty())
    throw Error(ErrorCode::kInvalidArgument, "segment: no images found in the inputs given" +
                                                 std::string(a.recursive ? "" : " (use --recursive for subdirectories)"));
  check_output_collisions(images, a.output, a.overlay, a.json, a.save_scores);
  if (!a.shard.empty()) {
    // Over the sorted output names (relative paths, unique after the collision check), so every
    // image lands in exactly one shard whatever order the inputs were listed in.
    std::vector<std::string> keys;
    keys.reserve(images.size());
    for (const auto& im : images) keys.push_back(im.out_stem);
    std::vector<InputImage> mine;
    for (std::size_t i : eval::shard_positions(keys, shard.index, shard.count)) mine.push_back(std::move(images[i]));
    log.info("shard {}/{} ({}): {} of {} images", shard.index, shard.count, shard.source, mine.size(), images.size());
    images = std::move(mine);
    if (images.empty()) {
      if (!quiet) std::fprintf(stderr, "segment: 0 images in shard %d/%d\n", shard.index, shard.count);
      return kExitOk;
    }
  }
  {
    std::error_code ec;
    fs::create_directories(a.output, ec);
    if (ec) throw Error(ErrorCode::kIo, a.output + ": cannot create the output directory (" + ec.message() + ")");
  }
  // Temporaries that a killed earlier run left in the directories this run writes to.
  {
    std::set<std::string> dirs;
    for (const auto& im : images)
      dirs.insert(fs::path(output_paths(a.output, im.out_stem, false, false, false)[0]).parent_path().string());
    std::size_t swept = 0;
    for (const auto& d : dirs) swept += sweep_stale_temporaries(d);
    if (swept > 0) log.info("segment: removed {} stale temporary file(s) of an interrupted run", swept);
  }
  // Special files (FIFOs, sockets, devices) are refused before anything is read: reading one
  // could block forever or never end. They fail like any other bad input; the batch goes on.
  struct Failure {
    std::size_t index;
    std::string reason;
  };
  std::vector<Failure> failures;
  std::vector<std::size_t> todo;
  std::vector<char> is_video(images.size(), 0);  // by the file's first bytes, not its name
  for (std::size_t i = 0; i < images.size(); ++i) {
    std::error_code ec;
    const auto st = fs::status(images[i].path, ec);
    if (!ec && fs::exists(st) && !fs::is_regular_file(st) && !fs::is_directory(st)) {
      struct ::stat sb {};
      const std::string kind = ::stat(images[i].path.c_str(), &sb) == 0 ? file_kind(sb.st_mode) : "special file";
      failures.push_back({i, "not a regular file (" + kind + "); refused without reading it"});
      continue;
    }
    if (a.skip_existing && fs::exists(output_paths(a.output, images[i].out_stem, false, false, false)[0], ec)) {
      log.debug("{}: skipped, {}.png exists", images[i].path, images[i].out_stem);
      continue;
    }
    todo.push_back(i);
    is_video[i] = looks_like_video(images[i].path);
  }
  if (a.save_scores && a.max_frames == 0)
    for (std::size_t i : todo)
      if (is_video[i]) {
        const VideoProbe p = probe_video(images[i].path);
        const double mb = static_cast<double>(classes.size()) * p.width * p.height * 4 / 1e6;
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("segment: --save-scores on a video ({}: {} frames of {}x{}) writes {:.1f} MB of scores "
                                "per segmented frame; too large for a whole video: bound it with --max-frames N",
                                printable(images[i].path), p.frames, p.width, p.height, mb));
      }
  const long skipped = static_cast<long>(images.size() - todo.size() - failures.size());
  if (todo.empty() && failures.empty()) {  // a finished run resumed: no need to load the model
    if (!quiet) std::fprintf(stderr, "segment: 0 images, 0 failed, %ld skipped (all outputs exist)\n", skipped);
    return kExitOk;
  }
  if (todo.empty()) {  // nothing readable: no need to load the model either
    std::fprintf(stderr, "segment: %zu of %zu images failed:\n", failures.size(), failures.size());
    for (const auto& f : failures)
      std::fprintf(stderr, "  %s: %s\n", printable(images[f.index].path).c_str(), printable(f.reason).c_str());
    return kExitSomeFailed;
  }

  // 4. Model and text features (once for the whole run).
  const bool use_sam = a.proposals == "sam";
  std::optional<Model> model_storage;
  std::optional<SamSegmenter> sam_storage;
  SamSegmentOptions sam_options;
  OutputRequest request;
  request.dir = a.output;
  request.overlay = a.overlay;
  request.json = a.json;
  request.save_scores = a.save_scores;
  const ModelInfo* info_ptr = nullptr;
  if (use_sam) {
    if (a.sam_model.empty()) throw Error(ErrorCode::kInvalidArgument, "segment: --proposals sam needs --sam-model DIR");
    if (!a.analysis_cache.empty())
      throw Error(ErrorCode::kInvalidArgument, "segment: --analysis-cache works with --proposals maskformer only");
    sam_options.generator = a.sam_generator;
    sam_options.granularity = a.granularity;
    sam_options.classifier = parse_sam_classifier(a.sam_classifier);
    sam_options.keep_scores = a.save_scores;
    validate(sam_options.generator);
    sam_storage.emplace(SamSegmenter::load(a.model, a.sam_model, mo));
    info_ptr = &sam_storage->info();
    request.sam = SamReport{sam_storage->sam().info().bundle_dir, to_string(sam_options.classifier),
                            sam_options.granularity};
  } else {
    ModelOptions lazy = mo;
    // Cached analyses need only the text tower: the other modules load when an image misses.
    lazy.lazy_modules = !a.analysis_cache.empty();
    model_storage.emplace(load_model(a.model, lazy, classes));
    info_ptr = &model_storage->info();
  }
  const ModelInfo& info = *info_ptr;

  // 5. The loop: decoding the next image and writing the previous one overlap the model.
  // First SIGINT/SIGTERM: finish the image in flight, write the summary, exit 130.
  const StopSignals stop_signals;
  long done = 0;
  const std::size_t n = todo.size();
  Progress progress("images", static_cast<long>(n), !quiet);
  auto fail = [&](std::size_t i, const std::string& reason) {
    failures.push_back({i, reason_for(images[i].path, reason)});
    progress.step(images[i].path);
  };

  const std::uint64_t max_pixels = a.model_flags.max_pixels;
  const bool use_cache = !a.analysis_cache.empty();
  AnalysisCacheStats cache_stats;
  if (use_cache) {  // temporaries of a run killed while it wrote an analysis (only dead processes')
    std::error_code ec;
    std::size_t swept = 0;
    for (const auto& e : fs::directory_iterator(a.analysis_cache, ec))
      if (e.is_directory(ec) && e.path().filename().string().size() == 2) swept += sweep_stale_temporaries(e.path().string());
    if (swept > 0) log.info("segment: removed {} stale temporary file(s) from the analysis cache", swept);
  }
  auto decode = [&images, &is_video, max_pixels, use_cache](std::size_t i) {
    Decoded d;
    if (is_video[i]) {
      d.ok = d.video = true;
      return d;
    }
    try {
      const auto start = std::chrono::steady_clock::now();
      d.image = load_image(images[i].path, max_pixels);
      d.decode_ms = seconds_since(start) * 1000.0;
      if (use_cache) d.sha256 = sha256_file(images[i].path);
      d.ok = true;
    } catch (const std::exception& e) {
      d.error = e.what();
      if (is_video_extension(fs::path(images[i].path).extension().string()))
        d.error = images[i].path + ": neither a video (no container signature this build knows) nor an image (" +
                  reason_for(images[i].path, d.error) + ")";
    }
    return d;
  };
  // Videos: frame by frame (video.hpp). A frame in flight is finished on SIGINT/SIGTERM (no
  // cancelling callback); the video then stops with its outputs finalised.
  SegmentOptions video_so = so;
  video_so.progress = nullptr;
  const FrameSegmenter segment_frame = [&](const ImageView& frame) {
    if (sam_storage) return sam_storage->segment(frame, classes, sam_options).result;
    return model_storage->segment(frame, classes, video_so);
  };
  VideoOptions video_options;
  video_options.every = a.every;
  video_options.max_frames = a.max_frames;
  video_options.start_s = a.start_s;
  video_options.max_pixels = max_pixels;
  video_options.progress = !quiet;
  video_options.quiet = quiet;
  if (use_cache && std::any_of(todo.begin(), todo.end(), [&](std::size_t i) { return is_video[i] != 0; }))
    log.warn("segment: --analysis-cache is not used for videos (their frames are segmented directly)");
  struct PendingWrite {
    std::size_t index = 0;
    std::future<std::string> result;
  };
  std::unique_ptr<PendingWrite> pending;
  auto finish_pending = [&] {
    if (!pending) return;
    const std::string err = pending->result.get();
    if (err.empty()) {
      ++done;
      progress.step(images[pending->index].path);
    } else {
      fail(pending->index, err);
    }
    pending.reset();
  };

  std::future<Decoded> next = std::async(std::launch::async, decode, todo[0]);
  std::size_t started = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = todo[k];
    Decoded d = next.get();
    if (StopSignals::stop_requested()) break;
    if (k + 1 < n) next = std::async(std::launch::async, decode, todo[k + 1]);
    started = k + 1;
    if (!d.ok) {
      fail(i, d.error);
      continue;
    }
    if (d.video) {
      finish_pending();
      const VideoOutcome v = segment_video(info, request, images[i], video_options, segment_frame);
      if (!v.ok) fail(i, v.error);
      else if (v.frames > 0) ++done, progress.step(images[i].path);
      if (v.interrupted) break;
      continue;
    }
    auto result = std::make_shared<Result>();
    auto regions = std::make_shared<std::vector<SamRegion>>();
    try {
      if (sam_storage) {
        SamSegmentation ss = sam_storage->segment(d.image.view(), classes, sam_options);
        if (!ss.message.empty()) log.warn("{}: {}", images[i].path, ss.message);
        *result = std::move(ss.result);
        *regions = std::move(ss.regions);
      } else if (use_cache) {
        const Analysis analysis = cached_analysis(*model_storage, a.analysis_cache, d, so, images[i].path, cache_stats);
        *result = model_storage->classify(analysis, classes, so);
      } else {
        *result = model_storage->segment(d.image.view(), classes, so);
      }
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kCancelled) {
        started = k;
        break;
      }
      fail(i, e.what());
      continue;
    } catch (const std::exception& e) {
      fail(i, e.what());
      continue;
    }
    finish_pending();
    auto image = std::make_shared<Image>(std::move(d.image));
    pending = std::make_unique<PendingWrite>();
    pending->index = i;
    pending->result = std::async(std::launch::async, [&info, &request, &images, i, image, result, regions,
                                                      ms = d.decode_ms] {
      try {
        write_segment_outputs(info, request, images[i], *image, *result, ms, regions.get());
        return std::string();
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
    });
  }
  finish_pending();
  if (next.valid()) next.wait();
  progress.finish();

  // 6. Summary: the rate counts the images that were segmented and written.
  const double secs = progress.elapsed_s();
  const long attempted = done + static_cast<long>(failures.size());
  const bool interrupted = StopSignals::stop_requested();
  if (!quiet) {
    const std::string tail = interrupted ? ", interrupted: " + std::to_string(n - started) + " not started" : "";
    std::fprintf(stderr, "segment: %ld images, %zu failed, %ld skipped, %.2f images/s (%.1f s, %s, %s)%s\n",
                 attempted, failures.size(), skipped, secs > 0 ? done / secs : 0.0, secs, info.device.c_str(),
                 info.precision.c_str(), tail.c_str());
  }
  if (use_cache && !quiet) {
    const double mb = static_cast<double>(cache_stats.bytes_written) / 1e6;
    std::fprintf(stderr, "segment: analysis cache %s: %ld reused, %ld analyzed", a.analysis_cache.c_str(),
                 cache_stats.reused, cache_stats.analyzed);
    if (cache_stats.refused > 0) std::fprintf(stderr, " (%ld unreadable, replaced)", cache_stats.refused);
    if (cache_stats.analyzed > 0)
      std::fprintf(stderr, ", %.1f MB written (%.2f MB per image)", mb, mb / static_cast<double>(cache_stats.analyzed));
    std::fprintf(stderr, "\n");
  }
  if (!failures.empty()) {
    std::sort(failures.begin(), failures.end(), [](const Failure& x, const Failure& y) { return x.index < y.index; });
    std::fprintf(stderr, "segment: %zu of %ld images failed:\n", failures.size(), attempted);
    for (const auto& f : failures)
      std::fprintf(stderr, "  %s: %s\n", printable(images[f.index].path).c_str(), printable(f.reason).c_str());
  }
  if (interrupted) return 130;
  return failures.empty() ? kExitOk : kExitSomeFailed;
}

}  // namespace

Command add_segment_command(CLI::App& parent) {
  auto args = std::make_shared<SegmentArgs>();
  SegmentArgs& a = *args;
  Command c;
  CLI::App* app = parent.add_subcommand("segment", "Segment images with any list of class names");
  c.app = app;
  app->add_option("-m,--model", a.model, "Model bundle directory (written by ovseg-export)")->required();
  add_class_flags(*app, a.class_flags);
  add_segment_flags(*app, a.segment_flags);
  add_model_flags(*app, a.model_flags);
  app->add_option("--proposals", a.proposals,
                  "maskformer: the bundle's proposals; sam: segment-anything masks classified as ov-seg's online "
                  "demo does (needs --sam-model)")
      ->check(CLI::IsMember({"maskformer", "sam"}))
      ->capture_default_str();
  app->add_option("--sam-model", a.sam_model, "SAM bundle directory (tools/ovseg-export-sam), with --proposals sam");
  app->add_option("--granularity", a.granularity,
                  "--proposals sam: 1 = the best region per class; g < 1 = every region scoring above g x the "
                  "class's best")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app->add_option("--sam-classifier", a.sam_classifier,
                  "--proposals sam: demo (the online demo: no mask prompt, \"a photo of {}\") or ovseg (mask "
                  "prompts and the bundle's templates)")
      ->check(CLI::IsMember({"demo", "ovseg"}))
      ->capture_default_str();
  add_sam_generator_flags(*app, a.sam_generator);
  app->add_option("--analysis-cache", a.analysis_cache,
                  "Keep each image's class-agnostic analysis (proposals, regions, CLIP embeddings) in DIR, keyed by "
                  "the image's content, the bundle and the settings: a later run with another class list reuses it "
                  "and loads only the text tower (not with --proposals sam)");
  app->add_option("-o,--output", a.output, "Output directory (created if missing)")->capture_default_str();
  app->add_flag("--overlay", a.overlay, "Also write STEM.overlay.png: image, class colours, names and a legend");
  app->add_flag("--json", a.json, "Also write STEM.json: classes, pixel shares, segments, timings");
  app->add_flag("-s,--save-scores", a.save_scores, "Also write STEM.scores.npy: float32 [C,H,W] score maps");
  app->add_flag("-r,--recursive", a.recursive, "Descend into subdirectories of directory inputs");
  app->add_flag("--skip-existing", a.skip_existing, "Skip images whose STEM.png already exists");
  app->add_option("--shard", a.shard,
                  "I/N: only the images at positions I, I+N, I+2N, ... of the sorted output names; auto: I and N "
                  "of the Slurm array task or Kubernetes Indexed Job this runs in");
  app->add_option("--shards", a.shards,
                  "With --shard auto in a Kubernetes Indexed Job: N (the Job's completions) [default: "
                  "$OVSEG_SHARD_COUNT]")
      ->check(CLI::PositiveNumber);
  app->add_option("--every", a.every,
                  "Videos: segment every N-th frame (from --start's); the overlay shows the last label map on the "
                  "frames between, and only segmented frames get a label map")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app->add_option("--max-frames", a.max_frames,
                  "Videos: at most N frames from --start (0 = to the end); needed for --save-scores on a video")
      ->check(CLI::Range(0L, 1000000000L))
      ->capture_default_str();
  app->add_option("--start", a.start_s, "Videos: begin at the first frame at or after SECONDS")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app->add_option("inputs", a.inputs,
                  "Image or video files, directories (their images; --recursive for subdirectories), or - to read "
                  "one path per line from stdin");
  app->footer(
      "Outputs, per image, in --output: STEM.png, the label map at the image's size (pixel = class index in\n"
      "the order given; 8-bit PNG for up to 255 classes with 255 = unlabeled, else 16-bit with 65535 =\n"
      "unlabeled). Images found in a directory keep their path relative to it (DIR/a/b.jpg -> OUT/a/b.png).\n"
      "\n"
      "Videos (any container/codec OpenCV's FFmpeg reads, recognised by content; give them as files):\n"
      "STEM/NNNNNN.png, the label map of each segmented frame (NNNNNN = its index in the video), --overlay\n"
      "STEM.overlay.mp4 (H.264, else MPEG-4 part 2; the source's size and frame rate, legend in the corner),\n"
      "--json STEM.json (per-frame class shares and timings). Ctrl-C stops after the frame in flight.\n"
      "\n"
      "Examples:\n"
      "  ovseg segment -m bundles/ovseg-swinB-vitL14 -c \"sky,tree,red car,road\" photo.jpg\n"
      "  ovseg segment -m BUNDLE -f classes.txt --overlay --json -o out/ photos/\n"
      "  ovseg segment -m BUNDLE -p ade150 -r --skip-existing -o out/ dataset/images/\n"
      "  find . -name '*.jpg' | ovseg segment -m BUNDLE -c \"cat,dog\" --mode demo -o out/ -\n"
      "  ovseg segment -m BUNDLE -p ade150 -r --skip-existing --shard auto -o out/ photos/   # in a Slurm array\n"
      "  ovseg segment -m BUNDLE -c \"cat,dog\" --analysis-cache cache/ -o out1/ photos/   # then, fast:\n"
      "  ovseg segment -m BUNDLE -c \"tabby cat,puppy\" --analysis-cache cache/ -o out2/ photos/\n"
      "  ovseg segment -m BUNDLE -c \"road,car,sky\" --overlay --every 5 --start 10 -o out/ clip.mp4\n"
      "\n"
      "Exit codes: 0 all done; 1 some images failed (each named with its reason on stderr);\n"
      "2 usage error or the model could not be loaded; 4 an input or output directory is unusable;\n"
      "130 interrupted (SIGINT/SIGTERM, after the image in flight; a second signal ends it at once).");
  const CLI::App* root = &parent;
  c.run = [args, root] { return run_segment(*args, *root); };
  return c;
}

}  // namespace ovseg::cli
