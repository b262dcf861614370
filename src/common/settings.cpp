// The public API's small parsers and names: version, precision, mode, device.
#include <string>

#include "ovseg/ovseg.hpp"

namespace ovseg {

const char* version() noexcept { return OVSEG_VERSION_STRING; }

const char* to_string(Precision p) noexcept {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp16: return "fp16";
    case Precision::kAuto: return "auto";
  }
  return "?";
}

const char* to_string(Mode m) noexcept { return m == Mode::kEval ? "eval" : "demo"; }

Precision parse_precision(const std::string& s) {
  if (s == "fp32" || s == "float32") return Precision::kFp32;
  if (s == "bf16" || s == "bfloat16") return Precision::kBf16;
  if (s == "fp16" || s == "float16" || s == "half") return Precision::kFp16;
  if (s == "auto") return Precision::kAuto;
  throw Error(ErrorCode::kInvalidArgument, "unknown precision '" + s + "' (expected fp32, bf16, fp16 or auto)");
}

Mode parse_mode(const std::string& s) {
  if (s == "eval") return Mode::kEval;
  if (s == "demo") return Mode::kDemo;
  throw Error(ErrorCode::kInvalidArgument, "unknown mode '" + s + "' (expected eval or demo)");
}

int check_device(const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) == 0) {
    const std::string digits = device.substr(5);
    if (!digits.empty() && digits.size() <= 3 && digits.find_first_not_of("0123456789") == std::string::npos)
      return std::stoi(digits);
  }
  throw Error(ErrorCode::kInvalidArgument, "device '" + device + "': expected cpu, cuda or cuda:N");
}

}  // namespace ovseg
