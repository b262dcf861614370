// `ovseg info`: a bundle's manifest in words (or as JSON), after loading and verifying it.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::cli {
namespace {

using nlohmann::json;

struct InfoArgs {
  std::string model;
  std::string device = "cpu";
  bool json = false;
  bool operators = false;
};

std::string human_bytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, kUnits[u]);
  return buf;
}

// A JSON value as a short string: strings unquoted, numbers and arrays compact.
std::string str(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

const json& at(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

void line(std::ostringstream& o, const std::string& label, const std::string& value) {
  o << "  " << label;
  for (std::size_t i = label.size(); i < 22; ++i) o << ' ';
  o << value << '\n';
}

std::string describe(const ModelInfo& info) {
  json m = json::object();
  try {
    m = json::parse(info.manifest_json);
  } catch (const json::exception&) {
    // The library has validated the manifest already; fall back to the ModelInfo fields alone.
  }
  std::ostringstream o;
  o << "Model bundle " << info.bundle_dir << "\n";
  line(o, "name", info.name);
  line(o, "format", str(at(m, "format")) + " version " + std::to_string(info.format_version));
  if (!at(m, "created_by").is_null() || !at(m, "created_at").is_null())
    line(o, "created", str(at(m, "created_by")) + ", " + str(at(m, "created_at")));
  const json& src = at(m, "source");
  if (src.is_object()) {
    line(o, "source checkpoint", str(at(src, "checkpoint")));
    line(o, "source sha256", str(at(src, "sha256")));
    line(o, "source config", str(at(src, "config")));
  } else if (!info.source_sha256.empty()) {
    line(o, "source sha256", info.source_sha256);
  }
  line(o, "loaded on", info.device + ", " + info.precision);
  line(o, "this CPU", cpu_features().summary() + "; --precision auto = " +
                          to_string(resolve_precision(Precision::kAuto, "cpu")) + " on the CPU");

  o << "\nArchitecture\n";
  const json& arch = at(m, "architecture");
  line(o, "meta architecture", str(at(arch, "meta_architecture")));
  line(o, "backbone", info.backbone);
  const json& bc = at(arch, "backbone_config");
  if (bc.is_object())
    for (auto it = bc.begin(); it != bc.end(); ++it) line(o, "  " + it.key(), str(it.value()));
  line(o, "queries", std::to_string(info.num_queries));
  line(o, "hidden / mask dim", str(at(arch, "hidden_dim")) + " / " + str(at(arch, "mask_dim")));
  line(o, "embedding dim", std::to_string(info.embed_dim));
  const json& clip = at(arch, "clip");
  line(o, "CLIP model", info.clip_model);
  if (clip.is_object()) {
    line(o, "  image encoder", "ViT, " + str(at(clip, "image_resolution")) + " px input, patch " +
                                   str(at(clip, "patch_size")) + " (grid " + str(at(clip, "grid")) + "), " +
                                   str(at(clip, "vision_layers")) + " layers x " + str(at(clip, "vision_width")) +
                                   " wide, " + str(at(clip, "vision_heads")) + " heads");
    line(o, "  text encoder", str(at(clip, "text_layers")) + " layers x " + str(at(clip, "text_width")) + " wide, " +
                                  str(at(clip, "text_heads")) + " heads, context " + str(at(clip, "context_length")) +
                                  ", vocabulary " + str(at(clip, "vocab_size")));
    line(o, "  embedding dim", str(at(clip, "embed_dim")));
    line(o, "  mask prompts", "depth " + str(at(clip, "prompt_depth")) + ", mask prompt forward " +
                                  str(at(clip, "mask_prompt_fwd")));
  }

  o << "\nPreprocessing\n";
  const json& pre = at(m, "preprocess");
  line(o, "test resize", "shortest edge " + std::to_string(info.min_size_test) + ", longest at most " +
                             std::to_string(info.max_size_test) + ", padded to a multiple of " +
                             str(at(pre, "size_divisibility")));
  line(o, "pixel mean / std", str(at(pre, "pixel_mean")) + " / " + str(at(pre, "pixel_std")));
  line(o, "CLIP mean / std", str(at(pre, "clip_mean255")) + " / " + str(at(pre, "clip_std255")));
  line(o, "region crops", str(at(pre, "region_resolution")) + " px, background fill " + str(at(pre, "mask_fill")) +
                              " " + str(at(pre, "clip_fill")));

  o << "\nInference defaults\n";
  const json& inf = at(m, "inference");
  line(o, "temperature", str(at(inf, "temperature")));
  char buf[160];
  if (info.eval_clip_ensemble)
    std::snprintf(buf, sizeof buf, "mask threshold %g, ensemble weight %g", info.eval_mask_threshold,
                  info.eval_ensemble_weight);
  else
    std::snprintf(buf, sizeof buf, "MaskFormer only (no CLIP branch)");
  line(o, "eval mode", buf);
  std::snprintf(buf, sizeof buf, "mask threshold %g, ensemble weight %g", info.demo_mask_threshold,
                info.demo_ensemble_weight);
  line(o, "demo mode", buf);

  o << "\nText\n";
  const json& text = at(m, "text");
  line(o, "templates", info.template_set + " (" + std::to_string(info.num_templates) + ")");
  const json& templates = at(text, "templates");
  if (templates.is_array())
    for (const auto& t : templates) line(o, "", "\"" + str(t) + "\"");
  const json& tok = at(text, "tokenizer");
  if (tok.is_object())
    line(o, "tokenizer", str(at(tok, "kind")) + ", " + str(at(tok, "file")) + ", context " +
                             str(at(tok, "context_length")));

  o << "\nFiles\n";
  const json& files = at(m, "files");
  if (files.is_object())
    for (auto it = files.begin(); it != files.end(); ++it) {
      const json& b = at(it.value(), "bytes");
      line(o, it.key(), (b.is_number() ? human_bytes(b.get<double>()) : std::string("?")) + "  sha256 " +
                            str(at(it.value(), "sha256")));
    }
  return o.str();
}

}  // namespace

Command add_info_command(CLI::App& parent) {
  auto args = std::make_shared<InfoArgs>();
  Command c;
  c.app = parent.add_subcommand("info", "Describe a model bundle (after verifying its files)");
  c.app->add_option("-m,--model", args->model, "Model bundle directory")->required();
  c.app->add_flag("--json", args->json, "Print the manifest as JSON instead");
  c.app->add_flag("--operators", args->operators,
                  "List the TorchScript operators the bundle's modules use (MaskFormer or SAM bundle), without "
                  "running them; those ovseg does not allow are marked (exit 2 if any)");
  c.app->add_option("-d,--device", args->device, "Device to load the modules on (cpu, cuda, cuda:N)")
      ->capture_default_str();
  c.app->footer(
      "Loads the bundle as segment would (manifest version, file checksums, TorchScript modules),\n"
      "so a bundle that 'info' describes is one that 'segment' can use.\n"
      "\nExamples:\n  ovseg info -m bundles/ovseg-swinB-vitL14\n  ovseg info -m BUNDLE --json | jq .inference");
  c.run = [args] {
    if (args->operators) {
      const auto allowed = allowed_bundle_operators();
      int refused = 0;
      for (const auto& op : bundle_operators(args->model)) {
        const bool ok = std::binary_search(allowed.begin(), allowed.end(), op);
        refused += ok ? 0 : 1;
        std::printf("%s%s\n", op.c_str(), ok ? "" : "  (not allowed: the bundle is refused)");
      }
      return refused ? kExitUsage : kExitOk;
    }
    ModelOptions mo;
    mo.device = args->device;
    mo.text_disk_cache = false;
    const Model model = Model::load(args->model, mo);
    const ModelInfo& info = model.info();
    const std::string out = args->json ? info.manifest_json + (info.manifest_json.empty() || info.manifest_json.back() != '\n' ? "\n" : "")
                                       : describe(info);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return kExitOk;
  };
  return c;
}

}  // namespace ovseg::cli
