// docs/snippets/tutorial_graph.cpp: the tape of the seed's model, tied three ways, as Graphviz
// DOT. docs/tutorial.md shows it rendered (docs/images/tutorial_graph.svg, made by the `docs`
// target with `dot -Tsvg`; cmake/DocGraphs.cmake).
//
// The seed (a Q&A answer on tying nn.Embedding and nn.EmbeddingBag) wraps both lookups in a
// module `SharedEmbeddingLayer` with members `shared_embedding` and `embedding_bag` (100 x 32).
// Here both hold one Parameter, as a tie must, and an output projection `head` (nn::Linear around
// the same Parameter, docs/tying.md recipe 3) reads it a third time. The picture shows that
// Parameter as one node, named by all three paths, with an edge from each op that reads it.
//
//   tutorial_graph                 prints the DOT
//   tutorial_graph --write FILE    writes it to FILE
//   tutorial_graph --check FILE    exits 1 unless FILE holds exactly what it would print (the
//                                  ctest doc_tutorial_graph: the committed picture stays current)
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <hitch/hitch.h>

using namespace hitch;

struct SharedEmbeddingLayer : nn::Module {
  nn::Embedding shared_embedding{100, 32};                                        // [100, 32]
  nn::EmbeddingBag embedding_bag{shared_embedding.weight, {.mode = BagMode::Mean}};  // the same Parameter
  nn::Linear head{shared_embedding.weight};                                       // [*, 32] -> [*, 100]
  void members(Members& m) const override {
    m.module("shared_embedding", shared_embedding);
    m.module("embedding_bag", embedding_bag);
    m.module("head", head);
  }
};

static std::string tape_as_dot() {
  SharedEmbeddingLayer model;
  optim::Adam adam(model.parameters(), {.lr = 0.01});  // the walk that names the table by its paths
  const IndexTensor items{3, 17, 42};                                        // one item per example
  const IndexTensor histories({3, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});  // a history bag per example
  const IndexTensor next{4, 18, 43};                                         // the item to predict
  Tensor item = model.shared_embedding(items);        // #1 [3, 32]
  Tensor history = model.embedding_bag(histories);    // #2 [3, 32], the mean of each bag
  Tensor logits = model.head(item + history);         // #3 add, #4 matmul: [3, 100]
  Tensor loss = cross_entropy(logits, next);          // #5 []
  return format_graph(loss, GraphFormat::dot);
}

int main(int argc, char** argv) {
  const std::string dot = tape_as_dot();
  const std::string mode = argc == 3 ? argv[1] : "";
  if (argc == 1) {
    std::cout << dot;
    return 0;
  }
  if (mode == "--write") {
    std::ofstream out(argv[2], std::ios::binary);
    out << dot;
    return out.good() ? 0 : 1;
  }
  if (mode == "--check") {
    std::ifstream in(argv[2], std::ios::binary);
    std::ostringstream committed;
    committed << in.rdbuf();
    if (in && committed.str() == dot) return 0;
    std::cerr << argv[2] << " differs from what tutorial_graph prints now; run the `docs` target "
              << "(cmake --build --preset dev --target docs) and commit docs/images/. It prints:\n"
              << dot;
    return 1;
  }
  std::cerr << "usage: tutorial_graph [--write FILE | --check FILE]\n";
  return 2;
}
