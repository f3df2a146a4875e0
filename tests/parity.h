// tests/parity.h: reader for the PyTorch reference cases in tests/fixtures/parity (format in
// tests/fixtures/parity/FORMAT.md) and the tolerance check they use.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

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

}  // namespace parity
