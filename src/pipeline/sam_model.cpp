// SamModel: the SAM bundle (manifest + three TorchScript modules) and the automatic mask
// generator (SamAutomaticMaskGenerator.generate, re-derived from the official code). The only SAM
// file with torch; the bookkeeping without tensors is in sam_amg.cpp.
//
// The arithmetic that decides which masks survive follows the official code step for step:
// float64 points through ResizeLongestSide.apply_coords and the prompt encoder's +0.5 and
// division (inside the module), float32 logits upsampled like Sam.postprocess_masks, float32
// thresholds (Python floats compared with float32 tensors are rounded to float32), stability =
// float32(count > thr+offset) / float32(count > thr−offset), torchvision NMS (sam_amg.cpp).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <new>

#include "common/fs_util.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "image/image_ops.hpp"
#include "ovseg/sam.hpp"
#include "pipeline/pipeline.hpp"
#include "pipeline/sam_amg.hpp"
#include "pipeline/script_module.hpp"

namespace fs = std::filesystem;

namespace ovseg {
namespace {

// The most points one decoder call takes (see generate: larger batches are split).
constexpr int64_t kMaxDecoderBatch = 64;

using detail::Clock;
using detail::ms_since;

using detail::translate_errors;

[[noreturn]] void bad(const std::string& file, const std::string& what) {
  throw Error(ErrorCode::kBadModel, file + ": " + what);
}

// The MaskFormer bundle's loader: regular file, no __setstate__, only the exporters' operators.
torch::jit::Module load_module(const std::string& path, c10::Device device) {
  return detail::load_script_module(path, device);
}

at::Tensor image_tensor(const Image& img, c10::Device device) {
  at::Tensor t = at::from_blob(const_cast<uint8_t*>(img.rgb.data()), {img.height, img.width, 3}, at::kByte);
  return t.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).contiguous().to(device);
}

Image crop_image(const Image& img, const std::array<int64_t, 4>& b) {
  Image out;
  out.width = static_cast<int>(b[2] - b[0]);
  out.height = static_cast<int>(b[3] - b[1]);
  out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = img.rgb.data() + ((static_cast<size_t>(b[1]) + y) * img.width + static_cast<size_t>(b[0])) * 3;
    std::copy(src, src + static_cast<size_t>(out.width) * 3, out.rgb.data() + static_cast<size_t>(y) * out.width * 3);
  }
  return out;
}

// One mask that passed the per-batch filters, in its crop's coordinates.
struct Candidate {
  at::Tensor mask;                // [ch,cw] bool, CPU
  std::array<int64_t, 4> box{};   // XYXY inclusive maxima, crop coordinates
  float iou = 0, stability = 0;
  double px = 0, py = 0;          // crop coordinates
};

}  // namespace

// ------------------------------------------------------------------------------------------------
struct SamModel::Impl {
  c10::Device device{c10::kCPU};
  std::string manifest_path;
  int img_size = 1024;
  float mask_threshold = 0.0f;
  mutable torch::jit::Module encoder, prompt, decoder;
  at::Tensor dense_pe;  // [1,C,g,g]
  SamModelInfo info;

  at::Tensor embed(const Image& resized) const {
    return encoder.forward({image_tensor(resized, device)}).toTensor();
  }
  // Low-res logits [B,3,g4,g4] and IoU predictions [B,3] for B points (float64 [B,2] in the
  // resized-input frame).
  std::pair<at::Tensor, at::Tensor> decode(const at::Tensor& embedding, const at::Tensor& coords) const {
    const at::Tensor pts = coords.unsqueeze(1).to(device);
    const at::Tensor labels = at::ones({coords.size(0), 1}, at::TensorOptions().dtype(at::kLong).device(device));
    auto sp = prompt.forward({pts, labels}).toTuple();
    auto out = decoder.forward({embedding, dense_pe, sp->elements()[0], sp->elements()[1], true}).toTuple();
    return {out->elements()[0].toTensor(), out->elements()[1].toTensor()};
  }
  SamResult generate(const ImageView& view, const SamGeneratorOptions& o) const;
};

SamModel::SamModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SamModel::SamModel(SamModel&&) noexcept = default;
SamModel& SamModel::operator=(SamModel&&) noexcept = default;
SamModel::~SamModel() = default;
const SamModelInfo& SamModel::info() const noexcept { return impl_->info; }

void validate(const SamGeneratorOptions& o) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, what); };
  if (o.points_per_side < 1 || o.points_per_side > 1024) fail("points_per_side must be in [1, 1024]");
  if (o.points_per_batch < 1 || o.points_per_batch > 4096) fail("points_per_batch must be in [1, 4096]");
  auto unit = [&](double v, const char* name) {
    if (!(v >= 0.0 && v <= 1.0)) fail(std::string(name) + " must be in [0, 1]");
  };
  unit(o.pred_iou_thresh, "pred_iou_thresh");
  unit(o.stability_score_thresh, "stability_score_thresh");
  unit(o.box_nms_thresh, "box_nms_thresh");
  unit(o.crop_nms_thresh, "crop_nms_thresh");
  if (!(o.stability_score_offset >= 0.0 && o.stability_score_offset < 1e6)) fail("stability_score_offset must be ≥ 0");
  if (o.crop_n_layers < 0 || o.crop_n_layers > 6) fail("crop_n_layers must be in [0, 6]");
  if (!(o.crop_overlap_ratio >= 0.0 && o.crop_overlap_ratio < 1.0)) fail("crop_overlap_ratio must be in [0, 1)");
  if (o.crop_n_points_downscale_factor < 1) fail("crop_n_points_downscale_factor must be ≥ 1");
  if (o.min_mask_region_area < 0) fail("min_mask_region_area must be ≥ 0");
  for (int i = 0; i <= o.crop_n_layers; ++i) {
    double div = 1;
    for (int k = 0; k < i; ++k) div *= o.crop_n_points_downscale_factor;
    if (static_cast<int>(o.points_per_side / div) < 1)
      fail("crop layer " + std::to_string(i) + " would have no points (points_per_side / downscale_factor^" +
           std::to_string(i) + " < 1)");
  }
}

SamModel SamModel::load(const std::string& bundle_dir, const ModelOptions& options) {
  return translate_errors(bundle_dir, [&] {
    if (options.threads < 0) throw Error(ErrorCode::kInvalidArgument, "threads must be ≥ 0");
    auto impl = std::make_unique<Impl>();
    impl->device = detail::parse_device(options.device);
    detail::init_threads(options.threads);
    c10::InferenceMode guard;
    const auto t0 = Clock::now();
    const std::string path = (fs::path(bundle_dir) / "manifest.json").string();
    impl->manifest_path = path;
    if (!fs::is_regular_file(path)) bad(path, "no such file (not a SAM bundle directory?)");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(detail::read_text_file(path));
    } catch (const nlohmann::json::exception& e) {
      bad(path, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object() || j.value("format", "") != "ovseg-sam-bundle") {
      if (j.is_object() && j.value("format", "") == "ovseg-bundle")
        bad(path, "this is an ov-seg bundle, not a SAM bundle (tools/ovseg-export-sam writes those)");
      bad(path, "not an ovseg SAM bundle manifest (\"format\" is not \"ovseg-sam-bundle\")");
    }
    if (j.value("format_version", 0) != 1)
      bad(path, "unsupported format_version " + j.value("format_version", nlohmann::json(0)).dump() + " (expected 1)");
    try {
      const auto& arch = j.at("architecture");
      impl->img_size = arch.at("img_size").get<int>();
      impl->info.embed_dim = arch.at("embed_dim").get<int>();
      impl->info.depth = arch.at("depth").get<int>();
      impl->info.prompt_embed_dim = arch.at("prompt_embed_dim").get<int>();
      impl->mask_threshold = j.value("mask_threshold", 0.0f);
      impl->info.name = j.value("name", "");
      const auto& files = j.at("files");
      const auto& mods = j.at("modules");
      std::string paths[3];
      const char* names[3] = {"image_encoder", "prompt_encoder", "mask_decoder"};
      for (int i = 0; i < 3; ++i) {
        const std::string file = mods.at(names[i]).get<std::string>();
        if (file.find('/') != std::string::npos || file.find("..") != std::string::npos)
          bad(path, std::string("modules.") + names[i] + " must be a file name inside the bundle");
        paths[i] = (fs::path(bundle_dir) / file).string();
        if (!files.contains(file)) bad(path, "files has no entry for " + file);
        const std::string want = files.at(file).at("sha256").get<std::string>();
        if (!fs::is_regular_file(paths[i])) bad(paths[i], "missing (listed in manifest.json)");
        const std::string have = detail::sha256_file(paths[i]);
        if (have != want) bad(paths[i], "sha256 mismatch (manifest.json says " + want + ", file has " + have + ")");
      }
      if (impl->img_size < 16 || impl->img_size > 16384) bad(path, "architecture.img_size out of range");
      impl->encoder = load_module(paths[0], impl->device);
      impl->prompt = load_module(paths[1], impl->device);
      impl->decoder = load_module(paths[2], impl->device);
      impl->info.manifest_json = j.dump(2);
    } catch (const nlohmann::json::exception& e) {
      bad(path, std::string("missing or mistyped key (") + e.what() + ")");
    }
    impl->dense_pe = impl->prompt.run_method("dense_pe").toTensor();
    // The modules were built for one input size: the prompt encoder's embedding grid is
    // img_size / 16 (SAM's patch size). A manifest that says otherwise is refused, not run.
    if (impl->dense_pe.dim() != 4 || impl->dense_pe.size(2) * 16 != impl->img_size ||
        impl->dense_pe.size(3) * 16 != impl->img_size)
      bad(path, "architecture.img_size " + std::to_string(impl->img_size) + " does not match the modules (their "
                "embedding grid is " + (impl->dense_pe.dim() == 4 ? std::to_string(impl->dense_pe.size(2)) + "x" +
                std::to_string(impl->dense_pe.size(3)) : std::string("?")) + ", i.e. an input of " +
                (impl->dense_pe.dim() == 4 ? std::to_string(impl->dense_pe.size(2) * 16) : std::string("?")) + ")");
    impl->info.bundle_dir = bundle_dir;
    impl->info.img_size = impl->img_size;
    impl->info.device = impl->device.str();
    detail::log().info("loaded SAM {} (ViT width {}, depth {}) on {} in {:.0f} ms", impl->info.name,
                       impl->info.embed_dim, impl->info.depth, impl->info.device, ms_since(t0));
    return SamModel(std::move(impl));
  });
}

SamResult SamModel::generate(const ImageView& image, const SamGeneratorOptions& options) const {
  return translate_errors("sam generate", [&] { return impl_->generate(image, options); });
}

SamResult SamModel::Impl::generate(const ImageView& view, const SamGeneratorOptions& o) const {
  validate(o);
  if (view.data == nullptr || view.width <= 0 || view.height <= 0)
    throw Error(ErrorCode::kBadImage, "image: empty image (no pixel data or a zero size)");
  c10::InferenceMode guard;
  const auto t_start = Clock::now();
  SamResult res;
  auto t = Clock::now();
  const Image img = to_rgb(view);
  res.width = img.width;
  res.height = img.height;
  const int64_t H = img.height, W = img.width;
  const auto grids = detail::sam::layer_point_grids(o.points_per_side, o.crop_n_layers, o.crop_n_points_downscale_factor);
  const auto crops = detail::sam::crop_boxes(H, W, o.crop_n_layers, o.crop_overlap_ratio);
  res.crops = static_cast<int>(crops.size());
  res.timings.preprocess_ms += ms_since(t);

  const float hi = static_cast<float>(static_cast<double>(mask_threshold) + o.stability_score_offset);
  const float lo = static_cast<float>(static_cast<double>(mask_threshold) - o.stability_score_offset);
  const float iou_thr = static_cast<float>(o.pred_iou_thresh);
  const float stab_thr = static_cast<float>(o.stability_score_thresh);

  struct Kept {
    Candidate c;
    size_t crop = 0;
  };
  std::vector<Kept> all;

  for (size_t ci = 0; ci < crops.size(); ++ci) {
    const auto& cb = crops[ci].xyxy;
    t = Clock::now();
    const Image cropped = (cb[0] == 0 && cb[1] == 0 && cb[2] == W && cb[3] == H) ? img : crop_image(img, cb);
    const int64_t ch = cropped.height, cw = cropped.width;
    const auto [nh, nw] = detail::sam::preprocess_shape(ch, cw, img_size);
    const Image resized = detail::resize_pillow_bilinear(cropped, static_cast<int>(nw), static_cast<int>(nh));
    res.timings.preprocess_ms += ms_since(t);
    t = Clock::now();
    const at::Tensor embedding = embed(resized);
    detail::synchronize(device);
    res.timings.encoder_ms += ms_since(t);

    // Points of this crop: grid × (w, h), then apply_coords (float64 as numpy).
    const auto& grid = grids[static_cast<size_t>(crops[ci].layer)];
    const int64_t np = static_cast<int64_t>(grid.size());
    std::vector<double> pts(static_cast<size_t>(np) * 2), pin(static_cast<size_t>(np) * 2);
    const double sx = static_cast<double>(nw) / static_cast<double>(cw);
    const double sy = static_cast<double>(nh) / static_cast<double>(ch);
    for (int64_t i = 0; i < np; ++i) {
      pts[2 * i] = grid[static_cast<size_t>(i)][0] * static_cast<double>(cw);
      pts[2 * i + 1] = grid[static_cast<size_t>(i)][1] * static_cast<double>(ch);
      pin[2 * i] = pts[2 * i] * sx;
      pin[2 * i + 1] = pts[2 * i + 1] * sy;
    }
    const at::Tensor pin_t = at::from_blob(pin.data(), {np, 2}, at::kDouble).clone();

    std::vector<Candidate> cands;
    // [3B, ch, cw] float32 logits per chunk: chunks of the official batch bounded to ~256 MB
    // (each point's masks do not depend on the others in its batch).
    // Per point: the three masks upsampled to [3, img_size, img_size], then cropped and resized to
    // [3, ch, cw] (and a comparison's worth more), float32: 12.6 MB at 1024 before the crop's share.
    const int64_t per_point = 3 * 4 * (int64_t{img_size} * img_size + 2 * ch * cw);
    const int64_t chunk_cap = std::max<int64_t>(1, (int64_t{256} << 20) / std::max<int64_t>(per_point, 1));
    // [QUIRK] The decoder sees the official batch (its float rounding depends on the batch) up to
    // kMaxDecoderBatch points; a larger points_per_batch is split, so that memory stays bounded
    // whatever it is (the decoder holds a few MB per point: the repeated image embedding and the
    // upscaled mask features).
    const int64_t decoder_batch = std::min<int64_t>(o.points_per_batch, kMaxDecoderBatch);
    if (decoder_batch < o.points_per_batch && ci == 0)
      detail::log().info("sam: points_per_batch {} runs the decoder {} points at a time (memory bound)",
                         o.points_per_batch, decoder_batch);
    for (int64_t b0 = 0; b0 < np; b0 += decoder_batch) {
      const int64_t b1 = std::min<int64_t>(np, b0 + decoder_batch);
      // The decoder sees the official batch (its float rounding depends on the batch); the
      // upsampling works per channel and runs in chunks.
      t = Clock::now();
      const auto [low_all, iou_all] = decode(embedding, pin_t.slice(0, b0, b1));
      detail::synchronize(device);
      res.timings.decoder_ms += ms_since(t);
      for (int64_t c0 = b0; c0 < b1; c0 += chunk_cap) {
        const int64_t c1 = std::min(b1, c0 + chunk_cap);
        t = Clock::now();
        const at::Tensor low = low_all.slice(0, c0 - b0, c1 - b0);
        const at::Tensor iou = iou_all.slice(0, c0 - b0, c1 - b0);
        at::Tensor m = at::upsample_bilinear2d(low, {img_size, img_size}, false);
        m = m.slice(2, 0, nh).slice(3, 0, nw);
        m = at::upsample_bilinear2d(m, {ch, cw}, false);
        const int64_t nm = m.size(0) * m.size(1);
        m = m.reshape({nm, ch, cw});
        at::Tensor ious = iou.reshape({nm}).to(at::kCPU);
        at::Tensor keep = at::ones({nm}, at::kBool);
        if (o.pred_iou_thresh > 0.0) keep = ious.gt(iou_thr);
        std::vector<int64_t> idx;
        {
          const bool* k = keep.data_ptr<bool>();
          for (int64_t i = 0; i < nm; ++i)
            if (k[i]) idx.push_back(i);
        }
        if (idx.empty()) {
          res.timings.postprocess_ms += ms_since(t);
          continue;
        }
        const at::Tensor sel = at::from_blob(idx.data(), {static_cast<int64_t>(idx.size())}, at::kLong).to(device);
        const at::Tensor ms = m.index_select(0, sel);
        const at::Tensor inter = ms.gt(hi).sum({1, 2}).to(at::kCPU);
        const at::Tensor uni = ms.gt(lo).sum({1, 2}).to(at::kCPU);
        const at::Tensor bin = ms.gt(mask_threshold).to(at::kCPU);
        const float* iou_p = ious.data_ptr<float>();
        for (size_t r = 0; r < idx.size(); ++r) {
          const auto i = static_cast<int64_t>(r);
          const float stab = static_cast<float>(inter[i].item<int64_t>()) / static_cast<float>(uni[i].item<int64_t>());
          if (o.stability_score_thresh > 0.0 && !(stab >= stab_thr)) continue;
          Candidate c;
          c.mask = bin[i].contiguous();
          c.box = detail::sam::mask_box(reinterpret_cast<const uint8_t*>(c.mask.data_ptr<bool>()), static_cast<int>(ch),
                                        static_cast<int>(cw));
          if (detail::sam::box_near_crop_edge(c.box, cb, {0, 0, W, H})) continue;
          const int64_t point = c0 + idx[r] / 3;
          c.iou = iou_p[idx[r]];
          c.stability = stab;
          c.px = pts[2 * point];
          c.py = pts[2 * point + 1];
          cands.push_back(std::move(c));
        }
        res.timings.postprocess_ms += ms_since(t);
      }
    }
    // Box NMS within the crop (crop coordinates, scores = predicted IoU).
    t = Clock::now();
    std::vector<std::array<float, 4>> boxes;
    std::vector<float> scores;
    for (const auto& c : cands) {
      boxes.push_back({static_cast<float>(c.box[0]), static_cast<float>(c.box[1]), static_cast<float>(c.box[2]),
                       static_cast<float>(c.box[3])});
      scores.push_back(c.iou);
    }
    for (int64_t k : detail::sam::nms(boxes, scores, o.box_nms_thresh)) {
      Candidate& c = cands[static_cast<size_t>(k)];
      c.box = {c.box[0] + cb[0], c.box[1] + cb[1], c.box[2] + cb[0], c.box[3] + cb[1]};
      c.px += static_cast<double>(cb[0]);
      c.py += static_cast<double>(cb[1]);
      all.push_back({std::move(c), ci});
    }
    res.timings.nms_ms += ms_since(t);
  }

  // NMS across crops: score 1 / crop area (float32), the smaller crop wins.
  if (crops.size() > 1) {
    t = Clock::now();
    std::vector<std::array<float, 4>> boxes;
    std::vector<float> scores;
    for (const auto& k : all) {
      boxes.push_back({static_cast<float>(k.c.box[0]), static_cast<float>(k.c.box[1]), static_cast<float>(k.c.box[2]),
                       static_cast<float>(k.c.box[3])});
      const auto& cb = crops[k.crop].xyxy;
      scores.push_back(1.0f / static_cast<float>((cb[2] - cb[0]) * (cb[3] - cb[1])));
    }
    std::vector<Kept> kept;
    for (int64_t k : detail::sam::nms(boxes, scores, o.crop_nms_thresh)) kept.push_back(std::move(all[static_cast<size_t>(k)]));
    all = std::move(kept);
    res.timings.nms_ms += ms_since(t);
  }

  // Uncrop into full-size masks.
  for (auto& k : all) {
    const auto& cb = crops[k.crop].xyxy;
    SamMask sm;
    sm.segmentation.assign(static_cast<size_t>(H * W), 0);
    const int64_t ch = cb[3] - cb[1], cw = cb[2] - cb[0];
    const uint8_t* src = reinterpret_cast<const uint8_t*>(k.c.mask.data_ptr<bool>());
    for (int64_t y = 0; y < ch; ++y)
      std::copy(src + y * cw, src + (y + 1) * cw, sm.segmentation.data() + (y + cb[1]) * W + cb[0]);
    k.c.mask = at::Tensor();
    sm.predicted_iou = k.c.iou;
    sm.stability_score = k.c.stability;
    sm.point_x = k.c.px;
    sm.point_y = k.c.py;
    sm.bbox = {k.c.box[0], k.c.box[1], k.c.box[2] - k.c.box[0], k.c.box[3] - k.c.box[1]};
    sm.crop_box = {cb[0], cb[1], cb[2] - cb[0], cb[3] - cb[1]};
    res.masks.push_back(std::move(sm));
  }
  all.clear();

  // Small-region postprocessing: holes then islands, NMS with "unchanged" scores.
  if (o.min_mask_region_area > 0 && !res.masks.empty()) {
    t = Clock::now();
    const size_t n = res.masks.size();
    std::vector<std::vector<uint8_t>> fixed(n);
    std::vector<std::array<int64_t, 4>> fboxes(n);
    std::vector<std::array<float, 4>> boxes(n);
    std::vector<float> scores(n);
    for (size_t i = 0; i < n; ++i) {
      fixed[i] = res.masks[i].segmentation;
      const bool c1 = detail::sam::remove_small_regions(fixed[i], static_cast<int>(H), static_cast<int>(W),
                                                        o.min_mask_region_area, true);
      const bool c2 = detail::sam::remove_small_regions(fixed[i], static_cast<int>(H), static_cast<int>(W),
                                                        o.min_mask_region_area, false);
      scores[i] = (c1 || c2) ? 0.0f : 1.0f;
      fboxes[i] = detail::sam::mask_box(fixed[i].data(), static_cast<int>(H), static_cast<int>(W));
      for (int k = 0; k < 4; ++k) boxes[i][static_cast<size_t>(k)] = static_cast<float>(fboxes[i][static_cast<size_t>(k)]);
    }
    const double thr = std::max(o.box_nms_thresh, o.crop_nms_thresh);
    std::vector<SamMask> out;
    for (int64_t k : detail::sam::nms(boxes, scores, thr)) {
      SamMask& m = res.masks[static_cast<size_t>(k)];
      if (scores[static_cast<size_t>(k)] == 0.0f) {
        m.segmentation = std::move(fixed[static_cast<size_t>(k)]);
        const auto& b = fboxes[static_cast<size_t>(k)];
        m.bbox = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
      }
      out.push_back(std::move(m));
    }
    res.masks = std::move(out);
    res.timings.small_regions_ms += ms_since(t);
  }
  for (auto& m : res.masks) {
    int64_t a = 0;
    for (uint8_t v : m.segmentation) a += v;
    m.area = a;
  }
  detail::release_freed_memory();
  res.timings.total_ms = ms_since(t_start);
  return res;
}

}  // namespace ovseg
