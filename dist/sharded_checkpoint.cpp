// hitch/dist/sharded_checkpoint.cpp: sharded checkpoints (see sharded_checkpoint.h).
//
// Saving is nn::save_checkpoint on every rank, with the sharding in the file's metadata. Loading
// assembles, on each rank, the checkpoint file that rank would have written under this run's
// R' (its rows of every table and of their optimizer buffers, copied out of the saved files read
// one at a time; the rest from the files, checked equal), then hands those bytes to
// nn::check_checkpoint_from_bytes, agrees on the verdict, and only then to
// nn::load_checkpoint_from_bytes: every rule of a plain load (ties, optimizer state, generator,
// scheduler) applies unchanged, and a load refused on one rank changes nothing on any rank.
#include <hitch/dist/sharded_checkpoint.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <hitch/dist/dist.h>
#include <hitch/dist/sharded.h>
#include <hitch/nn/safetensors.h>
#include <hitch/nn/tie_match.h>

namespace hitch::dist {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSave = "dist::save_sharded_checkpoint";
constexpr std::string_view kLoad = "dist::load_sharded_checkpoint";
const std::string kWorld = "hitch.shard.world_size";
const std::string kRank = "hitch.shard.rank";
const std::string kSaveId = "hitch.shard.save_id";
const std::string kRows = "hitch.shard.rows.";  // + the table's first module name

int my_rank() { return is_initialized() ? rank() : 0; }
int my_world() { return is_initialized() ? world_size() : 1; }

// The same hitch::Error on every rank (dist::agree), or, without dist::init(), this one's.
void settle(const std::optional<std::string>& error) {
  if (is_initialized())
    agree(error);
  else if (error)
    throw Error(*error);
}

std::string file_name(std::int64_t k, std::int64_t world) { return fmt::format("rank-{}-of-{}.safetensors", k, world); }
std::string in_dir(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// The rows rank k of `world` holds of an N-row table (dist/sharded.h: rows k, k + R, ...).
std::int64_t rows_of(std::int64_t n, std::int64_t k, std::int64_t world) { return (n - k + world - 1) / world; }

// Collective: rank 0's text on every rank (broadcast carries floats: one byte per float).
std::string rank0_text(const std::string& mine) {
  Tensor size = Tensor::full({1}, static_cast<float>(mine.size()));  // exact below 2^24
  broadcast(size, 0);
  const auto n = static_cast<std::int64_t>(size.item());
  Tensor chars = Tensor::zeros({n});
  if (rank() == 0)
    for (std::int64_t i = 0; i < n; ++i)
      chars.data()[i] = static_cast<float>(static_cast<unsigned char>(mine[static_cast<std::size_t>(i)]));
  broadcast(chars, 0);
  std::string out(static_cast<std::size_t>(n), '\0');
  for (std::int64_t i = 0; i < n; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>(static_cast<unsigned char>(chars.data()[i]));
  return out;
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// ---- save ----------------------------------------------------------------------------------

// What must be alike on every rank, as (what, description) lines: "Parameter 'emb.weight'" ->
// "sharded [10, 4]" or "[3, 2]", "the optimizer" -> "Adam with 1 group(s)", ...
std::map<std::string, std::string> save_signature(const nn::Module& module, const nn::CheckpointParts& parts) {
  std::map<std::string, std::string> out;
  for (const auto& [name, p] : module.named_parameters()) {
    const std::optional<ShardInfo> s = sharding(p);
    out["Parameter '" + name + "'"] = s ? fmt::format("sharded {}", shape_str({s->num_rows, s->dim})) : shape_str(p.shape());
  }
  out["the optimizer"] = parts.optimizer == nullptr
                             ? "absent"
                             : fmt::format("{} with {} group(s)", parts.optimizer->name(), parts.optimizer->num_groups());
  out["the generator"] = parts.generator == nullptr ? "absent" : "given";
  out["the scheduler"] = parts.scheduler == nullptr ? "absent" : "given";
  return out;
}

std::string serialize(const std::map<std::string, std::string>& lines) {
  std::string out;
  for (const auto& [what, description] : lines) out += what + '\t' + description + '\n';
  return out;
}

std::map<std::string, std::string> deserialize(const std::string& text) {
  std::map<std::string, std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t tab = text.find('\t', at), end = text.find('\n', at);
    if (tab == std::string::npos || end == std::string::npos || tab > end) break;
    out[text.substr(at, tab - at)] = text.substr(tab + 1, end - tab - 1);
    at = end + 1;
  }
  return out;
}

// The first line in which this rank's signature differs from rank 0's, as an error message.
std::optional<std::string> compare_signature(const std::map<std::string, std::string>& mine,
                                             const std::map<std::string, std::string>& theirs) {
  std::set<std::string> keys;
  for (const auto& kv : mine) keys.insert(kv.first);
  for (const auto& kv : theirs) keys.insert(kv.first);
  for (const std::string& key : keys) {
    auto a = mine.find(key), b = theirs.find(key);
    const std::string here = a == mine.end() ? "absent" : a->second;
    const std::string there = b == theirs.end() ? "absent" : b->second;
    if (here != there) return fmt::format("{}: {} is {} here but {} on rank 0", kSave, key, here, there);
  }
  return std::nullopt;
}

std::string draw_save_id() {
  std::random_device device;
  const std::uint64_t id = (std::uint64_t{device()} << 32) ^ std::uint64_t{device()};
  return fmt::format("{:016x}", id);
}

// ---- load: the checkpoint this rank would have saved, assembled from the files ---------------

struct FileName {
  std::int64_t rank = 0, world = 0;
};

// "rank-<k>-of-<R>.safetensors" with 0 <= k < R, or nothing.
std::optional<FileName> parse_file_name(std::string_view name) {
  constexpr std::string_view head = "rank-", mid = "-of-", tail = ".safetensors";
  if (!name.starts_with(head) || !name.ends_with(tail)) return std::nullopt;
  const std::string_view middle = name.substr(head.size(), name.size() - head.size() - tail.size());
  const std::size_t of = middle.find(mid);
  if (of == std::string_view::npos) return std::nullopt;
  const auto k = parse_int(middle.substr(0, of)), world = parse_int(middle.substr(of + mid.size()));
  if (!k || !world || *k < 0 || *k >= *world) return std::nullopt;
  return FileName{*k, *world};
}

// The world size R of the checkpoint in dir, after checking that every rank-k-of-R file is there
// and no file of another R is.
std::int64_t saved_world_size(const std::string& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot list '{}': {}", kLoad, dir, ec.message()));
  std::map<std::int64_t, std::set<std::int64_t>> found;  // R -> the ranks present
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(fmt::format("{}: cannot list '{}': {}", kLoad, dir, ec.message()));
    if (auto f = parse_file_name(it->path().filename().string())) found[f->world].insert(f->rank);
  }
  if (found.empty())
    throw Error(fmt::format("{}: '{}' holds no rank-<k>-of-<R>.safetensors file (save_sharded_checkpoint's)", kLoad,
                            dir));
  if (found.size() > 1) {
    auto a = found.begin(), b = std::next(a);
    throw Error(fmt::format("{}: '{}' holds files of different world sizes, '{}' and '{}' (a save under another number "
                            "of ranks that did not finish?)",
                            kLoad, dir, file_name(*a->second.begin(), a->first), file_name(*b->second.begin(), b->first)));
  }
  const auto& [world, ranks] = *found.begin();
  for (std::int64_t k = 0; k < world; ++k)
    if (ranks.count(k) == 0)
      throw Error(fmt::format("{}: '{}' has no '{}' (a checkpoint saved by {} ranks has rank-0-of-{} to rank-{}-of-{})",
                              kLoad, dir, file_name(k, world), world, world, world - 1, world));
  return world;
}

// One tensor of the assembled file.
struct Entry {
  std::string name, dtype;
  Shape shape;                 // in the assembled file
  std::size_t offset = 0;      // in the assembled file's data section
  std::size_t size = 0;        // bytes
  enum class Kind { Same, Rows, OwnFile, First } kind = Kind::Same;
  // Same: equal in every file (checked), copied from file 0. OwnFile: from this rank's file
  // (the generator when R' = R). First: from file 0, not compared (the generator when not asked
  // for; a tensor the module does not have, which the load then refuses).
  // Rows: a table or one of its optimizer buffers, [N, D] in all.
  bool saved_sharded = false;        // over the R files, or whole in every file
  std::int64_t n = 0, d = 0;
  std::optional<ShardInfo> target;   // this rank's rows; null: the whole table
};

std::string dtype_shape(const nn::SafetensorsEntry& e) { return e.dtype + " " + shape_str(e.shape); }

class Assembler {
 public:
  Assembler(std::string dir, const nn::Module& module, const nn::CheckpointParts& parts)
      : dir_(std::move(dir)), parts_(parts), world_(my_world()), rank_(my_rank()) {
    for (const auto& [name, p] : module.named_parameters(false)) by_name_.emplace(name, p);
  }

  // The assembled checkpoint file (header and data), ready for nn::load_checkpoint_from_bytes.
  std::vector<std::byte> run() {
    saved_world_ = saved_world_size(dir_);
    for (std::int64_t j = 0; j < saved_world_; ++j) {
      const std::string name = file_name(j, saved_world_);
      const std::vector<std::byte> bytes = nn::read_whole_file(kLoad, in_dir(dir_, name));
      nn::Safetensors st;
      try {
        st = nn::parse_safetensors(bytes);
      } catch (const Error& e) {
        throw Error(fmt::format("{}: '{}': {}", kLoad, in_dir(dir_, name), e.what()));
      }
      check_metadata(j, name, st);
      if (j == 0) plan(name, st);
      copy(j, name, st);
    }
    return std::move(blob_);
  }

 private:
  std::string first_file() const { return file_name(0, saved_world_); }

  void check_metadata(std::int64_t j, const std::string& name, const nn::Safetensors& st) {
    for (const std::string& key : {std::string("hitch.checkpoint"), kWorld, kRank, kSaveId})
      if (st.metadata.count(key) == 0)
        throw Error(fmt::format("{}: '{}' is not a file of save_sharded_checkpoint: its metadata has no '{}'", kLoad,
                                in_dir(dir_, name), key));
    const auto world = parse_int(st.metadata.at(kWorld)), k = parse_int(st.metadata.at(kRank));
    if (!world || !k || *world != saved_world_ || *k != j)
      throw Error(fmt::format("{}: '{}' says it is rank {} of {} ('{}', '{}' in its metadata)", kLoad,
                              in_dir(dir_, name), st.metadata.at(kRank), st.metadata.at(kWorld), kRank, kWorld));
    if (j == 0) {
      metadata_ = st.metadata;
      return;
    }
    // The tables' row counts first (files of different N), then the save id, then the rest.
    std::set<std::string> keys;
    for (const auto& kv : st.metadata) keys.insert(kv.first);
    for (const auto& kv : metadata_) keys.insert(kv.first);
    std::vector<std::string> order;
    for (const std::string& key : keys)
      if (key.starts_with(kRows)) order.push_back(key);
    order.push_back(kSaveId);
    for (const std::string& key : keys)
      if (!key.starts_with(kRows) && key != kSaveId && key != kRank) order.push_back(key);
    for (const std::string& key : order) {
      const auto a = std::as_const(metadata_).find(key);
      const auto b = st.metadata.find(key);
      const std::string first = a == metadata_.end() ? "(absent)" : "'" + a->second + "'";
      const std::string here = b == st.metadata.end() ? "(absent)" : "'" + b->second + "'";
      if (first == here) continue;
      if (key == kSaveId)
        throw Error(fmt::format("{}: '{}' holds files of two saves: '{}' has save id {} but '{}' has {} (a save that "
                                "did not finish on every rank?)",
                                kLoad, dir_, first_file(), first, name, here));
      if (key.starts_with(kRows))
        throw Error(fmt::format("{}: the files disagree on the rows of table '{}': {} in '{}' but {} in '{}'", kLoad,
                                key.substr(kRows.size()), first, first_file(), here, name));
      throw Error(fmt::format("{}: the files disagree on metadata '{}': {} in '{}' but {} in '{}'", kLoad, key, first,
                              first_file(), here, name));
    }
  }

  // The table whose first name in the file is `name` and its target in the module, or nothing
  // when the Parameter is neither saved sharded nor sharded here.
  std::optional<Entry> table(const nn::SafetensorsEntry& e) {
    const auto saved = std::as_const(metadata_).find(kRows + e.name);
    const auto param = std::as_const(by_name_).find(e.name);
    const std::optional<ShardInfo> target = param == by_name_.end() ? std::nullopt : sharding(param->second);
    if (saved == metadata_.end() && !target) return std::nullopt;
    Entry out;
    out.name = e.name;
    out.dtype = e.dtype;
    out.kind = Entry::Kind::Rows;
    out.saved_sharded = saved != metadata_.end();
    if (e.dtype != "F32" || e.shape.size() != 2)
      throw Error(fmt::format("{}: '{}': the table '{}' is {}, but a table is F32 with 2 dimensions", kLoad,
                              in_dir(dir_, first_file()), e.name, dtype_shape(e)));
    if (out.saved_sharded) {
      const auto n = parse_int(saved->second);
      if (!n || *n < 0)
        throw Error(fmt::format("{}: '{}': metadata '{}' = '{}' is not a row count", kLoad, in_dir(dir_, first_file()),
                                saved->first, saved->second));
      out.n = *n;
    } else {
      out.n = e.shape[0];
    }
    out.d = e.shape[1];
    if (param == by_name_.end()) {  // not the module's: the load refuses it; keep file 0's shape
      out.kind = Entry::Kind::First;
      out.shape = e.shape;
      return out;
    }
    const Shape here = target ? Shape{target->num_rows, target->dim} : param->second.shape();
    if (here != Shape{out.n, out.d})
      throw Error(fmt::format("{}: '{}' is a {} table in '{}' but {} in the module{}", kLoad, e.name,
                              shape_str({out.n, out.d}), dir_, shape_str(here), target ? " (sharded)" : ""));
    out.target = target;
    out.shape = {target ? target->local_rows : out.n, out.d};
    return out;
  }

  // The assembled file's layout, from file 0: which tensors are rows, which are copied.
  void plan(const std::string& name, const nn::Safetensors& st) {
    std::map<std::string, Entry> tables;  // by first name
    for (const nn::SafetensorsEntry& e : st.tensors)
      if (!e.name.starts_with("optim.") && !e.name.starts_with("generator."))
        if (std::optional<Entry> t = table(e)) tables.emplace(e.name, *t);
    const bool own_generator = world_ == saved_world_;
    for (const nn::SafetensorsEntry& e : st.tensors) {
      Entry entry;
      entry.name = e.name;
      entry.dtype = e.dtype;
      entry.shape = e.shape;
      if (auto t = tables.find(e.name); t != tables.end()) {
        entry = t->second;
      } else if (e.name.starts_with("optim.")) {  // optim.<table>.<field>: a buffer of its shape is rows
        const std::string rest = e.name.substr(6);
        const std::size_t dot = rest.rfind('.');
        auto owner = dot == std::string::npos ? tables.end() : tables.find(rest.substr(0, dot));
        const nn::SafetensorsEntry* owner_entry = owner == tables.end() ? nullptr : st.find(owner->first);
        if (owner_entry != nullptr && e.dtype == "F32" && e.shape == owner_entry->shape) {
          entry = owner->second;
          entry.name = e.name;
        }
      } else if (e.name.starts_with("generator.")) {
        entry.kind = own_generator ? Entry::Kind::OwnFile : parts_.generator == nullptr ? Entry::Kind::First : Entry::Kind::Same;
      }
      entries_.push_back(entry);
    }
    // The layout: the header nn::safetensors_header writes for these shapes, then the data, in one
    // buffer (the header is inserted in front of the data within reserved capacity: no copy).
    std::size_t data = 0, bound = 64;
    for (Entry& entry : entries_) {
      entry.offset = data;
      entry.size = static_cast<std::size_t>(checked_numel(entry.name, entry.shape)) * nn::dtype_size(entry.dtype);
      data += entry.size;
      bound += 2 * entry.name.size() + 128;
    }
    for (const auto& [key, value] : metadata_) bound += 2 * (key.size() + value.size()) + 16;
    blob_.reserve(data + bound);
    blob_.resize(data);
    std::vector<nn::SafetensorsTensor> tensors;
    for (const Entry& entry : entries_)
      tensors.push_back({entry.name, entry.dtype, entry.shape, std::span<const std::byte>(blob_).subspan(entry.offset, entry.size)});
    std::string header;
    try {
      header = nn::safetensors_header(tensors, metadata_);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: '{}': {}", kLoad, in_dir(dir_, name), e.what()));
    }
    const auto* text = reinterpret_cast<const std::byte*>(header.data());
    blob_.insert(blob_.begin(), text, text + header.size());
    data_start_ = header.size();
  }

  void copy(std::int64_t j, const std::string& name, const nn::Safetensors& st) {
    const std::string path = in_dir(dir_, name);
    if (st.tensors.size() != entries_.size())
      for (const nn::SafetensorsEntry& e : st.tensors)
        if (std::none_of(entries_.begin(), entries_.end(), [&](const Entry& x) { return x.name == e.name; }))
          throw Error(fmt::format("{}: '{}' holds '{}', which '{}' does not", kLoad, path, e.name, first_file()));
    for (const Entry& entry : entries_) {
      const nn::SafetensorsEntry* e = st.find(entry.name);
      if (e == nullptr)
        throw Error(fmt::format("{}: '{}' holds '{}', which '{}' does not", kLoad, in_dir(dir_, first_file()),
                                entry.name, name));
      std::byte* out = blob_.data() + data_start_ + entry.offset;
      switch (entry.kind) {
        case Entry::Kind::First:
          if (j == 0) std::memcpy(out, e->bytes.data(), entry.size);
          break;
        case Entry::Kind::OwnFile:
          if (e->dtype != entry.dtype || e->shape != entry.shape)
            throw Error(fmt::format("{}: '{}' holds '{}' as {}, but '{}' as {}", kLoad, path, e->name, dtype_shape(*e),
                                    first_file(), entry.dtype + " " + shape_str(entry.shape)));
          if (j == rank_) std::memcpy(out, e->bytes.data(), entry.size);
          break;
        case Entry::Kind::Same:
          same(j, path, entry, *e, out);
          break;
        case Entry::Kind::Rows:
          rows(j, path, entry, *e, out);
          break;
      }
    }
  }

  void same(std::int64_t j, const std::string& path, const Entry& entry, const nn::SafetensorsEntry& e, std::byte* out) {
    if (j == 0) {
      std::memcpy(out, e.bytes.data(), entry.size);
      return;
    }
    if (e.dtype != entry.dtype || e.shape != entry.shape)
      throw Error(fmt::format("{}: '{}' holds '{}' as {}, but '{}' as {}", kLoad, path, e.name, dtype_shape(e),
                              first_file(), entry.dtype + " " + shape_str(entry.shape)));
    if (std::memcmp(out, e.bytes.data(), entry.size) == 0) return;
    if (e.name.starts_with("generator."))
      throw Error(fmt::format("{}: the generator states in '{}' and '{}' differ (each rank saved its own): they can "
                              "be restored into {} ranks, as saved, but not into {}; leave the generator out of parts",
                              kLoad, first_file(), path, saved_world_, world_));
    const std::string where =
        e.dtype == "F32" ? " (" + nn::detail::first_difference(std::span<const std::byte>(out, entry.size), e.bytes) + ")" : "";
    throw Error(fmt::format("{}: '{}' holds '{}' with other values than '{}'{}; every rank must save the same replicated "
                            "tensors",
                            kLoad, path, e.name, first_file(), where));
  }

  void rows(std::int64_t j, const std::string& path, const Entry& entry, const nn::SafetensorsEntry& e, std::byte* out) {
    const std::int64_t held = entry.saved_sharded ? rows_of(entry.n, j, saved_world_) : entry.n;
    if (e.dtype != "F32" || e.shape != Shape{held, entry.d})
      throw Error(fmt::format("{}: '{}' holds '{}' as {}, but {}", kLoad, path, e.name, dtype_shape(e),
                              entry.saved_sharded
                                  ? fmt::format("rank {} of {} holds F32 {} of a [{}, {}] table", j, saved_world_,
                                                shape_str({held, entry.d}), entry.n, entry.d)
                                  : fmt::format("'{}' as F32 {}", first_file(), shape_str({held, entry.d}))));
    // Saved whole (a replicated table, sharded here): rows from file 0, and each later file's
    // equal to them (each rank compares the rows it keeps; together they cover the table).
    const bool compare = !entry.saved_sharded && j > 0;
    const auto row_bytes = static_cast<std::size_t>(entry.d) * sizeof(float);
    for (std::int64_t i = 0; i < held; ++i) {
      const std::int64_t g = entry.saved_sharded ? i * saved_world_ + j : i;
      std::int64_t dst = g;
      if (entry.target) {
        if (entry.target->owner(g) != entry.target->rank) continue;
        dst = entry.target->local_index(g);
      }
      std::byte* to = out + static_cast<std::size_t>(dst) * row_bytes;
      const std::byte* from = e.bytes.data() + static_cast<std::size_t>(i) * row_bytes;
      if (!compare) {
        std::memcpy(to, from, row_bytes);
      } else if (std::memcmp(to, from, row_bytes) != 0) {
        throw Error(fmt::format("{}: '{}' holds '{}' with other values than '{}' (row {}: {}); every rank must save the "
                                "same replicated tensors",
                                kLoad, path, e.name, first_file(), g,
                                nn::detail::first_difference(std::span<const std::byte>(to, row_bytes),
                                                             std::span<const std::byte>(from, row_bytes))));
      }
    }
  }

  std::string dir_;
  const nn::CheckpointParts& parts_;
  std::int64_t world_, rank_;
  std::int64_t saved_world_ = 0;
  std::map<std::string, Parameter> by_name_;  // every module name of every Parameter
  std::map<std::string, std::string> metadata_;  // file 0's
  std::vector<Entry> entries_;
  std::vector<std::byte> blob_;
  std::size_t data_start_ = 0;
};

}  // namespace

void save_sharded_checkpoint(const std::string& dir, const nn::Module& module, const nn::CheckpointParts& parts) {
  const int world = my_world(), k = my_rank();
  std::optional<std::string> error;
  std::map<std::string, std::string> signature, metadata;
  try {
    signature = save_signature(module, parts);
    for (const auto& [name, p] : module.named_parameters())
      if (const std::optional<ShardInfo> s = sharding(p)) metadata[kRows + name] = std::to_string(s->num_rows);
  } catch (const Error& e) {
    error = e.what();
  }
  std::string save_id = k == 0 ? draw_save_id() : std::string();
  if (is_initialized()) {
    const auto theirs = deserialize(rank0_text(serialize(signature)));
    if (!error) error = compare_signature(signature, theirs);
    save_id = rank0_text(save_id);
  }
  settle(error);
  metadata[kWorld] = std::to_string(world);
  metadata[kRank] = std::to_string(k);
  metadata[kSaveId] = save_id;
  try {
    nn::save_checkpoint(in_dir(dir, file_name(k, world)), module, parts, metadata);
  } catch (const Error& e) {
    error = e.what();
  }
  settle(error);
  if (k == 0) {  // the files of an earlier save under another R; failures only leave them
    std::error_code ec;
    std::vector<fs::path> stale;
    for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
      if (auto f = parse_file_name(it->path().filename().string()); f && f->world != world) stale.push_back(it->path());
    for (const fs::path& p : stale) fs::remove(p, ec);
  }
  if (is_initialized()) barrier();  // a load right after sees the folder as rank 0 left it
}

void load_sharded_checkpoint(const std::string& dir, nn::Module& module, const nn::CheckpointParts& parts) {
  const std::string source = "'" + dir + "'";
  std::optional<std::string> error;
  std::vector<std::byte> file;
  try {
    file = Assembler(dir, module, parts).run();
    nn::check_checkpoint_from_bytes(file, module, parts, source);
  } catch (const std::exception& e) {  // hitch::Error, or no memory: agreed like any refusal
    error = e.what();
  }
  settle(error);
  nn::load_checkpoint_from_bytes(file, module, parts, source);
}

}  // namespace hitch::dist
