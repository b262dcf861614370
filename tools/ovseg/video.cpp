// Video input for `ovseg segment` (see video.hpp): frames are read with OpenCV's FFmpeg backend,
// segmented one at a time, and written while the next frame is segmented (one write in flight),
// so that memory holds a few frames whatever the video's length.
#include "video.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "class_list.hpp"
#include "cli_log.hpp"
#include "overlay.hpp"
#include "ovseg/io.hpp"
#include "progress.hpp"
#include "stop_signal.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

bool starts_with(const unsigned char* b, std::size_t n, std::size_t at, const char* sig, std::size_t len) {
  return n >= at + len && std::memcmp(b + at, sig, len) == 0;
}

bool video_signature(const unsigned char* b, std::size_t n) {
  // ISO base media (MP4, MOV, 3GP, ...): a box size, then "ftyp" and the major brand. HEIF/AVIF
  // stills use the same boxes: their brands are images, not videos.
  if (starts_with(b, n, 4, "ftyp", 4)) {
    if (n < 12) return false;
    static const char* const kImageBrands[] = {"heic", "heix", "heim", "heis", "mif1", "mif2", "avif", "avio", "crx "};
    for (const char* brand : kImageBrands)
      if (std::memcmp(b + 8, brand, 4) == 0) return false;
    return true;
  }
  // Old QuickTime files start with another top-level atom.
  for (const char* atom : {"moov", "mdat", "free", "skip", "wide", "pnot"})
    if (starts_with(b, n, 4, atom, 4)) return true;
  if (starts_with(b, n, 0, "\x1A\x45\xDF\xA3", 4)) return true;  // EBML: Matroska, WebM
  if (starts_with(b, n, 0, "RIFF", 4) && (starts_with(b, n, 8, "AVI ", 4) || starts_with(b, n, 8, "AVIX", 4)))
    return true;
  if (starts_with(b, n, 0, "FLV\x01", 4)) return true;
  if (starts_with(b, n, 0, "\x30\x26\xB2\x75\x8E\x66\xCF\x11", 8)) return true;  // ASF / WMV
  if (starts_with(b, n, 0, "OggS", 4)) return true;
  if (starts_with(b, n, 0, "\x00\x00\x01\xBA", 4) || starts_with(b, n, 0, "\x00\x00\x01\xB3", 4)) return true;  // MPEG-PS / ES
  if (n >= 377 && b[0] == 0x47 && b[188] == 0x47 && b[376] == 0x47) return true;  // MPEG-TS
  if (n >= 389 && b[4] == 0x47 && b[196] == 0x47 && b[388] == 0x47) return true;  // M2TS (Blu-ray)
  if (starts_with(b, n, 0, ".RMF", 4)) return true;                               // RealMedia
  if (starts_with(b, n, 0, "DKIF", 4)) return true;                               // IVF (VP8/VP9/AV1)
  if (starts_with(b, n, 0, "YUV4MPEG2", 9)) return true;                          // Y4M
  return false;
}

std::string temporary_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 1000000);
}

std::string frame_name(long index, const char* ext) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%06ld%s", index, ext);
  return buf;
}

// The overlay of one frame at the frame's size: render_overlay()'s picture (the tinted frame with
// the class names) with its legend panel laid over the top-right corner, scaled down when it is
// wider than 45 % of the frame or taller than the frame.
cv::Mat overlay_frame_bgr(const Image& rgb, const Result& r, Palette* palette) {
  Image full = render_overlay(rgb, r, OverlayFonts::defaults(), palette);
  const int w = rgb.width, h = rgb.height;
  cv::Mat canvas(full.height, full.width, CV_8UC3, full.rgb.data());
  cv::Mat frame = canvas(cv::Rect(0, 0, w, h)).clone();
  if (full.width > w) {
    cv::Mat panel = canvas(cv::Rect(w, 0, full.width - w, full.height));
    // The panel's background below its last row of text is empty: leave it out.
    int used = panel.rows;
    const cv::Vec3b bg = panel.at<cv::Vec3b>(panel.rows - 1, panel.cols - 1);
    while (used > 1) {
      const cv::Mat row = panel.row(used - 1);
      bool blank = true;
      for (int x = 0; x < row.cols && blank; ++x) blank = row.at<cv::Vec3b>(0, x) == bg;
      if (!blank) break;
      --used;
    }
    used = std::min(panel.rows, used + std::max(4, panel.rows / 100));
    cv::Mat legend = panel.rowRange(0, used);
    const double s = std::min({1.0, 0.45 * w / legend.cols, static_cast<double>(h) / legend.rows});
    cv::Mat scaled;
    if (s < 1.0) {
      const cv::Size size(std::max(1, static_cast<int>(legend.cols * s)), std::max(1, static_cast<int>(legend.rows * s)));
      cv::resize(legend, scaled, size, 0, 0, cv::INTER_AREA);
    } else {
      scaled = legend;
    }
    cv::Mat roi = frame(cv::Rect(w - scaled.cols, 0, scaled.cols, scaled.rows));
    cv::addWeighted(scaled, 0.9, roi, 0.1, 0.0, roi);
  }
  cv::Mat bgr;
  cv::cvtColor(frame, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

nlohmann::json frame_record(long index, double time_s, const std::string& label_path, const std::string& scores_path,
                            const Result& r, double decode_ms) {
  using nlohmann::json;
  const double total = static_cast<double>(r.width) * r.height;
  json j;
  j["index"] = index;
  j["time_s"] = round_to(time_s, 1e-6);
  j["label_map"] = label_path;
  if (!scores_path.empty()) j["scores"] = scores_path;
  json share = json::array();
  for (std::size_t c = 0; c < r.classes.size() && c < r.class_pixels.size(); ++c)
    if (r.class_pixels[c] > 0)
      share.push_back({{"index", c},
                       {"class", r.classes[c]},
                       {"pixels", r.class_pixels[c]},
                       {"share", round_to(r.class_pixels[c] / total, 1e-7)}});
  j["pixel_share"] = share;
  j["unlabeled"] = {{"pixels", r.unlabeled_pixels}, {"share", round_to(r.unlabeled_pixels / total, 1e-7)}};
  j["segments"] = r.segments.size();
  const auto& t = r.timings;
  json timings = {{"decode", round_to(decode_ms, 1e-3)}, {"segment_total", round_to(t.total_ms, 1e-3)}};
  for (const StageInfo& st : kStageTable) timings[st.name] = round_to(t.*st.ms, 1e-3);
  j["timings_ms"] = timings;
  return j;
}

// STEM.json: `head` with "frames" appended from the spool file (one record per line, already
// comma-separated), streamed into a temporary and renamed, so the report never sits in memory.
void write_report(const std::string& path, const nlohmann::json& head, std::FILE* spool) {
  std::string text = head.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
  // "{\n ...\n}" → drop the closing brace, append the frames, close again.
  text.resize(text.rfind('}'));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  text += ",\n \"frames\": [\n";
  const std::string tmp = path + temporary_suffix();
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(ErrorCode::kIo, path + ": cannot write (" + std::strerror(errno) + ")");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (spool) {
    std::fflush(spool);
    std::rewind(spool);
    std::array<char, 65536> buf{};
    std::size_t n;
    while (ok && (n = std::fread(buf.data(), 1, buf.size(), spool)) > 0) ok = std::fwrite(buf.data(), 1, n, f) == n;
    ok = ok && !std::ferror(spool);
  }
  const std::string tail = "\n ]\n}\n";
  ok = ok && std::fwrite(tail.data(), 1, tail.size(), f) == tail.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(ErrorCode::kIo, path + ": write failed (" + std::strerror(err) + ")");
  }
}

struct Capture {
  cv::VideoCapture cap;
  std::string error;
};

// Opens the file with FFmpeg by its absolute path (a relative name such as "http:x.mp4" would
// otherwise be taken for a URL).
void open_capture(Capture& c, const std::string& path) {
  std::error_code ec;
  const std::string abs = fs::absolute(path, ec).string();
  try {
    c.cap.open(ec ? path : abs, cv::CAP_FFMPEG);
  } catch (const cv::Exception& e) {
    c.error = e.what();
  }
  if (!c.cap.isOpened() && c.error.empty())
    c.error = "no video stream that this build's OpenCV/FFmpeg decodes (an empty, damaged or audio-only file, "
              "or an unsupported codec)";
}

}  // namespace

bool looks_like_video(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct ::stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return false;
  }
  unsigned char b[400];
  std::size_t n = 0;
  while (n < sizeof b) {
    const ssize_t r = ::read(fd, b + n, sizeof b - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<std::size_t>(r);
  }
  ::close(fd);
  return video_signature(b, n);
}

bool is_video_extension(const std::string& ext) {
  std::string e = ext;
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* const kExts[] = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                                      ".m2ts", ".mts", ".flv", ".wmv", ".asf", ".ogv", ".3gp", ".3g2", ".mxf",
                                      ".y4m", ".ivf", ".rm", ".rmvb", ".vob", ".dv"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* x) { return e == x; });
}

VideoProbe probe_video(const std::string& path) {
  VideoProbe p;
  Capture c;
  open_capture(c, path);
  if (!c.cap.isOpened()) {
    p.error = c.error;
    return p;
  }
  p.ok = true;
  p.width = static_cast<int>(c.cap.get(cv::CAP_PROP_FRAME_WIDTH));
  p.height = static_cast<int>(c.cap.get(cv::CAP_PROP_FRAME_HEIGHT));
  p.fps = c.cap.get(cv::CAP_PROP_FPS);
  const double frames = c.cap.get(cv::CAP_PROP_FRAME_COUNT);
  p.frames = std::isfinite(frames) && frames > 0 && frames < 1e12 ? static_cast<long>(std::llround(frames)) : 0;
  return p;
}

VideoOutcome segment_video(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                           const VideoOptions& opt, const FrameSegmenter& segment) {
  const auto& log = cli_log();
  VideoOutcome out;
  const auto run_start = Clock::now();
  // Read by OpenCV when it first initialises FFmpeg; a value the user set is kept.
  if (opt.quiet) ::setenv("OPENCV_FFMPEG_LOGLEVEL", "-8", 0);  // AV_LOG_QUIET
  Capture c;
  open_capture(c, in.path);
  if (!c.cap.isOpened()) {
    out.error = c.error;
    return out;
  }
  cv::VideoCapture& cap = c.cap;
  const int width = static_cast<int>(cap.get(cv::CAP_PROP_FRAME_WIDTH));
  const int height = static_cast<int>(cap.get(cv::CAP_PROP_FRAME_HEIGHT));
  const double announced = cap.get(cv::CAP_PROP_FRAME_COUNT);
  const long count = std::isfinite(announced) && announced > 0 && announced < 1e12 ? static_cast<long>(std::llround(announced)) : 0;
  double fps = cap.get(cv::CAP_PROP_FPS);
  if (!(std::isfinite(fps) && fps > 0 && fps <= 1000)) {
    log.warn("{}: the video gives no frame rate ({}); the overlay is written at 25 fps", in.path, fps);
    fps = 25.0;
  }
  if (width <= 0 || height <= 0) {
    out.error = "the video stream has no frame size";
    return out;
  }
  if (opt.max_pixels > 0 && static_cast<std::uint64_t>(width) * static_cast<std::uint64_t>(height) > opt.max_pixels) {
    out.error = "frames of " + std::to_string(width) + "x" + std::to_string(height) + " pixels are more than --max-pixels " +
                std::to_string(opt.max_pixels);
    return out;
  }

  // --start: the first frame at or after that time, reached by seeking (OpenCV decodes from the
  // keyframe before it to the exact frame) or, when the container does not seek, by reading.
  long index = 0;  // the index in the video of the next frame read
  if (opt.start_s > 0) {
    const long target = static_cast<long>(std::ceil(opt.start_s * fps - 1e-6));
    if (count > 0 && target >= count) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "--start %.3f s is at or after the video's end (%ld frames, %.3f s)", opt.start_s,
                    count, count / fps);
      out.error = buf;
      return out;
    }
    bool seeked = false;
    try {
      seeked = cap.set(cv::CAP_PROP_POS_FRAMES, static_cast<double>(target)) &&
               std::llround(cap.get(cv::CAP_PROP_POS_FRAMES)) == target;
    } catch (const cv::Exception&) {
    }
    if (!seeked) {
      log.debug("{}: seeking to frame {} failed; reading up to it", in.path, target);
      cap.release();
      open_capture(c, in.path);
      for (long k = 0; k < target; ++k)
        if (!cap.grab()) {
          out.error = "decoding stopped at frame " + std::to_string(k) + ", before --start's frame " + std::to_string(target);
          return out;
        }
    }
    index = target;
  }
  const long start_index = index;

  const fs::path stem = fs::path(request.dir) / in.out_stem;
  const fs::path label_dir = stem;
  const std::string overlay_path = stem.string() + ".overlay.mp4";
  const std::string overlay_tmp = stem.string() + ".overlay" + temporary_suffix() + ".mp4";
  const std::string report_path = stem.string() + ".json";
  {
    std::error_code ec;
    fs::create_directories(label_dir, ec);
    if (ec) {
      out.error = label_dir.string() + ": cannot create the label-map directory (" + ec.message() + ")";
      return out;
    }
    const std::size_t swept = sweep_stale_temporaries(stem.parent_path().string());
    if (swept > 0) log.info("segment: removed {} stale temporary video(s) of an interrupted run", swept);
  }

  // The report's frames go to a spool file as they are done (memory stays flat).
  std::FILE* spool = nullptr;
  std::string spool_path;
  if (request.json) {
    spool_path = report_path + temporary_suffix();
    spool = std::fopen(spool_path.c_str(), "w+b");
    if (!spool) {
      out.error = report_path + ": cannot write (" + std::strerror(errno) + ")";
      return out;
    }
  }
  struct SpoolCloser {
    std::FILE*& f;
    const std::string& path;
    ~SpoolCloser() {
      if (f) std::fclose(f);
      if (!path.empty()) std::remove(path.c_str());
    }
  } spool_closer{spool, spool_path};

  cv::VideoWriter writer;
  std::string codec;
  long records = 0;
  int bit_depth = 8;
  // One frame's writes, on a worker thread while the next frame is segmented. Frames reach the
  // writer in order: a job starts only after the previous one finished.
  auto write_frame = [&](long frame_index, double time_s, std::shared_ptr<const Image> rgb,
                         std::shared_ptr<const Result> r, bool segmented, double decode_ms) -> std::string {
    try {
      if (request.overlay) {
        const cv::Mat bgr = overlay_frame_bgr(*rgb, *r, request.palette.get());
        if (!writer.isOpened()) {
          for (const char* fourcc : {"avc1", "mp4v"}) {
            writer.open(overlay_tmp, cv::CAP_FFMPEG, cv::VideoWriter::fourcc(fourcc[0], fourcc[1], fourcc[2], fourcc[3]),
                        fps, cv::Size(bgr.cols, bgr.rows));
            if (writer.isOpened()) {
              codec = fourcc;
              break;
            }
          }
          if (!writer.isOpened()) return overlay_path + ": OpenCV's FFmpeg writer opens neither H.264 (avc1) nor MPEG-4 (mp4v)";
          log.debug("{}: overlay written with {} at {:.3f} fps", in.path, codec, fps);
        }
        writer.write(bgr);
      }
      if (segmented) {
        const LabelMap labels = label_map(*r);
        bit_depth = labels.bit_depth;
        const std::string label_path = (label_dir / frame_name(frame_index, ".png")).string();
        std::string scores_path;
        if (request.save_scores) {
          scores_path = (label_dir / frame_name(frame_index, ".scores.npy")).string();
          write_scores_npy(scores_path, *r);
        }
        write_label_map(label_path, labels);
        if (spool) {
          const std::string line = (records > 0 ? ",\n  " : "  ") +
                                   frame_record(frame_index, time_s, label_path, scores_path, *r, decode_ms)
                                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
          if (std::fwrite(line.data(), 1, line.size(), spool) != line.size())
            return report_path + ": write failed (" + std::strerror(errno) + ")";
          ++records;
        }
      }
      return {};
    } catch (const std::exception& e) {
      return e.what();
    }
  };

  long total = count > 0 ? count - start_index : 0;
  if (opt.max_frames > 0) total = total > 0 ? std::min(total, opt.max_frames) : opt.max_frames;
  Progress progress("frames", total, opt.progress);
  std::future<std::string> pending;
  auto finish_pending = [&]() -> bool {
    if (!pending.valid()) return true;
    const std::string err = pending.get();
    if (err.empty()) return true;
    if (out.error.empty()) out.error = err;
    return false;
  };

  std::shared_ptr<const Result> last;
  double segment_ms = 0;
  long pos = 0;  // frames from --start's frame
  bool size_logged = false;
  while (opt.max_frames == 0 || pos < opt.max_frames) {
    if (StopSignals::stop_requested()) {
      out.interrupted = true;
      break;
    }
    const auto t0 = Clock::now();
    cv::Mat frame;
    bool got = false;
    try {
      got = cap.read(frame) && !frame.empty();
    } catch (const cv::Exception& e) {
      log.debug("{}: frame {}: {}", in.path, index, e.what());
    }
    if (!got) {
      if (count > 0 && index < count)
        out.error = "decoding stopped at frame " + std::to_string(index) + " of the " + std::to_string(count) +
                    " the container announces (a truncated or damaged file); " +
                    (pos > 0 ? "the " + std::to_string(pos) + " frames before it were processed" : std::string("no frame decoded"));
      else if (pos == 0)
        out.error = index == 0 ? "the video has no frames" : "no frame decodes at or after frame " + std::to_string(index);
      break;
    }
    double time_s = cap.get(cv::CAP_PROP_POS_MSEC) / 1000.0;
    if (!std::isfinite(time_s) || time_s < 0) time_s = index / fps;
    if (frame.depth() != CV_8U || (frame.channels() != 3 && frame.channels() != 1 && frame.channels() != 4)) {
      out.error = "frame " + std::to_string(index) + ": unsupported pixel layout (OpenCV type " + std::to_string(frame.type()) + ")";
      break;
    }
    if (frame.cols != width || frame.rows != height) {
      if (pos == 0 && !size_logged) {
        log.debug("{}: frames are {}x{}, the container said {}x{}", in.path, frame.cols, frame.rows, width, height);
        size_logged = true;
      }
      if (last && (frame.cols != last->width || frame.rows != last->height)) {
        out.error = "frame " + std::to_string(index) + " is " + std::to_string(frame.cols) + "x" +
                    std::to_string(frame.rows) + ", the frames before it " + std::to_string(last->width) + "x" +
                    std::to_string(last->height) + " (a size change within the video is not supported)";
        break;
      }
    }
    const PixelFormat format = frame.channels() == 3 ? PixelFormat::kBgr : frame.channels() == 4 ? PixelFormat::kBgra : PixelFormat::kGray;
    auto rgb = std::make_shared<Image>(to_rgb(ImageView{frame.data, frame.cols, frame.rows, format, frame.step}));
    frame.release();
    const double decode_ms = ms_since(t0);
    const bool segmented = pos % opt.every == 0;
    if (segmented) {
      try {
        const auto ts = Clock::now();
        last = std::make_shared<const Result>(segment(rgb->view()));
        segment_ms += ms_since(ts);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kCancelled) {
          out.interrupted = true;
          break;
        }
        out.error = "frame " + std::to_string(index) + ": " + e.what();
        break;
      } catch (const std::exception& e) {
        out.error = "frame " + std::to_string(index) + ": " + e.what();
        break;
      }
      ++out.segmented;
    }
    if (!finish_pending()) break;
    pending = std::async(std::launch::async, write_frame, index, time_s, rgb, last, segmented, decode_ms);
    ++out.frames;
    ++pos;
    ++index;
    progress.step(in.path + " frame " + std::to_string(index - 1));
  }
  finish_pending();
  progress.finish();
  if (StopSignals::stop_requested()) out.interrupted = true;
  cap.release();

  // Finalise: the writer writes the container's index on release; only then does the file get
  // its final name. Nothing is renamed when no frame was done.
  if (writer.isOpened()) {
    writer.release();
    std::error_code ec;
    if (out.frames > 0 && fs::exists(overlay_tmp, ec)) {
      fs::rename(overlay_tmp, overlay_path, ec);
      if (ec && out.error.empty()) out.error = overlay_path + ": cannot rename the temporary file (" + ec.message() + ")";
    }
  }
  {
    std::error_code ec;
    fs::remove(overlay_tmp, ec);
    if (out.segmented == 0) fs::remove(label_dir, ec);  // only if empty (an earlier run's files stay)
  }

  const double total_s = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (request.json && out.segmented > 0) {
    using nlohmann::json;
    const Result& r = *last;
    json head;
    head["input"] = in.path;
    head["video"] = {{"width", width}, {"height", height}, {"fps", round_to(fps, 1e-6)}, {"frames", count}};
    head["start_s"] = opt.start_s;
    head["start_frame"] = start_index;
    head["every"] = opt.every;
    head["max_frames"] = opt.max_frames;
    head["model"] = {{"name", info.name}, {"bundle", info.bundle_dir}};
    head["mode"] = to_string(r.settings.mode);
    head["device"] = info.device;
    head["precision"] = info.precision;
    head["mask_threshold"] = round_to(r.settings.mask_threshold, 1e-6);
    head["ensemble_weight"] = round_to(r.settings.ensemble_weight, 1e-6);
    head["clip_ensemble"] = r.settings.clip_ensemble;
    head["classes"] = r.classes;
    head["label_maps"] = {{"dir", label_dir.string()},
                          {"pattern", "%06d.png (the frame's index in the video; segmented frames only)"},
                          {"bit_depth", bit_depth},
                          {"unlabeled_value", unlabeled_value(bit_depth)}};
    if (request.overlay && !codec.empty())
      head["overlay"] = {{"path", overlay_path}, {"codec", codec}, {"fps", round_to(fps, 1e-6)}, {"frames", out.frames}};
    head["frames_read"] = out.frames;
    head["frames_segmented"] = out.segmented;
    head["complete"] = out.error.empty() && !out.interrupted;
    head["interrupted"] = out.interrupted;
    if (!out.error.empty()) head["error"] = out.error;
    head["timings"] = {{"total_s", round_to(total_s, 1e-3)},
                       {"segment_ms_per_frame", round_to(segment_ms / static_cast<double>(out.segmented), 1e-3)},
                       {"frames_per_s", round_to(total_s > 0 ? out.frames / total_s : 0.0, 1e-3)}};
    try {
      write_report(report_path, head, spool);
    } catch (const std::exception& e) {
      if (out.error.empty()) out.error = e.what();
    }
  }
  log.info("{}: {} frames, {} segmented, {:.2f} frames/s{}", in.path, out.frames, out.segmented,
           total_s > 0 ? out.frames / total_s : 0.0, out.interrupted ? " (interrupted)" : "");
  out.ok = out.error.empty();
  return out;
}

}  // namespace ovseg::cli
