// examples/seed_recipes.cpp: the three recipes of the Q&A this project started from ("How do I
// tie embeddings between nn.Embedding and nn.EmbeddingBag?"), written with hitch:
//
//   1. sharing directly          one Embedding, an EmbeddingBag built around its weight
//   2. initialise, then share    a table initialised uniform(-0.1, 0.1), both modules around it
//   3. a wrapper module          SharedEmbeddingLayer holding both lookups
//
// Each recipe prints the shapes and proves the tie: both modules hold ONE Parameter (same
// identity, listed once by parameters()), and its gradient from a loss over both paths equals
// the sum of the gradients each path gives alone. The program exits with status 1 if a proof
// fails. The recipe's own `EmbeddingBag.from_pretrained(emb.weight, freeze=False)` makes a second
// Parameter over the same storage: hitch refuses that (shown at the end); see alias_pitfall.cpp
// for what it does to training.
//
// The original recipe 1 passes 2-D input [3, 4] together with offsets [0, 4, 8]; PyTorch rejects
// that ("if input is 2D, then offsets has to be None"), and so does hitch. The intent (three bags
// of four) is written both ways here: 1-D input [12] with offsets, or 2-D input without.
// Left out: training (see alias_pitfall.cpp and grad_accumulation.cpp).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

struct Config {
  std::int64_t num_embeddings = 100;
  std::int64_t embedding_dim = 32;
  std::uint64_t seed = 0;
  double tolerance = 1e-6;
};

// The recipe's test data: 5 single indices and 3 sequences of 4 indices.
struct Batch {
  IndexTensor indices;    // [5]
  IndexTensor sequences;  // [3, 4]: 2-D form, one bag per row
  IndexTensor flat;       // [12]:   1-D form ...
  IndexTensor offsets;    // [3]:    ... with offsets [0, 4, 8]
};

Batch make_batch(std::int64_t n, Generator& gen) {
  auto draw = [&](Shape shape) {
    std::vector<std::int64_t> v(static_cast<std::size_t>(numel_of(shape)));
    for (auto& x : v) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(n)));
    return IndexTensor(std::move(shape), std::move(v));
  };
  Batch b;
  b.indices = draw({5});
  b.sequences = draw({3, 4});
  b.sequences.data()[5] = b.indices[0];  // so that at least one row is read by both paths
  b.flat = IndexTensor({12}, {b.sequences.values().begin(), b.sequences.values().end()});
  b.offsets = IndexTensor{0, 4, 8};
  return b;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
  return m;
}

// The three facts that make a tie, checked for one table and the two lookups that use it:
//   a) the bag holds the Embedding's Parameter itself, and a module holding both lists it once;
//   b) the 1-D (offsets) and 2-D forms of the bag agree;
//   c) the table's gradient from loss = L_emb + L_bag equals grad(L_emb) + grad(L_bag), each
//      computed alone (the losses are mean squares, so each path's gradient is non-trivial).
bool prove_tie(const std::string& recipe, const nn::Embedding& emb, const nn::EmbeddingBag& bag,
               const nn::Module& holder, const Batch& batch, double tolerance) {
  Parameter table = emb.weight;
  const auto named = holder.named_parameters();
  fmt::print("  bag.weight is emb.weight: {}; parameters() of the holder: {} (", bag.weight.is_same(emb.weight),
             named.size());
  for (std::size_t i = 0; i < named.size(); ++i) fmt::print("{}{}", i ? ", " : "", named[i].first);
  fmt::print(")\n");

  const Tensor single = emb(batch.indices);
  const Tensor bags_1d = bag(batch.flat, batch.offsets);
  const Tensor bags_2d = bag(batch.sequences);
  fmt::print("  Embedding    indices {} -> {}\n", shape_str(batch.indices.shape()), shape_str(single.shape()));
  fmt::print("  EmbeddingBag input {} + offsets {} -> {}\n", shape_str(batch.flat.shape()),
             shape_str(batch.offsets.shape()), shape_str(bags_1d.shape()));
  fmt::print("  EmbeddingBag input {} (no offsets) -> {}\n", shape_str(batch.sequences.shape()),
             shape_str(bags_2d.shape()));
  const double form_diff = max_abs_diff(bags_1d, bags_2d);
  std::vector<std::int64_t> shared;
  for (std::int64_t r : batch.indices.values())
    if (std::find(batch.flat.values().begin(), batch.flat.values().end(), r) != batch.flat.values().end() &&
        std::find(shared.begin(), shared.end(), r) == shared.end())
      shared.push_back(r);

  table.zero_grad(true);
  backward(mean(square(emb(batch.indices))));
  const Tensor g_emb = table.grad().clone();
  table.zero_grad(true);
  backward(mean(square(bag(batch.flat, batch.offsets))));
  const Tensor g_bag = table.grad().clone();
  table.zero_grad(true);
  backward(mean(square(emb(batch.indices))) + mean(square(bag(batch.flat, batch.offsets))));
  const Tensor g_both = table.grad();
  const double sum_diff = max_abs_diff(g_both, g_emb + g_bag);
  table.zero_grad(true);

  const bool one_parameter = bag.weight.is_same(emb.weight) && named.size() == 1;
  const bool ok = one_parameter && form_diff == 0.0 && sum_diff <= tolerance;
  fmt::print("  1-D and 2-D bag forms agree: max |diff| = {:.3g}\n", form_diff);
  fmt::print("  grad(both paths) vs grad(Embedding alone) + grad(EmbeddingBag alone): max |diff| = {:.3g}\n"
             "    (rows read by both paths: {})\n",
             sum_diff, fmt::join(shared, ", "));
  fmt::print("  {}: {}\n\n", recipe, ok ? "tied (one Parameter; its gradient is the sum of both paths)" : "NOT TIED");
  return ok;
}

// Holds a set of modules so parameters() can be asked about all of them together.
struct Pair : nn::Module {
  const nn::Module& a;
  const nn::Module& b;
  Pair(const nn::Module& first, const nn::Module& second) : a(first), b(second) {}
  void members(Members& m) const override {
    m.module("embedding", a);
    m.module("embedding_bag", b);
  }
};

// Recipe 3's wrapper. The bag is built around the Embedding's Parameter, so the tie is made
// once, in the constructor, and parameters() lists the table once.
class SharedEmbeddingLayer : public nn::Module {
 public:
  SharedEmbeddingLayer(std::int64_t num_embeddings, std::int64_t embedding_dim, Generator& gen)
      : shared_embedding(num_embeddings, embedding_dim, {}, gen),
        embedding_bag(shared_embedding.weight, {.mode = BagMode::Mean}) {}

  // indices [S...] -> [S..., D]; sequences [L] with offsets [B] -> [B, D].
  std::pair<Tensor, Tensor> forward(const IndexTensor& indices, const IndexTensor& sequences,
                                    const IndexTensor& offsets) const {
    return {shared_embedding(indices), embedding_bag(sequences, offsets)};
  }
  void members(Members& m) const override {
    m.module("shared_embedding", shared_embedding);
    m.module("embedding_bag", embedding_bag);
  }

  nn::Embedding shared_embedding;
  nn::EmbeddingBag embedding_bag;
};

int run(const Config& cfg) {
  Generator gen(cfg.seed);
  const Batch batch = make_batch(cfg.num_embeddings, gen);
  bool ok = true;

  fmt::print("Recipe 1: sharing directly\n");
  {
    nn::Embedding shared_embedding(cfg.num_embeddings, cfg.embedding_dim, {}, gen);
    // PyTorch: EmbeddingBag.from_pretrained(shared_embedding.weight, freeze=False), whose mode
    // defaults to 'mean'. hitch: pass the Parameter itself.
    nn::EmbeddingBag embedding_bag(shared_embedding.weight, {.mode = BagMode::Mean});
    ok &= prove_tie("recipe 1", shared_embedding, embedding_bag, Pair(shared_embedding, embedding_bag), batch,
                    cfg.tolerance);
  }

  fmt::print("Recipe 2: custom initialisation, then sharing\n");
  {
    Parameter table("table", Tensor::uniform({cfg.num_embeddings, cfg.embedding_dim}, -0.1f, 0.1f, gen));
    nn::Embedding shared_embedding(table);
    nn::EmbeddingBag embedding_bag(table, {.mode = BagMode::Mean});
    const auto [lo, hi] = std::minmax_element(table.data(), table.data() + table.numel());
    fmt::print("  table initialised in [{:.4f}, {:.4f}] before both modules were built around it\n", *lo, *hi);
    ok &= prove_tie("recipe 2", shared_embedding, embedding_bag, Pair(shared_embedding, embedding_bag), batch,
                    cfg.tolerance);
  }

  fmt::print("Recipe 3: a wrapper module\n");
  {
    SharedEmbeddingLayer layer(cfg.num_embeddings, cfg.embedding_dim, gen);
    const auto [single, seq] = layer.forward(batch.indices, batch.flat, batch.offsets);
    fmt::print("  forward(indices {}, sequences {}, offsets {}) -> {} and {}\n", shape_str(batch.indices.shape()),
               shape_str(batch.flat.shape()), shape_str(batch.offsets.shape()), shape_str(single.shape()),
               shape_str(seq.shape()));
    ok &= prove_tie("recipe 3", layer.shared_embedding, layer.embedding_bag, layer, batch, cfg.tolerance);
  }

  fmt::print("What the recipe wrote, and hitch refuses\n");
  {
    nn::Embedding emb(cfg.num_embeddings, cfg.embedding_dim, {}, gen);
    try {
      nn::EmbeddingBag bag(emb.weight);
      bag(batch.sequences, batch.offsets);  // recipe 1's call: 2-D input with offsets
      fmt::print("  2-D input with offsets was accepted (unexpected)\n");
      ok = false;
    } catch (const Error& e) {
      fmt::print("  2-D input with offsets:\n    {}\n", e.what());
    }
    // from_pretrained(emb.weight): a second Parameter over the same storage. hitch makes it
    // only through Parameter::alias_of, and modules and optimizers refuse it without allow_alias().
    nn::EmbeddingBag aliased(Parameter::alias_of(emb.weight, "bag.weight"));
    try {
      Pair(emb, aliased).parameters();
      fmt::print("  the alias was accepted (unexpected)\n");
      ok = false;
    } catch (const Error& e) {
      fmt::print("  a second Parameter over the same storage (the from_pretrained pattern):\n    {}\n", e.what());
    }
  }

  fmt::print("\n{}\n", ok ? "All three recipes are tied." : "FAILED: a recipe is not tied (see above).");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"The three weight-tying recipes of the seed Q&A, written with hitch; each proves its tie."};
  app.add_option("--num-embeddings", cfg.num_embeddings, "rows of the shared table")->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--embedding-dim", cfg.embedding_dim, "columns of the shared table")->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--seed", cfg.seed, "seed of the generator for tables and indices")->capture_default_str();
  app.add_option("--tolerance", cfg.tolerance, "largest accepted |grad(both) - sum of per-path grads|")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(cfg);
  } catch (const std::exception& e) {
    fmt::print(stderr, "seed_recipes: {}\n", e.what());
    return 2;
  }
}
