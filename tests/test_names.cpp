// Parameter names (issue 14, part 3): a Parameter held by a module tree is named by its dotted
// path ("emb.weight"), a tied one by all of them ("emb.weight = bag.weight = head.weight"), in
// format_graph, optimizer errors and checkpoint errors; keys stay single dotted paths; a walk
// from a submodule keeps the whole model's names (nn/module.h, core/parameter.h).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <hitch/hitch.h>

using namespace hitch;

namespace {

// The three-way tie of docs/tying.md: a lookup, a bag and an output projection over one table.
struct ThreeWay : nn::Module {
  nn::Embedding emb{10, 4};
  nn::EmbeddingBag bag{emb.weight, {.mode = BagMode::Sum}};
  nn::Linear head{emb.weight, Parameter("bias", Tensor::zeros({10}))};  // weight tied, bias own
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    m.module("head", head);
  }
};

const std::string kTied = "emb.weight = bag.weight = head.weight";

// Another root holding a table under a path that is not a suffix of ThreeWay's.
struct Other : nn::Module {
  nn::Embedding lookup;
  explicit Other(Parameter t) : lookup(std::move(t)) {}
  void members(Members& m) const override { m.module("lookup", lookup); }
};

// The from_pretrained pitfall: bag holds a second Parameter over emb's storage.
struct Aliased : nn::Module {
  nn::Embedding emb{5, 3};
  nn::EmbeddingBag bag{Parameter::alias_of(emb.weight, "weight")};
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
  }
};

}  // namespace

TEST_CASE("names: a module walk names each Parameter by its dotted paths, a tied one by all of them") {
  ThreeWay m;
  Parameter loose("loose", Tensor::zeros({2}));  // no module holds it
  CHECK(m.emb.weight.name() == "weight");         // what nn::Embedding made it with, until a walk
  CHECK(m.head.bias.name() == "bias");
  CHECK(m.emb.weight.module_paths().empty());

  const std::vector<Parameter> params = m.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name() == kTied);
  CHECK(params[0].module_paths() == std::vector<std::string>{"emb.weight", "bag.weight", "head.weight"});
  CHECK(params[1].name() == "head.bias");
  CHECK(loose.name() == "loose");

  // Keys are single dotted paths, never the joined label.
  const auto named = m.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "emb.weight");
  CHECK(named[1].first == "head.bias");
  const nn::StateDict sd = nn::state_dict(m);
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd.tensors) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"emb.weight", "head.bias"});
  CHECK(sd.ties == std::map<std::string, std::string>{{"bag.weight", "emb.weight"}, {"head.weight", "emb.weight"}});
  nn::load_state_dict(m, sd);  // the keys still match
}

TEST_CASE("names: every module walk names (zero_grad, requires_grad_, an optimizer from parameters())") {
  {
    ThreeWay m;
    m.zero_grad();
    CHECK(m.emb.weight.name() == kTied);
  }
  {
    ThreeWay m;
    m.requires_grad_(true);
    CHECK(m.emb.weight.name() == kTied);
  }
  {
    ThreeWay m;
    optim::SGD sgd(m.parameters(), {.lr = 0.1});
    CHECK(sgd.params(0)[0].name() == kTied);
    CHECK(sgd.params(0)[1].name() == "head.bias");
  }
}

TEST_CASE("names: a walk from a submodule keeps the whole model's longer names, another root replaces them") {
  ThreeWay m;
  (void)m.parameters();
  (void)m.emb.parameters();   // "weight": a suffix of "emb.weight"
  (void)m.head.parameters();  // "weight", "bias"
  (void)m.head.named_parameters();
  CHECK(m.emb.weight.name() == kTied);
  CHECK(m.head.bias.name() == "head.bias");
  CHECK(m.head.named_parameters()[0].first == "weight");  // the submodule's own key is unchanged

  // A model walked only through a submodule so far is named by that walk, then by the whole model.
  ThreeWay fresh;
  (void)fresh.head.parameters();
  CHECK(fresh.emb.weight.name() == "weight");
  CHECK(fresh.head.bias.name() == "bias");
  (void)fresh.parameters();
  CHECK(fresh.emb.weight.name() == kTied);

  // Another model holding the same table under another path renames it; walking m renames back.
  Other other(m.emb.weight);
  (void)other.parameters();
  CHECK(m.emb.weight.name() == "lookup.weight");
  (void)m.parameters();
  CHECK(m.emb.weight.name() == kTied);

  // Untying changes the names at the next walk (the paths are not suffixes of the old ones).
  Parameter old_table = m.emb.weight;
  m.head.weight = Parameter("weight", Tensor::zeros({10, 4}));
  (void)m.parameters();
  CHECK(old_table.name() == "emb.weight = bag.weight");
  CHECK(m.head.weight.name() == "head.weight");
}

TEST_CASE("names: a walk from the module that holds a Parameter directly keeps the name it was made with") {
  // A new user's stumble: Parameter("t") wrapped in an Embedding was renamed "weight" by the
  // Embedding's own requires_grad_(); one undotted path says less than the made-with name.
  nn::Embedding solo(Parameter("t", Tensor::zeros({4, 2})));
  solo.requires_grad_(true);
  (void)solo.parameters();
  CHECK(solo.weight.name() == "t");
  CHECK(solo.weight.module_paths().empty());
  // ... and after a model's walk, a walk from that module keeps the model's longer names.
  Other model(solo.weight);
  (void)model.parameters();
  CHECK(model.lookup.weight.name() == "lookup.weight");
  (void)model.lookup.parameters();
  CHECK(model.lookup.weight.name() == "lookup.weight");
  // Two names in one module are a tie, named even without dots.
  struct TwoNames : nn::Module {
    Parameter p{"p", Tensor::zeros({2})};
    void members(Members& m) const override {
      m.param("a", p);
      m.param("b", p);
    }
  } two;
  (void)two.parameters();
  CHECK(two.p.name() == "a = b");
}

TEST_CASE("names: a refused walk names both aliases by their paths and renames nothing") {
  Aliased m;
  CHECK_THROWS_WITH_AS(m.parameters(),
                       "Module::parameters: Parameters 'emb.weight' (position 0) and 'bag.weight' (position 1) are "
                       "two distinct Parameters over the same storage, so they would get two gradients and two "
                       "optimizer states; to tie them, pass the same Parameter to both modules (to study the pitfall "
                       "on purpose, call allow_alias() on the alias)",
                       hitch::Error);
  CHECK(m.emb.weight.name() == "weight");
  CHECK(m.bag.weight.name() == "weight");
  CHECK(m.emb.weight.module_paths().empty());
}

TEST_CASE("names: an optimizer given a tied table twice names all its paths") {
  ThreeWay m;
  (void)m.parameters();
  const std::string tail = "; pass each Parameter once (a tied Parameter is one Parameter)";
  CHECK_THROWS_WITH_AS(optim::Adam({m.emb.weight, m.head.weight}),
                       ("Adam: Parameter '" + kTied + "' appears twice: group 0 position 0 and group 0 position 1" +
                        tail)
                           .c_str(),
                       hitch::Error);
  // Groups built from submodules (walks that keep the whole model's names).
  using Group = optim::ParamGroup<optim::AdamOptions>;
  CHECK_THROWS_WITH_AS(optim::Adam(std::vector<Group>{{.params = m.emb.parameters()}, {.params = m.head.parameters()}}),
                       ("Adam: Parameter '" + kTied + "' appears twice: group 0 position 0 and group 1 position 0" +
                        tail)
                           .c_str(),
                       hitch::Error);
  CHECK(m.emb.weight.name() == kTied);
}

TEST_CASE("names: format_graph shows a three-way tie as one Parameter with all its names") {
  std::string graph, dot;
  std::thread fresh([&] {  // a fresh thread: its node numbers start at 1
    ThreeWay m;
    optim::Adam adam(m.parameters(), {.lr = 0.01});
    Tensor e = m.emb(IndexTensor{1, 2});                          // #1 [2,4]
    Tensor b = m.bag(IndexTensor({2, 2}, {3, 4, 5, 6}));          // #2 [2,4]
    Tensor loss = sum(m.head(e + b));                             // #3 add, #4 matmul, #5 add (bias), #6 sum
    graph = format_graph(loss);
    dot = format_graph(loss, GraphFormat::dot);
  });
  fresh.join();
  const std::string p = "Parameter '" + kTied + "' [10,4]";
  CHECK(graph == "#6 sum -> []  <- #5\n"
                 "#5 add -> [2,10]  <- #4, Parameter 'head.bias' [10]\n"
                 "#4 matmul -> [2,10]  <- #3, " + p + "\n"
                 "#3 add -> [2,4]  <- #1, #2\n"
                 "#2 embedding_bag -> [2,4]  <- " + p + "\n"
                 "#1 embedding -> [2,4]  <- " + p + "\n"
                 "Parameters reached: 'head.bias' [10] '" + kTied + "' [10,4]\n");  // in the order met
  // In DOT the table is one node (l2) with an edge from each of the three ops that read it.
  CHECK(dot == "digraph hitch {\n"
               "  node [fontname=\"Helvetica\", fontsize=11];\n"
               "  n6 [label=\"#6 sum\\n[]\"];\n"
               "  n6 -> n5;\n"
               "  n5 [label=\"#5 add\\n[2,10]\"];\n"
               "  n5 -> n4;\n"
               "  l1 [shape=box, style=filled, fillcolor=lightblue, label=\"head.bias\\n[10]\"];\n"
               "  n5 -> l1;\n"
               "  n4 [label=\"#4 matmul\\n[2,10]\"];\n"
               "  n4 -> n3;\n"
               "  l2 [shape=box, style=filled, fillcolor=lightblue, label=\"" + kTied + "\\n[10,4]\"];\n"
               "  n4 -> l2;\n"
               "  n3 [label=\"#3 add\\n[2,4]\"];\n"
               "  n3 -> n1;\n"
               "  n3 -> n2;\n"
               "  n2 [label=\"#2 embedding_bag\\n[2,4]\"];\n"
               "  n2 -> l2;\n"
               "  n1 [label=\"#1 embedding\\n[2,4]\"];\n"
               "  n1 -> l2;\n"
               "}\n");
}

TEST_CASE("names: checkpoint errors name a tied Parameter by all its paths") {
  const auto path =
      std::filesystem::temp_directory_path() / ("hitch_test_names_" + std::to_string(::getpid()) + ".safetensors");
  {
    ThreeWay m;
    optim::Adam adam(m.parameters(), {.lr = 0.01});
    backward(sum(m.head(m.emb(IndexTensor{1}) + m.bag(IndexTensor({1, 2}, {2, 3})))));
    adam.step();
    nn::save_checkpoint(path.string(), m, {.optimizer = &adam});
  }
  std::vector<std::byte> bytes = nn::read_whole_file("test", path.string());
  std::filesystem::remove(path);
  const nn::Safetensors st = nn::parse_safetensors(bytes);
  const nn::SafetensorsEntry* sq = st.find("optim.emb.weight.exp_avg_sq");
  REQUIRE(sq != nullptr);
  const auto at = static_cast<std::size_t>(sq->bytes.data() - bytes.data()) + 2 * sizeof(float);
  const float bad = -1.0f;
  std::memcpy(bytes.data() + at, &bad, sizeof bad);

  ThreeWay target;
  optim::Adam adam(target.parameters(), {.lr = 0.01});
  const std::vector<float> before = target.emb.weight.value().to_vector();
  CHECK_THROWS_WITH_AS(nn::load_checkpoint_from_bytes(bytes, target, {.optimizer = &adam}),
                       ("load_checkpoint: (bytes): Adam: import_state: record 0 (Parameter '" + kTied +
                        "'): buffer 'exp_avg_sq' has -1 at element 2, a value Adam never holds (valid: finite and "
                        ">= 0)")
                           .c_str(),
                       hitch::Error);
  CHECK(target.emb.weight.value().to_vector() == before);
  CHECK(adam.state_size() == 0);
}

TEST_CASE("names: named_parameters(false) lists a tied Parameter once per name, member order") {
  ThreeWay m;
  const auto all = m.named_parameters(/*remove_duplicate=*/false);
  std::vector<std::string> keys;
  for (const auto& [name, p] : all) keys.push_back(name);
  CHECK(keys == std::vector<std::string>{"emb.weight", "bag.weight", "head.weight", "head.bias"});
  CHECK(all[0].second.is_same(all[1].second));
  CHECK(all[0].second.is_same(all[2].second));
  CHECK(m.named_parameters().size() == 2);
}
