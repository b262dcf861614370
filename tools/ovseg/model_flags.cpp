#include "model_flags.hpp"

#include <chrono>
#include <regex>

#include "common/log.hpp"

namespace ovseg::cli {

void add_model_flags(CLI::App& app, ModelFlags& flags) {
  app.add_option("-d,--device", flags.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--precision", flags.precision,
                 "fp32, bf16 (the CLIP visual tower in bfloat16, the rest fp32) or fp16 (CUDA)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  app.add_option("-j,--threads", flags.threads, "CPU threads of the model (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--no-text-cache", flags.no_text_cache, "Do not read or write the on-disk text feature cache");
  app.add_option("--max-pixels", flags.max_pixels,
                 "Refuse images of more pixels, from their header before decoding (decompression bombs); 0 = no "
                 "limit")
      ->capture_default_str();
}

void check_device(const std::string& device) {
  static const std::regex kDevice("cpu|cuda(:[0-9]+)?");
  if (!std::regex_match(device, kDevice))
    throw Error(ErrorCode::kInvalidArgument, "--device: \"" + device + "\" is not cpu, cuda or cuda:N");
}

ModelOptions model_options(const ModelFlags& flags) {
  check_device(flags.device);
  ModelOptions mo;
  mo.device = flags.device;
  mo.precision = parse_precision(flags.precision);
  mo.threads = flags.threads;
  mo.text_disk_cache = !flags.no_text_cache;
  return mo;
}

Model load_model(const std::string& bundle_dir, const ModelOptions& options, const std::vector<std::string>& classes,
                 double* text_ms_out) {
  auto& log = detail::log();
  const auto start = std::chrono::steady_clock::now();
  Model model = Model::load(bundle_dir, options);
  const auto& info = model.info();
  log.info("model {} loaded from {} on {} ({}) in {:.2f} s", info.name, info.bundle_dir, info.device, info.precision,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  const double text_ms = model.prepare_classes(classes);
  log.info("text features of {} classes in {:.0f} ms", classes.size(), text_ms);
  if (text_ms_out) *text_ms_out = text_ms;
  return model;
}

}  // namespace ovseg::cli
