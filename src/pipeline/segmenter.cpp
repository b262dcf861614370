// Model::load and Model::segment: orchestration of the stages in pipeline.hpp, per-stage timings,
// progress/cancel, the dump switch, and translation of torch errors. No maths here.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <new>
#include <optional>

#include "common/fs_util.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "image/image_ops.hpp"
#include "pipeline/analysis.hpp"
#include "pipeline/oracle.hpp"
#include "pipeline/pipeline.hpp"

namespace fs = std::filesystem;

namespace ovseg {
namespace {

using detail::Clock;
using detail::ms_since;

using detail::translate_errors;

// A float the caller typed (0.6f) as the double it stands for (0.6): the reference's settings are
// Python floats, and the ensemble exponents 1 − w are taken in double before narrowing.
double as_decimal_double(float v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::strtod(std::string(buf, res.ptr).c_str(), nullptr);
}

void write_npy(const std::string& dir, const std::string& name, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
  const std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  const auto bytes = detail::npy_float32(c.data_ptr<float>(), shape);
  detail::write_file_atomic((fs::path(dir) / name).string(), bytes.data(), bytes.size());
}

// Oracle masks: every ground-truth region takes CLIP's best class (first maximum of the softmax
// over the K classes, docs/reference-behaviour.md §6.6), and its pixels at the original size take
// that class. Pixels the ground truth ignores are kUnlabeled (the evaluation leaves them out anyway).
void label_by_ground_truth_regions(Result& result, const std::vector<std::string>& classes,
                                   const detail::GroundTruthView& gt, const std::vector<int64_t>& region_classes,
                                   const detail::Regions& regions, const at::Tensor& clip_logits, int w0, int h0,
                                   int w, int h) {
  const int64_t k = static_cast<int64_t>(classes.size());
  const auto n = static_cast<int64_t>(region_classes.size());
  std::vector<int64_t> winner_of_class(static_cast<std::size_t>(k), -1);
  std::vector<float> score(static_cast<std::size_t>(n), 0.0f);
  std::vector<int64_t> winner(static_cast<std::size_t>(n), 0);
  if (n > 0) {
    const at::Tensor probs = at::softmax(clip_logits.narrow(1, 0, k), -1).to(at::kCPU).contiguous();
    const auto p = probs.accessor<float, 2>();
    for (int64_t r = 0; r < n; ++r) {
      int64_t best = 0;
      for (int64_t c = 1; c < k; ++c)
        if (p[r][c] > p[r][best]) best = c;
      winner[static_cast<std::size_t>(r)] = best;
      score[static_cast<std::size_t>(r)] = p[r][best];
      winner_of_class[static_cast<std::size_t>(region_classes[static_cast<std::size_t>(r)])] = best;
    }
  }
  const std::size_t pixels = static_cast<std::size_t>(w0) * static_cast<std::size_t>(h0);
  result.labels.resize(pixels);
  result.class_pixels.assign(classes.size(), 0);
  for (std::size_t i = 0; i < pixels; ++i) {
    const std::uint16_t v = gt.labels[i];
    const int64_t label = v == gt.ignore_label || v >= k ? -1 : winner_of_class[v];
    if (label < 0) {
      result.labels[i] = kUnlabeled;
      ++result.unlabeled_pixels;
    } else {
      result.labels[i] = static_cast<std::uint16_t>(label);
      ++result.class_pixels[static_cast<std::size_t>(label)];
    }
  }
  const double sx = static_cast<double>(w0) / w;
  const double sy = static_cast<double>(h0) / h;
  for (int64_t r = 0; r < n; ++r) {
    Segment seg;
    seg.query = static_cast<int>(r);  // the r-th ground-truth region
    seg.class_index = static_cast<int>(winner[static_cast<std::size_t>(r)]);
    seg.score = score[static_cast<std::size_t>(r)];
    const auto& b = regions.boxes[static_cast<std::size_t>(r)];
    seg.box.x0 = static_cast<int>(std::floor(b.x0 * sx));
    seg.box.y0 = static_cast<int>(std::floor(b.y0 * sy));
    seg.box.x1 = std::min(w0, static_cast<int>(std::ceil(b.x1 * sx)));
    seg.box.y1 = std::min(h0, static_cast<int>(std::ceil(b.y1 * sy)));
    seg.area = std::llround(static_cast<double>(regions.areas[static_cast<std::size_t>(r)]) * sx * sy);
    seg.selected = true;
    result.segments.push_back(seg);
  }
}

constexpr bool stage_table_in_order() {
  for (std::size_t i = 0; i < kNumStages; ++i)
    if (static_cast<std::size_t>(kStageTable[i].stage) != i) return false;
  return true;
}
static_assert(stage_table_in_order(), "kStageTable must list the stages in enum order");

SegmentSettings resolve_settings(const ModelInfo& info, const SegmentOptions& options) {
  SegmentSettings s = info.defaults(options.mode);
  if (options.mask_threshold) s.mask_threshold = *options.mask_threshold;
  if (options.ensemble_weight) s.ensemble_weight = *options.ensemble_weight;
  if (options.clip_ensemble) s.clip_ensemble = *options.clip_ensemble;
  return s;
}

// Each stage: report progress (the caller may cancel), then time it into `timings`.
class StageClock {
 public:
  StageClock(const SegmentOptions& options, Timings& timings, const char* what)
      : options_(options), timings_(timings), what_(what) {}
  void begin(Stage stage) {
    const auto index = static_cast<std::size_t>(stage);
    if (options_.progress && !options_.progress(to_string(stage), static_cast<float>(index) / kNumStages))
      throw Error(ErrorCode::kCancelled,
                  std::string(what_) + ": cancelled by the progress callback (" + to_string(stage) + ")");
    current_ = stage;
    t0_ = Clock::now();
  }
  void end() { timings_[current_] = ms_since(t0_); }
  const Timings& timings() const { return timings_; }

 private:
  const SegmentOptions& options_;
  Timings& timings_;
  const char* what_;
  Stage current_ = Stage::kPreprocess;
  Clock::time_point t0_ = Clock::now();
};

void check_image(const ImageView& view) {
  if (view.data == nullptr || view.width <= 0 || view.height <= 0)
    throw Error(ErrorCode::kBadImage, "image: empty image (no pixel data or a zero size)");
  const int channels = view.format == PixelFormat::kGray ? 1
                       : (view.format == PixelFormat::kRgba || view.format == PixelFormat::kBgra) ? 4 : 3;
  if (view.stride != 0 && view.stride < static_cast<std::size_t>(view.width) * channels)
    throw Error(ErrorCode::kBadImage, "image: stride " + std::to_string(view.stride) + " is shorter than a row");
}

// Result::labels, class_pixels, unlabeled_pixels, scores (keep_scores) and segments from the
// ensemble's output. The regions' boxes and areas are at the resized size (w, h): scaled to the
// original (w0, h0). nv: the regions that carry probabilities (0 for MaskFormer-only).
void assemble_result(Result& result, const detail::EnsembleOutput& post, bool keep_scores, Mode mode,
                     const std::vector<int64_t>& queries, const std::vector<detail::RegionBox>& boxes,
                     const std::vector<int64_t>& areas, int64_t nv, int w0, int h0, int w, int h) {
  const std::size_t pixels = static_cast<std::size_t>(h0) * static_cast<std::size_t>(w0);
  result.labels.resize(pixels);
  result.class_pixels.assign(result.classes.size(), 0);
  const auto caller_k = static_cast<int32_t>(result.classes.size());
  for (std::size_t i = 0; i < pixels; ++i) {
    const int32_t label = post.argmax[i];
    const bool unlabeled = post.degenerate || (!post.uncovered.empty() && post.uncovered[i]) || label >= caller_k;
    if (unlabeled) {
      result.labels[i] = kUnlabeled;
      ++result.unlabeled_pixels;
    } else {
      result.labels[i] = static_cast<std::uint16_t>(label);
      ++result.class_pixels[static_cast<std::size_t>(label)];
    }
  }
  if (keep_scores) {
    const at::Tensor sc = post.scores.contiguous();
    result.scores.assign(sc.data_ptr<float>(), sc.data_ptr<float>() + sc.numel());
  }
  const double sx = static_cast<double>(w0) / w;
  const double sy = static_cast<double>(h0) / h;
  const auto probs = post.region_probs.accessor<float, 2>();
  for (int64_t r = 0; r < nv; ++r) {
    Segment seg;
    seg.query = static_cast<int>(queries[static_cast<std::size_t>(r)]);
    int best = 0;
    for (int c = 1; c < caller_k; ++c)
      if (probs[r][c] > probs[r][best]) best = c;
    seg.class_index = best;
    seg.score = probs[r][best];
    const auto& b = boxes[static_cast<std::size_t>(r)];
    seg.box.x0 = static_cast<int>(std::floor(b.x0 * sx));
    seg.box.y0 = static_cast<int>(std::floor(b.y0 * sy));
    seg.box.x1 = std::min(w0, static_cast<int>(std::ceil(b.x1 * sx)));
    seg.box.y1 = std::min(h0, static_cast<int>(std::ceil(b.y1 * sy)));
    seg.area = std::llround(static_cast<double>(areas[static_cast<std::size_t>(r)]) * sx * sy);
    seg.selected = mode == Mode::kDemo ? post.selected[static_cast<std::size_t>(r)] : true;
    result.segments.push_back(seg);
  }
}

}  // namespace

struct Model::Impl {
  ModelOptions model_options;
  detail::Manifest manifest;
  c10::Device device{c10::kCPU};
  std::unique_ptr<detail::Modules> modules;
  std::unique_ptr<detail::TextFeatures> text;
  ModelInfo info;

  Result segment(const ImageView& view, const std::vector<std::string>& classes, const SegmentOptions& options,
                 detail::Oracle oracle = detail::Oracle::kNone, const detail::GroundTruthView* gt = nullptr) const;
  // The oracle analyses (eval::segment_with_oracle): their own flow (eval path, CLIP branch), which
  // needs the ground truth, and with it the classes, before the proposals.
  Result segment_oracle(const ImageView& view, const std::vector<std::string>& classes, const SegmentOptions& options,
                        detail::Oracle oracle, const detail::GroundTruthView* gt) const;
  // segment() = classify(analyze()). `between` runs after preprocess (segment(): the text stage,
  // in the stage table's order); `text` given = already computed (no text stage in classify).
  detail::AnalysisData analyze(const ImageView& view, const SegmentOptions& options, StageClock& clock,
                               const std::function<void()>& between = {}) const;
  Result classify(const detail::AnalysisData& a, const std::vector<std::string>& classes,
                  const SegmentOptions& options, StageClock& clock, const at::Tensor* text = nullptr) const;
  // The argument checks of segment()/classify() (classes) and of every entry (settings, image).
  static void check_classes(const std::vector<std::string>& classes, const char* what);
  // The settings of these options, checked (ranges, MaskFormer-only needs eval); *weight: the
  // ensemble weight as the double the maths uses.
  SegmentSettings checked_settings(const SegmentOptions& options, double* weight, const char* what) const;
};

namespace detail {
struct ModelAccess {
  static const Model::Impl& impl(const Model& m) { return *m.impl_; }
};
}  // namespace detail

namespace eval {
const char* to_string(Oracle o) noexcept {
  switch (o) {
    case Oracle::kMasks: return "masks";
    case Oracle::kLabels: return "labels";
    default: return "none";
  }
}

Oracle parse_oracle(const std::string& s) {
  if (s == "none" || s.empty()) return Oracle::kNone;
  if (s == "masks") return Oracle::kMasks;
  if (s == "labels") return Oracle::kLabels;
  throw Error(ErrorCode::kInvalidArgument, "unknown oracle '" + s + "' (none, masks, labels)");
}

Result segment_with_oracle(const Model& model, const ImageView& image, const std::vector<std::string>& classes,
                           const SegmentOptions& options, Oracle oracle, const GroundTruthView& ground_truth) {
  return translate_errors("segment (oracle " + std::string(to_string(oracle)) + ")", [&] {
    return detail::ModelAccess::impl(model).segment(image, classes, options, oracle, &ground_truth);
  });
}
}  // namespace eval

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::string& bundle_dir, const ModelOptions& options) {
  return translate_errors(bundle_dir, [&] {
    if (options.threads < 0) throw Error(ErrorCode::kInvalidArgument, "threads must be ≥ 0");
    if (options.region_batch < 0) throw Error(ErrorCode::kInvalidArgument, "region_batch must be ≥ 0");
    auto impl = std::make_unique<Impl>();
    impl->model_options = options;
    impl->device = detail::parse_device(options.device);
    detail::init_threads(options.threads);
    c10::InferenceMode guard;
    const auto t0 = Clock::now();
    // The modules' checksums: verified right before each is loaded (Modules::load, overlapped with
    // loading the previous one), or on first use for lazily loaded ones.
    const std::vector<std::string> deferred = {"proposals", "clip_visual", "clip_text"};
    impl->manifest = detail::read_manifest(bundle_dir, /*verify_checksums=*/true, deferred);
    const Precision precision = resolve_precision(options.precision, options.device);
    impl->model_options.precision = precision;
    impl->modules = detail::Modules::load(impl->manifest, impl->device, detail::scalar_type(precision),
                                          options.lazy_modules);
    detail::TextCacheOptions cache;
    cache.disk = options.text_disk_cache;
    cache.dir = options.text_disk_cache ? detail::resolve_text_cache_dir(options.text_cache_dir) : std::string();
    impl->text = std::make_unique<detail::TextFeatures>(impl->manifest, *impl->modules, cache);

    const auto& m = impl->manifest;
    ModelInfo& info = impl->info;
    info.name = m.name;
    info.bundle_dir = m.dir;
    info.format_version = m.format_version;
    info.backbone = m.backbone;
    info.clip_model = m.clip_model;
    info.num_queries = m.num_queries;
    info.embed_dim = m.embed_dim;
    info.min_size_test = m.min_size_test;
    info.max_size_test = m.max_size_test;
    info.eval_mask_threshold = static_cast<float>(m.eval.mask_threshold);
    info.eval_ensemble_weight = static_cast<float>(m.eval.ensemble_weight);
    info.demo_mask_threshold = static_cast<float>(m.demo.mask_threshold);
    info.demo_ensemble_weight = static_cast<float>(m.demo.ensemble_weight);
  info.eval_clip_ensemble = m.eval.clip_ensemble;
    info.template_set = m.template_set;
    info.num_templates = m.templates.size();
    info.source_sha256 = m.source_sha256;
    info.manifest_json = m.json_pretty;
    info.device = impl->device.str();
    info.precision = to_string(precision);
    const std::string identity = m.json_pretty + "\nprecision " + info.precision + "\ndevice " +
                                 (impl->device.is_cuda() ? "cuda" : "cpu");
    info.fingerprint = detail::sha256_hex(identity.data(), identity.size());
    detail::log().info("loaded {} ({} + {}) on {} as {} in {:.0f} ms", m.name, m.backbone, m.clip_model, info.device,
                       info.precision, ms_since(t0));
    return Model(std::move(impl));
  });
}

const ModelInfo& Model::info() const noexcept { return impl_->info; }

SegmentSettings Model::settings(const SegmentOptions& options) const noexcept {
  return resolve_settings(impl_->info, options);
}

double Model::prepare_classes(const std::vector<std::string>& classes) const {
  return translate_errors("prepare_classes", [&] {
    c10::InferenceMode guard;
    const auto t0 = Clock::now();
    impl_->text->class_features(classes);
    detail::release_freed_memory();
    return ms_since(t0);
  });
}

std::vector<float> Model::text_features(const std::vector<std::string>& classes) const {
  return translate_errors("text_features", [&] {
    c10::InferenceMode guard;
    const at::Tensor t = impl_->text->text_matrix(classes).to(at::kCPU).contiguous();
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  });
}

Analysis Model::analyze(const ImageView& image, const SegmentOptions& options) const {
  return translate_errors("analyze", [&] {
    c10::InferenceMode guard;
    const auto t_start = Clock::now();
    double weight = 0;
    (void)impl_->checked_settings(options, &weight, "analyze");
    check_image(image);
    Timings timings;
    StageClock clock(options, timings, "analyze");
    detail::AnalysisData a = impl_->analyze(image, options, clock);
    a.timings.total_ms = ms_since(t_start);
    if (options.progress) options.progress("done", 1.0f);
    return detail::AnalysisAccess::make(std::move(a));
  });
}

Analysis Model::analyze_file(const std::string& path, const SegmentOptions& options) const {
  const Image img = load_image(path);
  return translate_errors(path, [&] { return analyze(img.view(), options); });
}

Result Model::classify(const Analysis& analysis, const std::vector<std::string>& classes,
                       const SegmentOptions& options) const {
  return translate_errors("classify", [&] {
    c10::InferenceMode guard;
    const auto t_start = Clock::now();
    Impl::check_classes(classes, "classify");
    Timings timings;
    StageClock clock(options, timings, "classify");
    Result r = impl_->classify(detail::AnalysisAccess::data(analysis), classes, options, clock);
    r.timings = timings;
    r.timings.total_ms = ms_since(t_start);
    if (options.progress) options.progress("done", 1.0f);
    return r;
  });
}

std::string Model::analysis_key(const std::string& content_sha256, const SegmentOptions& options) const {
  const SegmentSettings s = resolve_settings(impl_->info, options);
  char threshold[32];
  const auto res = std::to_chars(threshold, threshold + sizeof threshold, s.mask_threshold);
  const std::string text = "ovseg-analysis v" + std::to_string(detail::kAnalysisFormatVersion) + "\ncontent " +
                           content_sha256 + "\nmodel " + impl_->info.fingerprint + "\nmask_threshold " +
                           std::string(threshold, res.ptr) + "\nclip_ensemble " + (s.clip_ensemble ? "1" : "0");
  return detail::sha256_hex(text.data(), text.size());
}

Result Model::segment(const ImageView& image, const std::vector<std::string>& classes,
                      const SegmentOptions& options) const {
  return translate_errors("segment", [&] { return impl_->segment(image, classes, options); });
}

Result Model::segment_file(const std::string& path, const std::vector<std::string>& classes,
                           const SegmentOptions& options) const {
  const Image img = load_image(path);
  return translate_errors(path, [&] { return impl_->segment(img.view(), classes, options); });
}

void Model::Impl::check_classes(const std::vector<std::string>& classes, const char* what) {
  if (classes.empty()) throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": the class list is empty");
  if (classes.size() >= kUnlabeled)
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) + ": too many classes (" + std::to_string(classes.size()) + ")");
  for (std::size_t i = 0; i < classes.size(); ++i)
    if (classes[i].find_first_not_of(" \t\r\n\f\v") == std::string::npos)
      throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": class " + std::to_string(i) + " is an empty name");
}

SegmentSettings Model::Impl::checked_settings(const SegmentOptions& options, double* weight, const char* what) const {
  const SegmentSettings settings = resolve_settings(info, options);
  const float threshold = settings.mask_threshold;
  // The bundle's weight as the manifest's double; a caller's float as the decimal it stands for.
  *weight = options.ensemble_weight ? as_decimal_double(*options.ensemble_weight)
                                    : manifest.defaults(options.mode).ensemble_weight;
  if (!(threshold >= 0.0f && threshold <= 1.0f))
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": mask_threshold must be in [0, 1]");
  if (!(*weight >= 0.0 && *weight <= 1.0))
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": ensemble_weight must be in [0, 1]");
  if (!settings.clip_ensemble && options.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) +
                    ": MaskFormer-only (clip_ensemble false) needs eval mode: the reference's demo path "
                    "uses the CLIP branch's regions");
  return settings;
}

Result Model::Impl::segment(const ImageView& view, const std::vector<std::string>& classes,
                            const SegmentOptions& options, detail::Oracle oracle,
                            const detail::GroundTruthView* gt) const {
  if (oracle != detail::Oracle::kNone) return segment_oracle(view, classes, options, oracle, gt);
  c10::InferenceMode guard;
  const auto t_start = Clock::now();
  // Every argument is checked before any work, in this order.
  check_classes(classes, "segment");
  double weight = 0;
  (void)checked_settings(options, &weight, "segment");
  check_image(view);
  const std::vector<std::string> used = detail::model_classes(options.mode, classes);

  Timings timings;
  StageClock clock(options, timings, "segment");
  at::Tensor text;
  // The text features T [(K+1),E] between preprocess and proposals, as the stage table orders them.
  const detail::AnalysisData a = analyze(view, options, clock, [&] {
    clock.begin(Stage::kText);
    text = this->text->text_matrix(used);
    detail::release_freed_memory();  // a cold class list ran the text tower
    clock.end();
    if (!options.dump_dir.empty()) write_npy(options.dump_dir, "text_features.npy", text);
  });
  Result result = classify(a, classes, options, clock, &text);
  result.timings = timings;
  result.timings.total_ms = ms_since(t_start);
  if (options.progress) options.progress("done", 1.0f);  // the work is done: nothing left to cancel
  detail::log().debug("segment {}x{} → {}x{}, K={}, {} valid region(s), {:.1f} ms", a.width, a.height,
                      a.resized_width, a.resized_height, used.size(), a.queries.size(), result.timings.total_ms);
  return result;
}

detail::AnalysisData Model::Impl::analyze(const ImageView& view, const SegmentOptions& options, StageClock& clock,
                                          const std::function<void()>& between) const {
  const detail::Manifest& m = manifest;
  const SegmentSettings settings = resolve_settings(info, options);
  const float threshold = settings.mask_threshold;
  const bool clip_branch = settings.clip_ensemble;
  // The debug tap (SegmentOptions::dump_dir): a stage's outputs, written right after it ran.
  auto tap = [&](const char* name, const at::Tensor& t) {
    if (!options.dump_dir.empty() && t.defined()) write_npy(options.dump_dir, name, t);
  };
  detail::AnalysisData a;
  a.model_fingerprint = info.fingerprint;
  a.mask_threshold = threshold;
  a.clip_branch = clip_branch;

  // ---- preprocess: RGB, test-time resize (Pillow bilinear), normalise + pad ----
  clock.begin(Stage::kPreprocess);
  const Image rgb = to_rgb(view);
  const int h0 = rgb.height;
  const int w0 = rgb.width;
  const auto [h, w] = detail::test_resize_size(h0, w0, m.min_size_test, m.max_size_test);
  Image resized_storage;
  if (h != h0 || w != w0) resized_storage = detail::resize_pillow_bilinear(rgb, w, h);
  const Image& resized = (h != h0 || w != w0) ? resized_storage : rgb;
  const detail::ProposalInput input = detail::prepare_proposal_input(resized, m, device);
  a.width = w0;
  a.height = h0;
  a.resized_width = w;
  a.resized_height = h;
  a.padded_height = input.padded.size(2);
  a.padded_width = input.padded.size(3);
  detail::synchronize(device);
  clock.end();
  if (between) between();

  // ---- proposals ----
  clock.begin(Stage::kProposals);
  detail::Proposals proposals = detail::run_proposals(*modules, input.padded);
  detail::synchronize(device);
  // The backbone's activations are gone: give their pages back before the next stage's peak.
  detail::release_freed_memory();
  clock.end();
  tap("pred_embeddings.npy", proposals.class_embeddings);
  tap("pred_masks_lowres.npy", proposals.mask_logits);

  // ---- masks and regions ----
  clock.begin(Stage::kRegions);
  const detail::SoftMasks masks(proposals.mask_logits, a.padded_height, a.padded_width, h, w);
  detail::Regions regions;
  if (clip_branch) {
    regions = detail::extract_regions(input.image, masks, threshold, m);
  } else {
    // MaskFormer-only: no region is extracted (the threshold plays no part, as in the reference).
    regions.valid = at::zeros({masks.num_queries()}, at::TensorOptions().dtype(at::kBool).device(device));
  }
  detail::synchronize(device);
  detail::release_freed_memory();
  clock.end();
  tap("valid_flag.npy", regions.valid.to(at::kFloat));

  // ---- CLIP over the regions: their embeddings (the class names enter in classify) ----
  clock.begin(Stage::kClip);
  if (clip_branch) {
    const auto nv = static_cast<int64_t>(regions.queries.size());
    const int batch = detail::choose_region_batch(m, device, modules->visual_dtype(), model_options.region_batch, nv);
    a.clip_features = detail::clip_region_features(*modules, regions, batch);
    // B of the valid queries only (the others' rows are all false).
    a.binary_valid = nv > 0 ? regions.binary.index_select(
                                  0, at::tensor(regions.queries, at::TensorOptions().dtype(at::kLong)).to(device))
                            : at::zeros({0, h, w}, at::TensorOptions().dtype(at::kBool).device(device));
    detail::synchronize(device);
    detail::release_freed_memory();
  }
  clock.end();

  a.class_embeddings = proposals.class_embeddings;
  a.mask_logits = proposals.mask_logits;
  a.valid = regions.valid;
  a.queries = std::move(regions.queries);
  a.boxes = std::move(regions.boxes);
  a.areas = std::move(regions.areas);
  for (const Stage st : {Stage::kPreprocess, Stage::kProposals, Stage::kRegions, Stage::kClip})
    a.timings[st] = clock.timings()[st];
  return a;
}

Result Model::Impl::classify(const detail::AnalysisData& a, const std::vector<std::string>& classes,
                             const SegmentOptions& options, StageClock& clock, const at::Tensor* text_in) const {
  const detail::Manifest& m = manifest;
  double weight = 0;
  const SegmentSettings settings = checked_settings(options, &weight, "classify");
  // Whether the analysis fits: the same model, threshold and (for the CLIP ensemble) regions.
  if (a.model_fingerprint != info.fingerprint)
    throw Error(ErrorCode::kInvalidArgument,
                "classify: the analysis was made by another model (bundle, precision or device: fingerprint " +
                    a.model_fingerprint.substr(0, 12) + ", this model's " + info.fingerprint.substr(0, 12) + ")");
  if (settings.mask_threshold != a.mask_threshold)
    throw Error(ErrorCode::kInvalidArgument,
                "classify: mask_threshold " + std::to_string(settings.mask_threshold) + " differs from the " +
                    std::to_string(a.mask_threshold) + " the analysis was made with (analyze the image again)");
  const bool clip_branch = settings.clip_ensemble;
  if (clip_branch && !a.clip_branch)
    throw Error(ErrorCode::kInvalidArgument,
                "classify: clip_ensemble: the analysis is MaskFormer-only (no regions, no CLIP), the options ask "
                "for the CLIP ensemble (analyze the image again without clip_ensemble false)");
  auto tap = [&](const char* name, const at::Tensor& t) {
    if (!options.dump_dir.empty() && t.defined()) write_npy(options.dump_dir, name, t);
  };
  const std::vector<std::string> used = detail::model_classes(options.mode, classes);
  const int64_t k = static_cast<int64_t>(used.size());
  const int w0 = a.width, h0 = a.height, w = a.resized_width, h = a.resized_height;

  Result result;
  result.settings = settings;
  result.classes = classes;
  result.score_classes = used;
  result.width = w0;
  result.height = h0;
  result.resized_width = w;
  result.resized_height = h;

  // ---- text features T [(K+1),E] ----
  at::Tensor text;
  if (text_in) {
    text = *text_in;
  } else {
    clock.begin(Stage::kText);
    text = this->text->text_matrix(used);
    detail::release_freed_memory();  // a cold class list ran the text tower
    clock.end();
    tap("text_features.npy", text);
  }

  // ---- ensemble, score map, resize, argmax ----
  clock.begin(Stage::kPost);
  const auto nv = clip_branch ? static_cast<int64_t>(a.queries.size()) : int64_t{0};
  const at::Tensor clip_logits =
      clip_branch ? detail::similarity_logits(a.clip_features.to(text.device()), text, m.temperature)  // [Nv,K+1]
                  : at::zeros({0, k + 1}, at::TensorOptions().dtype(at::kFloat).device(device));
  tap("clip_logits.npy", clip_logits);
  const detail::SoftMasks masks(a.mask_logits.to(device), a.padded_height, a.padded_width, h, w);
  detail::EnsembleInput ens;
  ens.mf_logits = detail::maskformer_logits(a.class_embeddings.to(device), text, m.temperature);
  ens.masks = &masks;
  if (options.mode == Mode::kDemo) {
    ens.binary = a.binary_valid.to(device);
    ens.binary_valid_only = true;
  }
  ens.valid = clip_branch ? a.valid.to(device)
                          : at::zeros({a.valid.size(0)}, at::TensorOptions().dtype(at::kBool).device(device));
  ens.clip_logits = clip_logits;
  ens.ensemble_weight = weight;
  ens.clip_branch = clip_branch;
  ens.mode = options.mode;
  ens.skip_last_selection = detail::others_selects_no_region(options.mode, used);
  ens.out_height = h0;
  ens.out_width = w0;
  ens.keep_scores = options.keep_scores || !options.dump_dir.empty();
  const detail::EnsembleOutput post = detail::ensemble(ens);
  assemble_result(result, post, options.keep_scores, options.mode, a.queries, a.boxes, a.areas, nv, w0, h0, w, h);
  clock.end();
  tap("sem_seg.npy", post.scores);
  if (!options.dump_dir.empty()) detail::log().debug("segment: intermediates written to {}", options.dump_dir);
  return result;
}

Result Model::Impl::segment_oracle(const ImageView& view, const std::vector<std::string>& classes,
                                   const SegmentOptions& options, detail::Oracle oracle,
                                   const detail::GroundTruthView* gt) const {
  c10::InferenceMode guard;
  const auto t_start = Clock::now();
  const detail::Manifest& m = manifest;

  // ---- arguments (as segment() checks them) ----
  check_classes(classes, "segment");
  double weight = 0;
  const SegmentSettings settings = checked_settings(options, &weight, "segment");
  const float threshold = settings.mask_threshold;
  check_image(view);

  const bool oracle_masks = oracle == detail::Oracle::kMasks;
  const bool oracle_labels = oracle == detail::Oracle::kLabels;
  if (options.mode != Mode::kEval)
    throw Error(ErrorCode::kInvalidArgument, "segment: the oracle analyses run on the evaluation path only");
  if (!settings.clip_ensemble)
    throw Error(ErrorCode::kInvalidArgument, "segment: the oracle analyses need the CLIP branch (not MaskFormer-only)");
  if (gt == nullptr || gt->labels == nullptr)
    throw Error(ErrorCode::kInvalidArgument, "segment: an oracle needs the ground truth");
  if (gt->width != view.width || gt->height != view.height)
    throw Error(ErrorCode::kInvalidArgument, "segment: ground truth is " + std::to_string(gt->width) + "x" +
                                                 std::to_string(gt->height) + " but the image is " +
                                                 std::to_string(view.width) + "x" + std::to_string(view.height));

  const std::vector<std::string> used = detail::model_classes(options.mode, classes);
  const int64_t k = static_cast<int64_t>(used.size());

  Result result;
  result.settings = settings;
  result.classes = classes;
  result.score_classes = used;
  StageClock clock(options, result.timings, "segment");
  auto begin = [&](Stage stage) { clock.begin(stage); };
  auto end = [&] { clock.end(); };
  // The debug tap (SegmentOptions::dump_dir): a stage's outputs, written right after it ran.
  const std::string& dump_dir = options.dump_dir;
  auto tap = [&](const char* name, const at::Tensor& t) {
    if (!dump_dir.empty() && t.defined()) write_npy(dump_dir, name, t);
  };

  // ---- preprocess: RGB, test-time resize (Pillow bilinear), normalise + pad ----
  begin(Stage::kPreprocess);
  const Image rgb = to_rgb(view);
  const int h0 = rgb.height;
  const int w0 = rgb.width;
  const auto [h, w] = detail::test_resize_size(h0, w0, m.min_size_test, m.max_size_test);
  Image resized_storage;
  if (h != h0 || w != w0) resized_storage = detail::resize_pillow_bilinear(rgb, w, h);
  const Image& resized = (h != h0 || w != w0) ? resized_storage : rgb;
  const detail::ProposalInput input = detail::prepare_proposal_input(resized, m, device);
  result.width = w0;
  result.height = h0;
  result.resized_width = w;
  result.resized_height = h;
  detail::synchronize(device);
  end();

  // ---- text features T [(K+1),E] ----
  begin(Stage::kText);
  const at::Tensor text = this->text->text_matrix(used);
  detail::release_freed_memory();  // a cold class list ran the text tower
  end();
  tap("text_features.npy", text);

  // ---- proposals ----
  begin(Stage::kProposals);
  detail::Proposals proposals;
  if (!oracle_masks) {  // the ground-truth segments replace the proposals
    proposals = detail::run_proposals(*modules, input.padded);
    detail::synchronize(device);
    // The backbone's activations are gone: give their pages back before the next stage's peak.
    detail::release_freed_memory();
  }
  end();
  if (oracle_masks) result.timings.proposals_ms = 0.0;
  tap("pred_embeddings.npy", proposals.class_embeddings);
  tap("pred_masks_lowres.npy", proposals.mask_logits);

  // ---- masks and regions ----
  begin(Stage::kRegions);
  // The oracles compare with the ground truth at the resized size (Pillow NEAREST).
  const std::vector<std::uint16_t> gt_resized = detail::resize_labels_nearest(gt->labels, w0, h0, w, h);
  std::optional<detail::SoftMasks> masks;
  detail::Regions regions;
  detail::ClassMasks gt_masks;
  if (oracle_masks) {
    gt_masks = detail::ground_truth_masks(gt->labels, w0, h0, gt_resized, w, h, k, gt->ignore_label, device);
    if (!gt_masks.classes.empty()) regions = detail::regions_from_masks(input.image, gt_masks.binary, m);
  } else {
    masks.emplace(proposals.mask_logits, input.padded.size(2), input.padded.size(3), h, w);
    regions = detail::extract_regions(input.image, *masks, threshold, m, /*with_crops=*/!oracle_labels);
  }
  detail::synchronize(device);
  detail::release_freed_memory();
  end();
  if (regions.valid.defined()) tap("valid_flag.npy", regions.valid.to(at::kFloat));

  // ---- CLIP over the regions ----
  begin(Stage::kClip);
  const auto nv = static_cast<int64_t>(regions.queries.size());
  at::Tensor clip_logits;
  if (oracle_labels) {  // the ground truth labels the regions: no CLIP
    clip_logits = at::zeros({nv, k + 1}, at::TensorOptions().dtype(at::kFloat).device(device));
  } else {
    const int batch = detail::choose_region_batch(m, device, modules->visual_dtype(), model_options.region_batch, nv);
    clip_logits = detail::clip_region_logits(*modules, regions, text, m.temperature, batch);
    detail::synchronize(device);
    detail::release_freed_memory();
  }
  end();
  tap("clip_logits.npy", clip_logits);
  if (oracle_masks) {
    begin(Stage::kPost);
    label_by_ground_truth_regions(result, classes, *gt, gt_masks.classes, regions, clip_logits, w0, h0, w, h);
    end();
    result.timings.total_ms = ms_since(t_start);
    if (options.progress) options.progress("done", 1.0f);
    return result;
  }

  // ---- ensemble, score map, resize, argmax ----
  begin(Stage::kPost);
  detail::EnsembleInput ens;
  ens.mf_logits = detail::maskformer_logits(proposals.class_embeddings, text, m.temperature);
  ens.masks = &*masks;
  ens.binary = regions.binary;
  ens.valid = regions.valid;
  ens.clip_logits = clip_logits;
  ens.ensemble_weight = weight;
  ens.clip_branch = true;
  ens.mode = options.mode;
  ens.skip_last_selection = detail::others_selects_no_region(options.mode, used);
  ens.out_height = h0;
  ens.out_width = w0;
  ens.keep_scores = options.keep_scores || !dump_dir.empty();
  if (oracle_labels)  // each valid region takes the ground-truth class covering most of it
    ens.probs_override = detail::one_hot_probs(
        detail::majority_classes(regions.binary, regions.queries, gt_resized, k, gt->ignore_label), k, device);
  const detail::EnsembleOutput post = detail::ensemble(ens);
  assemble_result(result, post, options.keep_scores, options.mode, regions.queries, regions.boxes, regions.areas, nv,
                  w0, h0, w, h);
  end();

  tap("sem_seg.npy", post.scores);
  if (!dump_dir.empty()) detail::log().debug("segment: intermediates written to {}", dump_dir);
  result.timings.total_ms = ms_since(t_start);
  if (options.progress) options.progress("done", 1.0f);  // the work is done: nothing left to cancel
  detail::log().debug("segment {}x{} → {}x{}, K={}, {} valid region(s), {:.1f} ms", w0, h0, w, h, k, nv,
                      result.timings.total_ms);
  return result;
}

}  // namespace ovseg
