// tests/parity.h: reader for the PyTorch reference cases in tests/fixtures/parity (format in
// tests/fixtures/parity/FORMAT.md), the tolerance check they use, and the two helpers every
// parity test needs around backward (a fresh leaf per input, a missing gradient as zeros).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <hitch/core/tensor.h>

namespace parity {

struct Case {
  std::string name, kind, file;
  std::map<std::string, std::string> attrs;
  std::map<std::string, hitch::Tensor> floats;         // f32 tensors
  std::map<std::string, hitch::IndexTensor> indices;   // i64 tensors

  bool has(const std::string& key) const { return floats.count(key) || indices.count(key); }
  const std::string& attr(const std::string& key) const;          // throws if absent
  std::optional<std::int64_t> attr_int(const std::string& key) const;  // nullopt for `none`
  std::optional<double> attr_float(const std::string& key) const;      // nullopt for `none` or absent
  const hitch::Tensor& f(const std::string& key) const;
  const hitch::IndexTensor& i(const std::string& key) const;
};

Case load(const std::string& path);
// Every case of that kind in the fixtures folder, sorted by file name.
std::vector<Case> load_kind(const std::string& kind);

// Empty if |got - want| <= 1e-4 + 1e-4 |want| everywhere with equal shapes; otherwise a message
// naming the case, the tensor, the first bad element and both values.
std::string compare(const Case& c, const std::string& what, const hitch::Tensor& got, const hitch::Tensor& want,
                    double atol = 1e-4, double rtol = 1e-4);

// A copy of a case's input that requires grad, so each case differentiates its own leaf.
hitch::Tensor fresh_leaf(const hitch::Tensor& values);

// t's gradient, or zeros of t's shape when backward sent it none (an empty output).
hitch::Tensor grad_or_zeros(const hitch::Tensor& t);

}  // namespace parity
