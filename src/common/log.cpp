#include "common/log.hpp"

#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "ovseg/ovseg.hpp"

namespace ovseg {
namespace {

LogLevel from_spdlog(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace: return LogLevel::kTrace;
    case spdlog::level::debug: return LogLevel::kDebug;
    case spdlog::level::info: return LogLevel::kInfo;
    case spdlog::level::warn: return LogLevel::kWarn;
    case spdlog::level::err:
    case spdlog::level::critical: return LogLevel::kError;
    default: return LogLevel::kOff;
  }
}

spdlog::level::level_enum to_spdlog(LogLevel l) {
  switch (l) {
    case LogLevel::kTrace: return spdlog::level::trace;
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
    case LogLevel::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}

class CallbackSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit CallbackSink(std::function<void(LogLevel, const std::string&)> cb) : cb_(std::move(cb)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    cb_(from_spdlog(msg.level), std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  std::function<void(LogLevel, const std::string&)> cb_;
};

std::shared_ptr<spdlog::logger>& logger_ptr() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>("ovseg", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    l->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return logger;
}

}  // namespace

namespace detail {
spdlog::logger& log() { return *logger_ptr(); }
}  // namespace detail

void set_log_level(LogLevel level) { logger_ptr()->set_level(to_spdlog(level)); }

void log_message(LogLevel level, const std::string& message) { logger_ptr()->log(to_spdlog(level), message); }

void set_log_callback(std::function<void(LogLevel, const std::string&)> callback) {
  auto& l = logger_ptr();
  l->sinks().clear();
  if (callback) {
    l->sinks().push_back(std::make_shared<CallbackSink>(std::move(callback)));
  } else {
    l->sinks().push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  }
}

}  // namespace ovseg
