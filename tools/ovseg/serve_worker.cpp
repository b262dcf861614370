#include "serve_worker.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli_log.hpp"

namespace ovseg::cli::serve {

// ---- AnalysisCache ----------------------------------------------------------------------------------

std::shared_ptr<const AnalysisCache::Entry> AnalysisCache::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  order_.splice(order_.begin(), order_, it->second.second);  // now the most recent
  return it->second.first;
}

void AnalysisCache::put(const std::string& key, Entry e) {
  if (e.bytes > budget_) return;  // would evict everything and still not fit
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = map_.find(key); it != map_.end()) {
    bytes_ -= it->second.first->bytes;
    order_.erase(it->second.second);
    map_.erase(it);
  }
  while (!order_.empty() && bytes_ + e.bytes > budget_) {
    auto last = map_.find(order_.back());
    bytes_ -= last->second.first->bytes;
    map_.erase(last);
    order_.pop_back();
    ++evictions_;
  }
  bytes_ += e.bytes;
  order_.push_front(key);
  map_.emplace(key, std::make_pair(std::make_shared<const Entry>(std::move(e)), order_.begin()));
}

std::shared_ptr<const Analysis> AnalysisCache::analysis(const std::string& key) {
  auto e = get("a:" + key);
  return e ? e->analysis : nullptr;
}

void AnalysisCache::put_analysis(const std::string& key, std::shared_ptr<const Analysis> a) {
  Entry e;
  e.bytes = a->bytes();
  e.analysis = std::move(a);
  put("a:" + key, std::move(e));
}

std::shared_ptr<const SamAnalysis> AnalysisCache::sam_analysis(const std::string& key) {
  auto e = get("s:" + key);
  return e ? e->sam_analysis : nullptr;
}

void AnalysisCache::put_sam_analysis(const std::string& key, std::shared_ptr<const SamAnalysis> a) {
  Entry e;
  e.bytes = a->bytes();
  e.sam_analysis = std::move(a);
  put("s:" + key, std::move(e));
}

std::shared_ptr<const Image> AnalysisCache::image(const std::string& sha256) {
  auto e = get("i:" + sha256);
  return e ? e->image : nullptr;
}

void AnalysisCache::put_image(const std::string& sha256, std::shared_ptr<const Image> image) {
  Entry e;
  e.bytes = image->rgb.size() + sizeof(Image);
  e.image = std::move(image);
  put("i:" + sha256, std::move(e));
}

std::uint64_t AnalysisCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

std::size_t AnalysisCache::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return map_.size();
}

std::uint64_t AnalysisCache::evictions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return evictions_;
}

// ---- Metrics ------------------------------------------------------------------------------------

void Histogram::observe(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t i = 0;
  while (i < kN && seconds > kBounds[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string sep = labels.empty() ? "" : ",";
  std::uint64_t cumulative = 0;
  char line[256];
  for (std::size_t i = 0; i <= kN; ++i) {
    cumulative += counts_[i];
    if (i < kN)
      std::snprintf(line, sizeof line, "%s_bucket{%s%sle=\"%g\"} %llu\n", name.c_str(), labels.c_str(), sep.c_str(),
                    kBounds[i], static_cast<unsigned long long>(cumulative));
    else
      std::snprintf(line, sizeof line, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name.c_str(), labels.c_str(),
                    sep.c_str(), static_cast<unsigned long long>(cumulative));
    out += line;
  }
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  std::snprintf(line, sizeof line, "%s_sum%s %.6f\n%s_count%s %llu\n", name.c_str(), braces.c_str(), sum_,
                name.c_str(), braces.c_str(), static_cast<unsigned long long>(count_));
  out += line;
}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex);
  ++requests[{route, status}];
}

Histogram& Metrics::stage(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex);
  return stage_seconds[name];  // std::map: references stay valid
}

// ---- Worker -------------------------------------------------------------------------------------

ErrorInfo error_info(const Error& e) {
  switch (e.code()) {
    case ErrorCode::kInvalidArgument: return {400, "invalid_argument", e.what()};
    case ErrorCode::kBadImage: return {422, "bad_image", e.what()};
    case ErrorCode::kCancelled: return {499, "cancelled", e.what()};
    case ErrorCode::kBadModel: return {500, "bad_model", e.what()};
    case ErrorCode::kIo: return {500, "io", e.what()};
    case ErrorCode::kBadData: return {500, "bad_data", e.what()};
    case ErrorCode::kRuntime: return {500, "runtime", e.what()};
  }
  return {500, "runtime", e.what()};
}

Worker::Worker(std::size_t queue_capacity, std::uint64_t cache_bytes, Metrics& metrics)
    : capacity_(queue_capacity), metrics_(metrics), cache_(cache_bytes) {
  thread_ = std::thread([this] { loop(); });
}

Worker::~Worker() { stop(); }

void Worker::set_models(const Model* model, const SamSegmenter* sam) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    model_ = model;
    sam_ = sam;
  }
  ready_ = true;
}

bool Worker::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    job->submitted = std::chrono::steady_clock::now();
    queue_.push_back(job);
  }
  cond_.notify_all();
  return true;
}

std::size_t Worker::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

std::size_t Worker::position(const Job* job) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t i = 0; i < queue_.size(); ++i)
    if (queue_[i].get() == job) return i + 1;
  return 0;
}

namespace {
void fail(Job& job, ErrorInfo error) {
  std::lock_guard<std::mutex> lock(job.mutex);
  job.state = Job::State::kFailed;
  job.error = std::move(error);
  job.changed.notify_all();
}
}  // namespace

void Worker::withdraw(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it == queue_.end()) return;
    queue_.erase(it);
  }
  ++metrics_.cancelled;
  fail(*job, {499, "cancelled", "the client closed the connection"});
}

void Worker::stop() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  cond_.notify_all();
  for (auto& job : dropped) fail(*job, {503, "shutting_down", "the server is shutting down"});
  if (thread_.joinable()) thread_.join();
}

void Worker::loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cond_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (job->cancel) {  // its client went away while it waited
      ++metrics_.cancelled;
      fail(*job, {499, "cancelled", "the client closed the connection"});
      continue;
    }
    busy_ = true;
    run(*job);
    busy_ = false;
  }
}

void Worker::run(Job& job) {
  const auto start = std::chrono::steady_clock::now();
  job.queue_ms = std::chrono::duration<double, std::milli>(start - job.submitted).count();
  metrics_.queue_seconds.observe(job.queue_ms / 1000.0);
  {
    std::lock_guard<std::mutex> lock(job.mutex);
    job.state = Job::State::kRunning;
    job.stage = job.sam ? "sam" : "preprocess";
    job.changed.notify_all();
  }
  auto progress = [&job](const char* stage, float fraction) {
    {
      std::lock_guard<std::mutex> lock(job.mutex);
      job.stage = stage;
      job.fraction = fraction;
    }
    job.changed.notify_all();
    return !job.cancel.load();
  };
  Job::State state = Job::State::kDone;
  ErrorInfo error;
  try {
    if (job.sam) {
      if (!sam_) throw Error(ErrorCode::kInvalidArgument, "proposals=sam: this server has no SAM model (--sam-model)");
      // Keyed by the image's content and what the masks and embeddings depend on (granularity
      // and the classes do not: a new value of either is classified from the cache).
      const SamSegmentOptions& so = job.sam_options;
      const std::string key = job.sha256 + "/" + to_string(so.classifier) + "/" + std::to_string(so.long_side);
      std::shared_ptr<const SamAnalysis> analysis = cache_.sam_analysis(key);
      if (analysis) {
        ++metrics_.cache_hits;
        job.cached = true;
      } else {
        ++metrics_.cache_misses;
        {
          std::lock_guard<std::mutex> lock(job.mutex);
          job.stage = "sam";
        }
        job.changed.notify_all();
        analysis = std::make_shared<const SamAnalysis>(sam_->analyze(job.image->view(), so));
        cache_.put_sam_analysis(key, analysis);
        metrics_.stage("sam").observe(analysis->sam_timings().total_ms / 1000.0);
        metrics_.stage("sam_regions").observe(analysis->regions_ms() / 1000.0);
      }
      if (job.cancel) throw Error(ErrorCode::kCancelled, "cancelled");
      progress("post", 0.9f);
      SamSegmentation ss = sam_->classify(*analysis, job.classes, so);
      if (!ss.message.empty()) cli_log().info("serve: {}", ss.message);
      metrics_.stage("post").observe(ss.classify_ms / 1000.0);
      if (!job.cached) {  // the report shows every stage this request ran, as segment() would
        ss.result.timings.proposals_ms = analysis->sam_timings().total_ms;
        ss.result.timings.post_ms += analysis->regions_ms();
        ss.result.timings.total_ms += analysis->sam_timings().total_ms + analysis->regions_ms();
      }
      job.result = std::move(ss.result);
      job.regions = std::move(ss.regions);
    } else {
      const std::string key = model_->analysis_key(job.sha256, job.options);
      std::shared_ptr<const Analysis> analysis = cache_.analysis(key);
      if (analysis) {
        ++metrics_.cache_hits;
        job.cached = true;
      } else {
        ++metrics_.cache_misses;
        SegmentOptions ao = job.options;
        ao.progress = progress;
        analysis = std::make_shared<const Analysis>(model_->analyze(job.image->view(), ao));
        cache_.put_analysis(key, analysis);
        for (const StageInfo& st : kStageTable)
          if (analysis->timings().*st.ms > 0) metrics_.stage(st.name).observe(analysis->timings().*st.ms / 1000.0);
      }
      SegmentOptions co = job.options;
      co.progress = progress;
      job.result = model_->classify(*analysis, job.classes, co);
      for (const StageInfo& st : kStageTable)
        if (job.result.timings.*st.ms > 0) metrics_.stage(st.name).observe(job.result.timings.*st.ms / 1000.0);
      if (!job.cached) {  // the report shows every stage this request ran, as segment() would
        Timings t = analysis->timings();
        t.text_ms = job.result.timings.text_ms;
        t.post_ms = job.result.timings.post_ms;
        t.total_ms += job.result.timings.total_ms;
        job.result.timings = t;
      }
    }
  } catch (const Error& e) {
    state = Job::State::kFailed;
    error = error_info(e);
    if (e.code() == ErrorCode::kCancelled) {
      ++metrics_.cancelled;
      error.message = "the client closed the connection";
    }
  } catch (const std::exception& e) {
    state = Job::State::kFailed;
    error = {500, "runtime", e.what()};
  }
  std::lock_guard<std::mutex> lock(job.mutex);
  job.state = state;
  job.error = error;
  job.stage = "done";
  job.fraction = 1;
  job.changed.notify_all();
}

}  // namespace ovseg::cli::serve
