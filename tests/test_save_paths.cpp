// Saves (nn::write_file_atomically, nn::save_checkpoint) succeed whatever a killed earlier save
// left behind and for every path the file system accepts (issue 12, finding 10): a stale
// temporary file or folder under the exact names a save tries (a killed run with the same pid,
// e.g. pid 1 in a container, used to make every later save fail with "File exists"), names with
// spaces and UTF-8, names of NAME_MAX bytes (whose temporary name must still fit) and a path
// near PATH_MAX.
#include <doctest/doctest.h>

#include <limits.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "checkpoint_model.h"
#include <hitch/hitch.h>
#include <hitch/nn/safetensors.h>

using namespace hitch;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::absolute("save_paths_test_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::size_t entries() const {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(path)) ++n;
    return n;
  }
};

std::size_t name_max_of(const fs::path& dir) {
  const long n = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  return n > 0 ? static_cast<std::size_t>(n) : NAME_MAX;
}

// A small safetensors file: one F32 tensor [3] = {1, 2, 3}.
const std::vector<float> kValues = {1.0f, 2.0f, 3.0f};
void save_small(const std::string& path) {
  const std::vector<nn::SafetensorsTensor> tensors = {
      {"x", "F32", {3}, std::as_bytes(std::span<const float>(kValues))}};
  nn::write_file_atomically("test", path, nn::safetensors_header(tensors, {}), tensors);
}
void check_small(const std::string& path) {
  const std::vector<std::byte> bytes = nn::read_whole_file("test", path);
  const nn::Safetensors file = nn::parse_safetensors(bytes);
  const nn::SafetensorsEntry* x = file.find("x");
  REQUIRE(x != nullptr);
  CHECK(x->shape == Shape{3});
  REQUIRE(x->bytes.size() == 12);
  CHECK(std::memcmp(x->bytes.data(), kValues.data(), 12) == 0);
}

bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

}  // namespace

TEST_CASE("saves: temporary_name is the target's name plus a pid and a counter, shortened to fit NAME_MAX") {
  const std::string pid = std::to_string(::getpid());
  CHECK(nn::temporary_name("m.safetensors", 0, 255) == "m.safetensors.tmp-" + pid + "-0");
  CHECK(nn::temporary_name("m.safetensors", 3, 255) == "m.safetensors.tmp-" + pid + "-3");
  // From the fifth attempt on: 16 random hex digits, a new draw every time.
  const std::string r1 = nn::temporary_name("m.safetensors", 4, 255), r2 = nn::temporary_name("m.safetensors", 4, 255);
  CHECK(r1.size() == std::string("m.safetensors.tmp-").size() + pid.size() + 1 + 16);
  CHECK(r1.rfind("m.safetensors.tmp-" + pid + "-", 0) == 0);
  CHECK(r1 != r2);
  // A name of 255 bytes: cut so that name + suffix is 255 bytes.
  const std::string long_name(255, 'a');
  for (unsigned attempt : {0u, 1u, 5u}) {
    const std::string t = nn::temporary_name(long_name, attempt, 255);
    CHECK(t.size() == 255);
    CHECK(t.rfind("aaaa", 0) == 0);
    CHECK(t.find(".tmp-" + pid + "-") != std::string::npos);
  }
  // UTF-8: never cut inside a character (2-byte "é", then 3-byte "模").
  for (const std::string unit : {"\xC3\xA9", "\xE6\xA8\xA1"}) {
    std::string name;
    while (name.size() + unit.size() <= 255) name += unit;
    for (unsigned attempt : {0u, 7u}) {
      const std::string t = nn::temporary_name(name, attempt, 255);
      CHECK(t.size() <= 255);
      CHECK(t.size() > 255 - unit.size() - 1);
      CHECK(valid_utf8(t));
    }
  }
  // A folder with tiny names: the suffix alone, cut.
  CHECK(nn::temporary_name("m.safetensors", 0, 8).size() == 8);
}

TEST_CASE("saves: leftovers under the exact temporary names a save tries never make it fail") {
  TempDir dir("leftovers");
  const std::string base = "m.safetensors";
  const std::string path = (dir.path / base).string();
  const std::size_t name_max = name_max_of(dir.path);
  // What killed earlier saves of a process with this pid left behind: the first candidate as a
  // file with junk, the second as a folder (with a file inside), the third as a dangling
  // symlink and the fourth as a read-only file.
  {
    std::ofstream(dir.path / nn::temporary_name(base, 0, name_max)) << "partial junk";
  }
  fs::create_directories(dir.path / nn::temporary_name(base, 1, name_max) / "inside");
  fs::create_symlink(dir.path / "nowhere", dir.path / nn::temporary_name(base, 2, name_max));
  {
    std::ofstream(dir.path / nn::temporary_name(base, 3, name_max)) << "x";
  }
  fs::permissions(dir.path / nn::temporary_name(base, 3, name_max), fs::perms::owner_read);
  REQUIRE(dir.entries() == 4);

  save_small(path);
  check_small(path);
  CHECK(dir.entries() == 5);  // the leftovers, untouched, and the file: no temporary file stays
  CHECK(fs::is_directory(dir.path / nn::temporary_name(base, 1, name_max) / "inside"));
  CHECK(fs::is_symlink(dir.path / nn::temporary_name(base, 2, name_max)));
  CHECK(!fs::exists(dir.path / "nowhere"));
  save_small(path);  // and again, over the file now there
  check_small(path);
  CHECK(dir.entries() == 5);

  // The same through save_checkpoint and load_checkpoint.
  Generator g1(1), g2(2);
  ckpt_test::TiedModel saved(6, 3, false, g1), loaded(6, 3, false, g2);
  const std::string ckpt = (dir.path / "model.safetensors").string();
  {
    std::ofstream(dir.path / nn::temporary_name("model.safetensors", 0, name_max)) << "junk";
  }
  fs::create_directories(dir.path / nn::temporary_name("model.safetensors", 1, name_max));
  nn::save_checkpoint(ckpt, saved);
  nn::load_checkpoint(ckpt, loaded);
  CHECK(loaded.emb.weight.value().to_vector() == saved.emb.weight.value().to_vector());
  CHECK(dir.entries() == 8);
}

TEST_CASE("saves: names with spaces, UTF-8, NAME_MAX bytes, and a path near PATH_MAX") {
  TempDir dir("names");
  const std::size_t name_max = name_max_of(dir.path);
  std::vector<std::string> names = {"with space.safetensors", " leading and trailing ", "ünïcødé-模型-😀.safetensors",
                                    "-starts-with-dash", "a'quote\"and\\backslash", "new\nline",
                                    std::string(name_max, 'n')};
  std::string utf8;  // NAME_MAX bytes of 2-byte characters (and one ASCII byte if odd)
  while (utf8.size() + 2 <= name_max) utf8 += "\xC3\xA9";
  if (utf8.size() < name_max) utf8 += "e";
  names.push_back(utf8);
  for (const std::string& name : names) {
    CAPTURE(name);
    const std::string path = (dir.path / name).string();
    save_small(path);
    check_small(path);
    save_small(path);  // over an existing file of that name
    check_small(path);
  }
  CHECK(dir.entries() == names.size());  // no temporary file left

  // A path whose length is close to PATH_MAX: the folder's path plus a NAME_MAX-long name. The
  // temporary file's full path would pass PATH_MAX; it is created relative to the folder.
  fs::path deep = dir.path;
  const std::size_t target = PATH_MAX - 1 - 1 - name_max;  // folder + '/' + name < PATH_MAX
  while (deep.string().size() + 1 + 200 <= target) deep /= std::string(200, 'd');
  if (deep.string().size() + 2 <= target) deep /= std::string(target - deep.string().size() - 1, 'e');
  fs::create_directories(deep);
  const std::string long_path = (deep / std::string(name_max, 'f')).string();
  CHECK(long_path.size() == PATH_MAX - 1);
  save_small(long_path);
  check_small(long_path);
  std::size_t in_deep = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(deep)) ++in_deep;
  CHECK(in_deep == 1);
}
