// Video input for `ovseg segment`: a video file (any container and codec the system's OpenCV /
// FFmpeg reads, recognised by its first bytes) is segmented frame by frame, streamed (a few frames
// in memory whatever its length), into
//   OUT/STEM.overlay.mp4   --overlay: every frame's overlay at the source's size and frame rate
//   OUT/STEM/NNNNNN.png    the label map of each segmented frame (NNNNNN = its index in the video),
//                          the bytes `ovseg segment` writes for that frame as an image
//   OUT/STEM/NNNNNN.scores.npy  --save-scores (only with --max-frames)
//   OUT/STEM.json          --json: the video, the settings, per segmented frame its class shares
//                          and timings
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "inputs.hpp"
#include "ovseg/ovseg.hpp"
#include "segment_output.hpp"

namespace ovseg::cli {

// Whether the file starts with the signature of a video container: ISO base media (MP4, MOV,
// 3GP; not the HEIF/AVIF still-image brands), Matroska/WebM, AVI, MPEG-TS/PS, FLV, ASF/WMV, Ogg,
// RealMedia, IVF, Y4M. Reads at most the first 400 bytes; false for anything unreadable.
bool looks_like_video(const std::string& path);

// The extensions usually given to video files (".mp4", ".mkv", ...; case-insensitive, with the dot).
bool is_video_extension(const std::string& ext);

// What the container says, without decoding a frame. ok = false: it does not open as a video
// (`error` says so).
struct VideoProbe {
  bool ok = false;
  std::string error;
  int width = 0;
  int height = 0;
  double fps = 0;
  long frames = 0;  // as announced by the container (0 = unknown)
};
VideoProbe probe_video(const std::string& path);

struct VideoOptions {
  int every = 1;                              // segment frames start, start+N, start+2N, ...
  long max_frames = 0;                        // at most this many frames from --start (0 = to the end)
  double start_s = 0.0;                       // the first frame at or after this time
  std::uint64_t max_pixels = kDefaultMaxPixels;  // per frame (0 = no limit)
  bool progress = true;                       // a progress bar of the frames on stderr
  bool quiet = false;                         // -q: FFmpeg's own messages off too (OPENCV_FFMPEG_LOGLEVEL unless set)
};

// Segments one RGB frame (the model or the SAM segmenter with the run's classes and options).
// Throws Error(kCancelled) when the run is asked to stop.
using FrameSegmenter = std::function<Result(const ImageView& rgb)>;

struct VideoOutcome {
  bool ok = false;           // false: `error` says what stopped it (the outputs of the frames done are kept)
  std::string error;
  bool interrupted = false;  // SIGINT/SIGTERM: stopped after the frame in flight, outputs finalised
  long frames = 0;           // frames read from --start on and written to the overlay
  long segmented = 0;        // of them, segmented (label maps written)
};

// Segments the video `in.path` into `request.dir` (names from `in.out_stem`, see above). Never
// throws for a bad video: the outcome says what went wrong; the overlay is written to a temporary
// name and renamed once the writer has finalised it, so the final name only ever holds a playable
// file (none when no frame was done).
VideoOutcome segment_video(const ModelInfo& info, const OutputRequest& request, const InputImage& in,
                           const VideoOptions& options, const FrameSegmenter& segment);

// Removes the overlay temporaries (NAME.tmpPID-N.mp4) that a killed run left in `dir`: those whose
// process is gone. Returns how many were removed.
std::size_t sweep_stale_video_temporaries(const std::string& dir);

}  // namespace ovseg::cli
