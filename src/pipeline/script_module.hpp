// Loading one TorchScript module file of a bundle, checked before any of its code runs: a bundle
// is a program (models/BUNDLE_FORMAT.md, "A bundle is a program"). Internal header WITH
// torch::jit: only bundle.cpp and sam_model.cpp include it.
#pragma once

#include <string>

#include <torch/script.h>

namespace ovseg::detail {

// A regular file; its archive's code defines no __setstate__ (which torch::jit::load would run);
// loaded; a forward() method; every method, hook and function it calls uses only the operators
// the exporters emit (bundle_operators.inc). Throws Error(kBadModel) naming the file and, for an
// operator, the module, the method and the operator.
torch::jit::Module load_script_module(const std::string& path, c10::Device device);

// The operator check alone, on a loaded module (for tests).
void check_module_operators(const torch::jit::Module& module, const std::string& path);

}  // namespace ovseg::detail
