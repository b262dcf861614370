// ovseg::Analysis: the class-agnostic part of one image (Model::analyze), its memory and its file.
#include "pipeline/analysis.hpp"

#include <ATen/ATen.h>

#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"

namespace ovseg {

struct Analysis::Impl {
  detail::AnalysisData data;
};

Analysis::Analysis(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Analysis::Analysis(Analysis&&) noexcept = default;
Analysis& Analysis::operator=(Analysis&&) noexcept = default;
Analysis::~Analysis() = default;

std::size_t Analysis::bytes() const noexcept { return impl_->data.bytes(); }
int Analysis::width() const noexcept { return impl_->data.width; }
int Analysis::height() const noexcept { return impl_->data.height; }
int Analysis::num_regions() const noexcept { return static_cast<int>(impl_->data.queries.size()); }
float Analysis::mask_threshold() const noexcept { return impl_->data.mask_threshold; }
bool Analysis::clip_ensemble() const noexcept { return impl_->data.clip_branch; }
const std::string& Analysis::model_fingerprint() const noexcept { return impl_->data.model_fingerprint; }
const Timings& Analysis::timings() const noexcept { return impl_->data.timings; }

void Analysis::save(const std::string& path) const {
  detail::translate_errors(path, [&] {
    const auto bytes = detail::serialize_analysis(impl_->data);
    detail::write_file_atomic(path, bytes.data(), bytes.size());
  });
}

Analysis Analysis::load(const std::string& path) {
  return detail::translate_errors(path, [&] {
    // An analysis of a 4k image with 100 queries is a few hundred MB at most; refuse more.
    const auto bytes = detail::read_file(path, std::uint64_t{4} << 30);
    return detail::AnalysisAccess::make(detail::deserialize_analysis(bytes.data(), bytes.size(), path));
  });
}

namespace detail {

namespace {

constexpr char kMagic[8] = {'O', 'V', 'S', 'E', 'G', 'A', 'N', 'A'};
constexpr std::size_t kDigestSize = 64;  // hex sha256

std::size_t tensor_bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

const char* dtype_name(c10::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBool: return "bool";
    default: return nullptr;
  }
}

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  throw Error(ErrorCode::kBadData, name + ": not a usable ovseg analysis file: " + what);
}

void append(std::vector<std::uint8_t>& out, const void* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <class T>
void put(std::vector<std::uint8_t>& out, T v) {
  append(out, &v, sizeof(T));
}

}  // namespace

std::size_t AnalysisData::bytes() const {
  return sizeof(*this) + model_fingerprint.size() + tensor_bytes(class_embeddings) + tensor_bytes(mask_logits) +
         tensor_bytes(valid) + tensor_bytes(binary_valid) + tensor_bytes(clip_features) +
         (queries.size() + areas.size()) * sizeof(std::int64_t) + boxes.size() * sizeof(RegionBox);
}

std::vector<std::uint8_t> serialize_analysis(const AnalysisData& a) {
  nlohmann::json h;
  h["model_fingerprint"] = a.model_fingerprint;
  h["mask_threshold"] = a.mask_threshold;
  h["clip_branch"] = a.clip_branch;
  h["size"] = {a.width, a.height};
  h["resized_size"] = {a.resized_width, a.resized_height};
  h["padded_size"] = {a.padded_width, a.padded_height};
  h["queries"] = a.queries;
  h["areas"] = a.areas;
  nlohmann::json boxes = nlohmann::json::array();
  for (const auto& b : a.boxes) boxes.push_back({b.x0, b.y0, b.x1, b.y1});
  h["boxes"] = boxes;
  nlohmann::json timings;
  for (const StageInfo& st : kStageTable) timings[st.name] = a.timings.*st.ms;
  timings["total"] = a.timings.total_ms;
  h["timings_ms"] = timings;
  std::vector<std::pair<const char*, at::Tensor>> tensors = {{"class_embeddings", a.class_embeddings},
                                                              {"mask_logits", a.mask_logits},
                                                              {"valid", a.valid},
                                                              {"binary_valid", a.binary_valid},
                                                              {"clip_features", a.clip_features}};
  nlohmann::json table = nlohmann::json::array();
  std::vector<at::Tensor> payload;
  std::uint64_t offset = 0;
  for (auto& [name, t] : tensors) {
    if (!t.defined()) continue;
    at::Tensor c = t.to(at::kCPU).contiguous();
    const char* dt = dtype_name(c.scalar_type());
    if (!dt) throw Error(ErrorCode::kRuntime, std::string("analysis: unexpected dtype of ") + name);
    const std::uint64_t n = tensor_bytes(c);
    table.push_back({{"name", name}, {"dtype", dt}, {"shape", c.sizes().vec()}, {"offset", offset}, {"bytes", n}});
    offset += n;
    payload.push_back(c);
  }
  h["tensors"] = table;
  const std::string header = h.dump();
  std::vector<std::uint8_t> out;
  out.reserve(8 + 4 + 8 + header.size() + offset + kDigestSize);
  append(out, kMagic, sizeof kMagic);
  put<std::uint32_t>(out, kAnalysisFormatVersion);
  put<std::uint64_t>(out, header.size());
  append(out, header.data(), header.size());
  for (const auto& t : payload) append(out, t.data_ptr(), tensor_bytes(t));
  const std::string digest = sha256_hex(out.data(), out.size());
  append(out, digest.data(), digest.size());
  return out;
}

AnalysisData deserialize_analysis(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  constexpr std::size_t kFixed = 8 + 4 + 8;
  if (size < kFixed + kDigestSize) bad(name, "too short (" + std::to_string(size) + " bytes)");
  if (std::memcmp(bytes, kMagic, 8) != 0) bad(name, "no OVSEGANA signature");
  std::uint32_t version = 0;
  std::uint64_t header_size = 0;
  std::memcpy(&version, bytes + 8, 4);
  std::memcpy(&header_size, bytes + 12, 8);
  if (version != kAnalysisFormatVersion)
    bad(name, "format version " + std::to_string(version) + " (this ovseg reads version " +
                  std::to_string(kAnalysisFormatVersion) + ")");
  const std::size_t body = size - kDigestSize;
  if (header_size > body - kFixed) bad(name, "truncated (header of " + std::to_string(header_size) + " bytes)");
  const std::string digest(reinterpret_cast<const char*>(bytes + body), kDigestSize);
  if (sha256_hex(bytes, body) != digest) bad(name, "checksum mismatch (corrupt or truncated)");
  AnalysisData a;
  try {
    const auto h = nlohmann::json::parse(bytes + kFixed, bytes + kFixed + header_size);
    a.model_fingerprint = h.at("model_fingerprint").get<std::string>();
    a.mask_threshold = h.at("mask_threshold").get<float>();
    a.clip_branch = h.at("clip_branch").get<bool>();
    a.width = h.at("size").at(0).get<int>();
    a.height = h.at("size").at(1).get<int>();
    a.resized_width = h.at("resized_size").at(0).get<int>();
    a.resized_height = h.at("resized_size").at(1).get<int>();
    a.padded_width = h.at("padded_size").at(0).get<std::int64_t>();
    a.padded_height = h.at("padded_size").at(1).get<std::int64_t>();
    a.queries = h.at("queries").get<std::vector<std::int64_t>>();
    a.areas = h.at("areas").get<std::vector<std::int64_t>>();
    for (const auto& b : h.at("boxes"))
      a.boxes.push_back({b.at(0).get<std::int64_t>(), b.at(1).get<std::int64_t>(), b.at(2).get<std::int64_t>(),
                         b.at(3).get<std::int64_t>()});
    const auto& t = h.at("timings_ms");
    for (const StageInfo& st : kStageTable) a.timings.*st.ms = t.at(st.name).get<double>();
    a.timings.total_ms = t.at("total").get<double>();
    const std::uint8_t* data = bytes + kFixed + header_size;
    const std::uint64_t data_size = body - kFixed - header_size;
    std::uint64_t expected_offset = 0;
    for (const auto& e : h.at("tensors")) {
      const std::string tname = e.at("name").get<std::string>();
      const std::string dt = e.at("dtype").get<std::string>();
      const auto shape = e.at("shape").get<std::vector<std::int64_t>>();
      const auto offset = e.at("offset").get<std::uint64_t>();
      const auto n = e.at("bytes").get<std::uint64_t>();
      const c10::ScalarType type = dt == "float32" ? at::kFloat : dt == "bool" ? at::kBool : at::kByte;
      if (type == at::kByte) bad(name, "tensor " + tname + ": dtype " + dt);
      std::uint64_t count = 1;
      for (const auto d : shape) {
        if (d < 0 || d > (std::int64_t{1} << 40)) bad(name, "tensor " + tname + ": bad shape");
        count *= static_cast<std::uint64_t>(d);
      }
      if (shape.size() > 4 || offset != expected_offset || n != count * c10::elementSize(type) ||
          n > data_size - offset)
        bad(name, "tensor " + tname + ": its bytes do not match its shape or the file");
      at::Tensor x = at::empty(shape, at::TensorOptions().dtype(type));
      std::memcpy(x.data_ptr(), data + offset, n);
      expected_offset += n;
      if (tname == "class_embeddings") a.class_embeddings = x;
      else if (tname == "mask_logits") a.mask_logits = x;
      else if (tname == "valid") a.valid = x;
      else if (tname == "binary_valid") a.binary_valid = x;
      else if (tname == "clip_features") a.clip_features = x;
      else bad(name, "unknown tensor " + tname);
    }
    if (expected_offset != data_size) bad(name, "bytes after the tensors");
  } catch (const nlohmann::json::exception& e) {
    bad(name, std::string("malformed header (") + e.what() + ")");
  }
  // Consistency: what classify() indexes must agree.
  const std::size_t nv = a.queries.size();
  const bool ok_common = a.class_embeddings.defined() && a.class_embeddings.dim() == 2 && a.mask_logits.defined() &&
                         a.mask_logits.dim() == 3 && a.valid.defined() && a.valid.dim() == 1 &&
                         a.valid.size(0) == a.class_embeddings.size(0) && a.mask_logits.size(0) == a.valid.size(0) &&
                         a.boxes.size() == nv && a.areas.size() == nv && a.width > 0 && a.height > 0 &&
                         a.resized_width > 0 && a.resized_height > 0 && a.padded_width >= a.resized_width &&
                         a.padded_height >= a.resized_height;
  if (!ok_common) bad(name, "inconsistent sizes");
  for (const auto q : a.queries)
    if (q < 0 || q >= a.valid.size(0)) bad(name, "a region's query index is out of range");
  if (a.clip_branch) {
    const bool ok = a.binary_valid.defined() && a.clip_features.defined() && a.binary_valid.dim() == 3 &&
                    a.binary_valid.size(0) == static_cast<std::int64_t>(nv) &&
                    a.binary_valid.size(1) == a.resized_height && a.binary_valid.size(2) == a.resized_width &&
                    a.clip_features.dim() == 2 && a.clip_features.size(0) == static_cast<std::int64_t>(nv) &&
                    a.clip_features.size(1) == a.class_embeddings.size(1);
    if (!ok) bad(name, "inconsistent region tensors");
  } else if (nv != 0) {
    bad(name, "a MaskFormer-only analysis with regions");
  }
  return a;
}

Analysis AnalysisAccess::make(AnalysisData data) {
  auto impl = std::make_unique<Analysis::Impl>();
  impl->data = std::move(data);
  return Analysis(std::move(impl));
}

const AnalysisData& AnalysisAccess::data(const Analysis& analysis) { return analysis.impl_->data; }

}  // namespace detail
}  // namespace ovseg
