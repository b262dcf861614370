// Helpers of the text tests: scratch directories, running /usr/bin/python3 as an independent
// oracle, and the ADE-847 × "vild" prompt list.
#pragma once

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/test_env.hpp"

namespace ovseg::test {

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline bool have_python() { return std::filesystem::exists(python()); }

// Runs `script` with python3 as `python3 script.py ARGS...` in `dir`; returns the exit code.
inline int run_python(const TempDir& dir, const std::string& script, const std::string& args) {
  const std::string path = dir.file("script.py");
  write_text(path, script);
  const std::string cmd = "'" + python() + "' '" + path + "' " + args;
  return std::system(cmd.c_str());
}

// Python reads in.json (a list of strings), applies `expr` (a Python expression of `t`) to each
// and writes the list of results; the results come back as JSON.
inline nlohmann::json python_map(const TempDir& dir, const std::vector<std::string>& inputs,
                                 const std::string& imports, const std::string& expr) {
  write_text(dir.file("in.json"), nlohmann::json(inputs).dump());
  const std::string script = "import json, sys\n" + imports +
                             "\nins = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                             "outs = [(" + expr + ") for t in ins]\n"
                             "json.dump(outs, open(sys.argv[2], 'w', encoding='utf-8'))\n";
  const int rc = run_python(dir, script, "'" + dir.file("in.json") + "' '" + dir.file("out.json") + "'");
  if (rc != 0) return nlohmann::json();
  return nlohmann::json::parse(read_text(dir.file("out.json")));
}

inline std::string clip_bpe_path() { return shared_dir() + "/bpe_simple_vocab_16e6.txt.gz"; }

// The 847 × 14 prompts of the ADE-847 benchmark (docs/reference-behaviour.md §5.1-5.2), read from the shared files.
inline std::vector<std::string> ade847_prompts() {
  const auto classes = nlohmann::json::parse(read_text(shared_dir() + "/class_lists.json"))["ade847"];
  const auto templates = nlohmann::json::parse(read_text(shared_dir() + "/text_templates.json"))["vild"];
  std::vector<std::string> prompts;
  for (const auto& c : classes) {
    for (const auto& t : templates) {
      std::string s = t.get<std::string>();
      const auto pos = s.find("{}");
      s.replace(pos, 2, c.get<std::string>());
      prompts.push_back(s);
    }
  }
  return prompts;
}

}  // namespace ovseg::test
