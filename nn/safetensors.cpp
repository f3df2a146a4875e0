// hitch/nn/safetensors.cpp: parse, validate and write safetensors files (see safetensors.h).
// The header is parsed by nlohmann::json; a parser callback rejects duplicate keys (nlohmann
// keeps the last one silently) and nesting deeper than a safetensors header has.
#include <hitch/nn/safetensors.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <hitch/core/tensor.h>

namespace hitch::nn {

namespace {

using Json = nlohmann::json;

constexpr std::size_t kNotFound = std::numeric_limits<std::size_t>::max();

// Offset of the first byte that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF included), or kNotFound.
std::size_t invalid_utf8_at(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0u) == 0xC0u) {
      len = 2, cp = c & 0x1Fu;
    } else if ((c & 0xF0u) == 0xE0u) {
      len = 3, cp = c & 0x0Fu;
    } else if ((c & 0xF8u) == 0xF0u) {
      len = 4, cp = c & 0x07u;
    } else {
      return i;
    }
    if (s.size() - i < len) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0u) != 0x80u) return i;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    constexpr std::uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return kNotFound;
}

// nlohmann's messages start with "[json.exception.parse_error.101] ": keep what follows.
std::string json_message(const std::exception& e) {
  std::string_view m = e.what();
  if (!m.empty() && m.front() == '[') {
    const auto close = m.find("] ");
    if (close != std::string_view::npos) m.remove_prefix(close + 2);
  }
  return std::string(m);
}

Json parse_header_json(std::string_view header) {
  if (const std::size_t bad = invalid_utf8_at(header); bad != kNotFound)
    throw Error(fmt::format("the header is not valid UTF-8: byte 0x{:02x} at header offset {}",
                            static_cast<unsigned char>(header[bad]), bad));
  // Keys seen in each open object, and the key that object sits under (for the message).
  struct Frame {
    std::set<std::string> keys;
    std::string owner;
  };
  std::vector<Frame> frames;
  std::string last_key;
  const Json::parser_callback_t on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth > 2)
      throw Error(fmt::format("the header nests deeper than a safetensors header does (depth {} inside '{}')",
                              depth + 1, last_key));
    if (event == E::object_start) {
      frames.push_back({{}, depth == 0 ? std::string() : last_key});
    } else if (event == E::object_end) {
      frames.pop_back();
    } else if (event == E::key) {
      last_key = parsed.get<std::string>();
      if (!frames.back().keys.insert(last_key).second) {
        const std::string& owner = frames.back().owner;
        throw Error(owner.empty() ? fmt::format("the header has the key '{}' twice", last_key)
                                  : fmt::format("the header has the key '{}' twice inside '{}'", last_key, owner));
      }
    }
    return true;
  };
  try {
    return Json::parse(header.begin(), header.end(), on_event);
  } catch (const Json::exception& e) {
    throw Error("the header is not valid JSON: " + json_message(e));
  }
}

std::uint64_t as_count(const Json& v, const std::string& what) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
    throw Error(fmt::format("{} must be a non-negative integer, but it is {}", what, v.dump()));
  return v.get<std::uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const Json& info) {
  const std::string who = fmt::format("tensor '{}'", name);
  if (!info.is_object()) throw Error(fmt::format("{} must be a JSON object, but it is {}", who, info.dump()));
  for (const auto& [key, value] : info.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw Error(fmt::format("{} has the unknown field '{}' (valid: dtype, shape, data_offsets)", who, key));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!info.contains(key)) throw Error(fmt::format("{} has no '{}'", who, key));
  SafetensorsEntry e;
  e.name = name;
  const Json& dtype = info["dtype"];
  if (!dtype.is_string()) throw Error(fmt::format("{}: dtype must be a string, but it is {}", who, dtype.dump()));
  e.dtype = dtype.get<std::string>();
  const std::size_t elem = dtype_size(e.dtype);
  if (elem == 0)
    throw Error(fmt::format("{} has unknown dtype '{}' (valid: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, "
                            "BF16, I32, U32, F32, I64, U64, F64)",
                            who, e.dtype));
  const Json& shape = info["shape"];
  if (!shape.is_array()) throw Error(fmt::format("{}: shape must be an array, but it is {}", who, shape.dump()));
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const std::uint64_t n = as_count(shape[d], fmt::format("{}: shape[{}]", who, d));
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      throw Error(fmt::format("{}: shape {} has a size over 2^48 (the limit per tensor)", who, shape.dump()));
    e.shape.push_back(static_cast<std::int64_t>(n));
  }
  // The limit of every tensor (core/tensor.h, checked_numel): at most 2^48 elements, so the byte
  // count (at most 2^51) cannot overflow.
  const std::uint64_t bytes = static_cast<std::uint64_t>(checked_numel(who, e.shape)) * elem;
  const Json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    throw Error(fmt::format("{}: data_offsets must be [begin, end], but it is {}", who, offsets.dump()));
  e.begin = as_count(offsets[0], who + ": data_offsets[0]");
  e.end = as_count(offsets[1], who + ": data_offsets[1]");
  if (e.end < e.begin)
    throw Error(fmt::format("{}: data_offsets [{}, {}] end before they begin", who, e.begin, e.end));
  if (e.end - e.begin != bytes)
    throw Error(fmt::format("{}: data_offsets [{}, {}] hold {} bytes, but dtype {} and shape {} need {}", who,
                            e.begin, e.end, e.end - e.begin, e.dtype, shape_str(e.shape), bytes));
  return e;
}

std::map<std::string, std::string> parse_metadata(const Json& meta) {
  if (!meta.is_object())
    throw Error(fmt::format("'__metadata__' must be a JSON object of strings, but it is {}", meta.dump()));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string())
      throw Error(fmt::format("'__metadata__' must map strings to strings, but '{}' is {}", key, value.dump()));
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// The entries, sorted by offset, must tile [0, data_size) exactly.
void check_tiling(std::vector<SafetensorsEntry>& tensors, std::uint64_t data_size) {
  for (const SafetensorsEntry& e : tensors)
    if (e.end > data_size)
      throw Error(fmt::format("tensor '{}': data_offsets [{}, {}] go beyond the data section, which has {} bytes",
                              e.name, e.begin, e.end, data_size));
  std::stable_sort(tensors.begin(), tensors.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  const SafetensorsEntry* last = nullptr;  // the entry that ends at `covered`
  for (const SafetensorsEntry& e : tensors) {
    if (e.begin < covered)
      throw Error(fmt::format("tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", last->name, last->begin, last->end,
                              e.name, e.begin, e.end));
    if (e.begin > covered)
      throw Error(last == nullptr
                      ? fmt::format("the data section has a gap: bytes [0, {}) belong to no tensor ('{}' starts at {})",
                                    e.begin, e.name, e.begin)
                      : fmt::format("the data section has a gap: bytes [{}, {}) between tensors '{}' and '{}' belong "
                                    "to no tensor",
                                    covered, e.begin, last->name, e.name));
    if (e.end > e.begin || last == nullptr) last = &e;
    covered = e.end;
  }
  if (covered != data_size)
    throw Error(fmt::format("the data section has {} bytes, but the tensors cover only the first {}", data_size,
                            covered));
}

}  // namespace

std::size_t dtype_size(std::string_view dtype) {
  static const std::map<std::string_view, std::size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"I64", 8},     {"U64", 8}, {"F64", 8}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

const SafetensorsEntry* Safetensors::find(std::string_view name) const {
  for (const SafetensorsEntry& e : tensors)
    if (e.name == name) return &e;
  return nullptr;
}

Safetensors parse_safetensors(std::span<const std::byte> bytes) {
  if (bytes.size() < 8)
    throw Error(fmt::format("the file has {} bytes, fewer than the 8-byte header length that starts a safetensors "
                            "file",
                            bytes.size()));
  std::uint64_t header_len = 0;
  for (std::size_t i = 0; i < 8; ++i) header_len |= std::to_integer<std::uint64_t>(bytes[i]) << (8 * i);
  const std::uint64_t after = bytes.size() - 8;
  if (header_len > after)
    throw Error(fmt::format("the header length is {} bytes, beyond the end of the file ({} bytes follow the 8-byte "
                            "length)",
                            header_len, after));
  const auto header_size = static_cast<std::size_t>(header_len);
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), header_size);
  const Json json = parse_header_json(header);
  if (!json.is_object())
    throw Error(fmt::format("the header must be a JSON object, but it is a JSON {}", json.type_name()));

  Safetensors out;
  for (const auto& [name, info] : json.items()) {
    if (name == "__metadata__")
      out.metadata = parse_metadata(info);
    else
      out.tensors.push_back(parse_entry(name, info));
  }
  const std::span<const std::byte> data = bytes.subspan(8 + header_size);
  check_tiling(out.tensors, data.size());
  for (SafetensorsEntry& e : out.tensors)
    e.bytes = data.subspan(static_cast<std::size_t>(e.begin), static_cast<std::size_t>(e.end - e.begin));
  return out;
}

std::string safetensors_header(const std::vector<SafetensorsTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    const std::size_t elem = dtype_size(t.dtype);
    if (elem == 0) throw Error(fmt::format("tensor '{}' has unknown dtype '{}'", t.name, t.dtype));
    if (t.name == "__metadata__" || header.contains(t.name))
      throw Error(fmt::format("the tensor name '{}' is {}", t.name,
                              t.name == "__metadata__" ? "reserved" : "used twice"));
    const auto need = static_cast<std::size_t>(checked_numel(fmt::format("tensor '{}'", t.name), t.shape)) * elem;
    if (t.bytes.size() != need)
      throw Error(fmt::format("tensor '{}' has {} bytes, but dtype {} and shape {} need {}", t.name,
                              t.bytes.size(), t.dtype, shape_str(t.shape), need));
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("a tensor name or metadata string is not valid UTF-8: " + json_message(e));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // 8 + size is then a multiple of 8
  std::string out(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFFu);
  return out + text;
}

}  // namespace hitch::nn
