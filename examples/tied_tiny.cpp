// examples/tied_tiny.cpp: the smallest tied model. One item table is read by two paths, an
// Embedding lookup (the candidate item) and an EmbeddingBag (a user's history); the target is 1
// when the candidate belongs to the same cluster as the history, else 0. Both paths' gradients
// are added into the table's one gradient, and Adam keeps one state for it.
//
//   ./tied_tiny [--steps N] [--seed S]
#include <CLI/CLI.hpp>

#include <hitch/hitch.h>

using namespace hitch;

int main(int argc, char** argv) {
  CLI::App app{"Trains a tiny model whose one item table is read by an Embedding and an EmbeddingBag."};
  int steps = 200;
  std::uint64_t seed = 1;
  app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);

  constexpr std::int64_t items = 40, dim = 8, batch = 16, history = 4, clusters = 4;
  Generator gen(seed);
  Parameter table("items", Tensor::randn({items, dim}, 0.0f, 0.1f, gen));
  nn::Embedding candidate(table);
  nn::EmbeddingBag bag(table, {.mode = BagMode::Mean});
  optim::Adam adam({table}, {.lr = 0.05});

  // Item i belongs to cluster i % clusters.
  auto make_batch = [&](IndexTensor& cand, IndexTensor& hist, Tensor& target) {
    std::vector<std::int64_t> c(batch), h(batch * history);
    std::vector<float> t(batch);
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto cluster = static_cast<std::int64_t>(gen.below(clusters));
      for (std::int64_t l = 0; l < history; ++l)
        h[static_cast<std::size_t>(b * history + l)] = cluster + clusters * static_cast<std::int64_t>(gen.below(items / clusters));
      const bool positive = gen.below(2) == 0;
      const auto cand_cluster = positive ? cluster : (cluster + 1 + static_cast<std::int64_t>(gen.below(clusters - 1))) % clusters;
      c[static_cast<std::size_t>(b)] = cand_cluster + clusters * static_cast<std::int64_t>(gen.below(items / clusters));
      t[static_cast<std::size_t>(b)] = positive ? 1.0f : 0.0f;
    }
    cand = IndexTensor({batch}, c);
    hist = IndexTensor({batch, history}, h);
    target = Tensor({batch}, t);
  };

  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    IndexTensor cand, hist;
    Tensor target;
    make_batch(cand, hist, target);
    Tensor logits = sum(candidate(cand) * bag(hist), 1);  // <item, mean of history>
    Tensor loss = binary_cross_entropy_with_logits(logits, target);
    if (step == 0) fmt::print("The recorded tape of one step:\n{}\n", format_graph(loss));
    backward(loss);
    adam.step();
    adam.zero_grad();
    const double l = loss.item();
    if (step == 0) first = l;
    last = l;
    if (step % 50 == 0 || step == steps - 1) fmt::print("step {:4d}  loss {:.4f}\n", step, l);
  }
  fmt::print("parameters: {} (the tied table, listed once); optimizer states: {}\n", bag.parameters().size() , adam.state_size());
  fmt::print("loss {:.4f} -> {:.4f}\n", first, last);
  return last < first ? 0 : 1;
}
