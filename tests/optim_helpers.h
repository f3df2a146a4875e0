// tests/optim_helpers.h: setting a Parameter's gradient by hand (no ops needed) and comparing
// float values with double references, for the optimizer tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/core/grad.h>
#include <hitch/core/parameter.h>

namespace optim_test {

// Replaces p's gradient with a dense one holding values.
inline void set_dense_grad(hitch::Parameter& p, const std::vector<float>& values) {
  auto grad = std::make_shared<hitch::Grad>(p.shape());
  grad->add(hitch::Tensor(p.shape(), values));
  p.impl().grad = grad;
}

// Replaces p's gradient with a row-sparse one (uncoalesced: rows may repeat), as a lookup with
// .sparse = true leaves it. values holds rows.size() rows.
inline void set_sparse_grad(hitch::Parameter& p, const std::vector<std::int64_t>& rows,
                            const std::vector<float>& values) {
  auto grad = std::make_shared<hitch::Grad>(p.shape());
  grad->add_rows(rows, values, true);
  p.impl().grad = grad;
}

inline std::vector<float> values_of(const hitch::Parameter& p) {
  return {p.data(), p.data() + p.numel()};
}

// Every element within atol + rtol * |want|; names the first element that is not.
inline void check_close(const std::vector<float>& got, const std::vector<double>& want, double atol = 2e-6,
                        double rtol = 2e-6, const std::string& what = "") {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what << " element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::fabs(static_cast<double>(got[i]) - want[i]) <= atol + rtol * std::fabs(want[i]));
  }
}

}  // namespace optim_test
