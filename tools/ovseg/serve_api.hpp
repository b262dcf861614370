// The HTTP API and the page of `ovseg serve` (README, "Serve"): routes, request checks, the one
// JSON error shape, responses. The model runs on the Worker (serve_worker.hpp), never on an HTTP
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <httplib.h>

#include "model_flags.hpp"
#include "ovseg/sam.hpp"
#include "serve_http.hpp"
#include "serve_worker.hpp"

namespace ovseg::cli::serve {

struct ServeConfig {
  std::string model_dir;
  std::string sam_model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;             // empty: no key asked
  std::size_t queue = 4;           // jobs waiting for the worker (the running one not counted)
  std::uint64_t cache_mb = 1024;   // analyses and images kept in memory
  std::uint64_t max_body_mb = 32;  // request body
  std::uint64_t max_pixels = 40000000;
  int http_threads = 16;
  double request_timeout_s = 30;   // to read one request (headers and body)
  ModelFlags model_flags;
  // proposals=sam: the generator's settings, the same for every request (--points-per-side, ...).
  SamGeneratorOptions sam_generator = SamSegmentOptions::demo_generator_options();
};

class Service {
 public:
  Service(const ServeConfig& config, Metrics& metrics, Worker& worker);

  // Installs the routes, the authentication check, the error handler and the request counter.
  void install(httplib::Server& server, ConnectionPool& pool);

  // Once the models are loaded (they outlive the service's use of them).
  void set_models(const Model* model, const SamSegmenter* sam);
  // After SIGINT/SIGTERM: /v1/segment answers 503, /health {"status":"stopping"}.
  void set_stopping() { stopping_ = true; }

 private:
  void segment(const httplib::Request& req, httplib::Response& res);
  void health(const httplib::Request& req, httplib::Response& res) const;
  void model_info(const httplib::Request& req, httplib::Response& res) const;
  void datasets(const httplib::Request& req, httplib::Response& res) const;
  void job_status(const httplib::Request& req, httplib::Response& res) const;
  void metrics(const httplib::Request& req, httplib::Response& res) const;
  bool authorized(const httplib::Request& req) const;

  const ServeConfig config_;
  Metrics& metrics_;
  Worker& worker_;
  ConnectionPool* pool_ = nullptr;
  const Model* model_ = nullptr;
  const SamSegmenter* sam_ = nullptr;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> in_flight_{0};
  // Jobs by the client's request_id, while their request runs (GET /v1/jobs/ID).
  mutable std::mutex jobs_mutex_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
};

// The one error shape: {"error": {"code": STATUS, "type": TYPE, "message": MESSAGE}}.
void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message);

// The embedded page (serve_page.html, compiled in at build time).
extern const unsigned char kServePage[];
extern const std::size_t kServePageSize;

}  // namespace ovseg::cli::serve
