// tests/parity.cpp: parity case reader (see parity.h).
#include "parity.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace parity {

const std::string& Case::attr(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) throw std::runtime_error(name + ": no attr " + key);
  return it->second;
}
std::optional<std::int64_t> Case::attr_int(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second == "none") return std::nullopt;
  return std::stoll(it->second);
}
std::optional<double> Case::attr_float(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second == "none") return std::nullopt;
  return std::stod(it->second);
}
const hitch::Tensor& Case::f(const std::string& key) const {
  auto it = floats.find(key);
  if (it == floats.end()) throw std::runtime_error(name + ": no f32 tensor " + key);
  return it->second;
}
const hitch::IndexTensor& Case::i(const std::string& key) const {
  auto it = indices.find(key);
  if (it == indices.end()) throw std::runtime_error(name + ": no i64 tensor " + key);
  return it->second;
}

Case load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  Case c;
  c.file = path;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string word;
    ls >> word;
    if (word == "case") {
      ls >> c.name;
    } else if (word == "kind") {
      ls >> c.kind;
    } else if (word == "attr") {
      std::string key, value;
      ls >> key >> value;
      c.attrs[key] = value;
    } else if (word == "tensor") {
      std::string name, dtype;
      std::size_t ndim = 0;
      ls >> name >> dtype >> ndim;
      hitch::Shape shape(ndim);
      for (auto& s : shape) ls >> s;
      std::string values;
      std::getline(in, values);
      std::istringstream vs(values);
      const auto n = static_cast<std::size_t>(hitch::numel_of(shape));
      if (dtype == "f32") {
        std::vector<float> v(n);
        for (auto& x : v) vs >> x;
        c.floats.emplace(name, hitch::Tensor(shape, std::move(v)));
      } else {
        std::vector<std::int64_t> v(n);
        for (auto& x : v) vs >> x;
        c.indices.emplace(name, hitch::IndexTensor(shape, std::move(v)));
      }
      if (vs.fail()) throw std::runtime_error(path + ": bad values for " + name);
    }
  }
  return c;
}

std::vector<Case> load_kind(const std::string& kind) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(HITCH_FIXTURES_DIR "/parity"))
    if (e.path().extension() == ".case") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::vector<Case> out;
  for (const auto& f : files) {
    Case c = load(f);
    if (c.kind == kind) out.push_back(std::move(c));
  }
  return out;
}

std::string compare(const Case& c, const std::string& what, const hitch::Tensor& got, const hitch::Tensor& want,
                    double atol, double rtol) {
  if (!got.defined()) return c.name + ": " + what + ": no tensor computed";
  if (got.shape() != want.shape())
    return c.name + ": " + what + ": shape " + hitch::shape_str(got.shape()) + " but expected " +
           hitch::shape_str(want.shape());
  for (std::int64_t k = 0; k < want.numel(); ++k) {
    const double g = got.data()[k], w = want.data()[k];
    if (!(std::abs(g - w) <= atol + rtol * std::abs(w)))
      return c.name + ": " + what + "[" + std::to_string(k) + "] = " + std::to_string(g) + " but expected " +
             std::to_string(w);
  }
  return {};
}

hitch::Tensor fresh_leaf(const hitch::Tensor& values) {
  hitch::Tensor t = values.clone();
  t.requires_grad_(true);
  return t;
}

hitch::Tensor grad_or_zeros(const hitch::Tensor& t) {
  return t.grad().defined() ? t.grad() : hitch::Tensor::zeros(t.shape());
}

}  // namespace parity
