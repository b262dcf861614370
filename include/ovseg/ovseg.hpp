// ovseg — open-vocabulary semantic segmentation (a C++ port of ov-seg, Liang et al., CVPR 2023).
//
// The public API. No torch, OpenCV or spdlog type appears here: a program that includes this
// header compiles against the C++ standard library alone and links ovseg::ovseg.
//
//   ovseg::ModelOptions mo;                    // fixed at load: device, precision, threads, caches
//   auto model = ovseg::Model::load("bundles/ovseg-swinB-vitL14", mo);    // throws ovseg::Error
//   ovseg::Image img = ovseg::load_image("photo.jpg");                    // EXIF-rotated RGB8
//   ovseg::Result r = model.segment(img.view(), {"road", "car", "sky"});
//   r.labels[y * r.width + x];                 // class index, or ovseg::kUnlabeled
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ovseg/export.hpp"
#include "ovseg/version.hpp"

namespace ovseg {

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------
enum class ErrorCode {
  kInvalidArgument,  // a bad option or class list (caller's mistake)
  kIo,               // a file could not be read or written
  kBadImage,         // an image file that does not decode, or an unsupported pixel layout
  kBadModel,         // a bundle that is missing, of the wrong version, or corrupt
  kBadData,          // a dataset or label file that does not fit its layout
  kRuntime,          // anything else that went wrong while computing
  kCancelled,        // the caller's progress callback asked to stop
};

// Every error ovseg throws. The message names the file (where there is one) and the problem.
class OVSEG_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// "0.1.0"
OVSEG_API const char* version() noexcept;

// ------------------------------------------------------------------------------------------------
// Logging: the library logs through one logger named "ovseg" and never writes to stdout.
// ------------------------------------------------------------------------------------------------
enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kOff };
OVSEG_API void set_log_level(LogLevel level);
// Route the library's log lines to a callback instead of stderr (nullptr restores stderr).
OVSEG_API void set_log_callback(std::function<void(LogLevel, const std::string&)> callback);
// Writes one line through the library's logger (its level, format and callback apply), e.g. so a
// program's own messages and the library's look and filter the same.
OVSEG_API void log_message(LogLevel level, const std::string& message);

// ------------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------------
enum class PixelFormat { kRgb, kBgr, kRgba, kBgra, kGray };

// A borrowed 8-bit image. stride = bytes per row (0 = tightly packed).
struct OVSEG_API ImageView {
  const std::uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  PixelFormat format = PixelFormat::kRgb;
  std::size_t stride = 0;
};

// An owned, tightly packed 8-bit RGB image.
struct OVSEG_API Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;  // height * width * 3, row-major, R G B
  ImageView view() const { return ImageView{rgb.data(), width, height, PixelFormat::kRgb, 0}; }
};

// Decompression-bomb guard: images of more pixels are refused from their header, before
// decoding (Pillow's MAX_IMAGE_PIXELS × 2, the size at which Pillow raises an error). 0 = no limit.
inline constexpr std::uint64_t kDefaultMaxPixels = 178956970;

// Decode an image file the way the reference does (Pillow + EXIF orientation, then "RGB"):
// greyscale is replicated, alpha dropped without compositing, palette expanded, 16-bit reduced
// to 8-bit. Throws Error(kBadImage / kIo) naming the file; an image of more than `max_pixels`
// pixels is refused before it is decoded.
OVSEG_API Image load_image(const std::string& path, std::uint64_t max_pixels = kDefaultMaxPixels);
// Decode an encoded image held in memory (same rules); `name` is used in error messages.
OVSEG_API Image decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                   std::uint64_t max_pixels = kDefaultMaxPixels);
// Convert any ImageView to an owned RGB8 image.
OVSEG_API Image to_rgb(const ImageView& view);

// ------------------------------------------------------------------------------------------------
// Model
// ------------------------------------------------------------------------------------------------
// kAuto: the fastest precision that keeps the labels (resolve_precision): fp16 on CUDA, bf16 on a
// CPU with native bf16 instructions, else fp32.
enum class Precision { kFp32, kBf16, kFp16, kAuto };
enum class Mode {
  kEval,  // OVSeg.semantic_inference: the evaluation path (ensemble of both branches)
  kDemo,  // OVSegDEMO.demo_inference: one region per class, unlabelled pixels possible
};

OVSEG_API const char* to_string(Precision p) noexcept;
OVSEG_API const char* to_string(Mode m) noexcept;
OVSEG_API Precision parse_precision(const std::string& s);  // "fp32" | "bf16" | "fp16" | "auto"; throws kInvalidArgument
OVSEG_API Mode parse_mode(const std::string& s);            // "eval" | "demo"; throws kInvalidArgument
// "cpu" → -1, "cuda" → 0, "cuda:N" → N (at most 3 digits); anything else throws kInvalidArgument.
// The syntax only (what Model::load accepts): whether that GPU exists is known when loading.
OVSEG_API int check_device(const std::string& device);

// A bundle is a program (models/BUNDLE_FORMAT.md): ovseg loads a module only when its archive
// defines no __setstate__ and every method, hook and function in it uses only the operators the
// exporters emit. These say which: the operators the modules (*.pt files) of a MaskFormer or SAM
// bundle use, sorted, read without running any of their code (kBadModel for a module that
// defines __setstate__); and the set ovseg allows.
OVSEG_API std::vector<std::string> bundle_operators(const std::string& bundle_dir);
OVSEG_API std::vector<std::string> allowed_bundle_operators();

// What this CPU can do, as far as the choice of precision goes (cpuid and the OS's saved state).
struct OVSEG_API CpuFeatures {
  bool avx2 = false;         // AVX2 + FMA
  bool avx512f = false;
  bool avx512_bf16 = false;  // native bf16 dot products (Zen 4 and later, Cooper Lake, Sapphire Rapids)
  bool amx_bf16 = false;
  bool native_bf16() const noexcept;
  std::string summary() const;  // e.g. "AVX2+FMA AVX-512F AVX512_BF16 (native bf16)"
};
OVSEG_API CpuFeatures cpu_features();
// The precision a model on `device` runs in: kAuto resolved; kBf16 on a CPU without native bf16
// throws kInvalidArgument naming what is missing (it would be > 10x slower than fp32), unless
// OVSEG_ALLOW_SLOW_BF16=1 (then a warning). Others as asked.
OVSEG_API Precision resolve_precision(Precision requested, const std::string& device);

struct OVSEG_API ModelOptions {
  std::string device = "cpu";            // "cpu", "cuda", "cuda:N" (check_device)
  Precision precision = Precision::kFp32;
  int threads = 0;                       // intra-op threads; 0 = all cores. Set once per process.
  bool text_disk_cache = true;           // cache text features on disk
  std::string text_cache_dir;            // empty = $OVSEG_CACHE_DIR, else $XDG_CACHE_HOME/ovseg, else ~/.cache/ovseg
  int region_batch = 0;                  // CLIP regions per forward pass; 0 = chosen by memory
  // Load the proposal network and the CLIP visual tower (checksums, probe) on first use instead
  // of in load(): a model that only classifies saved analyses never reads them. A broken module
  // then fails the first analyze()/segment() (kBadModel) rather than load().
  bool lazy_modules = false;
};

// The stages of one segment() call, in the order they run. kStageTable below is the one place
// that names them: Timings, the progress callback, JSON reports and `ovseg bench` read it.
enum class Stage {
  kPreprocess,  // conversion, test-time resize, normalise + pad
  kText,        // text features (≈0 when cached)
  kProposals,   // backbone + pixel decoder + transformer predictor
  kRegions,     // mask upsampling, valid regions, crops, 224² resizes
  kClip,        // CLIP visual encoder over all valid regions
  kPost,        // ensemble, score map, final resize, argmax
};
inline constexpr std::size_t kNumStages = static_cast<std::size_t>(Stage::kPost) + 1;

// Where the time of one segment() call went, in milliseconds.
struct OVSEG_API Timings {
  double preprocess_ms = 0;
  double proposals_ms = 0;
  double text_ms = 0;
  double regions_ms = 0;
  double clip_ms = 0;
  double post_ms = 0;
  double total_ms = 0;  // the whole call (more than the sum of the stages: argument checks, dumps)

  double& operator[](Stage s) noexcept;
  double operator[](Stage s) const noexcept;
  Timings& operator+=(const Timings& other) noexcept;  // every stage and the total
};

struct OVSEG_API StageInfo {
  Stage stage;
  const char* name;         // "preprocess", ...: progress callback, JSON keys ("<name>_ms" in checkpoints)
  double Timings::*ms;      // its field in Timings
};
inline constexpr StageInfo kStageTable[kNumStages] = {
    {Stage::kPreprocess, "preprocess", &Timings::preprocess_ms},
    {Stage::kText, "text", &Timings::text_ms},
    {Stage::kProposals, "proposals", &Timings::proposals_ms},
    {Stage::kRegions, "regions", &Timings::regions_ms},
    {Stage::kClip, "clip", &Timings::clip_ms},
    {Stage::kPost, "post", &Timings::post_ms},
};
inline constexpr const char* to_string(Stage s) noexcept { return kStageTable[static_cast<std::size_t>(s)].name; }

inline double& Timings::operator[](Stage s) noexcept { return this->*kStageTable[static_cast<std::size_t>(s)].ms; }
inline double Timings::operator[](Stage s) const noexcept {
  return this->*kStageTable[static_cast<std::size_t>(s)].ms;
}
inline Timings& Timings::operator+=(const Timings& other) noexcept {
  for (const StageInfo& st : kStageTable) this->*st.ms += other.*st.ms;
  total_ms += other.total_ms;
  return *this;
}

// The settings one segment() call applies: SegmentOptions over the bundle's defaults for the mode
// (ModelInfo::defaults, Model::settings). Result::settings says which were used.
struct OVSEG_API SegmentSettings {
  Mode mode = Mode::kEval;
  float mask_threshold = 0;   // a query's region is valid where its mask probability is > this
  float ensemble_weight = 0;  // weight of the CLIP branch in the ensemble
  bool clip_ensemble = true;  // false: MaskFormer only (no regions, no CLIP)
};

struct OVSEG_API SegmentOptions {
  Mode mode = Mode::kEval;
  std::optional<float> mask_threshold;   // default: the bundle's value for the mode
  std::optional<float> ensemble_weight;  // default: the bundle's value for the mode
  // false = MaskFormer only (the config's CLIP_ENSEMBLE False, the paper's Table 6 ablation):
  // no regions, no CLIP; scores = Σ_q softmax(MaskFormer logits)[q,:K] · sigmoid(mask q) over all
  // queries, and Result::segments stays empty. Eval mode only. Default: the bundle's value.
  std::optional<bool> clip_ensemble;
  bool keep_scores = false;              // fill Result::scores
  // Called before each stage with its name (to_string(Stage)) and the fraction of stages done,
  // then once with "done" and 1; return false to cancel (segment() then throws Error(kCancelled)).
  std::function<bool(const char* stage, float fraction)> progress;
  // Debug tap (empty = off): each stage writes what it computed into this directory (created if
  // missing) as float32 .npy right after it ran, so a failing stage still leaves its inputs:
  //   text      text_features.npy [K'+1, E] (K' = score classes; the last row is the non-object)
  //   proposals pred_embeddings.npy [Q, E], pred_masks_lowres.npy [Q, h, w] (mask logits)
  //   regions   valid_flag.npy [Q] (1 = valid region)
  //   clip      clip_logits.npy [N, K'+1] (N valid regions)
  //   post      sem_seg.npy [K', H, W] (the score map at the original size)
  // The names are those of the reference pipeline's dumps (tools/ovseg-reference).
  std::string dump_dir;
};

// Label value of pixels that no region covers (demo path) — and of pixels where the internal
// "others" class wins when a single class was asked for in demo mode.
inline constexpr std::uint16_t kUnlabeled = 65535;

struct OVSEG_API Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // exclusive x1, y1; at the original image size
};

// One valid region (a MaskFormer query whose mask passes the threshold).
struct OVSEG_API Segment {
  int query = 0;         // query index (0..Q-1); SAM proposals: the mask's index in the generator's output
  int class_index = 0;   // best class of the region (index into Result::classes)
  float score = 0;       // its ensembled probability (SAM: its demo class probability)
  std::int64_t area = 0; // pixels of the binary mask, at the original image size
  Box box;               // bounding box of the binary mask, at the original image size
  bool selected = false; // demo path and SAM: the region was chosen by at least one class
  // SAM proposals only (ovseg/sam.hpp; 0 otherwise): the generator's scores of the mask.
  float predicted_iou = 0;
  float stability_score = 0;
};

struct OVSEG_API Result {
  int width = 0;   // original (decoded) size
  int height = 0;
  std::vector<std::string> classes;        // the caller's classes, in the caller's order
  // Channel names of `scores`: equal to `classes`, except in demo mode with one class where
  // the reference appends "others" (its pixels are labelled kUnlabeled in `labels`).
  std::vector<std::string> score_classes;
  std::vector<std::uint16_t> labels;       // height * width, class index or kUnlabeled
  std::vector<float> scores;               // score_classes.size() * height * width (keep_scores)
  std::vector<std::int64_t> class_pixels;  // per caller class: number of pixels labelled with it
  std::int64_t unlabeled_pixels = 0;
  std::vector<Segment> segments;           // valid regions in query order
  int resized_width = 0;                   // test-time resize
  int resized_height = 0;
  SegmentSettings settings;                // what was applied (options over the bundle's defaults)
  Timings timings;
};

// What a bundle's manifest says, in a form for people and tools.
struct OVSEG_API ModelInfo {
  std::string name;
  std::string bundle_dir;
  int format_version = 0;
  std::string backbone;          // "swin" | "resnet"
  std::string clip_model;        // e.g. "ViT-L/14"
  int num_queries = 0;
  int embed_dim = 0;
  int min_size_test = 0;
  int max_size_test = 0;
  float eval_mask_threshold = 0, eval_ensemble_weight = 0;
  float demo_mask_threshold = 0, demo_ensemble_weight = 0;
  bool eval_clip_ensemble = true;  // false: the bundle's eval path is MaskFormer-only
  // The bundle's settings for a mode (the fields above; demo mode always ensembles with CLIP).
  SegmentSettings defaults(Mode mode) const noexcept {
    return mode == Mode::kDemo
               ? SegmentSettings{mode, demo_mask_threshold, demo_ensemble_weight, true}
               : SegmentSettings{mode, eval_mask_threshold, eval_ensemble_weight, eval_clip_ensemble};
  }
  std::string template_set;
  std::size_t num_templates = 0;
  std::string source_sha256;
  std::string manifest_json;     // the whole manifest, pretty-printed
  std::string device;            // where the modules run
  std::string precision;
  // sha256 of the manifest, the precision and the device kind: what an Analysis must have been
  // made with to be classified by this model.
  std::string fingerprint;
};

namespace detail {
struct ModelAccess;  // the library's internal entry points (e.g. the evaluation oracles)
struct AnalysisAccess;
}

// Everything of one image that does not depend on the class names (Model::analyze): the
// MaskFormer proposals (embeddings and mask logits), the valid regions and the CLIP embedding of
// each, for one model, precision, device and mask threshold. Model::classify turns it into the
// Result of any class list, ensemble weight and mode in milliseconds, exactly what segment()
// gives. Movable, not copyable; immutable, so threads may classify one analysis at once.
class OVSEG_API Analysis {
 public:
  Analysis(Analysis&&) noexcept;
  Analysis& operator=(Analysis&&) noexcept;
  Analysis(const Analysis&) = delete;
  Analysis& operator=(const Analysis&) = delete;
  ~Analysis();

  std::size_t bytes() const noexcept;  // memory it holds
  int width() const noexcept;          // original image size
  int height() const noexcept;
  int num_regions() const noexcept;    // valid regions (each with its CLIP embedding)
  float mask_threshold() const noexcept;
  bool clip_ensemble() const noexcept;  // false: made MaskFormer-only (no regions, no CLIP)
  const std::string& model_fingerprint() const noexcept;  // ModelInfo::fingerprint of its model
  const Timings& timings() const noexcept;  // the class-agnostic stages, when it was made

  // A versioned binary file: exact float32 tensors, the model's fingerprint and the settings,
  // with a checksum; written atomically (concurrent writers of one path never leave a torn file).
  void save(const std::string& path) const;
  // Throws Error(kBadData) naming the file for a truncated, corrupt or foreign file, kIo when it
  // cannot be read. Whether it fits a model is checked by Model::classify.
  static Analysis load(const std::string& path);

 private:
  friend struct detail::AnalysisAccess;
  struct Impl;
  explicit Analysis(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class OVSEG_API Model {
 public:
  // Loads and validates a bundle directory (manifest version, file checksums, modules).
  static Model load(const std::string& bundle_dir, const ModelOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  ~Model();

  // Segments one image with the given class names. Safe to call from several threads.
  // Exactly classify(analyze(image, options), classes, options).
  Result segment(const ImageView& image, const std::vector<std::string>& classes,
                 const SegmentOptions& options = {}) const;

  // The class-agnostic part of segment(): preprocess, proposals, regions and CLIP. Of the
  // options, mode and mask_threshold (the threshold, the mode's default when unset) and
  // clip_ensemble (false: MaskFormer-only, no regions) decide what it holds; progress and
  // dump_dir work as in segment(). Timings of the stages are in Analysis::timings().
  Analysis analyze(const ImageView& image, const SegmentOptions& options = {}) const;
  Analysis analyze_file(const std::string& path, const SegmentOptions& options = {}) const;
  // The rest: text features, ensemble, score map, labels. The Result equals segment()'s for the
  // same image, classes and options, byte for byte; its timings show only the stages that ran
  // (text, post). Throws Error(kInvalidArgument) naming the option when the analysis does not
  // fit: made by another model (bundle, precision or device), with another mask threshold, or
  // MaskFormer-only while the options ask for the CLIP ensemble.
  Result classify(const Analysis& analysis, const std::vector<std::string>& classes,
                  const SegmentOptions& options = {}) const;
  // The key an analysis of an image file is cached under: hex sha256 of the file's content
  // (`content_sha256`, e.g. sha256_file), this model's fingerprint and the settings the analysis
  // depends on (mask threshold, MaskFormer-only). Never a file name: two copies of an image with
  // other bytes get other keys.
  std::string analysis_key(const std::string& content_sha256, const SegmentOptions& options = {}) const;
  Result segment_file(const std::string& path, const std::vector<std::string>& classes,
                      const SegmentOptions& options = {}) const;

  // The settings segment() applies with these options: options.mode, and each value the options
  // leave unset taken from info().defaults(options.mode). Does not validate the ranges.
  SegmentSettings settings(const SegmentOptions& options) const noexcept;

  // Computes (and caches) the text features of these names now; returns the milliseconds spent.
  double prepare_classes(const std::vector<std::string>& classes) const;
  // Text features [(K+1) × E] row-major (the last row is the normalised non-object embedding).
  std::vector<float> text_features(const std::vector<std::string>& classes) const;

  const ModelInfo& info() const noexcept;

 private:
  friend struct detail::ModelAccess;
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ovseg
