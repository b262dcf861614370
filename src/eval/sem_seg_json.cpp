// sem_seg_predictions.json as detectron2's SemSegEvaluator writes it: per image and predicted class
// a record with the COCO RLE of the class's mask, in pycocotools' compressed-counts form.
// Written from the published algorithms (COCO maskApi rleEncode / rleToString / rleFrString).
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include "common/fs_util.hpp"
#include "ovseg/eval.hpp"

namespace fs = std::filesystem;

namespace ovseg::eval {

std::vector<std::uint32_t> rle_encode(const std::uint8_t* mask, int width, int height) {
  if (width < 0 || height < 0) throw Error(ErrorCode::kInvalidArgument, "rle_encode: negative size");
  std::vector<std::uint32_t> counts;
  std::uint8_t previous = 0;
  std::uint32_t run = 0;
  for (int x = 0; x < width; ++x)
    for (int y = 0; y < height; ++y) {
      const std::uint8_t v = mask[static_cast<std::size_t>(y) * width + x] != 0 ? 1 : 0;
      if (v != previous) {
        counts.push_back(run);
        run = 0;
        previous = v;
      }
      ++run;
    }
  counts.push_back(run);
  return counts;
}

std::string rle_to_string(const std::vector<std::uint32_t>& counts) {
  std::string s;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    // Counts from the fourth on are stored as the difference to the count two before (same kind
    // of run). [QUIRK, faithful] maskApi tests i > 2, so the third count is stored whole.
    long long x = counts[i];
    if (i > 2) x -= static_cast<long long>(counts[i - 2]);
    bool more = true;
    while (more) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;  // arithmetic: negative differences end at -1
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

std::vector<std::uint32_t> rle_from_string(const std::string& s) {
  std::vector<std::uint32_t> counts;
  std::size_t p = 0;
  while (p < s.size()) {
    long long x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error(ErrorCode::kBadData, "RLE string ends inside a number");
      const int c = static_cast<unsigned char>(s[p]) - 48;
      if (c < 0 || c > 63 || k > 11) throw Error(ErrorCode::kBadData, "RLE string has an invalid character");
      x |= static_cast<long long>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= -(1LL << (5 * k));  // sign extension
    }
    if (counts.size() > 2) x += counts[counts.size() - 2];
    if (x < 0 || x > std::numeric_limits<std::uint32_t>::max())
      throw Error(ErrorCode::kBadData, "RLE string decodes to a count out of range");
    counts.push_back(static_cast<std::uint32_t>(x));
  }
  return counts;
}

std::string python_json_string(const std::string& s) {
  // json.dumps(ensure_ascii=True): \" \\ \n \r \t \b \f, everything else outside ' '..'~' as
  // \uXXXX (UTF-16 surrogate pairs above the BMP). A byte that is not UTF-8 is written as the
  // lone surrogate U+DC80..U+DCFF that Python's file-system decoding (surrogateescape) gives it.
  std::string out = "\"";
  char buf[16];
  const auto u = [&](unsigned v) {
    std::snprintf(buf, sizeof buf, "\\u%04x", v);
    out += buf;
  };
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = b[i];
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7f)
            u(c);
          else
            out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF)?
    int len = 0;
    unsigned cp = 0, min = 0;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      if ((b[i + k] & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (b[i + k] & 0x3f);
    }
    ok = ok && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      u(0xdc00 + c);
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u(0xd800 + (cp >> 10));
      u(0xdc00 + (cp & 0x3ff));
    } else {
      u(cp);
    }
    i += static_cast<std::size_t>(len);
  }
  return out + "\"";
}

std::string sem_seg_json_records(const LabelImage& pred, const std::string& file_name, const DatasetSpec& spec) {
  const std::size_t n = static_cast<std::size_t>(pred.width) * static_cast<std::size_t>(pred.height);
  if (pred.values.size() != n)
    throw Error(ErrorCode::kInvalidArgument, file_name + ": prediction has " + std::to_string(pred.values.size()) +
                                                 " values for " + std::to_string(pred.width) + "x" +
                                                 std::to_string(pred.height) + " pixels");
  // All classes in one column-major pass: a class's run of 1s starts where its label begins and
  // ends where another label begins; the 0-runs are the gaps between them.
  struct Runs {
    std::vector<std::uint32_t> counts;
    std::size_t run_start = 0;  // where the current run (0s, or 1s when `inside`) began
    bool inside = false;
  };
  std::vector<Runs> runs;
  std::vector<char> present;
  std::uint16_t previous = kUnlabeled;
  std::size_t i = 0;
  const auto start_run = [&](std::uint16_t label) {
    if (label == kUnlabeled) return;
    if (label >= runs.size()) {
      runs.resize(static_cast<std::size_t>(label) + 1);
      present.resize(static_cast<std::size_t>(label) + 1, 0);
    }
    Runs& r = runs[label];
    r.counts.push_back(static_cast<std::uint32_t>(i - r.run_start));  // the 0s before (may be 0)
    r.run_start = i;
    r.inside = true;
    present[label] = 1;
  };
  const auto end_run = [&](std::uint16_t label) {
    if (label == kUnlabeled) return;
    Runs& r = runs[label];
    r.counts.push_back(static_cast<std::uint32_t>(i - r.run_start));
    r.run_start = i;
    r.inside = false;
  };
  for (int x = 0; x < pred.width; ++x)
    for (int y = 0; y < pred.height; ++y, ++i) {
      const std::uint16_t v = pred.values[static_cast<std::size_t>(y) * pred.width + x];
      if (v == previous) continue;
      end_run(previous);
      start_run(v);
      previous = v;
    }
  std::string out;
  const std::string name = python_json_string(file_name);
  const std::string size = "[" + std::to_string(pred.height) + ", " + std::to_string(pred.width) + "]";
  for (std::size_t c = 0; c < runs.size(); ++c) {
    if (!present[c]) continue;
    Runs& r = runs[c];
    r.counts.push_back(static_cast<std::uint32_t>(n - r.run_start));  // the last run, 1s or 0s (never empty)
    if (static_cast<int>(c) >= spec.num_classes)
      throw Error(ErrorCode::kInvalidArgument, file_name + ": predicted label " + std::to_string(c) +
                                                   " is not a class of " + spec.name);
    const int category = spec.dataset_ids.empty() ? static_cast<int>(c) : spec.dataset_ids.at(c);
    if (!out.empty()) out += ", ";
    out += "{\"file_name\": " + name + ", \"category_id\": " + std::to_string(category) +
           ", \"segmentation\": {\"size\": " + size + ", \"counts\": " + python_json_string(rle_to_string(r.counts)) +
           "}}";
  }
  return out;
}

std::vector<std::string> write_sem_seg_json(const std::string& dir, const std::vector<std::string>& part_dirs,
                                            const std::vector<std::string>& stems) {
  std::string text = "[";
  std::vector<std::string> missing;
  bool first = true;
  for (const auto& stem : stems) {
    bool found = false;
    for (const auto& parts : part_dirs) {
      const fs::path p = fs::path(parts) / (stem + ".json");
      std::error_code ec;
      if (!fs::is_regular_file(p, ec)) continue;
      const std::string part = detail::read_text_file(p.string());
      if (!part.empty()) {
        if (!first) text += ", ";
        text += part;
        first = false;
      }
      found = true;
      break;
    }
    if (!found) missing.push_back(stem);
  }
  text += "]";
  detail::write_file_atomic((fs::path(dir) / kSemSegJsonFile).string(), text);
  return missing;
}

}  // namespace ovseg::eval
