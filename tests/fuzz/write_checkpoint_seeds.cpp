// tests/fuzz/write_checkpoint_seeds.cpp: writes the checkpoint target's seed corpus: files
// saved by save_checkpoint from the fuzz fixture, with and without optimizer and generator,
// each prefixed by the target's parts byte. Run once by hand:
//   build/<preset>/tests/fuzz/write_checkpoint_seeds tests/fuzz/corpus/checkpoint
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint_fixture.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_checkpoint_seeds <folder>\n");
    return 2;
  }
  const std::string dir = argv[1];
  fuzz::CheckpointFixture f;
  for (int parts = 0; parts < 4; ++parts) {
    const std::string tmp = dir + "/.tmp.safetensors";
    hitch::nn::save_checkpoint(tmp, f, {.optimizer = (parts & 1) ? &f.adam : nullptr,
                                        .generator = (parts & 2) ? &f.gen : nullptr});
    std::ifstream in(tmp, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::remove(tmp.c_str());
    for (int load = 0; load < 4; ++load) {  // every combination of saved and restored parts
      std::ofstream out(dir + "/seed_saved" + std::to_string(parts) + "_load" + std::to_string(load), std::ios::binary);
      out.put(static_cast<char>(load));
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  }
  return 0;
}
