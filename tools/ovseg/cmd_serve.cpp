// `ovseg serve`: the model kept loaded in one process, a page for people (GET /) and an HTTP API
// for programs (README, "Serve"). The socket listens before the model loads, so /health answers
// "loading" at once; one worker runs the requests in order (serve_worker.hpp); the HTTP threads
// only read, check and answer (serve_api.cpp, serve_http.hpp).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "cli_log.hpp"
#include "commands.hpp"
#include "model_flags.hpp"
#include "ovseg/sam.hpp"
#include "sam_flags.hpp"
#include "serve_api.hpp"
#include "stop_signal.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

int run_serve(serve::ServeConfig& c, const CLI::App& root) {
  const bool quiet = root.count("--quiet") > 0;
  const auto& log = cli_log();
  {
    std::error_code ec;
    if (!fs::is_directory(c.model_dir, ec))
      throw Error(ErrorCode::kBadModel, c.model_dir + ": bundle directory not found");
    if (!c.sam_model_dir.empty() && !fs::is_directory(c.sam_model_dir, ec))
      throw Error(ErrorCode::kBadModel, c.sam_model_dir + ": SAM bundle directory not found");
  }
  if (c.queue < 1) throw Error(ErrorCode::kInvalidArgument, "serve: --queue must be at least 1");
  if (c.max_body_mb < 1 || c.max_body_mb > 4096)
    throw Error(ErrorCode::kInvalidArgument, "serve: --max-body-mb must be in 1..4096");
  if (c.cache_mb > (std::uint64_t{1} << 24)) throw Error(ErrorCode::kInvalidArgument, "serve: --cache-mb is too large");
  const ModelOptions mo = model_options(c.model_flags);
  validate(c.sam_generator);
  c.max_pixels = c.model_flags.max_pixels;

  const StopSignals stop_signals;
  serve::Metrics metrics;
  serve::Worker worker(c.queue, c.cache_mb << 20, metrics);
  serve::Service service(c, metrics, worker);

  httplib::Server server;
  server.set_payload_max_length(static_cast<std::size_t>(c.max_body_mb << 20));
  server.set_read_timeout(5, 0);
  server.set_write_timeout(10, 0);
  server.set_keep_alive_timeout(5);
  server.set_keep_alive_max_count(100);
  server.set_tcp_nodelay(true);  // headers and body go out in separate writes: no Nagle delay between them
  const int port = c.port == 0 ? server.bind_to_any_port(c.host) : (server.bind_to_port(c.host, c.port) ? c.port : -1);
  if (port <= 0)
    throw Error(ErrorCode::kInvalidArgument, "serve: cannot listen on " + c.host + ":" + std::to_string(c.port) +
                                                 " (address in use, or not an address of this machine)");
  const auto timeout = std::chrono::milliseconds(static_cast<long long>(c.request_timeout_s * 1000.0));
  serve::ConnectionPool pool(port, static_cast<std::size_t>(c.http_threads), timeout);
  server.new_task_queue = [&pool] { return new serve::ForwardingQueue(&pool); };
  service.install(server, pool);
  std::atomic<bool> listening{true};
  std::thread listener([&server, &listening] {
    server.listen_after_bind();
    listening = false;
  });

  const std::string host = c.host.find(':') != std::string::npos ? "[" + c.host + "]" : c.host;
  std::printf("ovseg serve: listening on http://%s:%d/\n", host.c_str(), port);
  std::fflush(stdout);
  if (c.host != "127.0.0.1" && c.host != "localhost" && c.host != "::1")
    log.warn("serve: listening on {}, not only on this machine{}", c.host,
             c.api_key.empty() ? " and without --api-key: anyone who reaches it can use it" : "");

  // The model loads while /health answers "loading".
  std::optional<Model> model;
  std::optional<SamSegmenter> sam;
  int exit_code = kExitOk;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    model.emplace(Model::load(c.model_dir, mo));
    if (!c.sam_model_dir.empty()) sam.emplace(SamSegmenter::load(c.model_dir, c.sam_model_dir, mo));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log.info("serve: model {} loaded in {:.1f} s ({}, {}){}", model->info().name, s, model->info().device,
             model->info().precision, sam ? ", SAM " + sam->sam().info().name : std::string());
    service.set_models(&*model, sam ? &*sam : nullptr);
    if (!quiet) std::fprintf(stderr, "ovseg serve: ready (Ctrl-C stops it)\n");
  } catch (const Error& e) {
    log.error("serve: cannot load the model: {}", e.what());
    exit_code = kExitUsage;
  }

  // Until SIGINT/SIGTERM (or a failed load): then stop accepting, fail what waits in the queue,
  // finish the request in flight, exit.
  while (exit_code == kExitOk && !StopSignals::stop_requested() && server.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (StopSignals::stop_requested()) log.info("serve: stopping (signal {}); finishing the request in flight", StopSignals::signal_number());
  service.set_stopping();
  worker.stop();       // queued jobs answer 503; the running one completes
  log.debug("serve: worker stopped");
  server.stop();       // no new connections
  while (listening) {  // the pool's threads answer their requests; idle connections are closed
    pool.close_idle(std::chrono::milliseconds(1000));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  listener.join();
  log.debug("serve: connections closed");
  return exit_code;
}

}  // namespace

Command add_serve_command(CLI::App& parent) {
  auto config = std::make_shared<serve::ServeConfig>();
  serve::ServeConfig& c = *config;
  c.model_flags.max_pixels = c.max_pixels;
  Command cmd;
  CLI::App* app = parent.add_subcommand("serve", "Serve the model over HTTP: a page for people, an API for programs");
  cmd.app = app;
  app->add_option("-m,--model", c.model_dir, "Model bundle directory (written by ovseg-export)")->required();
  app->add_option("--sam-model", c.sam_model_dir, "SAM bundle directory: also offer proposals=sam");
  app->add_option("--host", c.host, "Address to listen on (loopback only by default)")->capture_default_str();
  app->add_option("--port", c.port, "Port (0 = any free one; the URL is printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app->add_option("--api-key", c.api_key,
                  "Ask for this key (Authorization: Bearer KEY or X-Api-Key: KEY) on /v1/* and /metrics "
                  "[default: $OVSEG_API_KEY, else none]")
      ->envname("OVSEG_API_KEY");
  app->add_option("--queue", c.queue, "Segment requests that may wait for the worker; more get 503")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app->add_option("--cache-mb", c.cache_mb, "Memory for cached analyses and images (LRU)")->capture_default_str();
  app->add_option("--max-body-mb", c.max_body_mb, "Largest request body; larger gets 413")->capture_default_str();
  app->add_option("--http-threads", c.http_threads, "Threads serving connections (not the model)")
      ->check(CLI::Range(2, 1024))
      ->capture_default_str();
  app->add_option("--request-timeout", c.request_timeout_s,
                  "Seconds a client has to send one request (headers and body); slower ones are closed")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  add_model_flags(*app, c.model_flags);
  add_sam_generator_flags(*app, c.sam_generator);
  // A service decodes what anyone sends it: a smaller default than the CLI's.
  app->get_option("--max-pixels")->default_val(c.max_pixels);
  app->footer(
      "Endpoints: GET / (the page), GET /health, GET /v1/model, GET /v1/datasets[/NAME], POST /v1/segment\n"
      "(multipart: image, classes, [mode, mask_threshold, ensemble_weight, maskformer_only, proposals,\n"
      "granularity, format=json|png|overlay]), GET /v1/jobs/ID, GET /metrics. README, \"Serve\".\n"
      "\n"
      "Examples:\n"
      "  ovseg serve -m models/demo                      # then open http://127.0.0.1:8080/\n"
      "  curl -F image=@photo.jpg -F classes='sky,tree,red car' http://127.0.0.1:8080/v1/segment\n"
      "\n"
      "Exit codes: 0 stopped by SIGINT/SIGTERM (after the request in flight); 2 a bad option, the address\n"
      "cannot be listened on, or the model could not be loaded.");
  const CLI::App* root = &parent;
  cmd.run = [config, root] { return run_serve(*config, *root); };
  return cmd;
}

}  // namespace ovseg::cli
