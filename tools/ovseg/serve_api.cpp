#include "serve_api.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "class_list.hpp"
#include "cli_log.hpp"
#include "inputs.hpp"
#include "ovseg/eval.hpp"
#include "ovseg/io.hpp"
#include "overlay.hpp"
#include "segment_output.hpp"

namespace ovseg::cli::serve {
namespace {

using json = nlohmann::json;

// A request the service refuses: status, type and message of the error document.
struct HttpError {
  int status;
  std::string type;
  std::string message;
};

std::string base64(const std::vector<std::uint8_t>& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += table[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const unsigned v = bytes[i] << 16;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const unsigned v = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

bool starts_with(const std::string& s, const char* prefix, std::size_t n, std::size_t at = 0) {
  return s.size() >= at + n && std::memcmp(s.data() + at, prefix, n) == 0;
}

// Whether the bytes start like a file of an image format the decoder reads (PNG, JPEG, GIF, BMP,
// TIFF, WebP, PNM, JPEG 2000, OpenEXR, Radiance HDR, Sun raster). Anything else is 415.
bool looks_like_image(const std::string& b) {
  return starts_with(b, "\x89PNG\r\n\x1a\n", 8) || starts_with(b, "\xff\xd8\xff", 3) || starts_with(b, "GIF8", 4) ||
         starts_with(b, "BM", 2) || starts_with(b, "II*\0", 4) || starts_with(b, "MM\0*", 4) ||
         (starts_with(b, "RIFF", 4) && starts_with(b, "WEBP", 4, 8)) ||
         (b.size() >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' && std::isspace(static_cast<unsigned char>(b[2]))) ||
         starts_with(b, "\0\0\0\x0cjP  ", 8) || starts_with(b, "\xff\x4f\xff\x51", 4) ||
         starts_with(b, "\x76\x2f\x31\x01", 4) || starts_with(b, "#?RADIANCE", 10) || starts_with(b, "#?RGBE", 6) ||
         starts_with(b, "\x59\xa6\x6a\x95", 4);
}

// The fields of POST /v1/segment (anything else is refused: a typo must not pass silently).
const std::set<std::string>& segment_fields() {
  static const std::set<std::string> fields = {
      "image",          "image_sha256", "classes",     "dataset",    "mode",       "mask_threshold",
      "ensemble_weight", "maskformer_only", "proposals", "granularity", "format",   "confidence",
      "request_id"};
  return fields;
}

class Fields {
 public:
  explicit Fields(const httplib::Request& req) : req_(req) {
    for (const auto& [name, part] : req.files) {
      if (!segment_fields().count(name))
        throw HttpError{400, "invalid_field", "unknown field '" + printable(name) + "' (fields: image, classes, "
                                              "dataset, mode, mask_threshold, ensemble_weight, maskformer_only, "
                                              "proposals, granularity, format, confidence, image_sha256, request_id)"};
      if (req.files.count(name) > 1) throw HttpError{400, "invalid_field", "field '" + name + "' given more than once"};
    }
  }
  bool has(const std::string& name) const { return req_.files.count(name) > 0; }
  const httplib::MultipartFormData* part(const std::string& name) const {
    auto it = req_.files.find(name);
    return it == req_.files.end() ? nullptr : &it->second;
  }
  // A text field's value (UTF-8), trimmed; empty when absent.
  std::string text(const std::string& name) const {
    const auto* p = part(name);
    if (!p) return {};
    if (!is_valid_utf8(p->content)) throw HttpError{400, "invalid_field", "field '" + name + "' is not valid UTF-8"};
    return trim(p->content);
  }
  double number(const std::string& name, double lo, double hi) const {
    const std::string v = text(name);
    char* end = nullptr;
    errno = 0;
    const double d = v.empty() ? NAN : std::strtod(v.c_str(), &end);
    if (v.empty() || errno != 0 || end != v.c_str() + v.size() || !std::isfinite(d))
      throw HttpError{400, "invalid_field", "field '" + name + "': '" + printable(v) + "' is not a number"};
    if (d < lo || d > hi) {
      char range[64];
      std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
      throw HttpError{400, "invalid_field", "field '" + name + "': " + printable(v) + " is outside " + range};
    }
    return d;
  }
  bool boolean(const std::string& name) const {
    std::string v = text(name);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
    if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) return false;
    throw HttpError{400, "invalid_field", "field '" + name + "': '" + printable(v) + "' is not true or false"};
  }
  std::string choice(const std::string& name, std::initializer_list<const char*> allowed, const char* fallback) const {
    if (!has(name)) return fallback;
    const std::string v = text(name);
    std::string list;
    for (const char* a : allowed) {
      if (v == a) return v;
      list += list.empty() ? a : std::string(", ") + a;
    }
    throw HttpError{400, "invalid_field", "field '" + name + "': '" + printable(v) + "' is not one of " + list};
  }

 private:
  const httplib::Request& req_;
};

constexpr std::size_t kMaxClasses = 4096;
// The page's per-pixel scores need the whole score map (classes × pixels floats) for a moment:
// above this it is left out (the answer says so) rather than allocated.
constexpr double kMaxScoreMapBytes = 1024.0 * 1024.0 * 1024.0;

// A request id chosen by the client (the page) to follow its progress: [A-Za-z0-9_-]{1,64}.
bool valid_request_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; });
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

std::string route_of(const std::string& path) {
  static const char* routes[] = {"/health", "/v1/model", "/v1/segment", "/metrics"};
  for (const char* r : routes)
    if (path == r) return r;
  if (path == "/" || path == "/index.html") return "/";
  if (path.rfind("/v1/datasets", 0) == 0) return "/v1/datasets";
  if (path.rfind("/v1/jobs/", 0) == 0) return "/v1/jobs";
  return "other";
}

const char* type_of_status(int status) {
  switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 415: return "unsupported_media_type";
    case 416: return "range_not_satisfiable";
    case 422: return "unprocessable";
    case 431: return "headers_too_large";
    case 503: return "unavailable";
    default: return status >= 500 ? "internal" : "bad_request";
  }
}

// For the page: one RGB PNG per result that a browser decodes exactly (a 16-bit PNG it would
// reduce to 8 bits): R·256 + G = the pixel's label (65535 = unlabeled), B = round(255 · its score).
std::vector<std::uint8_t> pixels_png(const Result& r) {
  Image m;
  m.width = r.width;
  m.height = r.height;
  const std::size_t n = static_cast<std::size_t>(r.width) * static_cast<std::size_t>(r.height);
  m.rgb.assign(n * 3, 0);
  const std::size_t channels = r.score_classes.size();
  const bool scores = r.scores.size() == channels * n;
  for (std::size_t p = 0; p < n; ++p) {
    const std::uint16_t l = r.labels[p];
    m.rgb[3 * p] = static_cast<std::uint8_t>(l >> 8);
    m.rgb[3 * p + 1] = static_cast<std::uint8_t>(l & 255);
    if (scores && l < channels)
      m.rgb[3 * p + 2] = static_cast<std::uint8_t>(std::lround(std::clamp(r.scores[l * n + p], 0.0f, 1.0f) * 255.0f));
  }
  return encode_image(m, ".png", "pixel map");
}

}  // namespace

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message) {
  res.status = status;
  const json j = {{"error", {{"code", status}, {"type", type}, {"message", message}}}};
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

Service::Service(const ServeConfig& config, Metrics& metrics, Worker& worker)
    : config_(config), metrics_(metrics), worker_(worker) {}

void Service::set_models(const Model* model, const SamSegmenter* sam) {
  model_ = model;
  sam_ = sam;
  worker_.set_models(model, sam);
  ready_ = true;
}

bool Service::authorized(const httplib::Request& req) const {
  if (config_.api_key.empty()) return true;
  std::string given;
  const std::string auth = req.get_header_value("Authorization");
  if (auth.rfind("Bearer ", 0) == 0) given = trim(auth.substr(7));
  if (given.empty()) given = req.get_header_value("X-Api-Key");
  return constant_time_equal(given, config_.api_key);
}

void Service::install(httplib::Server& server, ConnectionPool& pool) {
  pool_ = &pool;
  // The key is checked before a body is read: an unauthenticated client uploads nothing.
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/" || req.path == "/index.html" || req.path == "/health" || req.path == "/favicon.ico";
    if (open || authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "unauthorized",
               config_.api_key.empty() ? "" : "missing or wrong API key (Authorization: Bearer KEY or X-Api-Key: KEY)");
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours, already JSON
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 404) message = "no such page or endpoint";
    if (res.status == 405) message = "method not allowed here";
    if (res.status == 413) message = "request body over the limit (--max-body-mb)";
    if (res.status == 400) message = "malformed request";
    send_error(res, res.status, type_of_status(res.status), message);
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_error(res, 500, "internal", message);
  });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count_request(route_of(req.path), res.status);
  });

  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src "
                   "'unsafe-inline'; connect-src 'self' blob:");
    res.set_content(reinterpret_cast<const char*>(kServePage), kServePageSize, "text/html; charset=utf-8");
  });
  server.Get("/index.html", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/"); });
  server.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  server.Get("/health", [this](const httplib::Request& req, httplib::Response& res) { health(req, res); });
  server.Get("/v1/model", [this](const httplib::Request& req, httplib::Response& res) { model_info(req, res); });
  server.Get("/v1/datasets", [this](const httplib::Request& req, httplib::Response& res) { datasets(req, res); });
  server.Get(R"(/v1/datasets/([A-Za-z0-9_]+))",
             [this](const httplib::Request& req, httplib::Response& res) { datasets(req, res); });
  server.Get(R"(/v1/jobs/([A-Za-z0-9_-]+))",
             [this](const httplib::Request& req, httplib::Response& res) { job_status(req, res); });
  server.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) { metrics(req, res); });
  server.Post("/v1/segment", [this](const httplib::Request& req, httplib::Response& res) { segment(req, res); });
}

void Service::health(const httplib::Request&, httplib::Response& res) const {
  json j;
  if (stopping_) {
    j = {{"status", "stopping"}};
    res.status = 503;
  } else if (!ready_) {
    j = {{"status", "loading"}};
    res.status = 503;
    res.set_header("Retry-After", "1");
  } else {
    j = {{"status", "ok"}, {"queue", worker_.queued()}, {"busy", worker_.busy()}};
    res.status = 200;
  }
  res.set_content(j.dump(), "application/json");
}

void Service::model_info(const httplib::Request&, httplib::Response& res) const {
  if (!ready_) {
    res.set_header("Retry-After", "1");
    return send_error(res, 503, "loading", "the model is loading");
  }
  const ModelInfo& info = model_->info();
  auto defaults = [](const SegmentSettings& s) {
    return json{{"mask_threshold", s.mask_threshold}, {"ensemble_weight", s.ensemble_weight},
                {"clip_ensemble", s.clip_ensemble}};
  };
  json j = {{"name", info.name},
            {"bundle", info.bundle_dir},
            {"format_version", info.format_version},
            {"backbone", info.backbone},
            {"clip_model", info.clip_model},
            {"num_queries", info.num_queries},
            {"embed_dim", info.embed_dim},
            {"min_size_test", info.min_size_test},
            {"max_size_test", info.max_size_test},
            {"templates", {{"set", info.template_set}, {"count", info.num_templates}}},
            {"device", info.device},
            {"precision", info.precision},
            {"fingerprint", info.fingerprint},
            {"defaults", {{"eval", defaults(info.defaults(Mode::kEval))}, {"demo", defaults(info.defaults(Mode::kDemo))}}},
            {"proposals", sam_ ? json::array({"maskformer", "sam"}) : json::array({"maskformer"})},
            {"limits",
             {{"max_body_bytes", config_.max_body_mb << 20},
              {"max_pixels", config_.max_pixels},
              {"queue", config_.queue},
              {"cache_bytes", config_.cache_mb << 20}}},
            {"version", version()}};
  if (sam_) {
    const SamModelInfo& s = sam_->sam().info();
    j["sam"] = {{"name", s.name}, {"bundle", s.bundle_dir}, {"img_size", s.img_size}, {"granularity_default", 0.8}};
  }
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void Service::datasets(const httplib::Request& req, httplib::Response& res) const {
  try {
    if (req.matches.size() > 1) {
      const std::string name = req.matches[1];
      const auto names = preset_names();
      if (std::find(names.begin(), names.end(), name) == names.end())
        return send_error(res, 404, "not_found", "no dataset class list '" + name + "'");
      const json j = {{"name", name}, {"classes", preset_classes(name)}};
      return res.set_content(j.dump(), "application/json");
    }
    json list = json::array();
    for (const auto& n : preset_names()) list.push_back({{"name", n}, {"classes", preset_classes(n).size()}});
    res.set_content(json{{"datasets", list}}.dump(), "application/json");
  } catch (const Error& e) {
    send_error(res, 500, "io", e.what());
  }
}

void Service::job_status(const httplib::Request& req, httplib::Response& res) const {
  const std::string id = req.matches[1];
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(jobs_mutex_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) job = it->second;
  }
  if (!job) return send_error(res, 404, "not_found", "no request '" + id + "' is queued or running");
  json j;
  {
    std::lock_guard<std::mutex> lock(job->mutex);
    const char* state = job->state == Job::State::kQueued    ? "queued"
                        : job->state == Job::State::kRunning ? "running"
                                                             : "done";
    j = {{"state", state}, {"stage", job->stage}, {"fraction", job->fraction}};
  }
  j["position"] = worker_.position(job.get());
  j["stages"] = json::array();
  for (const StageInfo& st : kStageTable) j["stages"].push_back(st.name);
  res.set_content(j.dump(), "application/json");
}

void Service::metrics(const httplib::Request&, httplib::Response& res) const {
  std::string out;
  out += "# HELP ovseg_requests_total HTTP requests by route and status.\n# TYPE ovseg_requests_total counter\n";
  {
    std::lock_guard<std::mutex> lock(metrics_.mutex);
    for (const auto& [key, n] : metrics_.requests)
      out += "ovseg_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
  }
  auto gauge = [&out](const char* name, const char* help, double v) {
    char line[256];
    std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
    out += line;
  };
  auto counter = [&out](const char* name, const char* help, std::uint64_t v) {
    char line[256];
    std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                  static_cast<unsigned long long>(v));
    out += line;
  };
  gauge("ovseg_model_loaded", "1 once the model is loaded.", ready_ ? 1 : 0);
  gauge("ovseg_queue_depth", "Segment requests waiting for the worker.", static_cast<double>(worker_.queued()));
  gauge("ovseg_in_flight", "Segment requests being handled (queued or running).", in_flight_.load());
  gauge("ovseg_worker_busy", "1 while the worker runs a request.", worker_.busy() ? 1 : 0);
  gauge("ovseg_cache_bytes", "Bytes of analyses and images in the cache.", static_cast<double>(worker_.cache().bytes()));
  gauge("ovseg_cache_budget_bytes", "The cache's budget (--cache-mb).", static_cast<double>(worker_.cache().budget()));
  gauge("ovseg_cache_entries", "Analyses and images in the cache.", static_cast<double>(worker_.cache().entries()));
  counter("ovseg_cache_hits_total", "Segment requests whose analysis came from the cache.", metrics_.cache_hits);
  counter("ovseg_cache_misses_total", "Segment requests that analyzed their image.", metrics_.cache_misses);
  counter("ovseg_cache_evictions_total", "Cache entries dropped for space.", worker_.cache().evictions());
  counter("ovseg_requests_cancelled_total", "Requests whose client went away.", metrics_.cancelled);
  counter("ovseg_requests_rejected_total", "Requests refused because the queue was full.", metrics_.rejected_full);
  if (pool_) {
    gauge("ovseg_connections", "Open HTTP connections.", static_cast<double>(pool_->connections()));
    counter("ovseg_connections_timed_out_total", "Connections closed for not sending a request in time.",
            pool_->timed_out());
  }
  out += "# HELP ovseg_request_seconds Segment requests, received to answered.\n"
         "# TYPE ovseg_request_seconds histogram\n";
  metrics_.request_seconds.write(out, "ovseg_request_seconds", "");
  out += "# HELP ovseg_queue_seconds Time a segment request waited for the worker.\n"
         "# TYPE ovseg_queue_seconds histogram\n";
  metrics_.queue_seconds.write(out, "ovseg_queue_seconds", "");
  out += "# HELP ovseg_stage_seconds Time of each pipeline stage.\n# TYPE ovseg_stage_seconds histogram\n";
  {
    std::lock_guard<std::mutex> lock(metrics_.mutex);
    for (const auto& [name, h] : metrics_.stage_seconds)
      h.write(out, "ovseg_stage_seconds", "stage=\"" + name + "\"");
  }
  res.set_content(out, "text/plain; version=0.0.4");
}

void Service::segment(const httplib::Request& req, httplib::Response& res) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = pool_ ? pool_->socket_of(req) : -1;
  ConnectionPool::HandlerScope scope(*pool_, fd);
  struct InFlight {
    std::atomic<int>& n;
    explicit InFlight(std::atomic<int>& c) : n(c) { ++n; }
    ~InFlight() { --n; }
  } in_flight(in_flight_);
  std::string request_id;
  try {
    if (stopping_) throw HttpError{503, "shutting_down", "the server is shutting down"};
    if (!ready_) {
      res.set_header("Retry-After", "1");
      throw HttpError{503, "loading", "the model is loading"};
    }
    if (!req.is_multipart_form_data())
      throw HttpError{415, "unsupported_media_type", "POST /v1/segment takes multipart/form-data (fields: image, classes, ...)"};
    const Fields f(req);

    // Classes: `classes` (comma-separated, as the CLI's -c) or `dataset` (a dataset's list).
    auto job = std::make_shared<Job>();
    if (f.has("classes") == f.has("dataset"))
      throw HttpError{400, "invalid_classes", "give exactly one of 'classes' (comma-separated names) and 'dataset'"};
    try {
      if (f.has("classes")) {
        job->classes = parse_class_string(f.text("classes"));
        check_class_list(job->classes, "classes");
      } else {
        const std::string name = f.text("dataset");
        const auto names = preset_names();
        if (std::find(names.begin(), names.end(), name) == names.end())
          throw HttpError{400, "invalid_classes", "field 'dataset': no class list '" + printable(name) + "'"};
        job->classes = preset_classes(name);
      }
      // Every name costs the worker text features: a bound, so that one request cannot hold it for
      // long (ADE-847, the largest benchmark list, fits).
      if (job->classes.size() > kMaxClasses)
        throw HttpError{400, "invalid_classes", "at most " + std::to_string(kMaxClasses) + " class names per request, not " +
                                                    std::to_string(job->classes.size())};
    } catch (const Error& e) {
      // The CLI's wording, said for this field.
      std::string m = e.what();
      if (m.rfind("--classes: ", 0) == 0) m = m.substr(11);
      const std::string flag_hint = "a name with a comma needs --classes-file";
      if (auto at = m.find(flag_hint); at != std::string::npos)
        m.replace(at, flag_hint.size(), "a name with a comma cannot be given in 'classes'");
      throw HttpError{400, "invalid_classes", "field 'classes': " + m};
    }

    // Options.
    const std::string mode = f.choice("mode", {"eval", "demo"}, "eval");
    job->options.mode = parse_mode(mode);
    if (f.has("mask_threshold")) job->options.mask_threshold = static_cast<float>(f.number("mask_threshold", 0, 1));
    if (f.has("ensemble_weight")) job->options.ensemble_weight = static_cast<float>(f.number("ensemble_weight", 0, 1));
    if (f.boolean("maskformer_only")) {
      if (job->options.mode != Mode::kEval)
        throw HttpError{400, "invalid_field", "maskformer_only needs mode=eval"};
      job->options.clip_ensemble = false;
    }
    const std::string proposals = f.choice("proposals", {"maskformer", "sam"}, "maskformer");
    job->sam = proposals == "sam";
    job->sam_options.generator = config_.sam_generator;
    if (job->sam && !sam_)
      throw HttpError{400, "invalid_field", "proposals=sam: this server was started without --sam-model"};
    if (f.has("granularity")) {
      if (!job->sam) throw HttpError{400, "invalid_field", "granularity applies to proposals=sam only"};
      job->sam_options.granularity = f.number("granularity", 0, 1);
    }
    if (job->sam && (f.has("mask_threshold") || f.has("ensemble_weight") || f.has("maskformer_only")))
      throw HttpError{400, "invalid_field",
                      "proposals=sam takes granularity; mask_threshold, ensemble_weight and maskformer_only are "
                      "MaskFormer's"};
    const std::string format = f.choice("format", {"json", "png", "overlay"}, "json");
    bool confidence = f.boolean("confidence");
    if (confidence && format != "json") throw HttpError{400, "invalid_field", "confidence needs format=json"};
    job->options.keep_scores = confidence;
    job->sam_options.keep_scores = confidence;
    if (f.has("request_id")) {
      request_id = f.text("request_id");
      if (!valid_request_id(request_id))
        throw HttpError{400, "invalid_field", "field 'request_id': 1 to 64 of A-Z a-z 0-9 _ -"};
    }
    // The image: uploaded, or one the server holds by its hash (the page's re-classification).
    std::string filename = "upload";
    double decode_ms = 0;
    if (f.has("image") == f.has("image_sha256"))
      throw HttpError{400, "invalid_field", "give exactly one of 'image' (a file) and 'image_sha256'"};
    if (f.has("image")) {
      const auto* part = f.part("image");
      if (!part->filename.empty()) filename = part->filename;
      if (part->content.empty()) throw HttpError{400, "invalid_field", "field 'image' is empty"};
      if (!looks_like_image(part->content))
        throw HttpError{415, "not_an_image",
                        printable(filename) + ": not an image (its first bytes match no image format ovseg reads)"};
      job->sha256 = sha256_bytes(part->content.data(), part->content.size());
      job->image = worker_.cache().image(job->sha256);
      if (!job->image) {
        const auto t0 = std::chrono::steady_clock::now();
        try {
          job->image = std::make_shared<const Image>(
              decode_image(reinterpret_cast<const std::uint8_t*>(part->content.data()), part->content.size(),
                           printable(filename), config_.max_pixels));
        } catch (const Error& e) {
          throw HttpError{422, "bad_image", e.what()};
        }
        decode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        worker_.cache().put_image(job->sha256, job->image);
      }
    } else {
      job->sha256 = f.text("image_sha256");
      job->image = worker_.cache().image(job->sha256);
      if (!job->image)
        throw HttpError{404, "image_not_cached", "no image with this sha256 is held by the server (evicted or never "
                                                 "sent): send the file as 'image'"};
      filename = "sha256:" + job->sha256;
    }

    bool confidence_omitted = false;
    if (confidence && static_cast<double>(job->classes.size() + 1) * job->image->width * job->image->height * 4.0 >
                          kMaxScoreMapBytes) {
      confidence = false;
      confidence_omitted = true;
      job->options.keep_scores = job->sam_options.keep_scores = false;
    }

    // Queue it; wait, watching the client: one that goes away cancels its job.
    if (!request_id.empty()) {
      std::lock_guard<std::mutex> lock(jobs_mutex_);
      jobs_[request_id] = job;
    }
    struct Unregister {
      Service& s;
      const std::string& id;
      ~Unregister() {
        if (id.empty()) return;
        std::lock_guard<std::mutex> lock(s.jobs_mutex_);
        s.jobs_.erase(id);
      }
    } unregister{*this, request_id};
    if (!worker_.submit(job)) {
      ++metrics_.rejected_full;
      res.set_header("Retry-After", "2");
      throw HttpError{503, stopping_ ? "shutting_down" : "queue_full",
                      stopping_ ? "the server is shutting down"
                                : "the queue is full (" + std::to_string(config_.queue) + " waiting); retry later"};
    }
    {
      std::unique_lock<std::mutex> lock(job->mutex);
      while (job->state == Job::State::kQueued || job->state == Job::State::kRunning) {
        job->changed.wait_for(lock, std::chrono::milliseconds(100));
        if (!job->cancel && ConnectionPool::peer_closed(fd)) {
          job->cancel = true;  // running: stops at the next stage
          cli_log().info("serve: client {}:{} went away; request cancelled", req.remote_addr, req.remote_port);
          lock.unlock();
          worker_.withdraw(job);  // queued: leaves the queue now
          lock.lock();
        }
      }
    }
    if (job->state == Job::State::kFailed) {
      if (job->error.status == 503) res.set_header("Retry-After", "2");
      throw HttpError{job->error.status, job->error.type, job->error.message};
    }

    // The answer, in the format asked for.
    Result& r = job->result;
    const LabelMap labels = label_map(r);
    if (format == "png") {
      const auto png = encode_label_map(labels, ".png");
      res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
    } else if (format == "overlay") {
      Palette palette;
      const auto png = encode_image(render_overlay(*job->image, r, OverlayFonts::defaults(), &palette), ".png");
      res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
    } else {
      OutputRequest request;
      if (job->sam)
        request.sam = SamReport{sam_->sam().info().bundle_dir, to_string(job->sam_options.classifier),
                                job->sam_options.granularity};
      InputImage in{filename, filename};
      OutputSet outputs;
      json j = make_segment_report(model_->info(), request, in, outputs, r, labels.bit_depth, decode_ms,
                                   job->sam ? &job->regions : nullptr);
      j["label_map"].erase("path");
      j["label_png"] = base64(encode_label_map(labels, ".png"));
      if (confidence || confidence_omitted) j["pixels_png"] = base64(pixels_png(r));  // scores 0 when omitted
      if (confidence_omitted) j["confidence_omitted"] = "the score map of this many classes and pixels is too large";
      j["cached"] = job->cached;
      j["image_sha256"] = job->sha256;
      j["proposals"] = proposals;
      j["timings_ms"]["queue"] = std::round(job->queue_ms * 1000.0) / 1000.0;
      Palette palette;
      json legend = json::array();
      const double total = static_cast<double>(r.width) * r.height;
      for (int c : legend_classes(r)) {
        const auto rgb = palette.colour(c);
        legend.push_back({{"index", c},
                          {"class", r.classes[static_cast<std::size_t>(c)]},
                          {"color", {rgb[0], rgb[1], rgb[2]}},
                          {"pixels", r.class_pixels[static_cast<std::size_t>(c)]},
                          {"share", r.class_pixels[static_cast<std::size_t>(c)] / total}});
      }
      j["legend"] = legend;
      res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    }
    res.status = 200;
    metrics_.request_seconds.observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  } catch (const HttpError& e) {
    send_error(res, e.status, e.type, e.message);
  } catch (const Error& e) {
    const ErrorInfo info = error_info(e);
    send_error(res, info.status, info.type, e.what());
  }
}

}  // namespace ovseg::cli::serve
