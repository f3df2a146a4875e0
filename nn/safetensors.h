// hitch/nn/safetensors.h: the safetensors file format, on its own (nn/checkpoint.h builds
// module checkpoints on it).
//
//   [8 bytes: N, little-endian u64] [N bytes: JSON header] [data]
//   header: {"__metadata__": {"key": "value", ...},
//            "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the start of the data section; the tensors cover it exactly (no
// overlap, no gap, nothing after the last one). Values are little-endian, row-major. The writer
// pads the header with spaces so that the data starts at a multiple of 8 and puts the 8-byte
// dtypes first, so every tensor is aligned for its dtype.
// The parser takes the bytes of a whole file and checks everything a corrupt or hostile file can
// get wrong (lengths, UTF-8, JSON, duplicate keys, dtypes, shapes, offsets) before anyone reads a
// value: it is the entry point for fuzzing. Left out on purpose: memory mapping, big-endian hosts
// (a static_assert in the .cpp), writing dtypes other than the ones hitch keeps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <hitch/core/error.h>

namespace hitch::nn {

// Bytes per element for a safetensors dtype name ("F32" -> 4), or 0 if the name is unknown.
std::size_t dtype_size(std::string_view dtype);

// One tensor of a parsed file. bytes points into the buffer given to parse_safetensors.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  Shape shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets
  std::span<const std::byte> bytes;
};

struct Safetensors {
  std::map<std::string, std::string> metadata;  // "__metadata__"; empty if absent
  std::vector<SafetensorsEntry> tensors;        // sorted by data offset
  const SafetensorsEntry* find(std::string_view name) const;  // null if absent
};

// Parses and validates a whole file held in memory. Throws hitch::Error with a message that says
// what is wrong and where (the caller adds the path). Ensures: every entry has a known dtype, a
// non-negative shape whose byte size equals end - begin, and the entries tile the data section.
// The result points into bytes, which must outlive it.
Safetensors parse_safetensors(std::span<const std::byte> bytes);

// One tensor to write: values are the raw little-endian bytes, numel(shape) * dtype_size(dtype).
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  Shape shape;
  std::span<const std::byte> bytes;
};

// The 8-byte length and the header for these tensors, in the order given, padded so that the
// data starts at a multiple of 8. Throws hitch::Error on a duplicate or reserved name, an unknown
// dtype, a byte count that does not match the shape or text that is not UTF-8 (the caller adds
// who and the path to the message).
std::string safetensors_header(const std::vector<SafetensorsTensor>& tensors,
                               const std::map<std::string, std::string>& metadata);

// Writes header + tensors to path crash-safely: a new temporary file in the same folder, every
// byte written, fsync, rename over path, fsync of the folder. If anything fails the temporary
// file is removed, path keeps its previous content and the hitch::Error names who, the path and
// the OS error. A process killed mid-write leaves path as it was and, at worst, a stray
// "<name>.tmp-<pid>-<n>" file. The temporary file is created with O_EXCL under the first of
// temporary_name(name, 0, 1, ...) that nothing in the folder holds, so leftovers of killed saves
// (files or folders, any pid) never make a save fail; any name the file system accepts works
// (spaces, UTF-8, NAME_MAX bytes long, a path near PATH_MAX).
void write_file_atomically(std::string_view who, const std::string& path, std::string_view header,
                           const std::vector<SafetensorsTensor>& tensors);

// The temporary file name write_file_atomically tries at attempt 0, 1, 2, ... for a file named
// base (no folder) in a folder whose names may be name_max bytes long: "<base>.tmp-<pid>-<n>"
// for the first four attempts (reproducible, for tests), "<base>.tmp-<pid>-<16 random hex
// digits>" after that, with base shortened (at a UTF-8 boundary) so the name fits name_max.
std::string temporary_name(std::string_view base, unsigned attempt, std::size_t name_max);

// The whole content of a file, or a hitch::Error naming who, the path and the OS error.
std::vector<std::byte> read_whole_file(std::string_view who, const std::string& path);

}  // namespace hitch::nn
