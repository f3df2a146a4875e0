// hitch/nn/tie_match.h (internal): the names of a module's Parameters, ties included, and the
// matching of a set of stored tensors plus a tie map against them. Shared by checkpoint files
// (nn/checkpoint.cpp) and in-memory state dicts (nn/state_dict.cpp), so both follow one set of
// tie rules: each Parameter is stored once under its first name (named_parameters() order), its
// other names map to that name, and loading requires the stored ties to be the module's ties.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/parameter.h"
#include "nn/module.h"

namespace hitch::nn::detail {

// Every name under which the module holds each Parameter.
struct ModuleNames {
  std::vector<std::pair<std::string, Parameter>> first;    // one per Parameter, named_parameters()
  std::map<std::string, std::vector<std::string>> others;  // first name -> further names (ties)
  std::unordered_map<const void*, std::string> name_of;    // identity -> first name
};
// Throws what named_parameters() throws (hidden aliases).
ModuleNames module_names(const Module& module);

struct StoredTensor {
  std::string dtype;  // "F32" for a state dict; empty: an undefined tensor
  Shape shape;
};

struct TieMatch {
  std::vector<std::pair<Parameter, std::string>> writes;  // Parameter <- stored tensor name
  std::vector<std::string> missing, unexpected, mismatches;
  // "missing keys 'a', 'b'; unexpected keys 'c'; <mismatch>; ..." or empty when all matched.
  std::string problems() const;
};

// tensors: stored name -> dtype and shape; ties: further name -> stored name (every target is a
// key of tensors and no further name is one: the caller checks that). Collects every problem;
// messages call the stored side where ("the file", "the state dict").
TieMatch match_ties(const ModuleNames& names, const std::map<std::string, StoredTensor>& tensors,
                    const std::map<std::string, std::string>& ties, std::string_view where);

}  // namespace hitch::nn::detail
