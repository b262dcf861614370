// The Python module `ovseg` (native part `ovseg._ovseg`): the public C++ API (include/ovseg/*.hpp)
// in Python idiom, numpy in and out. Only the public headers are used: this file links
// ovseg::ovseg like any other consumer and never sees torch.
//
//   model = ovseg.Model.load("bundles/ovseg-swinB-vitL14")
//   r = model.segment("photo.jpg", ["sky", "tree", "road"])      # or an H×W×3 uint8 array
//   r.labels                                                      # H×W uint16, a view of the result
//
// Ownership: a segment() result is moved into a shared C++ object that the Python `Result` holds;
// `labels`, `scores` and `class_pixels` are numpy views of its buffers whose base is that Python
// object, so no pixel is copied and the buffers live as long as any view does. Images and text
// features returned by functions are owned by a capsule in the same way.
//
// Threads: segment(), text_features(), prepare_classes() and Model.load() run with the GIL
// released; the arguments are converted to C++ values before, and the results wrapped after.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ovseg/eval.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"

namespace py = pybind11;
namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------------------------------------
// Exceptions: ovseg.Error (.code) and subclasses that are also the idiomatic built-in errors.
// ------------------------------------------------------------------------------------------------
struct ExceptionTypes {
  PyObject* error = nullptr;             // ovseg.Error(Exception)
  PyObject* invalid_argument = nullptr;  // ovseg.InvalidArgumentError(Error, ValueError)
  PyObject* file_error = nullptr;        // ovseg.FileError(Error, OSError)
  PyObject* image_error = nullptr;       // ovseg.ImageError(Error, ValueError)
  PyObject* model_error = nullptr;       // ovseg.ModelError(Error)
  PyObject* cancelled = nullptr;         // ovseg.CancelledError(Error)
};
ExceptionTypes g_exc;

PyObject* exception_type_for(ovseg::ErrorCode code) {
  switch (code) {
    case ovseg::ErrorCode::kInvalidArgument: return g_exc.invalid_argument;
    case ovseg::ErrorCode::kIo: return g_exc.file_error;
    case ovseg::ErrorCode::kBadImage: return g_exc.image_error;
    case ovseg::ErrorCode::kBadModel: return g_exc.model_error;
    case ovseg::ErrorCode::kCancelled: return g_exc.cancelled;
    default: return g_exc.error;
  }
}

// A message as a str (file names need not be UTF-8: undecodable bytes become U+FFFD).
py::str to_py_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// Sets the Python error indicator to an ovseg exception instance with .code.
void set_python_error(ovseg::ErrorCode code, const std::string& message) {
  PyObject* type = exception_type_for(code);
  try {
    py::object exc = py::reinterpret_borrow<py::object>(type)(to_py_str(message));
    exc.attr("code") = py::cast(code);
    PyErr_SetObject(type, exc.ptr());
  } catch (py::error_already_set& e) {
    e.restore();
  }
}

// Raised from the binding's own argument checks.
[[noreturn]] void throw_invalid(const std::string& message) {
  throw ovseg::Error(ovseg::ErrorCode::kInvalidArgument, message);
}

std::string type_name(py::handle o) { return py::str(py::type::handle_of(o).attr("__name__")); }

// ------------------------------------------------------------------------------------------------
// Argument conversion
// ------------------------------------------------------------------------------------------------
bool is_path_like(py::handle o) {
  return py::isinstance<py::str>(o) || py::isinstance<py::bytes>(o) || py::hasattr(o, "__fspath__");
}

// str, bytes or os.PathLike → a file system path (os.fsdecode: surrogate escapes kept as bytes).
std::string to_path(py::handle o, const char* what) {
  if (!is_path_like(o))
    throw py::type_error(std::string(what) + " must be a str or os.PathLike, not " + type_name(o));
  py::object os = py::module_::import("os");
  py::object b = os.attr("fsencode")(os.attr("fspath")(o));
  return b.cast<std::string>();
}

// A Python str → UTF-8. A str that has no UTF-8 form (a lone surrogate such as "\ud800", from
// os.fsdecode or a JSON escape) is an InvalidArgumentError naming where, not pybind11's bare
// "Unable to cast" RuntimeError.
std::string utf8_text(py::handle s, const std::string& what) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(s.ptr(), &size);
  if (data) return std::string(data, static_cast<std::size_t>(size));
  PyErr_Clear();
  const Py_ssize_t n = PyUnicode_GetLength(s.ptr());
  for (Py_ssize_t i = 0; i < n; ++i) {
    const Py_UCS4 c = PyUnicode_ReadChar(s.ptr(), i);
    if (c >= 0xD800 && c <= 0xDFFF) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "%04X", static_cast<unsigned>(c));
      throw_invalid(what + " is not valid text: a lone surrogate U+" + hex + " at character " + std::to_string(i) +
                    " (it has no UTF-8 form)");
    }
  }
  throw_invalid(what + " is not valid text (it has no UTF-8 form)");
}

std::vector<std::string> to_class_list(py::handle classes) {
  if (py::isinstance<py::str>(classes) || py::isinstance<py::bytes>(classes))
    throw py::type_error("classes must be a list of names such as [\"sky\", \"tree\"], not a single " +
                         type_name(classes));
  if (!py::isinstance<py::iterable>(classes))
    throw py::type_error("classes must be an iterable of str, not " + type_name(classes));
  std::vector<std::string> out;
  for (py::handle c : classes) {
    if (!py::isinstance<py::str>(c))
      throw py::type_error("classes[" + std::to_string(out.size()) + "] must be a str, not " + type_name(c));
    out.push_back(utf8_text(c, "classes[" + std::to_string(out.size()) + "]"));
  }
  return out;
}

// An image argument held for the duration of a call: either a path or a view of a numpy buffer
// (the array is referenced by `array`, so the buffer stays valid while the GIL is released).
struct ImageArg {
  std::optional<std::string> path;
  py::array array;
  ovseg::ImageView view;
};

ovseg::PixelFormat pixel_format(int channels, const std::string& order) {
  if (channels == 1) return ovseg::PixelFormat::kGray;
  const bool bgr = order == "bgr";
  if (channels == 3) return bgr ? ovseg::PixelFormat::kBgr : ovseg::PixelFormat::kRgb;
  return bgr ? ovseg::PixelFormat::kBgra : ovseg::PixelFormat::kRgba;
}

std::string lower(std::string s) {
  for (auto& ch : s)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  return s;
}

ImageArg to_image(py::handle image, const std::string& channel_order_arg) {
  const std::string order = lower(channel_order_arg);
  if (order != "rgb" && order != "bgr")
    throw_invalid("channel_order must be \"rgb\" or \"bgr\", not \"" + channel_order_arg + "\"");
  ImageArg arg;
  if (is_path_like(image)) {
    arg.path = to_path(image, "image");
    return arg;
  }
  py::module_ np = py::module_::import("numpy");
  py::array a;
  if (py::isinstance<py::array>(image)) {
    a = py::reinterpret_borrow<py::array>(image);
  } else {
    try {  // PIL images, memoryviews, nested lists ...
      a = np.attr("asarray")(image);
    } catch (py::error_already_set&) {
      throw py::type_error("image must be a path or an H×W×3 uint8 numpy array, not " + type_name(image));
    }
    if (a.dtype().kind() == 'O')
      throw py::type_error("image must be a path or an H×W×3 uint8 numpy array, not " + type_name(image));
  }
  if (!a.dtype().is(py::dtype::of<std::uint8_t>()))
    throw py::type_error("image: dtype " + std::string(py::str(a.dtype())) +
                         " is not supported: pass uint8 pixels (0..255), e.g. "
                         "np.clip(x * 255, 0, 255).round().astype(np.uint8)");
  const auto nd = a.ndim();
  int channels = 1;
  if (nd == 3) {
    channels = static_cast<int>(a.shape(2));
    if (channels != 1 && channels != 3 && channels != 4)
      throw_invalid("image: shape " + std::string(py::str(py::make_tuple(a.shape(0), a.shape(1), a.shape(2)))) +
                    " has " + std::to_string(channels) + " channels; expected H×W×3 (or H×W, H×W×1, H×W×4)");
  } else if (nd != 2) {
    throw_invalid("image: expected an H×W×3 array (or H×W, H×W×4), got " + std::to_string(nd) + " dimensions");
  }
  if (a.shape(0) == 0 || a.shape(1) == 0) throw_invalid("image: the array is empty (height or width is 0)");
  if (a.shape(0) > INT_MAX || a.shape(1) > INT_MAX) throw_invalid("image: too large");
  // Zero-copy when each row is packed pixels (any row stride ≥ a row); otherwise one packed copy.
  const py::ssize_t row = a.shape(1) * channels;
  const bool packed_rows = a.strides(nd - 1) == 1 && (nd == 2 || a.strides(1) == channels) && a.strides(0) >= row;
  if (!packed_rows) a = np.attr("ascontiguousarray")(a);
  arg.array = a;
  arg.view.data = static_cast<const std::uint8_t*>(a.data());
  arg.view.height = static_cast<int>(a.shape(0));
  arg.view.width = static_cast<int>(a.shape(1));
  arg.view.format = pixel_format(channels, order);
  arg.view.stride = static_cast<std::size_t>(a.strides(0));
  return arg;
}

// An owned vector handed to numpy without a copy: the capsule deletes it.
template <class T>
py::array vector_to_array(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule base(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), base);
}

py::array image_to_array(ovseg::Image&& img) {
  const py::ssize_t h = img.height, w = img.width;
  return vector_to_array(std::move(img.rgb), {h, w, 3});
}

// A setting stored as float (0.4f) as the Python float it was written as (0.4), not
// 0.4000000059604645: the shortest decimal that round-trips the float.
double decimal(float v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  *res.ptr = '\0';
  return std::strtod(buf, nullptr);
}

// ------------------------------------------------------------------------------------------------
// Result
// ------------------------------------------------------------------------------------------------
struct PyResult {
  std::shared_ptr<const ovseg::Result> r;
  std::string mode;
  float mask_threshold = 0;
  float ensemble_weight = 0;
};

struct PySegment {
  ovseg::Segment s;
  std::string class_name;
};

py::dict timings_dict(const ovseg::Timings& t) {
  py::dict d;
  for (const ovseg::StageInfo& st : ovseg::kStageTable) d[st.name] = t[st.stage];  // the stage table's order
  d["total"] = t.total_ms;
  return d;
}

py::list string_list(const std::vector<std::string>& v) {
  py::list l;
  for (const auto& s : v) l.append(to_py_str(s));
  return l;
}

// A numpy view of a buffer of the result; `owner` (the Python Result) is the array's base.
template <class T>
py::array view_of(const std::vector<T>& v, std::vector<py::ssize_t> shape, py::handle owner) {
  return py::array_t<T>(shape, v.data(), owner);
}

// ------------------------------------------------------------------------------------------------
// Model
// ------------------------------------------------------------------------------------------------
struct ProgressState {
  py::object callback;                      // None: only Ctrl-C is checked
  std::optional<py::error_already_set> error;
};

// The options of segment/analyze/classify, with the progress bridge: between stages the caller's
// callback, and Ctrl-C (signals reach Python only while it runs bytecode, so a KeyboardInterrupt is
// picked up here and cancels the call).
ovseg::SegmentOptions segment_options(ProgressState& state, const std::string& mode, std::optional<float> mask_threshold,
                                      std::optional<float> ensemble_weight, bool keep_scores, py::object progress) {
  if (!progress.is_none() && !PyCallable_Check(progress.ptr()))
    throw py::type_error("progress must be a callable (stage: str, fraction: float) -> bool | None, not " +
                         type_name(progress));
  ovseg::SegmentOptions so;
  so.mode = ovseg::parse_mode(mode);
  so.mask_threshold = mask_threshold;
  so.ensemble_weight = ensemble_weight;
  so.keep_scores = keep_scores;
  state.callback = std::move(progress);
  so.progress = [&state](const char* stage, float fraction) -> bool {
    py::gil_scoped_acquire gil;
    if (state.error) return false;
    try {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (state.callback.is_none()) return true;
      py::object ret = state.callback(stage, fraction);
      if (ret.is_none()) return true;
      const int truth = PyObject_IsTrue(ret.ptr());
      if (truth < 0) throw py::error_already_set();
      return truth != 0;
    } catch (py::error_already_set& e) {
      state.error = std::move(e);
      return false;
    }
  };
  return so;
}

// Runs f() without the GIL; a Python exception raised in the callback (or by Ctrl-C) is the one
// the caller sees, else an ovseg::Error is rethrown with the GIL held.
template <class F>
auto run_without_gil(ProgressState& state, F&& f) -> decltype(f()) {
  std::optional<decltype(f())> value;
  std::optional<ovseg::Error> failure;
  {
    py::gil_scoped_release nogil;
    try {
      value.emplace(f());
    } catch (const ovseg::Error& e) {
      failure = e;
    }
  }
  if (state.error) {
    state.error->restore();
    throw py::error_already_set();
  }
  if (failure) throw *failure;
  return std::move(*value);
}

PyResult to_py_result(ovseg::Result&& result) {
  PyResult out;  // the settings applied are the result's own (Result::settings)
  out.mode = ovseg::to_string(result.settings.mode);
  out.mask_threshold = result.settings.mask_threshold;
  out.ensemble_weight = result.settings.ensemble_weight;
  out.r = std::make_shared<const ovseg::Result>(std::move(result));
  return out;
}

PyResult segment(const ovseg::Model& model, py::handle image, py::handle classes, const std::string& mode,
                 std::optional<float> mask_threshold, std::optional<float> ensemble_weight, bool keep_scores,
                 const std::string& channel_order, py::object progress) {
  ImageArg img = to_image(image, channel_order);
  const std::vector<std::string> names = to_class_list(classes);
  ProgressState state;
  const ovseg::SegmentOptions so =
      segment_options(state, mode, mask_threshold, ensemble_weight, keep_scores, std::move(progress));
  return to_py_result(run_without_gil(state, [&] {
    return img.path ? model.segment_file(*img.path, names, so) : model.segment(img.view, names, so);
  }));
}

std::shared_ptr<ovseg::Analysis> analyze(const ovseg::Model& model, py::handle image, const std::string& mode,
                                               std::optional<float> mask_threshold, std::optional<bool> clip_ensemble,
                                               const std::string& channel_order, py::object progress) {
  ImageArg img = to_image(image, channel_order);
  ProgressState state;
  ovseg::SegmentOptions so = segment_options(state, mode, mask_threshold, std::nullopt, false, std::move(progress));
  so.clip_ensemble = clip_ensemble;
  return run_without_gil(state, [&] {
    return std::make_shared<ovseg::Analysis>(img.path ? model.analyze_file(*img.path, so)
                                                            : model.analyze(img.view, so));
  });
}

PyResult classify(const ovseg::Model& model, const ovseg::Analysis& analysis, py::handle classes,
                  const std::string& mode, std::optional<float> mask_threshold, std::optional<float> ensemble_weight,
                  std::optional<bool> clip_ensemble, bool keep_scores, py::object progress) {
  const std::vector<std::string> names = to_class_list(classes);
  ProgressState state;
  ovseg::SegmentOptions so =
      segment_options(state, mode, mask_threshold, ensemble_weight, keep_scores, std::move(progress));
  so.clip_ensemble = clip_ensemble;
  return to_py_result(run_without_gil(state, [&] { return model.classify(analysis, names, so); }));
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------
struct PyTokenizer {
  std::shared_ptr<const ovseg::Tokenizer> tok;
  int context_length = 77;
  std::string source;
};

// path: a bundle directory (its manifest's text.tokenizer), a Hugging Face directory (vocab.json +
// merges.txt), a SentencePiece .model, or CLIP's BPE merges file (.txt or .txt.gz).
PyTokenizer load_tokenizer(const std::string& path, const std::optional<std::string>& kind_arg) {
  PyTokenizer t;
  t.source = path;
  std::error_code ec;
  std::string kind = kind_arg.value_or("");
  std::string file = path;
  if (fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "manifest.json", ec) && kind.empty()) {
    const std::string manifest = (fs::path(path) / "manifest.json").string();
    py::object m;
    try {
      py::object f = py::module_::import("io").attr("open")(manifest, "r", py::arg("encoding") = "utf-8");
      m = py::module_::import("json").attr("load")(f);
      f.attr("close")();
    } catch (py::error_already_set& e) {
      throw ovseg::Error(ovseg::ErrorCode::kBadModel, manifest + ": cannot read the manifest (" + e.what() + ")");
    }
    py::object text = m.attr("get")("text");
    py::object tok = text.is_none() ? py::object(py::none()) : text.attr("get")("tokenizer");
    if (tok.is_none() || !py::isinstance<py::dict>(tok) || !py::isinstance<py::str>(tok.attr("get")("kind")) ||
        !py::isinstance<py::str>(tok.attr("get")("file")))
      throw ovseg::Error(ovseg::ErrorCode::kBadModel, manifest + ": no text.tokenizer entry with kind and file");
    kind = tok.attr("get")("kind").cast<std::string>();
    file = (fs::path(path) / tok.attr("get")("file").cast<std::string>()).string();
    py::object ctx = tok.attr("get")("context_length");
    if (py::isinstance<py::int_>(ctx)) t.context_length = ctx.cast<int>();
  } else if (kind.empty()) {
    const std::string ext = fs::path(path).extension().string();
    kind = ext == ".model" ? "sentencepiece" : "clip_bpe";
  }
  t.tok = ovseg::make_tokenizer(kind, file);
  return t;
}

py::array tokenize_texts(const PyTokenizer& t, py::handle texts, std::optional<int> context_length, bool truncate) {
  std::vector<std::string> list;
  if (py::isinstance<py::str>(texts)) {
    list.push_back(utf8_text(texts, "texts"));
  } else {
    for (py::handle s : texts) {
      if (!py::isinstance<py::str>(s))
        throw py::type_error("texts[" + std::to_string(list.size()) + "] must be a str, not " + type_name(s));
      list.push_back(utf8_text(s, "texts[" + std::to_string(list.size()) + "]"));
    }
  }
  const int ctx = context_length.value_or(t.context_length);
  if (ctx < 2) throw_invalid("context_length must be at least 2, not " + std::to_string(ctx));
  std::vector<std::int32_t> out(list.size() * static_cast<std::size_t>(ctx), 0);
  for (std::size_t i = 0; i < list.size(); ++i) {
    const auto ids = t.tok->tokenize(list[i], ctx, truncate);
    std::copy(ids.begin(), ids.end(), out.begin() + static_cast<std::ptrdiff_t>(i * ctx));
  }
  return vector_to_array(std::move(out), {static_cast<py::ssize_t>(list.size()), ctx});
}

ovseg::LogLevel parse_log_level(const std::string& s) {
  const std::string l = lower(s);
  if (l == "trace") return ovseg::LogLevel::kTrace;
  if (l == "debug") return ovseg::LogLevel::kDebug;
  if (l == "info") return ovseg::LogLevel::kInfo;
  if (l == "warn" || l == "warning") return ovseg::LogLevel::kWarn;
  if (l == "error") return ovseg::LogLevel::kError;
  if (l == "off") return ovseg::LogLevel::kOff;
  throw_invalid("log level must be trace, debug, info, warn, error or off, not \"" + s + "\"");
}

PyObject* new_exception(const char* name, const char* doc, PyObject* bases) {
  PyObject* t = PyErr_NewExceptionWithDoc(name, doc, bases, nullptr);
  if (!t) throw py::error_already_set();
  return t;
}

constexpr const char* kLoadDoc = R"doc(load(bundle, device="cpu", precision="fp32", threads=0, text_cache=True,
     cache_dir=None, region_batch=0) -> Model

Load and validate a model bundle directory written by ovseg-export.

Parameters
----------
bundle : str | os.PathLike
    The bundle directory (manifest.json and the TorchScript modules).
device : str
    "cpu", "cuda" or "cuda:N".
precision : str
    "fp32"; "bf16" (the CLIP visual tower in bfloat16, the rest fp32) or
    "fp16" (CUDA).
threads : int
    Intra-op CPU threads, 0 = all cores. A process-wide setting, shared
    with torch when it is imported too.
text_cache : bool
    Keep text features on disk, in cache_dir (default $OVSEG_CACHE_DIR,
    else $XDG_CACHE_HOME/ovseg, else ~/.cache/ovseg).
region_batch : int
    CLIP regions per forward pass, 0 = chosen by the memory available.

Raises ovseg.ModelError for a missing or corrupt bundle and
ovseg.InvalidArgumentError (a ValueError) for a bad option.
)doc";

// help(ovseg.Model.segment): the signature by hand (pybind11's would show C++ types).
constexpr const char* kAnalyzeDoc = R"doc(analyze(image, *, mode="eval", mask_threshold=None, clip_ensemble=None,
        channel_order="rgb", progress=None) -> Analysis

Everything of `image` that does not depend on the class names: the MaskFormer proposals, the
valid regions (for the mode's mask threshold, or `mask_threshold`) and the CLIP embedding of each.
model.classify(analysis, classes, ...) then gives, for any class list and ensemble weight, exactly
what segment() gives, in milliseconds. clip_ensemble=False: MaskFormer-only (no regions, no
CLIP). image, channel_order and progress as in segment(). The GIL is released while it computes.
)doc";

constexpr const char* kClassifyDoc = R"doc(classify(analysis, classes, *, mode="eval", mask_threshold=None,
        ensemble_weight=None, clip_ensemble=None, keep_scores=False, progress=None) -> Result

The Result of segment() for the analyzed image and these classes, byte for byte, without running
the class-agnostic stages again (Result.timings shows only "text" and "post"). Raises
InvalidArgumentError naming the option when the analysis does not fit: made by another model
(bundle, precision, device), with another mask threshold, or MaskFormer-only while the CLIP
ensemble is asked for.
)doc";

constexpr const char* kSegmentDoc = R"doc(segment(image, classes, *, mode="eval", mask_threshold=None, ensemble_weight=None,
        keep_scores=False, channel_order="rgb", progress=None) -> Result

Label every pixel of `image` with one of `classes`.

Parameters
----------
image : str | os.PathLike | numpy.ndarray
    A file path (decoded like load_image: EXIF orientation, then RGB), or a
    uint8 array of shape H×W×3 whose channels are read as RGB by default:
    pass channel_order="bgr" for BGR arrays such as cv2.imread's. H×W×4
    (alpha ignored) and H×W greyscale arrays are accepted too. Any strides:
    an array whose rows are packed pixels is read in place, others are
    copied once. Other dtypes raise TypeError, other shapes
    ovseg.InvalidArgumentError (a ValueError).
classes : list of str
    The class names, e.g. ["sky", "tree", "red car"]; labels index them.
mode : "eval" or "demo"
    "eval": the ensemble of both branches, as in benchmarks. "demo": one
    region per class; pixels may stay UNLABELED.
mask_threshold, ensemble_weight : float in [0, 1], optional
    Override the bundle's values for the mode.
keep_scores : bool
    Also return the C×H×W float32 score maps (Result.scores).
channel_order : "rgb" or "bgr"
    Channel order of an array image (default "rgb"; ignored for paths).
progress : callable, optional
    Called before each stage as progress(stage: str, fraction: float), then
    with ("done", 1.0). Return False to cancel (ovseg.CancelledError); an
    exception it raises propagates out of segment().

Returns
-------
Result
    labels (H×W uint16, a view without copy), scores, segments, classes,
    timings and the effective mode, mask_threshold and ensemble_weight.

The GIL is released while the model computes: other Python threads run,
and several threads may segment with one model at the same time. Ctrl-C
cancels between stages (KeyboardInterrupt).
)doc";

}  // namespace

PYBIND11_MODULE(_ovseg, m) {
  py::options options;
  options.disable_function_signatures();  // every docstring starts with a Python signature
  m.doc() = "Native part of the ovseg package (import ovseg instead).";

  // --- errors ------------------------------------------------------------------------------------
  py::enum_<ovseg::ErrorCode>(m, "ErrorCode", "What went wrong; the .code of every ovseg.Error.")
      .value("INVALID_ARGUMENT", ovseg::ErrorCode::kInvalidArgument, "a bad option or class list")
      .value("IO", ovseg::ErrorCode::kIo, "a file could not be read or written")
      .value("BAD_IMAGE", ovseg::ErrorCode::kBadImage, "an image that does not decode, or an unsupported layout")
      .value("BAD_MODEL", ovseg::ErrorCode::kBadModel, "a bundle that is missing, of the wrong version, or corrupt")
      .value("BAD_DATA", ovseg::ErrorCode::kBadData, "a dataset or label file that does not fit its layout")
      .value("RUNTIME", ovseg::ErrorCode::kRuntime, "anything else that went wrong while computing")
      .value("CANCELLED", ovseg::ErrorCode::kCancelled, "the progress callback asked to stop");

  g_exc.error = new_exception("ovseg.Error",
                              "Every error of the ovseg library. ``.code`` is an :class:`ErrorCode`; the message "
                              "names the file (where there is one) and the problem.",
                              PyExc_Exception);
  py::handle(g_exc.error).attr("code") = py::cast(ovseg::ErrorCode::kRuntime);
  auto sub = [](const char* name, const char* doc, PyObject* builtin) {
    py::tuple bases = builtin ? py::make_tuple(py::handle(g_exc.error), py::handle(builtin))
                              : py::make_tuple(py::handle(g_exc.error));
    return new_exception(name, doc, bases.ptr());
  };
  g_exc.invalid_argument = sub("ovseg.InvalidArgumentError",
                               "A bad argument or option (code INVALID_ARGUMENT); also a ValueError.", PyExc_ValueError);
  g_exc.file_error = sub("ovseg.FileError", "A file that could not be read or written (code IO); also an OSError.",
                         PyExc_OSError);
  g_exc.image_error = sub("ovseg.ImageError",
                          "An image that does not decode, or an unsupported pixel layout (code BAD_IMAGE); also a "
                          "ValueError.",
                          PyExc_ValueError);
  g_exc.model_error = sub("ovseg.ModelError", "A model bundle that is missing, of the wrong version or corrupt "
                                              "(code BAD_MODEL).", nullptr);
  g_exc.cancelled = sub("ovseg.CancelledError", "segment() was cancelled: the progress callback returned False "
                                                "(code CANCELLED).", nullptr);
  m.add_object("Error", py::handle(g_exc.error));
  m.add_object("InvalidArgumentError", py::handle(g_exc.invalid_argument));
  m.add_object("FileError", py::handle(g_exc.file_error));
  m.add_object("ImageError", py::handle(g_exc.image_error));
  m.add_object("ModelError", py::handle(g_exc.model_error));
  m.add_object("CancelledError", py::handle(g_exc.cancelled));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ovseg::Error& e) {
      set_python_error(e.code(), e.what());
    }
  });

  m.attr("UNLABELED") = ovseg::kUnlabeled;
  m.def("version", &ovseg::version, "version() -> str\n\nThe library's version, e.g. \"0.1.0\".");
  m.def(
      "set_log_level", [](const std::string& level) { ovseg::set_log_level(parse_log_level(level)); },
      py::arg("level"),
      "set_log_level(level)\n\nLevel of the library's log lines on stderr: \"trace\", \"debug\", \"info\" "
      "(the default), \"warn\", \"error\" or \"off\".");

  // --- the datasets' class lists ----------------------------------------------------------------
  m.def("dataset_names", &ovseg::preset_names,
        "dataset_names() -> list[str]\n\nThe datasets whose class lists ship with ovseg: ade150, ade847, pc59, "
        "pc459, voc20, coco171.");
  m.def(
      "dataset_classes", [](const std::string& name) { return ovseg::preset_classes(name); }, py::arg("name"),
      "dataset_classes(name) -> list[str]\n\nThe class names of a dataset (dataset_names()) in label order, as "
      "ov-seg's evaluation registers them (share/ovseg/class_lists.json of the installation, or the source "
      "tree's data/). Raises InvalidArgumentError for an unknown name.");

  // --- images ------------------------------------------------------------------------------------
  m.def(
      "load_image",
      [](py::handle path) {
        const std::string p = to_path(path, "path");
        ovseg::Image img;
        {
          py::gil_scoped_release nogil;
          img = ovseg::load_image(p);
        }
        return image_to_array(std::move(img));
      },
      py::arg("path"),
      "load_image(path) -> numpy.ndarray\n\n"
      "Decodes an image file the way ov-seg does (Pillow semantics, EXIF orientation applied, then RGB): "
      "greyscale is replicated, alpha dropped, palettes expanded, 16-bit reduced to 8-bit.\n\n"
      "Returns an H×W×3 uint8 array in RGB order. Raises ovseg.ImageError (undecodable) or "
      "ovseg.FileError (unreadable), naming the file.");
  m.def(
      "decode_image",
      [](py::bytes data, const std::string& name) {
        std::string bytes = data;
        ovseg::Image img;
        {
          py::gil_scoped_release nogil;
          img = ovseg::decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), name);
        }
        return image_to_array(std::move(img));
      },
      py::arg("data"), py::arg("name") = "<bytes>",
      "decode_image(data, name='<bytes>') -> numpy.ndarray\n\n"
      "Decodes an encoded image (PNG, JPEG, ...) held in memory, with the rules of load_image; `name` is "
      "used in error messages. Returns an H×W×3 uint8 RGB array.");

  // --- results -----------------------------------------------------------------------------------
  py::class_<PySegment>(m, "Segment",
                        "One valid region of a result: a MaskFormer query whose mask passes the threshold.")
      .def_property_readonly("query", [](const PySegment& s) { return s.s.query; }, "Query index (0..Q-1).")
      .def_property_readonly("class_index", [](const PySegment& s) { return s.s.class_index; },
                             "Best class of the region: an index into Result.score_classes.")
      .def_property_readonly("class_name", [](const PySegment& s) { return to_py_str(s.class_name); },
                             "Name of that class.")
      .def_property_readonly("score", [](const PySegment& s) { return s.s.score; },
                             "Its ensembled probability.")
      .def_property_readonly("area", [](const PySegment& s) { return s.s.area; },
                             "Pixels of the binary mask at the original image size.")
      .def_property_readonly(
          "box", [](const PySegment& s) { return py::make_tuple(s.s.box.x0, s.s.box.y0, s.s.box.x1, s.s.box.y1); },
          "Bounding box (x0, y0, x1, y1) of the mask, x1/y1 exclusive, at the original image size.")
      .def_property_readonly("selected", [](const PySegment& s) { return s.s.selected; },
                             "Demo mode: the region was chosen by at least one class.")
      .def("__repr__", [](const PySegment& s) {
        return py::str("Segment(query={}, class_index={}, class_name={!r}, score={:.4f}, area={}, box={}, "
                       "selected={})")
            .format(s.s.query, s.s.class_index, to_py_str(s.class_name), s.s.score, s.s.area,
                    py::make_tuple(s.s.box.x0, s.s.box.y0, s.s.box.x1, s.s.box.y1), s.s.selected);
      });

  py::class_<PyResult>(m, "Result",
                       "What Model.segment() returns. The arrays are views of the result's own buffers "
                       "(no copy); they keep it alive.")
      .def_property_readonly(
          "labels",
          [](py::object self) {
            const auto& r = *self.cast<const PyResult&>().r;
            return view_of(r.labels, {r.height, r.width}, self);
          },
          "H×W uint16 array: the index of each pixel's class in `classes`, or ovseg.UNLABELED (65535) where "
          "no region applies (demo mode).")
      .def_property_readonly(
          "scores",
          [](py::object self) -> py::object {
            const auto& r = *self.cast<const PyResult&>().r;
            if (r.scores.empty()) return py::none();
            return view_of(r.scores, {static_cast<py::ssize_t>(r.score_classes.size()), r.height, r.width}, self);
          },
          "C×H×W float32 score maps (channels = score_classes), or None unless segment(keep_scores=True).")
      .def_property_readonly(
          "class_pixels",
          [](py::object self) {
            const auto& r = *self.cast<const PyResult&>().r;
            return view_of(r.class_pixels, {static_cast<py::ssize_t>(r.class_pixels.size())}, self);
          },
          "int64 array: pixels labelled with each class of `classes`.")
      .def_property_readonly("unlabeled_pixels", [](const PyResult& p) { return p.r->unlabeled_pixels; },
                             "Pixels labelled UNLABELED.")
      .def_property_readonly("classes", [](const PyResult& p) { return string_list(p.r->classes); },
                             "The class names asked for, in the order given.")
      .def_property_readonly("score_classes", [](const PyResult& p) { return string_list(p.r->score_classes); },
                             "Channel names of `scores`: `classes`, plus \"others\" in demo mode with one class.")
      .def_property_readonly(
          "segments",
          [](const PyResult& p) {
            py::list l;
            for (const auto& s : p.r->segments) {
              const auto ci = static_cast<std::size_t>(s.class_index);
              const auto& names = p.r->score_classes;
              l.append(PySegment{s, ci < names.size() ? names[ci] : std::string()});
            }
            return l;
          },
          "The valid regions (list of Segment), in query order.")
      .def_property_readonly("width", [](const PyResult& p) { return p.r->width; }, "Image width.")
      .def_property_readonly("height", [](const PyResult& p) { return p.r->height; }, "Image height.")
      .def_property_readonly(
          "resized_size", [](const PyResult& p) { return py::make_tuple(p.r->resized_width, p.r->resized_height); },
          "(width, height) of the test-time resize the model saw.")
      .def_property_readonly("timings", [](const PyResult& p) { return timings_dict(p.r->timings); },
                             "Milliseconds per stage: preprocess, proposals, text, regions, clip, post, total.")
      .def_property_readonly("mode", [](const PyResult& p) { return p.mode; }, "\"eval\" or \"demo\".")
      .def_property_readonly("mask_threshold", [](const PyResult& p) { return decimal(p.mask_threshold); },
                             "The mask threshold used (the bundle's for the mode unless overridden).")
      .def_property_readonly("ensemble_weight", [](const PyResult& p) { return decimal(p.ensemble_weight); },
                             "The ensemble weight used (the bundle's for the mode unless overridden).")
      .def("__repr__", [](const PyResult& p) {
        return py::str("<ovseg.Result {}x{}, {} classes, {} segments, mode={}>")
            .format(p.r->width, p.r->height, p.r->classes.size(), p.r->segments.size(), p.mode);
      });

  py::class_<ovseg::ModelInfo>(m, "ModelInfo", "What a bundle's manifest says (Model.info).")
      .def_readonly("name", &ovseg::ModelInfo::name)
      .def_readonly("bundle_dir", &ovseg::ModelInfo::bundle_dir)
      .def_readonly("format_version", &ovseg::ModelInfo::format_version)
      .def_readonly("backbone", &ovseg::ModelInfo::backbone, "\"swin\" or \"resnet\".")
      .def_readonly("clip_model", &ovseg::ModelInfo::clip_model, "e.g. \"ViT-L/14\".")
      .def_readonly("num_queries", &ovseg::ModelInfo::num_queries)
      .def_readonly("embed_dim", &ovseg::ModelInfo::embed_dim)
      .def_readonly("min_size_test", &ovseg::ModelInfo::min_size_test)
      .def_readonly("max_size_test", &ovseg::ModelInfo::max_size_test)
      .def_property_readonly("eval_mask_threshold", [](const ovseg::ModelInfo& i) { return decimal(i.eval_mask_threshold); })
      .def_property_readonly("eval_ensemble_weight", [](const ovseg::ModelInfo& i) { return decimal(i.eval_ensemble_weight); })
      .def_property_readonly("demo_mask_threshold", [](const ovseg::ModelInfo& i) { return decimal(i.demo_mask_threshold); })
      .def_property_readonly("demo_ensemble_weight", [](const ovseg::ModelInfo& i) { return decimal(i.demo_ensemble_weight); })
      .def_readonly("template_set", &ovseg::ModelInfo::template_set)
      .def_readonly("num_templates", &ovseg::ModelInfo::num_templates)
      .def_readonly("source_sha256", &ovseg::ModelInfo::source_sha256)
      .def_readonly("device", &ovseg::ModelInfo::device)
      .def_readonly("precision", &ovseg::ModelInfo::precision)
      .def_readonly("fingerprint", &ovseg::ModelInfo::fingerprint,
                    "sha256 of the manifest, precision and device kind (what an Analysis must fit)")
      .def_property_readonly(
          "manifest",
          [](const ovseg::ModelInfo& i) { return py::module_::import("json").attr("loads")(i.manifest_json); },
          "The whole manifest.json as a dict.")
      .def("__repr__", [](const ovseg::ModelInfo& i) {
        return py::str("<ovseg.ModelInfo {} ({} + CLIP {}, {} queries) on {} {}>")
            .format(i.name, i.backbone, i.clip_model, i.num_queries, i.device, i.precision);
      });

  py::class_<ovseg::Analysis, std::shared_ptr<ovseg::Analysis>>(
      m, "Analysis",
      "The class-agnostic part of one image (Model.analyze): proposals, valid regions, their CLIP "
      "embeddings. Immutable; classify it with any class list (Model.classify).")
      .def_property_readonly("bytes", &ovseg::Analysis::bytes, "Memory it holds, in bytes.")
      .def_property_readonly("width", &ovseg::Analysis::width)
      .def_property_readonly("height", &ovseg::Analysis::height)
      .def_property_readonly("num_regions", &ovseg::Analysis::num_regions, "Valid regions (CLIP embeddings held).")
      .def_property_readonly("mask_threshold", [](const ovseg::Analysis& a) { return decimal(a.mask_threshold()); })
      .def_property_readonly("clip_ensemble", &ovseg::Analysis::clip_ensemble)
      .def_property_readonly("model_fingerprint", &ovseg::Analysis::model_fingerprint)
      .def_property_readonly("timings", [](const ovseg::Analysis& a) { return timings_dict(a.timings()); },
                             "Milliseconds of the class-agnostic stages when it was made.")
      .def(
          "save",
          [](const ovseg::Analysis& a, py::handle path) {
            const std::string p = to_path(path, "path");
            py::gil_scoped_release nogil;
            a.save(p);
          },
          py::arg("path"),
          "save(path)\n\nWrites the analysis to a file (versioned, checksummed, exact float32), atomically.")
      .def_static(
          "load",
          [](py::handle path) {
            const std::string p = to_path(path, "path");
            py::gil_scoped_release nogil;
            return std::make_shared<ovseg::Analysis>(ovseg::Analysis::load(p));
          },
          py::arg("path"),
          "load(path) -> Analysis\n\nReads a saved analysis; ovseg.Error (a data error) for a corrupt, truncated "
          "or foreign file.")
      .def("__repr__", [](const ovseg::Analysis& a) {
        return py::str("<ovseg.Analysis {}x{}, {} regions, {:.1f} MB>")
            .format(a.width(), a.height(), a.num_regions(), static_cast<double>(a.bytes()) / 1e6);
      });

  py::class_<ovseg::Model>(m, "Model",
                           "A loaded model bundle. Thread-safe: several threads may call segment() on one "
                           "model at the same time (the GIL is released while it computes).")
      .def_static(
          "load",
          [](py::handle bundle, const std::string& device, const std::string& precision, int threads,
             bool text_cache, py::object cache_dir, int region_batch) {
            ovseg::ModelOptions mo;
            const std::string dir = to_path(bundle, "bundle");
            mo.device = device;
            mo.precision = ovseg::parse_precision(precision);
            mo.threads = threads;
            mo.text_disk_cache = text_cache;
            if (!cache_dir.is_none()) mo.text_cache_dir = to_path(cache_dir, "cache_dir");
            mo.region_batch = region_batch;
            py::gil_scoped_release nogil;
            return std::make_unique<ovseg::Model>(ovseg::Model::load(dir, mo));
          },
          py::arg("bundle"), py::arg("device") = "cpu", py::arg("precision") = "fp32", py::arg("threads") = 0,
          py::arg("text_cache") = true, py::arg("cache_dir") = py::none(), py::arg("region_batch") = 0,
          kLoadDoc)
      .def(
          "segment",
          [](const ovseg::Model& model, py::handle image, py::handle classes, const std::string& mode,
             std::optional<float> mask_threshold, std::optional<float> ensemble_weight, bool keep_scores,
             const std::string& channel_order, py::object progress) {
            return segment(model, image, classes, mode, mask_threshold, ensemble_weight, keep_scores, channel_order,
                           std::move(progress));
          },
          py::arg("image"), py::arg("classes"), py::kw_only(), py::arg("mode") = "eval",
          py::arg("mask_threshold") = py::none(), py::arg("ensemble_weight") = py::none(),
          py::arg("keep_scores") = false, py::arg("channel_order") = "rgb", py::arg("progress") = py::none(),
          kSegmentDoc)
      .def("analyze", &analyze, py::arg("image"), py::kw_only(), py::arg("mode") = "eval",
           py::arg("mask_threshold") = py::none(), py::arg("clip_ensemble") = py::none(),
           py::arg("channel_order") = "rgb", py::arg("progress") = py::none(), kAnalyzeDoc)
      .def("classify", &classify, py::arg("analysis"), py::arg("classes"), py::kw_only(), py::arg("mode") = "eval",
           py::arg("mask_threshold") = py::none(), py::arg("ensemble_weight") = py::none(),
           py::arg("clip_ensemble") = py::none(), py::arg("keep_scores") = false, py::arg("progress") = py::none(),
           kClassifyDoc)
      .def(
          "text_features",
          [](const ovseg::Model& model, py::handle classes) {
            const auto names = to_class_list(classes);
            std::vector<float> f;
            {
              py::gil_scoped_release nogil;
              f = model.text_features(names);
            }
            const auto rows = static_cast<py::ssize_t>(names.size() + 1);
            const auto cols = static_cast<py::ssize_t>(f.size()) / rows;
            return vector_to_array(std::move(f), {rows, cols});
          },
          py::arg("classes"),
          "text_features(classes) -> numpy.ndarray\n\n"
          "The normalised text features, float32 [K+1, E]: one row per class (the prompt-template "
          "ensemble) and, last, the non-object embedding. Cached in memory and on disk.")
      .def(
          "prepare_classes",
          [](const ovseg::Model& model, py::handle classes) {
            const auto names = to_class_list(classes);
            py::gil_scoped_release nogil;
            return model.prepare_classes(names);
          },
          py::arg("classes"),
          "prepare_classes(classes) -> float\n\n"
          "Computes (and caches) the text features of these classes now, so that the first segment() "
          "does not pay for them. Returns the milliseconds spent.")
      .def_property_readonly("info", &ovseg::Model::info, py::return_value_policy::reference_internal,
                             "The bundle's manifest in a form for people and tools (ModelInfo).")
      .def("__repr__", [](const ovseg::Model& model) {
        const auto& i = model.info();
        return py::str("<ovseg.Model {} on {} {}>").format(i.name, i.device, i.precision);
      });

  // --- tokenizers --------------------------------------------------------------------------------
  py::class_<PyTokenizer>(m, "Tokenizer",
                          "A text tokenizer: CLIP's byte-level BPE (exact to the reference) or SentencePiece.")
      .def(py::init([](py::handle path, std::optional<std::string> kind) {
             return load_tokenizer(to_path(path, "path"), kind);
           }),
           py::arg("path"), py::arg("kind") = py::none(),
           "Tokenizer(path, kind=None)\n\n"
           "path: a model bundle directory (the tokenizer its manifest names), CLIP's merges file "
           "bpe_simple_vocab_16e6.txt(.gz), a Hugging Face directory with vocab.json + merges.txt, or a "
           "SentencePiece .model file. kind (\"clip_bpe\" or \"sentencepiece\") overrides the guess.")
      .def(
          "encode", [](const PyTokenizer& t, const std::string& text) { return t.tok->encode(text); },
          py::arg("text"), "encode(text) -> list[int]\n\nToken ids without start/end tokens.")
      .def(
          "decode", [](const PyTokenizer& t, const std::vector<std::int32_t>& ids) { return t.tok->decode(ids); },
          py::arg("ids"), "decode(ids) -> str\n\nText of a list of ids (special tokens dropped).")
      .def("tokenize", &tokenize_texts, py::arg("texts"), py::arg("context_length") = py::none(),
           py::arg("truncate") = false,
           "tokenize(texts, context_length=None, truncate=False) -> numpy.ndarray\n\n"
           "Like clip.tokenize: int32 [N, context_length] with the start and end tokens, zero-padded. "
           "texts: a str or a list of str. context_length: default 77 (or the bundle's). A text longer "
           "than that raises ovseg.InvalidArgumentError, unless truncate (the last id is then the end "
           "token).")
      .def_property_readonly("sot", [](const PyTokenizer& t) { return t.tok->sot(); }, "Start-of-text id.")
      .def_property_readonly("eot", [](const PyTokenizer& t) { return t.tok->eot(); }, "End-of-text id.")
      .def_property_readonly("vocab_size", [](const PyTokenizer& t) { return t.tok->vocab_size(); })
      .def_property_readonly("kind", [](const PyTokenizer& t) { return t.tok->kind(); },
                             "\"clip_bpe\" or \"sentencepiece\".")
      .def_property_readonly("context_length", [](const PyTokenizer& t) { return t.context_length; },
                             "Default context length (77, or the bundle's).")
      .def("__repr__", [](const PyTokenizer& t) {
        return py::str("<ovseg.Tokenizer {} from {!r}>").format(t.tok->kind(), to_py_str(t.source));
      });
}
