// The bundle's TorchScript modules: loading (device, dtype) and the typed forward calls. The only
// file that includes torch::jit; every other stage sees plain ATen tensors.
#include <torch/cuda.h>
#include <torch/script.h>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string_view>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/fs_util.hpp"
#include "common/log.hpp"
#include "pipeline/pipeline.hpp"
#include "pipeline/script_module.hpp"

namespace ovseg::detail {
namespace {

std::string strip_backtrace(const c10::Error& e) { return e.what_without_backtrace(); }

// Floating parameters, buffers and tensor attributes to `dtype`; integer buffers (e.g. relative
// position indices) keep theirs, which Module::to(dtype) would not guarantee.
void cast_floating_state(torch::jit::Module& module, c10::ScalarType dtype) {
  for (const auto& attr : module.named_attributes(/*recurse=*/true)) {
    if (!attr.value.isTensor()) continue;
    at::Tensor t = attr.value.toTensor();
    if (t.defined() && t.is_floating_point() && t.scalar_type() != dtype) t.set_data(t.to(dtype));
  }
}

// A bundle written by a newer torch than this build's libtorch can read: refused up front, naming
// both versions, instead of failing deep inside torch::jit::load.
void check_file_format(const Manifest& manifest) {
  const auto max_supported = static_cast<int>(caffe2::serialize::kMaxSupportedFileFormatVersion);
  if (manifest.torchscript_file_format_version <= max_supported) return;
  const std::string runtime = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                              "." + std::to_string(TORCH_VERSION_PATCH);
  const std::string exporter = manifest.torch_version.empty() ? "an unknown torch" : "torch " + manifest.torch_version;
  throw Error(ErrorCode::kBadModel,
              manifest.manifest_path + ": the bundle's TorchScript modules were written by " + exporter +
                  " in file-format version " + std::to_string(manifest.torchscript_file_format_version) +
                  ", but this ovseg's libtorch " + runtime + " reads file-format versions up to " +
                  std::to_string(max_supported) + ". Re-export the bundle with tools/ovseg-export under a torch no newer "
                  "than " + runtime + ", or rebuild ovseg against a newer libtorch (-DCMAKE_PREFIX_PATH=/path/to/libtorch).");
}

torch::jit::Module load_module(const std::string& path, c10::Device device) { return load_script_module(path, device); }

// ---- A bundle is a program: what may run -----------------------------------------------------

const std::unordered_set<std::string>& allowed_operators() {
  static const std::unordered_set<std::string> ops = {
#include "pipeline/bundle_operators.inc"
  };
  return ops;
}

constexpr const char* kBundleIsAProgram =
    "no ovseg exporter writes this; a bundle is a program and ovseg runs only what its exporters emit "
    "(models/BUNDLE_FORMAT.md, \"A bundle is a program\")";

// torch::jit::load runs the __setstate__ of every object it restores: refused from the archive's
// code before loading.
void check_archive_code(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  for (const auto& name : reader.getAllRecords()) {
    if (name.size() < 3 || name.compare(name.size() - 3, 3, ".py") != 0 || name.find("code/") == std::string::npos)
      continue;
    const auto record = reader.getRecord(name);
    const std::string_view text(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record));
    if (text.find("__setstate__") != std::string_view::npos)
      throw Error(ErrorCode::kBadModel, path + ": refused: " + name +
                                            " defines __setstate__, which loading the module would run; " +
                                            kBundleIsAProgram);
  }
}

// Every method of every submodule, the forward hooks, and every function they call (its whole
// graph, whichever branch would run). With `collect`, gathers the operators instead of refusing.
struct OperatorWalk {
  const std::string& path;
  std::unordered_set<const torch::jit::Function*> seen;
  std::set<std::string>* collect = nullptr;

  void block(const torch::jit::Block* b, const std::string& where) {
    for (const torch::jit::Node* n : b->nodes()) {
      const std::string kind = n->kind().toQualString();
      if (collect) collect->insert(kind);
      else if (!allowed_operators().count(kind))
        throw Error(ErrorCode::kBadModel,
                    path + ": refused: " + where + " uses the operator " + kind + "; " + kBundleIsAProgram);
      if (n->kind() == c10::prim::CallFunction && n->inputs().size() > 0) {
        const auto ft = n->input(0)->type()->cast<c10::FunctionType>();
        if (!ft) throw Error(ErrorCode::kBadModel, path + ": refused: " + where + " calls a function it does not name");
        function(ft->function());
      }
      for (const torch::jit::Block* sub : n->blocks()) block(sub, where);
    }
  }
  void function(torch::jit::Function* fn) {
    if (!fn || !seen.insert(fn).second) return;
    const std::string where = "function " + fn->qualname().qualifiedName();
    if (!fn->isGraphFunction()) throw Error(ErrorCode::kBadModel, path + ": refused: " + where + " is not TorchScript");
    block(torch::jit::toGraphFunction(*fn).graph()->block(), where);
  }
};

std::string strip_backtrace_any(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return strip_backtrace(*c);
  std::string s = e.what();
  return s.substr(0, s.find('\n'));
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

at::Tensor expect_tensor(const c10::IValue& v, const std::string& what) {
  if (!v.isTensor()) throw Error(ErrorCode::kRuntime, what + ": the module did not return a tensor");
  return v.toTensor();
}

// Checks at load that each module is the one its manifest entry names and agrees with the
// manifest (modules swapped in the map, a context length the text tower does not have, another
// number of queries): one tiny forward pass each, so that a bad bundle fails here and not on
// every image.
[[noreturn]] void probe_failed(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::kBadModel, path + ": " + what + " (a module swapped in manifest.json, or a manifest "
                                                         "that does not match its modules?)");
}

// proposals: a small padded image → ([1,Q,E], [1,Q,h,w])
template <typename Impl>
void probe_proposals(Impl& impl, const Manifest& m) {
  torch::jit::GraphOptimizerEnabledGuard no_opt(false);
  c10::InferenceMode guard;
  const auto fail = probe_failed;
  const int64_t side = ((64 + m.size_divisibility - 1) / m.size_divisibility) * m.size_divisibility;
  c10::IValue v;
  try {
    v = impl.proposals.forward({at::zeros({1, 3, side, side}, at::kFloat).to(impl.device)});
  } catch (const std::exception& e) {
    fail(m.proposals_path, "the proposal network does not run on a " + std::to_string(side) + "x" +
                               std::to_string(side) + " image: " + strip_backtrace_any(e));
  }
  if (!v.isTuple() || v.toTupleRef().elements().size() != 2 || !v.toTupleRef().elements()[0].isTensor())
    fail(m.proposals_path, "the proposal network does not return (class_embeddings, mask_logits)");
  const at::Tensor emb = v.toTupleRef().elements()[0].toTensor();
  if (emb.dim() != 3 || emb.size(1) != m.num_queries || emb.size(2) != m.embed_dim)
    fail(m.proposals_path, "the proposal network returns class embeddings of shape " + shape_of(emb) + ", not [1, " +
                               std::to_string(m.num_queries) + ", " + std::to_string(m.embed_dim) +
                               "] (architecture.num_queries, architecture.embed_dim)");
}

template <typename Impl>
void probe(Impl& impl, const Manifest& m) {
  torch::jit::GraphOptimizerEnabledGuard no_opt(false);
  c10::InferenceMode guard;
  const auto fail = probe_failed;
  {  // text tower: [1, context_length] tokens → [1, E]
    at::Tensor tokens = at::zeros({1, m.context_length}, at::kLong);
    tokens[0][0] = 1;
    tokens[0][1] = 2;
    at::Tensor out;
    try {
      const auto v = impl.clip_text.forward({tokens.to(impl.device)});
      if (v.isTensor()) out = v.toTensor();
    } catch (const std::exception& e) {
      fail(m.clip_text_path, "the text tower does not accept " + std::to_string(m.context_length) +
                                 " tokens (text.tokenizer.context_length): " + strip_backtrace_any(e));
    }
    if (!out.defined() || out.dim() != 2 || out.size(0) != 1 || out.size(1) != m.embed_dim)
      fail(m.clip_text_path, "the text tower does not return [1, " + std::to_string(m.embed_dim) +
                                 "] features (architecture.embed_dim)");
  }
  if (!impl.lazy) probe_proposals(impl, m);
}

}  // namespace

void walk_module(OperatorWalk& walk, const torch::jit::Module& module) {
  for (const auto& named : module.named_modules()) {
    const auto type = named.value.type();
    const std::string where = (named.name.empty() ? std::string("the root module") : "module " + named.name) + " (" +
                              (type->name() ? type->name()->qualifiedName() : std::string("?")) + ")";
    for (const auto& method : named.value.get_methods())
      walk.block(method.graph()->block(), "method " + method.name() + " of " + where);
    for (torch::jit::Function* hook : type->getForwardPreHooks()) walk.function(hook);
    for (torch::jit::Function* hook : type->getForwardHooks()) walk.function(hook);
  }
}

void check_module_operators(const torch::jit::Module& module, const std::string& path) {
  OperatorWalk walk{path, {}};
  walk_module(walk, module);
}

torch::jit::Module load_script_module(const std::string& path, c10::Device device) {
  detail::check_regular_file(path);  // a FIFO or device in place of a module file: refused, not read
  torch::jit::Module module;
  try {
    check_archive_code(path);
    module = torch::jit::load(path, device);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kBadModel, path + ": not a loadable TorchScript module (" + strip_backtrace(e) + ")");
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kBadModel, path + ": not a loadable TorchScript module (" + e.what() + ")");
  }
  if (!module.find_method("forward"))
    throw Error(ErrorCode::kBadModel, path + ": the TorchScript module has no forward() method");
  const auto t0 = std::chrono::steady_clock::now();
  check_module_operators(module, path);  // before any method runs (probe, eval)
  detail::log().debug("{}: operators checked in {:.1f} ms", path,
                      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  module.eval();
  return module;
}

c10::Device parse_device(const std::string& device) {
  const int index = check_device(device);  // the syntax, in one place (the CLI checks with it too)
  if (index < 0) return c10::Device(c10::kCPU);
  if (!torch::cuda::is_available())
    throw Error(ErrorCode::kRuntime, "device '" + device +
                                         "': CUDA is not available (this LibTorch build has no CUDA support "
                                         "or no GPU is visible); use --device cpu");
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (index >= count)
    throw Error(ErrorCode::kRuntime, "device '" + device + "': only " + std::to_string(count) + " GPU(s) visible");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

c10::ScalarType scalar_type(Precision p) {
  switch (p) {
    case Precision::kFp32: return at::kFloat;
    case Precision::kBf16: return at::kBFloat16;
    case Precision::kFp16: return at::kHalf;
    case Precision::kAuto: break;  // resolved before (resolve_precision)
  }
  return at::kFloat;
}

void synchronize(c10::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

struct Modules::Impl {
  c10::Device device{c10::kCPU};
  c10::ScalarType dtype = at::kFloat;         // the requested precision
  c10::ScalarType visual_dtype = at::kFloat;  // what the CLIP visual tower runs in
  std::string proposals_path, clip_visual_path, clip_text_path;
  torch::jit::Module proposals;
  torch::jit::Module clip_visual;
  torch::jit::Module clip_text;
  at::Tensor non_object;  // [1,E] float32
  // Lazily loaded modules (ModelOptions::lazy_modules): loaded, checksum verified and probed on
  // first use. A failed load is retried on the next use (std::call_once does not mark it done).
  const Manifest* manifest = nullptr;  // the Model's, which outlives its Modules
  bool lazy = false;
  std::once_flag proposals_once, visual_once;
  std::atomic<bool> proposals_loaded{false}, visual_loaded{false};

  void ensure_proposals();
  void ensure_visual();
};

Modules::Modules(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Modules::~Modules() = default;

namespace {
// Runs `load` once, on the first call (later calls only check the flag): a lazily loaded module.
template <class F>
void load_once(std::once_flag& once, std::atomic<bool>& loaded, const std::string& dir, const char* what, F&& load) {
  if (loaded.load(std::memory_order_acquire)) return;
  std::call_once(once, [&] {
    const auto t0 = std::chrono::steady_clock::now();
    load();
    loaded.store(true, std::memory_order_release);
    detail::log().info("bundle {}: {} loaded on first use in {:.0f} ms", dir, what,
                       std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  });
}
}  // namespace

void Modules::Impl::ensure_proposals() {
  load_once(proposals_once, proposals_loaded, manifest->dir, "proposal network", [this] {
    verify_file(*manifest, proposals_path);
    proposals = load_module(proposals_path, device);
    probe_proposals(*this, *manifest);
  });
}

void Modules::Impl::ensure_visual() {
  load_once(visual_once, visual_loaded, manifest->dir, "CLIP visual tower", [this] {
    verify_file(*manifest, clip_visual_path);
    clip_visual = load_module(clip_visual_path, device);
    cast_floating_state(clip_visual, visual_dtype);
  });
}

std::unique_ptr<Modules> Modules::load(const Manifest& manifest, c10::Device device, c10::ScalarType dtype,
                                       bool lazy) {
  if (dtype == at::kHalf && device.is_cpu())
    throw Error(ErrorCode::kInvalidArgument,
                "precision fp16 is not supported on the CPU (LibTorch 1.13 has no half-precision CPU kernels "
                "for these layers); use bf16 or fp32");
  check_file_format(manifest);
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->dtype = dtype;
  impl->proposals_path = manifest.proposals_path;
  impl->clip_visual_path = manifest.clip_visual_path;
  impl->clip_text_path = manifest.clip_text_path;
  impl->manifest = &manifest;
  impl->lazy = lazy;
  // Each module's checksum is verified before it is read; the next one's is computed while this
  // one deserialises (one core hashes, the other parses: 1.0 s instead of 1.5 s for R101c here).
  auto unverified = [&manifest](const std::string& path) {
    return std::find(manifest.unverified.begin(), manifest.unverified.end(), path) != manifest.unverified.end();
  };
  auto verify_async = [&](const std::string& path) {
    return std::async(std::launch::async, [&manifest, path, check = unverified(path)] {
      if (check) verify_file(manifest, path);
    });
  };
  if (!lazy) {
    std::future<void> next = verify_async(manifest.proposals_path);
    next.get();
    next = verify_async(manifest.clip_visual_path);
    impl->proposals = load_module(manifest.proposals_path, device);
    next.get();
    next = verify_async(manifest.clip_text_path);
    impl->clip_visual = load_module(manifest.clip_visual_path, device);
    impl->proposals_loaded = impl->visual_loaded = true;
    next.get();
  } else if (unverified(manifest.clip_text_path)) {  // the other two are verified on first use
    verify_file(manifest, manifest.clip_text_path);
  }
  impl->clip_text = load_module(manifest.clip_text_path, device);

  const std::string& buffer = manifest.non_object_buffer;
  if (!impl->clip_text.hasattr(buffer) || !impl->clip_text.attr(buffer).isTensor())
    throw Error(ErrorCode::kBadModel, manifest.clip_text_path + ": no tensor attribute '" + buffer + "'");
  at::Tensor no = impl->clip_text.attr(buffer).toTensor();
  if (no.dim() != 2 || no.size(0) != 1 || no.size(1) != manifest.embed_dim)
    throw Error(ErrorCode::kBadModel, manifest.clip_text_path + ": '" + buffer + "' must have shape [1," +
                                          std::to_string(manifest.embed_dim) + "]");
  // Taken before the cast: the maths outside the modules stays float32 (docs/reference-behaviour.md §5.5).
  impl->non_object = no.to(at::kFloat).clone();
  // Mixed precision: only the CLIP visual tower (≈ 90 % of the FLOPs at full size) runs in the
  // reduced type. The proposal network's mask logits reach the hundreds, so bf16 rounding moves
  // which masks pass the threshold; text features feed every query's logits at temperature 100,
  // so their rounding flips near-tied classes everywhere (measured on the fixture: 77 % argmax
  // agreement with a bf16 text tower, 68 % with bf16 proposals, > 99 % with only the visual
  // tower in bf16). The text tower is cached per class name, so fp32 costs little there.
  impl->visual_dtype = dtype;
  if (!lazy) cast_floating_state(impl->clip_visual, dtype);
  probe(*impl, manifest);
  detail::log().debug("bundle {}: modules loaded on {}; CLIP visual as {}, the rest as float32", manifest.dir,
                      device.str(), c10::toString(dtype));
  return std::unique_ptr<Modules>(new Modules(std::move(impl)));
}

// Graph optimisation is off for the calls: the profiling executor would re-specialise for every
// new image size, and the unoptimised graph runs the same kernels the exporter checked.
std::pair<at::Tensor, at::Tensor> Modules::proposals(const at::Tensor& x) const {
  impl_->ensure_proposals();
  torch::jit::GraphOptimizerEnabledGuard no_opt(false);
  const auto out = impl_->proposals.forward({x.to(impl_->device, at::kFloat)});
  if (!out.isTuple() || out.toTupleRef().elements().size() != 2)
    throw Error(ErrorCode::kRuntime, impl_->proposals_path + ": forward() must return (class_embeddings, mask_logits)");
  const auto& el = out.toTupleRef().elements();
  at::Tensor emb = expect_tensor(el[0], impl_->proposals_path).to(at::kFloat);
  at::Tensor masks = expect_tensor(el[1], impl_->proposals_path).to(at::kFloat);
  if (emb.dim() != 3 || masks.dim() != 4 || emb.size(0) != 1 || masks.size(0) != 1)
    throw Error(ErrorCode::kRuntime, impl_->proposals_path + ": unexpected output shapes");
  return {emb[0], masks[0]};
}

at::Tensor Modules::clip_visual(const at::Tensor& images, const at::Tensor& masks) const {
  impl_->ensure_visual();
  torch::jit::GraphOptimizerEnabledGuard no_opt(false);
  const auto out = impl_->clip_visual.forward(
      {images.to(impl_->device, impl_->visual_dtype), masks.to(impl_->device, impl_->visual_dtype)});
  return expect_tensor(out, impl_->clip_visual_path).to(at::kFloat);
}

at::Tensor Modules::clip_text(const at::Tensor& tokens) const {
  torch::jit::GraphOptimizerEnabledGuard no_opt(false);
  const auto out = impl_->clip_text.forward({tokens.to(impl_->device, at::kLong)});
  return expect_tensor(out, impl_->clip_text_path).to(at::kFloat);
}

namespace {
// The last component of a TorchScript class name ("__torch__.torch.nn.modules.linear.___torch_mangle_3.Linear").
std::string class_basename(const torch::jit::Module& m) {
  const auto type = m.type();
  if (!type || !type->name()) return {};
  return type->name()->name();
}

int round_to_half(torch::jit::Module& root) {
  int count = 0;
  auto round_attr = [&](torch::jit::Module& m, const std::string& name) {
    if (!m.hasattr(name)) return;
    const c10::IValue v = m.attr(name);
    if (!v.isTensor()) return;
    at::Tensor t = v.toTensor();
    if (!t.defined() || !t.is_floating_point()) return;
    t.set_data(t.to(at::kHalf).to(t.scalar_type()));
    ++count;
  };
  for (torch::jit::Module m : root.modules()) {  // root included
    const std::string cls = class_basename(m);
    if (cls == "Linear" || cls == "NonDynamicallyQuantizableLinear" || cls == "Conv1d" || cls == "Conv2d") {
      round_attr(m, "weight");
      round_attr(m, "bias");
    }
    if (cls == "MultiheadAttention")
      for (const char* a : {"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                            "bias_k", "bias_v"})
        round_attr(m, a);
    round_attr(m, "text_projection");
    round_attr(m, "proj");
  }
  return count;
}
}  // namespace

int Modules::round_clip_weights_to_half() {
  impl_->ensure_visual();
  return round_to_half(impl_->clip_visual) + round_to_half(impl_->clip_text);
}

const at::Tensor& Modules::non_object_embedding() const { return impl_->non_object; }
c10::Device Modules::device() const { return impl_->device; }
c10::ScalarType Modules::dtype() const { return impl_->dtype; }
c10::ScalarType Modules::visual_dtype() const { return impl_->visual_dtype; }
c10::ScalarType Modules::text_dtype() const { return at::kFloat; }

}  // namespace ovseg::detail

namespace ovseg {

std::vector<std::string> allowed_bundle_operators() {
  std::set<std::string> sorted(detail::allowed_operators().begin(), detail::allowed_operators().end());
  return {sorted.begin(), sorted.end()};
}

std::vector<std::string> bundle_operators(const std::string& bundle_dir) {
  return detail::translate_errors(bundle_dir, [&] {
    const std::string manifest_path = bundle_dir + "/manifest.json";
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(detail::read_text_file(manifest_path));
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::kBadModel, manifest_path + ": not JSON (" + e.what() + ")");
    }
    if (!m.contains("files") || !m["files"].is_object())
      throw Error(ErrorCode::kBadModel, manifest_path + ": no \"files\" object (not an ovseg bundle?)");
    std::set<std::string> ops;
    for (auto it = m["files"].begin(); it != m["files"].end(); ++it) {
      const std::string& name = it.key();
      if (name.size() < 3 || name.compare(name.size() - 3, 3, ".pt") != 0 || name.find('/') != std::string::npos)
        continue;
      const std::string path = bundle_dir + "/" + name;
      detail::check_regular_file(path);
      torch::jit::Module module;
      try {
        detail::check_archive_code(path);
        module = torch::jit::load(path, c10::Device(c10::kCPU));
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw Error(ErrorCode::kBadModel, path + ": not a loadable TorchScript module (" +
                                              detail::strip_backtrace_any(e) + ")");
      }
      detail::OperatorWalk walk{path, {}, &ops};
      detail::walk_module(walk, module);
    }
    return std::vector<std::string>(ops.begin(), ops.end());
  });
}

}  // namespace ovseg
