// SamSegmenter: SAM masks classified with an ov-seg bundle's CLIP, as ov-seg's online demo does
// (SAMVisualizationDemo.run_on_image, re-derived; see sam.hpp for the two variants).
//
// The demo's arithmetic in float32 (as the fixtures): crops where(mask, image, fill) with
// fill = float32(255·CLIP mean); bicubic 224 (align_corners false) on 0–255 values, then
// (r / 255 − mean) / std; CLIP image features L2-normalised; text features of "a photo of {}"
// L2-normalised; softmax(100·img·txtᵀ); selection; einsum; argmax; nearest resize (OpenCV).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <new>
#include <utility>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "image/image_ops.hpp"
#include "ovseg/sam.hpp"
#include "pipeline/pipeline.hpp"

namespace ovseg {
namespace {

using detail::Clock;
using detail::ms_since;

using detail::translate_errors;

// open_vocab_seg.modeling.clip_adapter.adapter PIXEL_MEAN / PIXEL_STD (0–1 scale).
constexpr float kClipMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr float kClipStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

// The demo's resize: long side 1280, the other int((1280 / long) · short), cv2 INTER_LINEAR.
Image demo_resize(const Image& img, int long_side) {
  if (long_side <= 0) return img;
  int nw, nh;
  if (img.width > img.height) {
    nw = long_side;
    nh = static_cast<int>((static_cast<double>(long_side) / img.width) * img.height);
  } else {
    nh = long_side;
    nw = static_cast<int>((static_cast<double>(long_side) / img.height) * img.width);
  }
  nw = std::max(nw, 1);
  nh = std::max(nh, 1);
  const cv::Mat src(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.rgb.data()));
  Image out;
  out.width = nw;
  out.height = nh;
  out.rgb.resize(static_cast<size_t>(nw) * nh * 3);
  cv::Mat dst(nh, nw, CV_8UC3, out.rgb.data());
  cv::resize(src, dst, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  return out;
}

}  // namespace

const char* to_string(SamClassifier c) noexcept { return c == SamClassifier::kDemo ? "demo" : "ovseg"; }
SamClassifier parse_sam_classifier(const std::string& s) {
  if (s == "demo") return SamClassifier::kDemo;
  if (s == "ovseg") return SamClassifier::kOvseg;
  throw Error(ErrorCode::kInvalidArgument, "sam classifier '" + s + "': expected demo or ovseg");
}

struct SamAnalysis::Impl {
  int W0 = 0, H0 = 0;  // original size
  int h = 0, w = 0;    // SAM input size (the demo resize)
  std::vector<SamMask> masks;      // the generator's output, at h × w
  std::vector<SamRegion> regions;  // index, box, area and the generator's scores (no classes yet)
  at::Tensor img_feat;             // [N,E] CLIP embeddings of the masked crops, normalised, CPU float
  SamTimings sam_timings;
  double regions_ms = 0;           // crops + CLIP
  // What it was made with (classify refuses other values).
  SamClassifier classifier = SamClassifier::kDemo;
  int long_side = 0;
  SamGeneratorOptions generator;

  std::size_t bytes() const noexcept {
    std::size_t b = sizeof(*this) + regions.size() * sizeof(SamRegion);
    for (const auto& m : masks) b += sizeof(SamMask) + m.segmentation.size();
    if (img_feat.defined()) b += static_cast<std::size_t>(img_feat.numel()) * sizeof(float);
    return b;
  }
};

// The checks of a class list and the class-side options, before anything runs.
static void check_class_options(const std::vector<std::string>& classes, const SamSegmentOptions& o) {
  if (classes.empty()) throw Error(ErrorCode::kInvalidArgument, "segment: the class list is empty");
  if (classes.size() >= 255)
    throw Error(ErrorCode::kInvalidArgument, "segment --proposals sam: at most 254 classes");
  if (!(o.granularity >= 0.0 && o.granularity <= 1.0))
    throw Error(ErrorCode::kInvalidArgument, "granularity must be in [0, 1]");
}

struct SamSegmenter::Impl {
  c10::Device device{c10::kCPU};
  std::unique_ptr<detail::Manifest> manifest;       // the bundle's
  std::unique_ptr<detail::Manifest> demo_manifest;  // the demo's single template, fp16-rounded weights
  detail::TextCacheOptions cache;
  // The demo classifier's CLIP: the bundle's towers with their weights rounded to float16 (loaded
  // with the bundle). [QUIRK] The demo's reference arithmetic ran on CLIP weights that had been
  // through OpenAI CLIP's convert_weights (fp16) and back to float32; with the bundle's exact
  // float32 weights the sam_tiny fixture's text features are 9.8e-5 off and its image features
  // 1.3e-4 (class probabilities 1.46e-4), with the rounded weights 7e-8, 1.5e-7 and ~1e-6.
  std::unique_ptr<detail::Modules> demo_modules;
  std::unique_ptr<detail::TextFeatures> demo_text;
  // The ov-seg variant's CLIP (the bundle's exact weights), loaded on its first use.
  mutable std::once_flag ovseg_once;
  mutable std::unique_ptr<detail::Modules> ovseg_modules;
  mutable std::unique_ptr<detail::TextFeatures> ovseg_text;
  std::unique_ptr<SamModel> sam;
  ModelInfo info;

  std::unique_ptr<SamAnalysis::Impl> analyze(const ImageView& view, const SamSegmentOptions& o) const;
  SamSegmentation classify(const SamAnalysis::Impl& a, const std::vector<std::string>& classes,
                           const SamSegmentOptions& o) const;
  static void check_fits(const SamAnalysis::Impl& a, const SamSegmentOptions& o);
  // The modules and text features of classifier c.
  std::pair<const detail::Modules*, const detail::TextFeatures*> clip(SamClassifier c) const {
    if (c == SamClassifier::kDemo) return {demo_modules.get(), demo_text.get()};
    std::call_once(ovseg_once, [&] {
      auto m = detail::Modules::load(*manifest, device, at::kFloat);
      ovseg_text = std::make_unique<detail::TextFeatures>(*manifest, *m, cache);
      ovseg_modules = std::move(m);
    });
    return {ovseg_modules.get(), ovseg_text.get()};
  }
};

SamSegmenter::SamSegmenter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SamSegmenter::SamSegmenter(SamSegmenter&&) noexcept = default;
SamSegmenter& SamSegmenter::operator=(SamSegmenter&&) noexcept = default;
SamSegmenter::~SamSegmenter() = default;
const SamModel& SamSegmenter::sam() const noexcept { return *impl_->sam; }
const ModelInfo& SamSegmenter::info() const noexcept { return impl_->info; }

SamSegmenter SamSegmenter::load(const std::string& ovseg_bundle, const std::string& sam_bundle,
                                const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->sam = std::make_unique<SamModel>(SamModel::load(sam_bundle, options));
  return translate_errors(ovseg_bundle, [&] {
    impl->device = detail::parse_device(options.device);
    c10::InferenceMode guard;
    impl->manifest = std::make_unique<detail::Manifest>(detail::read_manifest(ovseg_bundle, true));
    impl->demo_manifest = std::make_unique<detail::Manifest>(*impl->manifest);
    impl->demo_manifest->templates = {"a photo of {}"};
    impl->demo_manifest->template_set = "sam-demo";
    // Part of the text disk cache's key: features of the rounded tower are not the bundle's.
    impl->demo_manifest->clip_text_sha256 += "+fp16-rounded-weights";
    impl->demo_modules = detail::Modules::load(*impl->manifest, impl->device, at::kFloat);
    const int rounded = impl->demo_modules->round_clip_weights_to_half();
    detail::log().debug("sam demo classifier: {} CLIP weight tensors rounded to float16", rounded);
    impl->cache.disk = options.text_disk_cache;
    impl->cache.dir =
        options.text_disk_cache ? detail::resolve_text_cache_dir(options.text_cache_dir) : std::string();
    impl->demo_text = std::make_unique<detail::TextFeatures>(*impl->demo_manifest, *impl->demo_modules, impl->cache);
    ModelInfo& info = impl->info;
    info.name = impl->manifest->name;
    info.bundle_dir = impl->manifest->dir;
    info.backbone = impl->manifest->backbone;
    info.clip_model = impl->manifest->clip_model;
    info.embed_dim = impl->manifest->embed_dim;
    info.device = impl->device.str();
    info.precision = "fp32";
    info.manifest_json = impl->manifest->json_pretty;
    return SamSegmenter(std::move(impl));
  });
}

SamAnalysis::SamAnalysis(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SamAnalysis::SamAnalysis(SamAnalysis&&) noexcept = default;
SamAnalysis& SamAnalysis::operator=(SamAnalysis&&) noexcept = default;
SamAnalysis::~SamAnalysis() = default;
std::size_t SamAnalysis::bytes() const noexcept { return impl_->bytes(); }
int SamAnalysis::width() const noexcept { return impl_->W0; }
int SamAnalysis::height() const noexcept { return impl_->H0; }
int SamAnalysis::num_masks() const noexcept { return static_cast<int>(impl_->masks.size()); }
const SamTimings& SamAnalysis::sam_timings() const noexcept { return impl_->sam_timings; }
double SamAnalysis::regions_ms() const noexcept { return impl_->regions_ms; }

SamSegmentation SamSegmenter::segment(const ImageView& image, const std::vector<std::string>& classes,
                                      const SamSegmentOptions& options) const {
  return translate_errors("segment (sam)", [&] {
    check_class_options(classes, options);  // before the (slow) generator
    const SamAnalysis a = analyze(image, options);
    SamSegmentation out = impl_->classify(*a.impl_, classes, options);
    // The whole call's times, as one pass: proposals = the generator, post = crops + CLIP + the rest.
    out.classify_ms += a.impl_->regions_ms;
    out.result.timings.proposals_ms = a.impl_->sam_timings.total_ms;
    out.result.timings.post_ms = out.classify_ms;
    out.result.timings.total_ms = out.result.timings.proposals_ms + out.classify_ms;
    return out;
  });
}

SamAnalysis SamSegmenter::analyze(const ImageView& image, const SamSegmentOptions& options) const {
  return translate_errors("analyze (sam)", [&] { return SamAnalysis(impl_->analyze(image, options)); });
}

SamSegmentation SamSegmenter::classify(const SamAnalysis& analysis, const std::vector<std::string>& classes,
                                       const SamSegmentOptions& options) const {
  return translate_errors("classify (sam)", [&] {
    check_class_options(classes, options);
    return impl_->classify(*analysis.impl_, classes, options);
  });
}

std::unique_ptr<SamAnalysis::Impl> SamSegmenter::Impl::analyze(const ImageView& view, const SamSegmentOptions& o) const {
  validate(o.generator);
  if (view.data == nullptr || view.width <= 0 || view.height <= 0)
    throw Error(ErrorCode::kBadImage, "image: empty image (no pixel data or a zero size)");
  c10::InferenceMode guard;
  auto a = std::make_unique<SamAnalysis::Impl>();
  a->classifier = o.classifier;
  a->long_side = o.long_side;
  a->generator = o.generator;
  const Image original = to_rgb(view);
  a->H0 = original.height;
  a->W0 = original.width;
  const Image img = demo_resize(original, o.long_side);
  a->h = img.height;
  a->w = img.width;
  SamResult sr = sam->generate(img.view(), o.generator);
  a->sam_timings = sr.timings;
  const auto t0 = Clock::now();
  const auto n = static_cast<int64_t>(sr.masks.size());
  const int64_t h = img.height, w = img.width;
  a->masks = std::move(sr.masks);
  if (n == 0) {
    a->regions_ms = ms_since(t0);
    return a;
  }

  // ---- region crops ----
  const auto fopt = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor image = at::from_blob(const_cast<uint8_t*>(img.rgb.data()), {h, w, 3}, at::kByte)
                               .permute({2, 0, 1}).to(at::kFloat).contiguous();  // [3,h,w] 0–255
  const detail::Manifest& m = *manifest;
  const int64_t res_px = m.region_resolution;
  at::Tensor fill = at::tensor(std::vector<float>(m.clip_fill.begin(), m.clip_fill.end()), fopt).view({3, 1, 1});
  const at::Tensor mean01 = at::tensor(std::vector<float>(kClipMean, kClipMean + 3), fopt).view({1, 3, 1, 1});
  const at::Tensor std01 = at::tensor(std::vector<float>(kClipStd, kClipStd + 3), fopt).view({1, 3, 1, 1});
  const at::Tensor mean255 = at::tensor(std::vector<float>(m.clip_mean255.begin(), m.clip_mean255.end()), fopt).view({3, 1, 1});
  const at::Tensor std255 = at::tensor(std::vector<float>(m.clip_std255.begin(), m.clip_std255.end()), fopt).view({3, 1, 1});
  at::Tensor images = at::empty({n, 3, res_px, res_px}, fopt);
  at::Tensor prompts = at::ones({n, 1, res_px, res_px}, fopt);
  a->regions.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const SamMask& sm = a->masks[static_cast<size_t>(r)];
    SamRegion& reg = a->regions[static_cast<size_t>(r)];
    reg.index = static_cast<int>(r);
    reg.area = sm.area;
    reg.predicted_iou = sm.predicted_iou;
    reg.stability_score = sm.stability_score;
    // BitMasks.get_bounding_boxes: [x0, y0, x1 + 1, y1 + 1] (the generator's bbox is XYWH with
    // inclusive maxima); an empty mask gives a zero box.
    const at::Tensor mask = at::from_blob(const_cast<uint8_t*>(sm.segmentation.data()), {h, w}, at::kByte).to(at::kBool);
    const at::Tensor rows = mask.any(1), cols = mask.any(0);
    const at::Tensor ry = rows.nonzero(), cx = cols.nonzero();
    if (ry.numel() == 0) {
      reg.box = Box{0, 0, 0, 0};
    } else {
      reg.box = Box{static_cast<int>(cx[0].item<int64_t>()), static_cast<int>(ry[0].item<int64_t>()),
                    static_cast<int>(cx[-1].item<int64_t>() + 1), static_cast<int>(ry[-1].item<int64_t>() + 1)};
    }
    const Box& b = reg.box;
    if (b.x1 <= b.x0 || b.y1 <= b.y0) {
      images[r].zero_();
      continue;
    }
    const at::Tensor mb = mask.narrow(0, b.y0, b.y1 - b.y0).narrow(1, b.x0, b.x1 - b.x0);
    const at::Tensor crop = image.narrow(1, b.y0, b.y1 - b.y0).narrow(2, b.x0, b.x1 - b.x0);
    const at::Tensor region = at::where(mb.unsqueeze(0), crop, fill).unsqueeze(0);  // [1,3,bh,bw]
    if (o.classifier == SamClassifier::kDemo) {
      const at::Tensor up = at::upsample_bicubic2d(region, {res_px, res_px}, false);
      images[r].copy_((((up / 255.0) - mean01) / std01)[0]);
    } else {
      const at::Tensor norm = (region - mean255) / std255;
      images[r].copy_(at::upsample_bicubic2d(norm, {res_px, res_px}, false)[0]);
      prompts[r].copy_(at::upsample_nearest2d(mb.to(at::kFloat).unsqueeze(0).unsqueeze(0).contiguous(),
                                              {res_px, res_px})[0]);
    }
  }

  // ---- CLIP ----
  const auto [modules, tf_ptr] = clip(o.classifier);
  std::vector<at::Tensor> feats;
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const int64_t b1 = std::min(n, b0 + 32);
    feats.push_back(modules->clip_visual(images.slice(0, b0, b1).to(device), prompts.slice(0, b0, b1).to(device))
                        .to(at::kCPU));
  }
  a->img_feat = at::cat(feats, 0).contiguous();  // [N,E] normalised
  a->regions_ms = ms_since(t0);
  return a;
}

void SamSegmenter::Impl::check_fits(const SamAnalysis::Impl& a, const SamSegmentOptions& o) {
  auto refuse = [](const std::string& option, const std::string& made, const std::string& asked) {
    throw Error(ErrorCode::kInvalidArgument, "classify: the SAM analysis was made with " + option + " " + made +
                                                 ", not " + asked + " (analyze the image again)");
  };
  if (a.classifier != o.classifier) refuse("classifier", to_string(a.classifier), to_string(o.classifier));
  if (a.long_side != o.long_side) refuse("long_side", std::to_string(a.long_side), std::to_string(o.long_side));
  const SamGeneratorOptions& g = a.generator;
  const SamGeneratorOptions& q = o.generator;
  auto same = [&](const char* name, double x, double y) {
    auto text = [](double v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.9g", v);
      return std::string(b);
    };
    if (x != y) refuse(std::string("generator option ") + name, text(x), text(y));
  };
  same("points_per_side", g.points_per_side, q.points_per_side);
  same("pred_iou_thresh", g.pred_iou_thresh, q.pred_iou_thresh);
  same("stability_score_thresh", g.stability_score_thresh, q.stability_score_thresh);
  same("stability_score_offset", g.stability_score_offset, q.stability_score_offset);
  same("box_nms_thresh", g.box_nms_thresh, q.box_nms_thresh);
  same("crop_n_layers", g.crop_n_layers, q.crop_n_layers);
  same("crop_nms_thresh", g.crop_nms_thresh, q.crop_nms_thresh);
  same("crop_overlap_ratio", g.crop_overlap_ratio, q.crop_overlap_ratio);
  same("crop_n_points_downscale_factor", g.crop_n_points_downscale_factor, q.crop_n_points_downscale_factor);
  same("min_mask_region_area", g.min_mask_region_area, q.min_mask_region_area);
  // points_per_batch changes memory only, never the masks.
}

SamSegmentation SamSegmenter::Impl::classify(const SamAnalysis::Impl& a, const std::vector<std::string>& classes,
                                             const SamSegmentOptions& o) const {
  check_fits(a, o);
  c10::InferenceMode guard;
  const auto t0 = Clock::now();
  const int H0 = a.H0, W0 = a.W0;
  SamSegmentation out;
  Result& res = out.result;
  res.width = W0;
  res.height = H0;
  res.classes = classes;
  // The online demo's path: demo mode; no mask threshold or ensemble applies (SAM's masks are binary).
  res.settings = SegmentSettings{Mode::kDemo, 0.0f, 0.0f, true};
  // [QUIRK] the demo appends "others" to a single class (the one "others" rule of the library,
  // detail::model_classes); its pixels are unlabelled here.
  const std::vector<std::string> used = detail::model_classes(Mode::kDemo, classes);
  const bool others = classes.size() == 1;
  const auto k = static_cast<int64_t>(used.size());
  res.score_classes = used;
  res.class_pixels.assign(classes.size(), 0);
  out.sam_width = a.w;
  out.sam_height = a.h;
  res.resized_width = a.w;
  res.resized_height = a.h;
  out.sam_timings = a.sam_timings;
  const auto n = static_cast<int64_t>(a.masks.size());
  const int64_t h = a.h, w = a.w;
  const auto fopt = at::TensorOptions().dtype(at::kFloat);
  auto finish = [&] {
    out.classify_ms = ms_since(t0);
    res.timings.post_ms = out.classify_ms;
    res.timings.total_ms = out.classify_ms;
  };
  if (n == 0) {
    // The demo would crash here (np.row_stack of nothing); ovseg returns an all-unlabelled map.
    out.message = "no SAM mask survived the generator's filters: every pixel is unlabelled";
    res.labels.assign(static_cast<size_t>(H0) * W0, kUnlabeled);
    res.unlabeled_pixels = static_cast<int64_t>(H0) * W0;
    if (o.keep_scores) res.scores.assign(static_cast<size_t>(k) * H0 * W0, 0.0f);
    finish();
    return out;
  }
  out.regions = a.regions;
  const at::Tensor& img_feat = a.img_feat;
  const detail::TextFeatures& tf = *clip(a.classifier).second;
  const at::Tensor txt = tf.class_features(used).to(at::kCPU, at::kFloat);  // [K,E] normalised
  const at::Tensor class_preds = (100.0 * at::matmul(img_feat, txt.t())).softmax(-1).contiguous();  // [N,K]

  // ---- selection ----
  const auto [max_scores, argmax_rows] = class_preds.max(0);
  std::vector<int64_t> selected;
  const int64_t kc = others ? k - 1 : k;  // "others" selects nothing
  if (o.granularity < 1.0) {
    const at::Tensor thr = max_scores * o.granularity;
    for (int64_t c = 0; c < kc; ++c) {
      const at::Tensor locs = (class_preds.select(1, c) > thr[c]).nonzero().flatten();
      for (int64_t i = 0; i < locs.numel(); ++i) selected.push_back(locs[i].item<int64_t>());
    }
  } else {
    for (int64_t c = 0; c < kc; ++c) selected.push_back(argmax_rows[c].item<int64_t>());
  }
  at::Tensor select_cls = at::zeros_like(class_preds);
  for (int64_t q : selected) {
    select_cls[q].copy_(class_preds[q]);
    out.regions[static_cast<size_t>(q)].selected = true;
  }
  {
    const auto [best, best_idx] = class_preds.max(1);
    for (int64_t r = 0; r < n; ++r) {
      SamRegion& reg = out.regions[static_cast<size_t>(r)];
      reg.class_index = static_cast<int>(best_idx[r].item<int64_t>());
      reg.score = best[r].item<float>();
      const float* p = class_preds[r].data_ptr<float>();
      reg.probs.assign(p, p + k);
    }
  }

  // ---- einsum("qc,qhw->chw"), argmax, blank → unlabelled, nearest resize ----
  const at::Tensor sel_t = select_cls.t().contiguous();  // [K,N]
  cv::Mat small(static_cast<int>(h), static_cast<int>(w), CV_16U);
  std::vector<float> score_small;
  if (o.keep_scores) score_small.resize(static_cast<size_t>(k * h * w));
  const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(n * w * 4, 1));
  for (int64_t y0 = 0; y0 < h; y0 += rows_per_chunk) {
    const int64_t y1 = std::min(h, y0 + rows_per_chunk);
    at::Tensor masks = at::empty({n, (y1 - y0) * w}, fopt);
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* src = a.masks[static_cast<size_t>(r)].segmentation.data() + y0 * w;
      float* dst = masks[r].data_ptr<float>();
      for (int64_t i = 0; i < (y1 - y0) * w; ++i) dst[i] = src[i] ? 1.0f : 0.0f;
    }
    const at::Tensor semseg = at::matmul(sel_t, masks).contiguous();  // [K,rows·w]
    const at::Tensor arg = semseg.argmax(0).to(at::kInt).contiguous();
    const float* s0 = semseg[0].data_ptr<float>();
    const int* a = arg.data_ptr<int>();
    for (int64_t i = 0; i < (y1 - y0) * w; ++i) {
      const int64_t y = y0 + i / w, x = i % w;
      uint16_t v = static_cast<uint16_t>(a[i]);
      if (s0[i] == 0.0f) v = 255;  // [QUIRK] channel 0 exactly 0 → 255, whatever the argmax
      small.at<uint16_t>(static_cast<int>(y), static_cast<int>(x)) = v;
    }
    if (o.keep_scores) {
      const float* sp = semseg.data_ptr<float>();
      for (int64_t c = 0; c < k; ++c)
        std::copy(sp + c * (y1 - y0) * w, sp + (c + 1) * (y1 - y0) * w, score_small.data() + c * h * w + y0 * w);
    }
  }
  cv::Mat full;
  cv::resize(small, full, cv::Size(W0, H0), 0, 0, cv::INTER_NEAREST);
  res.labels.resize(static_cast<size_t>(H0) * W0);
  for (int y = 0; y < H0; ++y)
    for (int x = 0; x < W0; ++x) {
      const uint16_t v = full.at<uint16_t>(y, x);
      const size_t i = static_cast<size_t>(y) * W0 + x;
      if (v == 255 || (others && v == 1)) {
        res.labels[i] = kUnlabeled;
        ++res.unlabeled_pixels;
      } else {
        res.labels[i] = v;
        ++res.class_pixels[v];
      }
    }
  if (o.keep_scores) {
    res.scores.resize(static_cast<size_t>(k) * H0 * W0);
    for (int64_t c = 0; c < k; ++c) {
      const cv::Mat ch(static_cast<int>(h), static_cast<int>(w), CV_32F, score_small.data() + c * h * w);
      cv::Mat dst(H0, W0, CV_32F, res.scores.data() + c * H0 * W0);
      cv::resize(ch, dst, cv::Size(W0, H0), 0, 0, cv::INTER_NEAREST);
    }
  }
  // Result::segments: every SAM mask in the generator's order, in the original image's coordinates
  // as the MaskFormer path reports its regions (box scaled with floor/ceil, area scaled), the best
  // of the caller's classes ("others" excluded), and the generator's scores.
  {
    const double sx = static_cast<double>(W0) / static_cast<double>(w);
    const double sy = static_cast<double>(H0) / static_cast<double>(h);
    const int64_t kc_seg = others ? k - 1 : k;
    res.segments.reserve(out.regions.size());
    for (const SamRegion& reg : out.regions) {
      Segment seg;
      seg.query = reg.index;
      int best = 0;
      for (int c = 1; c < kc_seg; ++c)
        if (reg.probs[static_cast<size_t>(c)] > reg.probs[static_cast<size_t>(best)]) best = c;
      seg.class_index = best;
      seg.score = reg.probs[static_cast<size_t>(best)];
      const Box& b = reg.box;
      if (b.x1 > b.x0 && b.y1 > b.y0) {
        seg.box.x0 = static_cast<int>(std::floor(b.x0 * sx));
        seg.box.y0 = static_cast<int>(std::floor(b.y0 * sy));
        seg.box.x1 = std::min(W0, static_cast<int>(std::ceil(b.x1 * sx)));
        seg.box.y1 = std::min(H0, static_cast<int>(std::ceil(b.y1 * sy)));
      }
      seg.area = std::llround(static_cast<double>(reg.area) * sx * sy);
      seg.selected = reg.selected;
      seg.predicted_iou = reg.predicted_iou;
      seg.stability_score = reg.stability_score;
      res.segments.push_back(seg);
    }
  }
  finish();
  return out;
}

}  // namespace ovseg
