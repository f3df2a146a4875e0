// tests/fuzz/fuzz_checkpoint.cpp: libFuzzer target for the checkpoint loader
// (nn::load_checkpoint_from_bytes, which runs the safetensors parser and every check of
// nn/checkpoint.h) on arbitrary bytes.
//
// The bytes are the file. The model is fixed (checkpoint_fixture.h: a tied Embedding +
// EmbeddingBag, a Linear, Adam with state, a generator with a pending value); the first byte
// picks which parts are restored (optimizer, generator). The only allowed outcomes are a load,
// or hitch::Error after which nothing changed (Parameters' values and versions, the optimizer's
// state and lrs, the generator). Anything else aborts. The seed corpus holds files written by
// save_checkpoint for this fixture (write_checkpoint_seeds.cpp), so mutations start from valid
// files and reach the checks behind the parser.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "checkpoint_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static fuzz::CheckpointFixture* fixture = nullptr;  // built once: loads that succeed change it, which is fine
  if (!fixture) fixture = new fuzz::CheckpointFixture();
  fuzz::CheckpointFixture& f = *fixture;
  const hitch::nn::CheckpointParts parts{.optimizer = (data[0] & 1) ? &f.adam : nullptr,
                                         .generator = (data[0] & 2) ? &f.gen : nullptr};
  const auto file = std::as_bytes(std::span<const std::uint8_t>(data + 1, size - 1));
  const fuzz::Snapshot before(f);
  try {
    hitch::nn::load_checkpoint_from_bytes(file, f, parts, "fuzz");
  } catch (const hitch::Error& e) {
    const std::string changed = before.diff(f);
    if (!changed.empty()) {
      std::fprintf(stderr, "fuzz_checkpoint: %s before: %s\n", changed.c_str(), e.what());
      std::abort();
    }
    if (std::string(e.what()).rfind("load_checkpoint: ", 0) != 0) {
      std::fprintf(stderr, "fuzz_checkpoint: message does not start with load_checkpoint: %s\n", e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_checkpoint: unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
