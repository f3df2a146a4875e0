// tests/state_snapshot.h: everything a refused call must leave as it was, taken before the call
// and compared after it (check()): tensors' or Parameters' values, storage versions and
// gradients; an optimizer's lrs and state; a generator's state and pending normal; the tape; the
// thread count. Used by the error and checkpoint catalogs.
#pragma once

#include <doctest/doctest.h>

#include <array>
#include <optional>
#include <vector>

#include <hitch/hitch.h>

namespace hitch_test {

struct StateSnapshot {
  std::vector<hitch::Tensor> tensors;
  std::vector<std::vector<float>> values, grads;
  std::vector<std::uint64_t> versions;
  std::vector<bool> had_grad;
  const hitch::optim::Optimizer* opt;
  hitch::optim::StateRecords state;
  std::vector<double> lrs;
  const hitch::Generator* gen;
  std::array<std::uint64_t, 4> gen_state{};
  std::optional<double> spare;
  std::size_t tape = hitch::tape_size();
  int threads = hitch::get_num_threads();

  StateSnapshot(std::vector<hitch::Tensor> ts, const hitch::optim::Optimizer* o, const hitch::Generator* g)
      : tensors(std::move(ts)), opt(o), gen(g) {
    for (const hitch::Tensor& t : tensors) {
      values.push_back(t.to_vector());
      versions.push_back(t.impl().storage->version);
      had_grad.push_back(t.impl().grad != nullptr);
      grads.push_back(t.grad().defined() ? t.grad().to_vector() : std::vector<float>{});
    }
    if (opt != nullptr) {
      state = opt->export_state();
      for (std::size_t k = 0; k < opt->num_groups(); ++k) lrs.push_back(opt->lr(k));
    }
    if (gen != nullptr) gen_state = gen->state(), spare = gen->spare();
  }
  StateSnapshot(const std::vector<hitch::Parameter>& ps, const hitch::optim::Optimizer* o, const hitch::Generator* g)
      : StateSnapshot(values_of(ps), o, g) {}

  static std::vector<hitch::Tensor> values_of(const std::vector<hitch::Parameter>& ps) {
    std::vector<hitch::Tensor> out;
    for (const hitch::Parameter& p : ps) out.push_back(p.value());
    return out;
  }

  void check() const {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const hitch::Tensor& t = tensors[i];
      CHECK(t.to_vector() == values[i]);
      CHECK(t.impl().storage->version == versions[i]);
      CHECK((t.impl().grad != nullptr) == had_grad[i]);
      CHECK((t.grad().defined() ? t.grad().to_vector() : std::vector<float>{}) == grads[i]);
    }
    if (opt != nullptr) {
      REQUIRE(opt->num_groups() == lrs.size());
      for (std::size_t g = 0; g < lrs.size(); ++g) CHECK(opt->lr(g) == lrs[g]);
      const hitch::optim::StateRecords now = opt->export_state();
      REQUIRE(now.size() == state.size());
      for (std::size_t i = 0; i < now.size(); ++i) {
        CHECK(now[i].first.is_same(state[i].first));
        CHECK(now[i].second.counts == state[i].second.counts);
        CHECK(now[i].second.buffers == state[i].second.buffers);
      }
    }
    if (gen != nullptr) {
      CHECK(gen->state() == gen_state);
      CHECK(gen->spare() == spare);
    }
    CHECK(hitch::tape_size() == tape);
    CHECK(hitch::get_num_threads() == threads);
  }
};

}  // namespace hitch_test
