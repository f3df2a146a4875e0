// Corrupt and hostile safetensors files: every check of parse_safetensors with its exact message
// (lengths, UTF-8, JSON, duplicate keys, dtypes, shapes, overlapping and gapped offsets, sizes),
// the path in load_checkpoint's messages, and a sweep over every truncation and many byte flips
// of a real checkpoint: each either loads or throws hitch::Error, and a refused load changes
// nothing.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint_model.h"
#include <hitch/hitch.h>

using namespace hitch;

namespace {

// 8-byte little-endian length, the header, then data_bytes bytes of data (value 1).
std::vector<std::byte> file_of(const std::string& header, std::size_t data_bytes = 0) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xFFu));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  out.resize(out.size() + data_bytes, std::byte{1});
  return out;
}

void parse(const std::vector<std::byte>& bytes) { nn::parse_safetensors(bytes); }

std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

}  // namespace

TEST_CASE("parse_safetensors: a valid file, its metadata and entries sorted by offset") {
  const auto bytes = file_of(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                             R"("__metadata__":{"k":"v"},"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
                             16);
  const nn::Safetensors st = nn::parse_safetensors(bytes);
  REQUIRE(st.tensors.size() == 2);
  CHECK(st.tensors[0].name == "a");
  CHECK(st.tensors[0].shape.empty());
  CHECK(st.tensors[1].name == "b");
  CHECK(st.tensors[1].shape == Shape{2});
  CHECK(st.tensors[1].bytes.size() == 8);
  CHECK(st.metadata.at("k") == "v");
  CHECK(st.find("b") == &st.tensors[1]);
  CHECK(st.find("c") == nullptr);
}

TEST_CASE("parse_safetensors: lengths") {
  CHECK_THROWS_WITH_AS(parse(std::vector<std::byte>(5)),
                       "the file has 5 bytes, fewer than the 8-byte header length that starts a safetensors file",
                       Error);
  auto bytes = file_of("{}");
  bytes[0] = std::byte{100};
  CHECK_THROWS_WITH_AS(parse(bytes),
                       "the header length is 100 bytes, beyond the end of the file (2 bytes follow the 8-byte length)",
                       Error);
  bytes = file_of("{}");
  bytes[7] = std::byte{0xFF};  // a huge length
  CHECK_THROWS_WITH_AS(parse(bytes),
                       "the header length is 18374686479671623682 bytes, beyond the end of the file (2 bytes follow "
                       "the 8-byte length)",
                       Error);
}

TEST_CASE("parse_safetensors: UTF-8 and JSON") {
  CHECK_THROWS_WITH_AS(parse(file_of("{\"a\xff\":1}")), "the header is not valid UTF-8: byte 0xff at header offset 3",
                       Error);
  CHECK_THROWS_WITH_AS(parse(file_of("{\"\xc0\xaf\":1}")),  // overlong '/'
                       "the header is not valid UTF-8: byte 0xc0 at header offset 2", Error);
  CHECK_THROWS_WITH_AS(parse(file_of("{\"a\":")),
                       "the header is not valid JSON: parse error at line 1, column 6: syntax error while parsing "
                       "value - unexpected end of input; expected '[', '{', or a literal",
                       Error);
  CHECK_THROWS_WITH_AS(parse(file_of("[1]")), "the header must be a JSON object, but it is a JSON array", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[[[1]]],"data_offsets":[0,4]}})")),
                       "the header nests deeper than a safetensors header does (depth 4 inside 'shape')", Error);
}

TEST_CASE("parse_safetensors: duplicate keys, at the top and inside a tensor") {
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                     R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                     8)),
                       "the header has the key 'a' twice", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", 4)),
                       "the header has the key 'dtype' twice inside 'a'", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"__metadata__":{"k":"1","k":"2"}})")),
                       "the header has the key 'k' twice inside '__metadata__'", Error);
}

TEST_CASE("parse_safetensors: entries") {
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4)),
                       "tensor 'a' has unknown dtype 'Q4' (valid: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, "
                       "BF16, I32, U32, F32, I64, U64, F64)",
                       Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)),
                       "tensor 'a': data_offsets [0, 4] hold 4 bytes, but dtype F32 and shape [2] need 8", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
                       "tensor 'a': shape[0] must be a non-negative integer, but it is -1", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4)),
                       "tensor 'a': shape[0] must be a non-negative integer, but it is 1.5", Error);
  CHECK_THROWS_WITH_AS(
      parse(file_of(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4)),
      "tensor 'a': shape [4294967296,4294967296] has more than 2^48 elements (the limit per tensor)", Error);
  CHECK_THROWS_WITH_AS(
      parse(file_of(R"({"a":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]}})")),
      "tensor 'a': shape [4611686018427387904,0] has non-zero sizes whose product is more than 2^48 (the limit per "
      "tensor, for its elements and every product of its sizes)",
      Error);
  CHECK_THROWS_WITH_AS(
      parse(file_of(R"({"a":{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]}})")),
      "tensor 'a': shape [18446744073709551615,0] has a size over 2^48 (the limit per tensor)", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[1]}})")), "tensor 'a' has no 'data_offsets'",
                       Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4)),
                       "tensor 'a' has the unknown field 'x' (valid: dtype, shape, data_offsets)", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4)),
                       "tensor 'a': data_offsets [4, 0] end before they begin", Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"__metadata__":{"k":1}})")),
                       "'__metadata__' must map strings to strings, but 'k' is 1", Error);
}

TEST_CASE("parse_safetensors: offsets overlap, leave gaps or go past the data") {
  const std::string a = R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})";
  CHECK_THROWS_WITH_AS(parse(file_of("{" + a + R"(,"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24)),
                       "tensors 'a' [0, 16) and 'b' [8, 24) overlap", Error);
  CHECK_THROWS_WITH_AS(parse(file_of("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[20,24]}})", 24)),
                       "the data section has a gap: bytes [16, 20) between tensors 'a' and 'b' belong to no tensor",
                       Error);
  CHECK_THROWS_WITH_AS(parse(file_of(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
                       "the data section has a gap: bytes [0, 4) belong to no tensor ('b' starts at 4)", Error);
  CHECK_THROWS_WITH_AS(parse(file_of("{" + a + "}", 12)),
                       "tensor 'a': data_offsets [0, 16] go beyond the data section, which has 12 bytes", Error);
  CHECK_THROWS_WITH_AS(parse(file_of("{" + a + "}", 20)),
                       "the data section has 20 bytes, but the tensors cover only the first 16", Error);
  // An empty tensor inside another one overlaps it; empty tensors at a boundary are fine.
  CHECK_THROWS_WITH_AS(parse(file_of("{" + a + R"(,"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})", 16)),
                       "tensors 'a' [0, 16) and 'e' [8, 8) overlap", Error);
  CHECK_NOTHROW(parse(file_of("{" + a + R"(,"e":{"dtype":"F32","shape":[0],"data_offsets":[16,16]}})", 16)));
}

TEST_CASE("load_checkpoint: a corrupt file is named with its path, truncations and byte flips never crash") {
  const std::string dir = "checkpoint_errors_test";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/m.safetensors";
  Generator gen(1);
  ckpt_test::TiedModel saved(4, 3, false, gen);
  optim::Adam opt(saved.parameters(), {.lr = 0.1});
  Generator data(5);
  ckpt_test::train_step(saved, opt, data);
  nn::save_checkpoint(path, saved, {.optimizer = &opt, .generator = &data});
  const std::vector<std::byte> good = read_file(path);

  {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write("abc", 3);
    Generator g(2);
    ckpt_test::TiedModel m(4, 3, false, g);
    CHECK_THROWS_WITH_AS(nn::load_checkpoint(path, m),
                         "load_checkpoint: 'checkpoint_errors_test/m.safetensors': the file has 3 bytes, fewer than "
                         "the 8-byte header length that starts a safetensors file",
                         Error);
  }
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir + "/none.safetensors", saved),
                       "load_checkpoint: cannot open 'checkpoint_errors_test/none.safetensors': No such file or "
                       "directory (errno 2)",
                       Error);

  int loaded = 0, refused = 0;
  auto attempt = [&](const std::vector<std::byte>& bytes) {
    Generator g(3);
    ckpt_test::TiedModel target(4, 3, false, g);
    optim::Adam target_opt(target.parameters(), {.lr = 0.1});
    Generator target_data(8);
    const auto before = target.emb.weight.value().to_vector();
    const auto version = target.emb.weight.impl().storage->version;
    try {
      nn::load_checkpoint_from_bytes(bytes, target, {.optimizer = &target_opt, .generator = &target_data});
      ++loaded;
    } catch (const Error&) {
      ++refused;
      CHECK(target.emb.weight.impl().storage->version == version);
      CHECK(target.emb.weight.value().to_vector() == before);
      CHECK(target_opt.state_size() == 0);
      CHECK(target_data.state() == Generator(8).state());
    }
  };
  for (std::size_t n = 0; n < good.size(); ++n) attempt({good.begin(), good.begin() + static_cast<long>(n)});
  CHECK(loaded == 0);  // no prefix of a file is a valid file
  const std::size_t header_end = 8 + (std::to_integer<std::size_t>(good[0]) | std::to_integer<std::size_t>(good[1]) << 8);
  for (std::size_t i = 0; i < header_end; ++i)
    for (unsigned flip : {0x01u, 0x20u, 0x80u}) {
      std::vector<std::byte> bad = good;
      bad[i] ^= std::byte(flip);
      attempt(bad);
    }
  MESSAGE("truncations and header byte flips: " << refused << " refused, " << loaded << " loaded");
  CHECK(refused > 0);
  std::filesystem::remove_all(dir);
}
