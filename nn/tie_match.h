// hitch/nn/tie_match.h (internal): the names of a module's Parameters, ties included, and the
// matching of a set of stored tensors plus a tie map against them. Shared by checkpoint files
// (nn/checkpoint.cpp) and in-memory state dicts (nn/state_dict.cpp), so both follow one set of
// tie rules (docs/checkpoints.md, "Ties"):
//  * hitch stores each Parameter once under its first name (named_parameters() order) and maps
//    its other names to that name;
//  * loading finds a Parameter under ANY of its names: through a stored tensor, through a tie, or
//    not at all for the further names of a tie the module declares (the transformers layout: the
//    tied name is simply absent). A Parameter is missing only when none of its names is found;
//  * a tied Parameter stored under two names is accepted when the two tensors are bitwise equal
//    (PyTorch's own state_dict layout); different values, shapes or dtypes are a mismatch naming
//    both;
//  * one stored tensor reaching two separate Parameters of the module is a mismatch (loading would
//    silently tie nothing and copy one table into two).
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <hitch/core/parameter.h>
#include <hitch/nn/module.h>

namespace hitch::nn::detail {

// Every name under which the module holds each Parameter.
struct ModuleNames {
  std::vector<std::pair<std::string, Parameter>> first;    // one per Parameter, named_parameters()
  std::map<std::string, std::vector<std::string>> others;  // first name -> further names (ties)
  std::unordered_map<const void*, std::string> name_of;    // identity -> first name
  // Every name of the Parameter whose first name is `first`, module order: {"emb.weight",
  // "head.weight"}; and the same joined for messages: "'emb.weight' = 'head.weight'".
  std::vector<std::string> all_names(const std::string& first) const;
  std::string label(const std::string& first) const;
};
// Throws what named_parameters() throws (hidden aliases). Names come from the module walk, never
// from Parameter::name().
ModuleNames module_names(const Module& module);

struct StoredTensor {
  std::string dtype;  // "F32" for a state dict; empty: an undefined tensor
  Shape shape;
  std::span<const std::byte> bytes;  // the values, for the bitwise check of a twice-stored tie
};

struct TieMatch {
  std::vector<std::pair<Parameter, std::string>> writes;  // Parameter <- stored tensor name
  std::vector<std::string> missing, unexpected, mismatches;
  // "missing keys 'a', 'b'; unexpected keys 'c'; <mismatch>; ..." or empty when all matched.
  // Without strict, only the mismatches (missing and unexpected keys are the caller's result).
  std::string problems(bool strict = true) const;
};

// The first element at which two F32 byte spans differ bitwise, as "element 4: 0.5 and 0.25"
// ("element 0: nan (bits 0x7fc00001) and nan (bits 0x7fc00002)" when both print alike), or
// empty when they are bitwise equal.
std::string first_difference(std::span<const std::byte> a, std::span<const std::byte> b);

// tensors: stored name -> dtype, shape and bytes; ties: further name -> stored name (every target
// is a key of tensors and no further name is one: the caller checks that). Collects every
// problem; messages call the stored side where ("the file", "the state dict").
TieMatch match_ties(const ModuleNames& names, const std::map<std::string, StoredTensor>& tensors,
                    const std::map<std::string, std::string>& ties, std::string_view where);

}  // namespace hitch::nn::detail
