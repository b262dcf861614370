// Fuzz targets (libFuzzer's entry point; built with driver.cpp, or with clang -fsanitize=fuzzer).
// One executable per target: the target is chosen at compile time (OVSEG_FUZZ_TARGET_*). Errors
// that ovseg reports (ovseg::Error) are the expected outcome for bad input; anything else — a
// crash, a sanitizer report, another exception type escaping — is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "ovseg/ovseg.hpp"

#if defined(OVSEG_FUZZ_TARGET_IMAGE)
#include "image/image_ops.hpp"
#elif defined(OVSEG_FUZZ_TARGET_LABEL)
#include "image/image_ops.hpp"
#elif defined(OVSEG_FUZZ_TARGET_CLASS_LIST)
#include "class_list.hpp"
#elif defined(OVSEG_FUZZ_TARGET_TOKENIZER)
#include "ovseg/tokenizer.hpp"
#elif defined(OVSEG_FUZZ_TARGET_MANIFEST)
#include "pipeline/manifest.hpp"
#elif defined(OVSEG_FUZZ_TARGET_CHECKPOINT)
#include "ovseg/eval.hpp"
#endif

// The driver's (driver.cpp) report channel; absent under libFuzzer, which prints its own.
extern "C" void ovseg_fuzz_report(const char* message) __attribute__((weak));

namespace {

// A failed check on what a parser returned: a finding.
[[noreturn]] void finding(const char* what) {
  if (ovseg_fuzz_report) ovseg_fuzz_report(what);
  else std::fprintf(stderr, "fuzz: finding: %s\n", what);
  std::abort();
}

// A private scratch directory for targets whose parser reads a path.
const std::string& scratch() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("ovseg-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("ovseg-fuzz-" + std::to_string(::getpid())), ec);
    });
    return d.string();
  }();
  return dir;
}

[[maybe_unused]] std::string write_scratch(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::string path = scratch() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
#if defined(OVSEG_FUZZ_TARGET_IMAGE)
    // Small pixel limit: the fuzzer would otherwise spend its time allocating legal 100 MP images.
    const ovseg::Image img = ovseg::decode_image(data, size, "fuzz", std::uint64_t{1} << 22);
    if (img.width <= 0 || img.height <= 0 || img.rgb.size() != static_cast<std::size_t>(img.width) * img.height * 3)
      finding("decode_image returned an image whose size does not match its pixels");
    ovseg::detail::HeaderSize s;
    (void)ovseg::detail::image_header_size(data, size, &s);
#elif defined(OVSEG_FUZZ_TARGET_LABEL)
    const auto map = ovseg::detail::read_label_map(write_scratch("label.png", data, size));
    if (map.values.size() != static_cast<std::size_t>(map.width) * map.height)
      finding("read_label_map returned a map whose size does not match its values");
#elif defined(OVSEG_FUZZ_TARGET_CLASS_LIST)
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
      const auto names = ovseg::cli::parse_class_lines(text, "fuzz");
      for (const auto& n : names)
        if (n.empty() || !ovseg::cli::is_valid_utf8(n) || !ovseg::cli::control_character(n).empty())
          finding("parse_class_lines accepted an empty, non-UTF-8 or control-character name");
    } catch (const ovseg::Error&) {
    }
    if (text.find('\0') == std::string::npos) (void)ovseg::cli::parse_class_string(text);
#elif defined(OVSEG_FUZZ_TARGET_TOKENIZER)
    static const std::unique_ptr<ovseg::ClipTokenizer> tok = [] {
      const char* vocab = std::getenv("OVSEG_FUZZ_BPE_VOCAB");
      std::error_code ec;
      if (!vocab || !std::filesystem::is_regular_file(vocab, ec)) {
        std::fprintf(stderr, "SKIPPED: CLIP's BPE vocabulary not found (set OVSEG_FUZZ_BPE_VOCAB; ../shared has it)\n");
        std::exit(77);
      }
      return ovseg::ClipTokenizer::from_bpe_file(vocab);
    }();
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto ids = tok->encode(text);
    for (auto id : ids)
      if (id < 0 || id >= tok->vocab_size()) finding("encode returned a token id outside the vocabulary");
    (void)tok->decode(ids);
    (void)tok->tokenize(text, 77, /*truncate=*/true);
#elif defined(OVSEG_FUZZ_TARGET_MANIFEST)
    static const std::string bundle = [] {
      const std::string d = scratch() + "/bundle";
      std::filesystem::create_directories(d);
      for (const char* f : {"proposals.pt", "clip_visual.pt", "clip_text.pt", "bpe.txt.gz"}) std::ofstream(d + "/" + f) << "x";
      return d;
    }();
    write_scratch("bundle/manifest.json", data, size);
    (void)ovseg::detail::read_manifest(bundle, /*verify_checksums=*/false);
#elif defined(OVSEG_FUZZ_TARGET_CHECKPOINT)
    const auto s = ovseg::eval::load_state(write_scratch("checkpoint.json", data, size));
    (void)ovseg::eval::compute_metrics(s.cm);
#else
#error "define one OVSEG_FUZZ_TARGET_*"
#endif
  } catch (const ovseg::Error&) {
    // A clear error for bad input: the expected outcome.
  }
  return 0;
}
