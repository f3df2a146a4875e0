// tests/fuzz/checkpoint_fixture.h: the model the checkpoint fuzz target loads into, and a
// snapshot of everything a rejected load must leave unchanged. Shared by fuzz_checkpoint.cpp
// and write_checkpoint_seeds.cpp (which writes the seed corpus with save_checkpoint).
#pragma once

#include <array>
#include <cmath>
#include <optional>
#include <vector>

#include <hitch/hitch.h>

namespace fuzz {

// A tied Embedding + EmbeddingBag (one Parameter, two names) and a Linear, with Adam state after
// one step and a generator with a pending Box-Muller value.
struct CheckpointFixture : hitch::nn::Module {
  hitch::Generator gen{5};
  hitch::Parameter table{"table", hitch::Tensor::randn({4, 3}, gen)};
  hitch::nn::Embedding emb{table};
  hitch::nn::EmbeddingBag bag{table, {.mode = hitch::BagMode::Sum}};
  hitch::nn::Linear proj{3, 2, true, gen};
  hitch::optim::Adam adam{parameters(), {.lr = 0.01}};

  CheckpointFixture() {
    hitch::backward(hitch::sum(proj(bag(hitch::IndexTensor{0, 2, 3}, hitch::IndexTensor{0, 1})) * 1.0f) +
                    hitch::sum(emb(hitch::IndexTensor{1})));
    adam.step();
    adam.zero_grad();
    gen.normal();  // leaves a spare value pending
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    m.module("proj", proj);
  }
};

struct Snapshot {
  std::vector<std::vector<float>> values;
  std::vector<std::uint64_t> versions;
  hitch::optim::StateRecords state;
  std::vector<double> lrs;
  std::array<std::uint64_t, 4> gen_state;
  std::optional<double> spare;

  explicit Snapshot(const CheckpointFixture& f) : gen_state(f.gen.state()), spare(f.gen.spare()) {
    for (const auto& p : f.parameters()) {
      values.push_back(p.value().to_vector());
      versions.push_back(p.impl().storage->version);
    }
    state = f.adam.export_state();
    for (std::size_t g = 0; g < f.adam.num_groups(); ++g) lrs.push_back(f.adam.lr(g));
  }

  // Empty when f is as it was; else what changed.
  std::string diff(const CheckpointFixture& f) const {
    const Snapshot now(f);
    auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
      if (a.size() != b.size()) return false;
      for (std::size_t i = 0; i < a.size(); ++i)
        if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
      return true;
    };
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!same_bits(values[i], now.values[i]) || versions[i] != now.versions[i]) return "a Parameter changed";
    if (state.size() != now.state.size()) return "the optimizer's state changed";
    for (std::size_t i = 0; i < state.size(); ++i) {
      if (!state[i].first.is_same(now.state[i].first) || state[i].second.counts != now.state[i].second.counts)
        return "the optimizer's state changed";
      for (const auto& [name, buf] : state[i].second.buffers)
        if (!now.state[i].second.buffers.contains(name) || !same_bits(buf, now.state[i].second.buffers.at(name)))
          return "the optimizer's state changed";
    }
    if (lrs != now.lrs) return "the optimizer's lr changed";
    if (gen_state != now.gen_state || spare != now.spare) return "the generator changed";
    return "";
  }
};

}  // namespace fuzz
