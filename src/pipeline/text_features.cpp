// Class-name text features (docs/reference-behaviour.md §5.5): templates × names → tokens → text tower → per-template
// L2 norm → mean over templates → L2 norm; cached in memory (by name) and on disk.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <numeric>
#include <cstdio>
#include <map>
#include <set>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "pipeline/pipeline.hpp"

namespace fs = std::filesystem;

namespace ovseg::detail {
namespace {

// Sequences per text-tower call: bounds memory for long class lists (ADE-847 × 14 templates).
constexpr int64_t kTextBatch = 256;
// Entry: magic | embed (u32) | name length (u32) | name | embed floats | sha256 of all before (32
// bytes). The name is the key the entry claims; the checksum covers it and the payload.
constexpr char kDiskMagic[8] = {'O', 'V', 'S', 'G', 'T', 'F', '0', '2'};
constexpr char kOldDiskMagic[8] = {'O', 'V', 'S', 'G', 'T', 'F', '0', '1'};
constexpr std::size_t kDigestBytes = 32;

std::vector<std::uint8_t> digest_bytes(const std::uint8_t* p, std::size_t n) {
  const std::string hex = sha256_hex(p, n);
  std::vector<std::uint8_t> out(kDigestBytes);
  for (std::size_t i = 0; i < kDigestBytes; ++i) out[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : std::string();
}

at::Tensor l2_normalize_rows(const at::Tensor& x) { return x / x.norm(2, {-1}, /*keepdim=*/true); }

}  // namespace

std::string resolve_text_cache_dir(const std::string& option) {
  if (!option.empty()) return option;
  if (auto d = env("OVSEG_CACHE_DIR"); !d.empty()) return d;
  if (auto d = env("XDG_CACHE_HOME"); !d.empty()) return (fs::path(d) / "ovseg").string();
  if (auto d = env("HOME"); !d.empty()) return (fs::path(d) / ".cache" / "ovseg").string();
  return {};
}

std::string format_template(const std::string& tmpl, const std::string& name) {
  // Python str.format with one positional argument: "{}" → name, "{{" / "}}" → literal braces.
  std::string out;
  out.reserve(tmpl.size() + name.size());
  for (std::size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl.compare(i, 2, "{}") == 0) {
      out += name;
      ++i;
    } else if (tmpl.compare(i, 2, "{{") == 0 || tmpl.compare(i, 2, "}}") == 0) {
      out += tmpl[i];
      ++i;
    } else {
      out += tmpl[i];
    }
  }
  return out;
}

TextFeatures::TextFeatures(const Manifest& manifest, const Modules& modules, TextCacheOptions cache)
    : manifest_(manifest), modules_(modules) {
  try {
    tokenizer_ = make_tokenizer(manifest.tokenizer_kind, manifest.tokenizer_path);
  } catch (const Error& e) {
    throw Error(ErrorCode::kBadModel, e.what());
  }
  {
    c10::InferenceMode guard;
    const at::Tensor no = modules.non_object_embedding().to(modules.device());
    non_object_row_ = l2_normalize_rows(no);  // [1,E]
  }
  if (cache.disk && !cache.dir.empty()) {
    // Everything that changes the numbers is part of the key; the name is the file.
    std::string key = "ovseg-text-features-v1\n" + manifest.clip_text_sha256 + "\n" + manifest.tokenizer_kind + "\n" +
                      manifest.tokenizer_sha256 + "\n" + std::to_string(manifest.context_length) + "\n" +
                      manifest.template_set + "\n";
    for (const auto& t : manifest.templates) key += t + "\n";
    key += std::string(c10::toString(modules.text_dtype())) + "\n" + c10::DeviceTypeName(modules.device().type()) + "\n";
    disk_dir_ = (fs::path(cache.dir) / "text-features" / sha256_hex(key.data(), key.size()).substr(0, 32)).string();
  }
}

TextFeatures::~TextFeatures() = default;

at::Tensor TextFeatures::compute(const std::vector<std::string>& names, bool trim_tokens) const {
  c10::InferenceMode guard;
  const auto n = static_cast<int64_t>(names.size());
  const int64_t embed = manifest_.embed_dim;
  if (n == 0) return at::empty({0, embed}, at::kFloat);
  const auto num_templates = static_cast<int64_t>(manifest_.templates.size());
  // Every (template, name) prompt, tokenized once; row t·n + i of `features`.
  const int64_t total = num_templates * n;
  std::vector<std::vector<std::int32_t>> ids(static_cast<std::size_t>(total));
  for (int64_t t = 0; t < num_templates; ++t)
    for (int64_t i = 0; i < n; ++i)
      ids[static_cast<std::size_t>(t * n + i)] =
          tokenizer_->tokenize(format_template(manifest_.templates[static_cast<std::size_t>(t)],
                                               names[static_cast<std::size_t>(i)]),
                               manifest_.context_length, /*truncate=*/false);
  // Batches of prompts of similar length (sorted, stable): trimmed to the batch's longest EOT, a
  // batch of short names does not pay for the longest name of the list.
  std::vector<int64_t> order(static_cast<std::size_t>(total));
  for (int64_t r = 0; r < total; ++r) order[static_cast<std::size_t>(r)] = r;
  if (trim_tokens)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return ids[static_cast<std::size_t>(a)].size() < ids[static_cast<std::size_t>(b)].size();
    });
  at::Tensor features = at::empty({total, embed}, at::kFloat);  // rows L2-normalised
  for (int64_t start = 0; start < total; start += kTextBatch) {
    const int64_t count = std::min(kTextBatch, total - start);
    std::size_t longest = 0;
    for (int64_t j = 0; j < count; ++j)
      longest = std::max(longest, ids[static_cast<std::size_t>(order[static_cast<std::size_t>(start + j)])].size());
    // The text tower pools at the EOT, and the causal mask keeps every position before it
    // blind to what follows, so padding past the batch's longest EOT changes nothing.
    const int64_t length = trim_tokens ? static_cast<int64_t>(longest) : manifest_.context_length;
    at::Tensor tokens = at::zeros({count, length}, at::kLong);  // [count,L], 0 = padding id
    at::Tensor rows = at::empty({count}, at::kLong);
    auto acc = tokens.accessor<int64_t, 2>();
    auto row_acc = rows.accessor<int64_t, 1>();
    for (int64_t j = 0; j < count; ++j) {
      const int64_t r = order[static_cast<std::size_t>(start + j)];
      row_acc[j] = r;
      const auto& seq = ids[static_cast<std::size_t>(r)];
      for (std::size_t k = 0; k < seq.size(); ++k) acc[j][static_cast<int64_t>(k)] = seq[k];
    }
    at::Tensor f = modules_.clip_text(tokens);  // [count,E]
    if (f.dim() != 2 || f.size(0) != count || f.size(1) != embed)
      throw Error(ErrorCode::kRuntime, manifest_.clip_text_path + ": unexpected output shape");
    features.index_copy_(0, rows, l2_normalize_rows(f).to(at::kCPU));
  }
  at::Tensor mean = features.view({num_templates, n, embed}).mean(0);  // [n,E]
  return l2_normalize_rows(mean).contiguous();
}

at::Tensor TextFeatures::read_disk(const std::string& name) const {
  if (disk_dir_.empty()) return {};
  const std::string hash = sha256_hex(name.data(), name.size());
  const std::string path = (fs::path(disk_dir_) / (hash.substr(0, 40) + ".bin")).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  // A bad entry is ignored with a warning; the caller recomputes the feature and rewrites it.
  auto reject = [&](const std::string& why) {
    detail::log().warn("text cache: ignoring {} for \"{}\" ({}); recomputing it", path, name, why);
    return at::Tensor();
  };
  try {
    const int64_t embed = manifest_.embed_dim;
    const std::uint64_t max_bytes =
        16 + std::max<std::uint64_t>(name.size(), 65536) + static_cast<std::uint64_t>(embed) * sizeof(float) + kDigestBytes;
    const auto bytes = read_file(path, max_bytes);
    if (bytes.size() >= 8 && std::memcmp(bytes.data(), kOldDiskMagic, 8) == 0) {
      detail::log().debug("text cache: {} has the old format (no checksum); recomputing it", path);
      return {};
    }
    if (bytes.size() < 16 + kDigestBytes || std::memcmp(bytes.data(), kDiskMagic, 8) != 0)
      return reject("not a text cache entry");
    std::uint32_t e = 0, len = 0;
    std::memcpy(&e, bytes.data() + 8, 4);
    std::memcpy(&len, bytes.data() + 12, 4);
    if (static_cast<int64_t>(e) != embed || bytes.size() != 16 + std::size_t{len} + e * sizeof(float) + kDigestBytes)
      return reject("wrong size");
    const std::size_t body = bytes.size() - kDigestBytes;
    if (digest_bytes(bytes.data(), body) != std::vector<std::uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(body), bytes.end()))
      return reject("checksum mismatch: corrupt");
    if (std::string(reinterpret_cast<const char*>(bytes.data()) + 16, len) != name)
      return reject("it holds another name");
    at::Tensor t = at::empty({embed}, at::kFloat);
    std::memcpy(t.data_ptr<float>(), bytes.data() + 16 + len, e * sizeof(float));
    if (!at::isfinite(t).all().item<bool>()) return reject("non-finite values");
    return t;
  } catch (const Error& err) {
    return reject(err.what());
  }
}

void TextFeatures::write_disk(const std::string& name, const at::Tensor& feature) const {
  if (disk_dir_.empty()) return;
  const std::string hash = sha256_hex(name.data(), name.size());
  const std::string path = (fs::path(disk_dir_) / (hash.substr(0, 40) + ".bin")).string();
  const at::Tensor f = feature.to(at::kCPU, at::kFloat).contiguous();
  if (!at::isfinite(f).all().item<bool>()) {
    detail::log().warn("text cache: the feature of \"{}\" is not finite; not cached", name);
    return;
  }
  const auto e = static_cast<std::uint32_t>(f.numel());
  const auto len = static_cast<std::uint32_t>(name.size());
  std::vector<std::uint8_t> bytes(16 + len + e * sizeof(float));
  std::memcpy(bytes.data(), kDiskMagic, 8);
  std::memcpy(bytes.data() + 8, &e, 4);
  std::memcpy(bytes.data() + 12, &len, 4);
  std::memcpy(bytes.data() + 16, name.data(), len);
  std::memcpy(bytes.data() + 16 + len, f.data_ptr<float>(), e * sizeof(float));
  const auto digest = digest_bytes(bytes.data(), bytes.size());
  bytes.insert(bytes.end(), digest.begin(), digest.end());
  try {
    // Atomic (temporary + rename): a concurrent reader sees the old entry or the new one, and two
    // processes writing the same entry write the same bytes.
    write_file_atomic(path, bytes.data(), bytes.size());
  } catch (const Error& err) {
    // A cache that cannot be written only costs time: warn once per model, carry on.
    static std::once_flag warned;
    std::call_once(warned, [&] { detail::log().warn("text feature cache disabled: {}", err.what()); });
  }
}

void TextFeatures::check_names(const std::vector<std::string>& names) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (names == last_checked_) return;  // every image of a batch asks with the same list
  }
  std::map<std::vector<std::int32_t>, std::size_t> seen;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    for (std::size_t j = 0; j < name.size(); ++j) {
      const auto c = static_cast<unsigned char>(name[j]);
      const bool c1 = c == 0xC2 && j + 1 < name.size() && static_cast<unsigned char>(name[j + 1]) >= 0x80 &&
                      static_cast<unsigned char>(name[j + 1]) <= 0x9F;
      if (c < 0x20 || c == 0x7F || c1) {
        char code[16];
        std::snprintf(code, sizeof code, "U+%04X", c1 ? static_cast<unsigned char>(name[j + 1]) : c);
        throw Error(ErrorCode::kInvalidArgument, "class " + std::to_string(i + 1) + " contains the control character " +
                                                     code + " (names are printable text)");
      }
    }
    std::vector<std::int32_t> ids = tokenizer_->encode(name);
    auto [it, inserted] = seen.emplace(std::move(ids), i);
    if (!inserted) {
      const std::string& first = names[it->second];
      throw Error(ErrorCode::kInvalidArgument,
                  first == name ? "class \"" + name + "\" is given twice (entries " + std::to_string(it->second + 1) +
                                      " and " + std::to_string(i + 1) + ")"
                                : "classes \"" + first + "\" and \"" + name + "\" (entries " +
                                      std::to_string(it->second + 1) + " and " + std::to_string(i + 1) +
                                      ") have the same token ids: the text encoder cannot tell them apart (the "
                                      "tokenizer lower-cases and collapses whitespace); keep one of them");
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  last_checked_ = names;
}

at::Tensor TextFeatures::class_features(const std::vector<std::string>& names) const {
  c10::InferenceMode guard;
  check_names(names);
  std::vector<std::string> missing;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::set<std::string> seen;
    for (const auto& name : names)
      if (!memory_.count(name) && seen.insert(name).second) missing.push_back(name);
  }
  if (!missing.empty()) {
    std::vector<std::string> to_compute;
    std::vector<std::pair<std::string, at::Tensor>> found;
    for (const auto& name : missing) {
      at::Tensor t = read_disk(name);
      if (t.defined()) found.emplace_back(name, t);
      else to_compute.push_back(name);
    }
    if (!to_compute.empty()) {
      detail::log().debug("text features: encoding {} new class name(s)", to_compute.size());
      const at::Tensor computed = compute(to_compute, /*trim_tokens=*/true);
      for (std::size_t i = 0; i < to_compute.size(); ++i) {
        at::Tensor row = computed[static_cast<int64_t>(i)].clone();
        write_disk(to_compute[i], row);
        found.emplace_back(to_compute[i], row);
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [name, t] : found) memory_.emplace(name, t);
  }
  std::vector<at::Tensor> rows;
  rows.reserve(names.size());
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& name : names) rows.push_back(memory_.at(name));
  if (rows.empty()) return at::empty({0, static_cast<int64_t>(manifest_.embed_dim)}, at::kFloat);
  return at::stack(rows, 0);
}

at::Tensor TextFeatures::text_matrix(const std::vector<std::string>& names) const {
  c10::InferenceMode guard;
  const at::Tensor classes = class_features(names).to(modules_.device());
  return at::cat({classes, non_object_row_}, 0);  // [(K+1),E]
}

std::size_t TextFeatures::memory_entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return memory_.size();
}

void TextFeatures::clear_memory_cache() const {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_.clear();
}

}  // namespace ovseg::detail
