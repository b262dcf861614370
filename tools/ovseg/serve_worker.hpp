// The inference side of `ovseg serve`: one worker thread that runs segmentation jobs in order
// from a bounded queue, the in-memory cache of analyses (LRU by bytes), and the counters that
// /metrics shows. HTTP threads decode and check a request, submit a job and wait for it; they
// never run the model.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ovseg/ovseg.hpp"
#include "ovseg/sam.hpp"

namespace ovseg::cli::serve {

// ---- The analysis cache ---------------------------------------------------------------------------

// Analyses and the decoded images they came from, by key, least recently used first out once the
// bytes exceed the budget. An analysis is keyed by Model::analysis_key (the image's content hash,
// the model's fingerprint, the settings it depends on); an image by its content hash. Thread-safe.
class AnalysisCache {
 public:
  explicit AnalysisCache(std::uint64_t budget_bytes) : budget_(budget_bytes) {}

  std::shared_ptr<const Analysis> analysis(const std::string& key);
  void put_analysis(const std::string& key, std::shared_ptr<const Analysis> a);
  std::shared_ptr<const SamAnalysis> sam_analysis(const std::string& key);
  void put_sam_analysis(const std::string& key, std::shared_ptr<const SamAnalysis> a);
  std::shared_ptr<const Image> image(const std::string& sha256);
  void put_image(const std::string& sha256, std::shared_ptr<const Image> image);

  std::uint64_t bytes() const;
  std::size_t entries() const;
  std::uint64_t budget() const { return budget_; }
  std::uint64_t evictions() const;

 private:
  struct Entry {
    std::shared_ptr<const Analysis> analysis;
    std::shared_ptr<const SamAnalysis> sam_analysis;
    std::shared_ptr<const Image> image;
    std::uint64_t bytes = 0;
  };
  using Order = std::list<std::string>;
  std::shared_ptr<const Entry> get(const std::string& key);
  void put(const std::string& key, Entry e);

  const std::uint64_t budget_;
  mutable std::mutex mutex_;
  Order order_;  // most recent first
  std::unordered_map<std::string, std::pair<std::shared_ptr<const Entry>, Order::iterator>> map_;
  std::uint64_t bytes_ = 0;
  std::uint64_t evictions_ = 0;
};

// ---- Metrics ------------------------------------------------------------------------------------

// A Prometheus histogram of seconds with fixed buckets.
class Histogram {
 public:
  void observe(double seconds);
  // Appends `name_bucket{labels,le=...}`, `name_sum`, `name_count` lines.
  void write(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  static constexpr double kBounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  static constexpr std::size_t kN = sizeof(kBounds) / sizeof(kBounds[0]);
  mutable std::mutex mutex_;
  std::uint64_t counts_[kN + 1] = {};
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

struct Metrics {
  std::mutex mutex;
  std::map<std::pair<std::string, int>, std::uint64_t> requests;  // (route, status) → count
  Histogram request_seconds;                                       // /v1/segment, end to end
  Histogram queue_seconds;                                         // waiting for the worker
  std::map<std::string, Histogram> stage_seconds;                  // per stage (kStageTable, "sam")
  std::atomic<std::uint64_t> cache_hits{0};
  std::atomic<std::uint64_t> cache_misses{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> rejected_full{0};

  void count_request(const std::string& route, int status);
  Histogram& stage(const std::string& name);
};

// ---- Jobs and the worker ---------------------------------------------------------------------------

struct ErrorInfo {
  int status = 500;
  std::string type;
  std::string message;
};

// One /v1/segment request as the worker sees it.
struct Job {
  // What to compute (set by the HTTP thread before submit()).
  std::shared_ptr<const Image> image;
  std::string sha256;  // of the uploaded file's bytes
  std::vector<std::string> classes;
  SegmentOptions options;
  bool sam = false;
  SamSegmentOptions sam_options;

  // State, under `mutex`.
  enum class State { kQueued, kRunning, kDone, kFailed };
  std::mutex mutex;
  std::condition_variable changed;
  State state = State::kQueued;
  std::string stage = "queued";  // the stage running now (kStageTable names, "sam", "queued")
  float fraction = 0;
  std::atomic<bool> cancel{false};  // the client went away: drop it or stop at the next stage

  // Results (valid once state is kDone / kFailed).
  Result result;
  std::vector<SamRegion> regions;
  bool cached = false;     // the analysis came from the cache
  ErrorInfo error;
  double queue_ms = 0;
  std::chrono::steady_clock::time_point submitted;
};

class Worker {
 public:
  Worker(std::size_t queue_capacity, std::uint64_t cache_bytes, Metrics& metrics);
  ~Worker();

  // The models, once loaded (before that, submit() refuses with 503 "loading").
  void set_models(const Model* model, const SamSegmenter* sam);
  bool ready() const { return ready_.load(); }

  // Queues a job; false when the queue is full or the worker is stopping.
  bool submit(const std::shared_ptr<Job>& job);
  std::size_t queued() const;
  bool busy() const { return busy_.load(); }
  // The position of a queued job (1 = next), 0 when it is not queued.
  std::size_t position(const Job* job) const;

  // Takes a queued job out of the queue (its client went away): it fails with 499.
  void withdraw(const std::shared_ptr<Job>& job);

  // Stops taking jobs, fails the queued ones (503), lets the running one finish, joins.
  void stop();

  AnalysisCache& cache() { return cache_; }

 private:
  void loop();
  void run(Job& job);

  const std::size_t capacity_;
  Metrics& metrics_;
  AnalysisCache cache_;
  const Model* model_ = nullptr;
  const SamSegmenter* sam_ = nullptr;
  std::atomic<bool> ready_{false};
  std::atomic<bool> busy_{false};
  mutable std::mutex mutex_;
  std::condition_variable cond_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// The HTTP status and type of a library error (kInvalidArgument → 400 invalid_argument, ...).
ErrorInfo error_info(const Error& e);

}  // namespace ovseg::cli::serve
