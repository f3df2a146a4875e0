// tests/reliability_model.h: the main example's kind of model, small, for the determinism and
// thread tests: one item table tied between an Embedding (the candidate item) and a mean
// EmbeddingBag (the user's history), both sparse, a dense Linear on the history, a dot-product
// logit and BCE with logits; SparseAdam for the table, Adam for the Linear. Everything random
// comes from the seed (parameters, batches, labels).
#pragma once

#include <cstdint>
#include <vector>

#include <hitch/hitch.h>

namespace reliability {

struct Sizes {
  std::int64_t items = 4096, dim = 32, batch = 512, history = 8;  // 2 threads split these
};

class RecModel {
 public:
  RecModel(std::uint64_t seed, Sizes sizes = {})
      : sizes_(sizes),
        gen_(seed),
        table_("items", hitch::Tensor::randn({sizes.items, sizes.dim}, 0.0f, 0.1f, gen_)),
        item_(table_, {.sparse = true}),
        history_(table_, {.mode = hitch::BagMode::Mean, .sparse = true}),
        proj_(sizes.dim, sizes.dim, true, gen_),
        sparse_adam_({table_}, {.lr = 0.01}),
        adam_(proj_.parameters(), {.lr = 0.01}) {}

  // One step on a fresh random batch; returns the loss.
  float step() {
    const std::int64_t B = sizes_.batch, L = sizes_.history;
    std::vector<std::int64_t> hist(static_cast<std::size_t>(B * L)), offsets, targets;
    std::vector<float> labels;
    for (auto& h : hist) h = static_cast<std::int64_t>(gen_.below(static_cast<std::uint64_t>(sizes_.items)));
    for (std::int64_t b = 0; b < B; ++b) {
      offsets.push_back(b * L);
      targets.push_back(static_cast<std::int64_t>(gen_.below(static_cast<std::uint64_t>(sizes_.items))));
      labels.push_back(static_cast<float>(gen_.below(2)));
    }
    const hitch::Tensor u = proj_(history_(hitch::IndexTensor({B * L}, hist), hitch::IndexTensor({B}, offsets)));
    const hitch::Tensor v = item_(hitch::IndexTensor({B}, targets));
    const hitch::Tensor loss = hitch::binary_cross_entropy_with_logits(hitch::sum(u * v, 1), hitch::Tensor({B}, labels));
    hitch::backward(loss);
    sparse_adam_.step();
    adam_.step();
    sparse_adam_.zero_grad();
    adam_.zero_grad();
    return loss.item();
  }

  // Every parameter's values, in parameters() order.
  std::vector<std::vector<float>> state() const {
    std::vector<std::vector<float>> out{table_.value().to_vector()};
    for (const auto& p : proj_.parameters()) out.push_back(p.value().to_vector());
    return out;
  }

 private:
  Sizes sizes_;
  hitch::Generator gen_;
  hitch::Parameter table_;
  hitch::nn::Embedding item_;
  hitch::nn::EmbeddingBag history_;
  hitch::nn::Linear proj_;
  hitch::optim::SparseAdam sparse_adam_;
  hitch::optim::Adam adam_;
};

// Trains a fresh model for steps steps and returns its parameters.
inline std::vector<std::vector<float>> train(std::uint64_t seed, int steps, Sizes sizes = {}) {
  RecModel m(seed, sizes);
  for (int s = 0; s < steps; ++s) m.step();
  return m.state();
}

// Restores the process-wide thread count when a test leaves.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : previous_(hitch::get_num_threads()) { hitch::set_num_threads(n); }
  ~ThreadCount() { hitch::set_num_threads(previous_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

}  // namespace reliability
