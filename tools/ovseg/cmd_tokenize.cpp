// `ovseg tokenize`: token ids of each stdin line, as the text tower would see them.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "ovseg/io.hpp"
#include "ovseg/ovseg.hpp"
#include "ovseg/tokenizer.hpp"

namespace ovseg::cli {
namespace {

struct TokenizeArgs {
  std::string bpe_vocab;
  std::string model;
  int context = 77;
  bool truncate = false;
};

struct TokenizerChoice {
  std::unique_ptr<Tokenizer> tokenizer;
  int context = 77;
};

// The tokenizer a bundle names in manifest.json → text.tokenizer (no model weights are loaded).
TokenizerChoice from_bundle(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  std::string manifest_text;
  try {
    manifest_text = read_text_file(path, std::uint64_t{16} << 20);
  } catch (const Error& e) {
    throw Error(ErrorCode::kBadModel, std::string(e.what()) + " (the bundle manifest)");
  }
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(manifest_text);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kBadModel, path + ": not valid JSON (" + e.what() + ")");
  }
  const auto text = m.find("text");
  if (text == m.end() || !text->is_object() || !text->contains("tokenizer") ||
      !(*text)["tokenizer"].is_object())
    throw Error(ErrorCode::kBadModel, path + ": no text.tokenizer entry");
  const auto& t = (*text)["tokenizer"];
  if (!t.contains("kind") || !t["kind"].is_string() || !t.contains("file") || !t["file"].is_string())
    throw Error(ErrorCode::kBadModel, path + ": text.tokenizer needs string fields kind and file");
  TokenizerChoice c;
  c.tokenizer = make_tokenizer(t["kind"].get<std::string>(), dir + "/" + t["file"].get<std::string>());
  if (t.contains("context_length") && t["context_length"].is_number_integer())
    c.context = t["context_length"].get<int>();
  return c;
}

std::string ids_json(const std::vector<std::int32_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  s += "]\n";
  return s;
}

}  // namespace

Command add_tokenize_command(CLI::App& parent) {
  auto args = std::make_shared<TokenizeArgs>();
  Command c;
  c.app = parent.add_subcommand(
      "tokenize",
      "Tokenize text lines from stdin; print one JSON array of token ids per line (start and end "
      "tokens included, no padding). A line that fails prints null and an error naming it.");
  auto* bpe = c.app->add_option("--bpe-vocab", args->bpe_vocab,
                                "CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz, or plain text)");
  auto* model = c.app->add_option("--model", args->model,
                                  "Model bundle directory: use the tokenizer its manifest names");
  bpe->excludes(model);
  model->excludes(bpe);
  auto* context = c.app->add_option("--context", args->context,
                                    "Context length in tokens (default 77, or the bundle's)")
                      ->check(CLI::Range(2, 1 << 20));
  c.app->add_flag("--truncate", args->truncate,
                  "Cut over-long lines to the context length (last token = end token) instead of "
                  "failing them");

  c.run = [args, context]() -> int {
    TokenizerChoice choice;
    if (!args->model.empty()) {
      choice = from_bundle(args->model);
    } else if (!args->bpe_vocab.empty()) {
      choice.tokenizer = ClipTokenizer::from_bpe_file(args->bpe_vocab);
    } else {
      std::fprintf(stderr,
                   "ovseg tokenize: give the vocabulary with --bpe-vocab FILE or --model BUNDLE_DIR\n");
      return kExitUsage;
    }
    if (context->count() > 0) choice.context = args->context;

    std::ios::sync_with_stdio(false);
    std::string line;
    std::size_t line_no = 0, failed = 0;
    while (std::getline(std::cin, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::string out;
      try {
        out = ids_json(choice.tokenizer->tokenize(line, choice.context, args->truncate));
      } catch (const Error& e) {
        ++failed;
        out = "null\n";
        std::fflush(stdout);
        std::fprintf(stderr, "ovseg tokenize: line %zu: %s\n", line_no, e.what());
      }
      std::fwrite(out.data(), 1, out.size(), stdout);
    }
    std::fflush(stdout);
    if (failed > 0) {
      std::fprintf(stderr, "ovseg tokenize: %zu of %zu lines failed\n", failed, line_no);
      return kExitSomeFailed;
    }
    return kExitOk;
  };
  return c;
}

}  // namespace ovseg::cli
