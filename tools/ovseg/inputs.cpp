#include "inputs.hpp"

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "class_list.hpp"
#include "ovseg/ovseg.hpp"

namespace fs = std::filesystem;

namespace ovseg::cli {
namespace {

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Canonical form for comparing paths that may not exist yet.
std::string path_key(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(p, ec);
  if (ec) c = fs::absolute(p, ec).lexically_normal();
  return c.generic_string();
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  const std::string i = path_key(inner), o = path_key(outer);
  return i.size() > o.size() && i.compare(0, o.size(), o) == 0 && i[o.size()] == '/';
}

void add_directory(const fs::path& dir, bool recursive, const std::string& exclude_dir,
                   std::vector<InputImage>& out) {
  std::vector<fs::path> found;
  std::error_code ec;
  const auto opts = fs::directory_options::skip_permission_denied;
  auto consider = [&](const fs::directory_entry& e) {
    const fs::path& p = e.path();
    // Hidden files include macOS "._name.jpg" resource forks, which only look like images.
    if (p.filename().string().rfind('.', 0) == 0) return;
    std::error_code fe;
    if (!e.is_regular_file(fe)) return;
    if (!is_image_extension(p.extension().string())) return;
    found.push_back(p.lexically_relative(dir));
  };
  if (recursive) {
    fs::recursive_directory_iterator it(dir, opts, ec), end;
    if (ec) throw Error(ErrorCode::kIo, dir.string() + ": cannot list directory (" + ec.message() + ")");
    for (; it != end; it.increment(ec)) {
      if (ec) throw Error(ErrorCode::kIo, dir.string() + ": cannot list directory (" + ec.message() + ")");
      std::error_code de;
      if (it->is_directory(de)) {
        const std::string name = it->path().filename().string();
        if (name.rfind('.', 0) == 0 || (!exclude_dir.empty() && path_key(it->path()) == path_key(exclude_dir)))
          it.disable_recursion_pending();
        continue;
      }
      consider(*it);
    }
  } else {
    fs::directory_iterator it(dir, opts, ec), end;
    if (ec) throw Error(ErrorCode::kIo, dir.string() + ": cannot list directory (" + ec.message() + ")");
    for (; it != end; it.increment(ec)) {
      if (ec) throw Error(ErrorCode::kIo, dir.string() + ": cannot list directory (" + ec.message() + ")");
      consider(*it);
    }
  }
  std::sort(found.begin(), found.end(),
            [](const fs::path& a, const fs::path& b) { return a.generic_string() < b.generic_string(); });
  for (const auto& rel : found) {
    fs::path stem = rel;
    stem.replace_extension();
    out.push_back({(dir / rel).string(), stem.generic_string()});
  }
}

void add_argument(const std::string& arg, bool recursive, std::istream& list, const std::string& exclude_dir,
                  bool allow_stdin, std::vector<InputImage>& out) {
  if (arg == "-") {
    if (!allow_stdin) {
      out.push_back({arg, "-"});  // a literal "-" inside a list: reported as a missing file
      return;
    }
    std::string line;
    while (std::getline(list, line)) {
      const std::string p = trim(line);
      if (p.empty()) continue;
      add_argument(p, recursive, list, exclude_dir, false, out);
    }
    return;
  }
  std::error_code ec;
  const fs::path p(arg);
  if (fs::is_directory(p, ec)) {
    add_directory(p, recursive, exclude_dir, out);
    return;
  }
  out.push_back({arg, p.stem().string()});
}

}  // namespace

bool is_image_extension(const std::string& ext) {
  // What OpenCV 4.6's imread decodes with Debian's codecs.
  static const std::array<const char*, 22> kExts = {
      ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".ppm",
      ".pgm", ".pbm", ".pnm", ".pxm", ".pfm", ".exr", ".hdr", ".pic", ".sr", ".ras", ".j2k"};
  const std::string e = lower(ext);
  return std::any_of(kExts.begin(), kExts.end(), [&](const char* k) { return e == k; });
}

std::vector<InputImage> expand_inputs(const std::vector<std::string>& args, bool recursive, std::istream& list,
                                      const std::string& exclude_dir) {
  std::vector<InputImage> out;
  const bool exclude_inside = !exclude_dir.empty();
  for (const auto& a : args) {
    std::error_code ec;
    // Only skip the output directory when it is below a scanned directory, not the directory itself.
    const bool skip = exclude_inside && fs::is_directory(a, ec) && is_within(exclude_dir, a);
    add_argument(a, recursive, list, skip ? exclude_dir : std::string(), true, out);
  }
  // The same image reached twice with the same output name (a repeated argument, or a file also
  // given through its directory) is done once.
  std::vector<InputImage> unique;
  std::set<std::pair<std::string, std::string>> seen;
  for (auto& im : out)
    if (seen.emplace(path_key(im.path), im.out_stem).second) unique.push_back(std::move(im));
  return unique;
}

std::vector<std::string> output_paths(const std::string& output_dir, const std::string& out_stem, bool overlay,
                                      bool json, bool scores) {
  const fs::path base = fs::path(output_dir) / out_stem;
  std::vector<std::string> paths = {base.string() + ".png"};
  if (overlay) paths.push_back(base.string() + ".overlay.png");
  if (json) paths.push_back(base.string() + ".json");
  if (scores) paths.push_back(base.string() + ".scores.npy");
  return paths;
}

void check_output_collisions(const std::vector<InputImage>& images, const std::string& output_dir, bool overlay,
                             bool json, bool scores) {
  std::map<std::string, std::size_t> inputs;
  for (std::size_t i = 0; i < images.size(); ++i) inputs.emplace(path_key(images[i].path), i);
  std::map<std::string, std::size_t> outputs;
  for (std::size_t i = 0; i < images.size(); ++i) {
    for (const auto& o : output_paths(output_dir, images[i].out_stem, overlay, json, scores)) {
      const std::string key = path_key(o);
      auto [it, inserted] = outputs.emplace(key, i);
      if (!inserted && it->second != i)
        throw Error(ErrorCode::kInvalidArgument,
                    images[it->second].path + " and " + images[i].path + " would both be written to " + o +
                        " (rename one, or segment them into different --output directories)");
      auto in = inputs.find(key);
      if (in != inputs.end())
        throw Error(ErrorCode::kInvalidArgument, o + ": the output for " + images[i].path +
                                                     " would overwrite the input image " + images[in->second].path +
                                                     " (choose another --output)");
    }
  }
}

}  // namespace ovseg::cli
