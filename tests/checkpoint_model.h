// tests/checkpoint_model.h: the tied model the checkpoint tests save, load and train: an
// Embedding and an EmbeddingBag on ONE Parameter, and (dense variant) an untied "proj" vector.
// One training step draws its batch and targets from a Generator, so an exact resume needs the
// generator's state too (it draws an odd number of normals, so a Box-Muller spare is pending).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <hitch/hitch.h>

namespace ckpt_test {

// A folder of one's own under the working directory, emptied when made and removed when gone.
// The pid keeps parallel ctest processes (one per test case) out of each other's folders.
struct Folder {
  std::filesystem::path path;
  explicit Folder(const std::string& name)
      : path(std::filesystem::absolute("checkpoint_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~Folder() { std::filesystem::remove_all(path); }
  Folder(const Folder&) = delete;
  Folder& operator=(const Folder&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::size_t entries() const {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(path)) ++n;
    return n;
  }
};

// A safetensors file's tensors and metadata as the writer takes them, to re-write it with edits.
struct Contents {
  std::vector<std::byte> file;  // a copy: the tensors' bytes point into it
  std::vector<hitch::nn::SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::vector<std::vector<std::byte>> owned;  // bytes of tensors added by a test (moving the
                                              // outer vector keeps each inner buffer in place)

  Contents(const Contents&) = delete;  // a copy's tensors would point into the original's file
  Contents& operator=(const Contents&) = delete;
  explicit Contents(std::vector<std::byte> bytes) : file(std::move(bytes)) {
    const hitch::nn::Safetensors st = hitch::nn::parse_safetensors(file);
    metadata = st.metadata;
    for (const hitch::nn::SafetensorsEntry& e : st.tensors) tensors.push_back({e.name, e.dtype, e.shape, e.bytes});
  }
  void add(const std::string& name, const std::string& dtype, hitch::Shape shape, std::vector<std::byte> bytes) {
    owned.push_back(std::move(bytes));
    tensors.push_back({name, dtype, std::move(shape), owned.back()});
  }
  void add_f32(const std::string& name, hitch::Shape shape, const std::vector<float>& values) {
    std::vector<std::byte> b(values.size() * sizeof(float));
    std::memcpy(b.data(), values.data(), b.size());
    add(name, "F32", std::move(shape), std::move(b));
  }
  hitch::nn::SafetensorsTensor& tensor(const std::string& name) {
    for (hitch::nn::SafetensorsTensor& t : tensors)
      if (t.name == name) return t;
    throw std::out_of_range("Contents: no tensor '" + name + "'");
  }
  std::vector<std::byte> bytes() const {
    const std::string header = hitch::nn::safetensors_header(tensors, metadata);
    std::vector<std::byte> out(header.size());
    std::memcpy(out.data(), header.data(), header.size());
    for (const hitch::nn::SafetensorsTensor& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
    return out;
  }
};

struct TiedModel : hitch::nn::Module {
  hitch::nn::Embedding emb;
  hitch::nn::EmbeddingBag bag;
  hitch::Parameter proj;  // only in the dense variant (SparseAdam needs every gradient sparse)

  // sparse: sparse lookups and no proj.
  TiedModel(std::int64_t rows, std::int64_t dim, bool sparse, hitch::Generator& gen)
      : emb(rows, dim, {.sparse = sparse}, gen),
        bag(emb.weight, {.mode = hitch::BagMode::Sum, .sparse = sparse}) {
    if (!sparse) proj = hitch::Parameter("proj", hitch::Tensor::randn({dim}, gen));
  }
  void members(Members& m) const override {
    m.module("emb", emb);
    m.module("bag", bag);
    if (proj.defined()) m.param("proj", proj);
  }
};

// One step: a batch of 4 tokens through emb, 2 bags of 3 through bag, random targets.
inline void train_step(TiedModel& model, hitch::optim::Optimizer& opt, hitch::Generator& data) {
  using namespace hitch;
  const auto rows = static_cast<std::uint64_t>(model.emb.num_embeddings());
  const std::int64_t dim = model.emb.embedding_dim();
  auto draw = [&](std::int64_t n) {
    std::vector<std::int64_t> v;
    for (std::int64_t i = 0; i < n; ++i) v.push_back(static_cast<std::int64_t>(data.below(rows)));
    return v;
  };
  const IndexTensor tokens({4}, draw(4));
  const IndexTensor bag_input({6}, draw(6));
  std::vector<float> target;
  for (std::int64_t i = 0; i < 2 * dim + 1; ++i) target.push_back(static_cast<float>(data.normal()));
  target.pop_back();  // drawn one more than used: leaves a spare pending half of the time
  Tensor loss = mul(sum(square(model.emb(tokens))), 0.1f) +
                sum(model.bag(bag_input, IndexTensor{0, 3}) * Tensor({2, dim}, target));
  if (model.proj.defined()) loss = loss + sum(model.emb(tokens) * model.proj.value());
  backward(loss);
  opt.step();
  opt.zero_grad(true);
}

}  // namespace ckpt_test
