// Class-name presets. The lists (the datasets' class names, data/class_lists.json in the
// repository) are read from a JSON file ({"ade150": [...], ...}) installed beside the library
// (<prefix>/share/ovseg) rather than compiled in; a build tree reads the source tree's copy.
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg {

namespace {

constexpr const char* kPresetsName = "class_lists.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// <prefix>/share/ovseg/class_lists.json for the prefixes above a binary's directory
// (<prefix>/bin, <prefix>/lib, <prefix>/lib/<multiarch>).
void add_prefix_candidates(const fs::path& binary, std::vector<fs::path>& out) {
  if (binary.empty()) return;
  fs::path dir = binary.parent_path();
  for (int up = 0; up < 3 && !dir.empty(); ++up) {
    dir = dir.parent_path();
    out.push_back(dir / "share" / "ovseg" / kPresetsName);
  }
}

fs::path this_library() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&preset_names), &info) != 0 && info.dli_fname)
    return fs::path(info.dli_fname);
  return {};
}

fs::path this_executable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : p;
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

}  // namespace

// The benchmarks' lists (eval::dataset_names, whose specs name their preset), then the lists of
// no benchmark layout (COCO-Stuff's 171, ov-seg's training vocabulary).
std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& d : eval::dataset_names()) names.push_back(eval::dataset_spec(d).preset);
  names.push_back("coco171");
  return names;
}

std::string find_presets_file(const std::string& presets_file) {
  if (!presets_file.empty()) {
    if (!is_file(presets_file)) throw Error(ErrorCode::kIo, presets_file + ": presets file not found");
    return presets_file;
  }
  if (const char* env = std::getenv("OVSEG_PRESETS"); env && *env) {
    if (!is_file(env)) throw Error(ErrorCode::kIo, std::string(env) + ": presets file (from OVSEG_PRESETS) not found");
    return env;
  }
  std::vector<fs::path> candidates;
  add_prefix_candidates(this_library(), candidates);
  add_prefix_candidates(this_executable(), candidates);
#ifdef OVSEG_BUILD_TREE_DATA_DIR
  // A build tree (not installed): the repository's data/ folder the build was configured from.
  candidates.push_back(fs::path(OVSEG_BUILD_TREE_DATA_DIR) / kPresetsName);
#endif
  std::string tried;
  for (const auto& c : candidates) {
    if (is_file(c)) return c.lexically_normal().string();
    tried += "\n  " + c.lexically_normal().string();
  }
  throw Error(ErrorCode::kIo, std::string("class-list presets (") + kPresetsName +
                                  ") not found; pass --presets-file or set OVSEG_PRESETS. Tried:" + tried);
}

std::vector<std::string> preset_classes(const std::string& name, const std::string& presets_file) {
  const auto known = preset_names();
  bool is_known = false;
  std::string list;
  for (const auto& k : known) {
    is_known = is_known || k == name;
    list += (list.empty() ? "" : ", ") + k;
  }
  if (!is_known) throw Error(ErrorCode::kInvalidArgument, "unknown class-list preset '" + name + "' (known: " + list + ")");
  const std::string path = find_presets_file(presets_file);
  detail::log().debug("class list {} from {}", name, path);
  std::vector<std::string> names;
  try {
    const auto j = nlohmann::json::parse(detail::read_text_file(path));
    if (!j.contains(name)) throw Error(ErrorCode::kBadData, path + ": no list '" + name + "'");
    for (const auto& v : j.at(name)) names.push_back(strip(v.get<std::string>()));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kBadData, path + ": malformed presets file (" + e.what() + ")");
  }
  if (names.empty()) throw Error(ErrorCode::kBadData, path + ": list '" + name + "' is empty");
  return names;
}

}  // namespace ovseg
