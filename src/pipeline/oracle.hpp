// The oracles of the paper's §3 analysis inside the pipeline (the public entry point,
// eval::segment_with_oracle, is declared in ovseg/eval.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ovseg/eval.hpp"
#include "ovseg/ovseg.hpp"

namespace ovseg::detail {

using eval::GroundTruthView;
using eval::Oracle;
using eval::parse_oracle;
using eval::segment_with_oracle;
}  // namespace ovseg::detail
