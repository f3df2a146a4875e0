// The two kernel paths of embedding and embedding_bag (core/runtime/path.h): the plain loops of
// ops/embedding.cpp and ops/embedding_bag.cpp (reference) and the kernels of ops/kernels/ (fast,
// at 1 and 2 threads) must give BITWISE the same forward output, weight gradient (dense values,
// and for a sparse gradient the coalesced rows and values) and per_sample_weights gradient, for
// every option the ops support. Compared with memcmp: no tolerance.
//
// The inputs are chosen so that an order change would show: normal random values (sums round
// differently when reordered), repeated indices (a row's sum has several terms), and for max
// ties between rows, -0 / +0 in one column and a NaN. Small tables (< 2^18 floats: the fast
// path's add_lookup) and large ones (> 2^18 floats: grouped by row) both run.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/path.h>
#include <hitch/hitch.h>

using namespace hitch;

namespace {

// Restores the kernel path and thread count a test found (fast and 1 unless HITCH_KERNELS says
// otherwise), also when a check throws.
struct PathGuard {
  KernelPath path = kernel_path();
  int threads = get_num_threads();
  ~PathGuard() {
    set_kernel_path(path);
    set_num_threads(threads);
  }
};

struct Setting {
  KernelPath path;
  int threads;
  const char* name;
};
constexpr Setting kFast1{KernelPath::fast, 1, "fast, 1 thread"};
constexpr Setting kFast2{KernelPath::fast, 2, "fast, 2 threads"};
constexpr Setting kReference{KernelPath::reference, 1, "reference"};

// Everything one forward + backward produces, as raw floats.
struct Result {
  std::vector<float> out;
  bool sparse = false;
  std::vector<std::int64_t> rows;  // sparse: coalesced rows and values
  std::vector<float> row_values;
  std::vector<float> dense;        // the weight gradient as dense values
  std::vector<float> psw_grad;     // empty when no per_sample_weights
};

// "" when a and b hold the same bits, else where they first differ.
std::string bits_diff(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  if (a.size() != b.size()) return fmt::format("{}: {} vs {} floats", what, a.size(), b.size());
  if (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0) return "";
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0)
      return fmt::format("{}[{}]: {:a} vs {:a}", what, i, a[i], b[i]);
  return "";
}

void check_same(const Result& got, const Result& want, const char* name) {
  CAPTURE(name);
  const std::string out = bits_diff(got.out, want.out, "out");
  CHECK_MESSAGE(out.empty(), out);
  CHECK(got.sparse == want.sparse);
  CHECK(got.rows == want.rows);
  const std::string values = bits_diff(got.row_values, want.row_values, "sparse row values");
  CHECK_MESSAGE(values.empty(), values);
  const std::string dense = bits_diff(got.dense, want.dense, "weight grad");
  CHECK_MESSAGE(dense.empty(), dense);
  const std::string psw = bits_diff(got.psw_grad, want.psw_grad, "per_sample_weights grad");
  CHECK_MESSAGE(psw.empty(), psw);
}

std::vector<float> normals(std::size_t n, Generator& gen) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(gen.normal());
  return v;
}

// A [rows, width] table of normal values; with special: row 1 = row 2 (ties between rows),
// -0 / +0 at column 0 of rows 3 and 4, NaN at column 1 of row 5.
std::vector<float> make_table(std::int64_t rows, std::int64_t width, bool special, std::uint64_t seed) {
  Generator gen(seed);
  std::vector<float> w = normals(static_cast<std::size_t>(rows * width), gen);
  if (special && width >= 2) {
    const auto d = static_cast<std::size_t>(width);
    std::copy_n(w.begin() + 2 * static_cast<std::ptrdiff_t>(d), d, w.begin() + static_cast<std::ptrdiff_t>(d));
    w[3 * d] = -0.0f;
    w[4 * d] = 0.0f;
    w[5 * d + 1] = std::nanf("");
  }
  return w;
}

// Indices with many repeats: most from a few hot rows (rows 0..5 and one near the end), the
// rest anywhere in the table.
std::vector<std::int64_t> make_indices(std::size_t n, std::int64_t rows, Generator& gen) {
  std::vector<std::int64_t> x(n);
  for (auto& v : x) {
    const std::uint64_t pick = gen.below(4);
    if (pick == 0) v = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(rows)));
    else if (pick == 1) v = rows - 1;
    else v = static_cast<std::int64_t>(gen.below(std::min<std::uint64_t>(6, static_cast<std::uint64_t>(rows))));
  }
  return x;
}

Result collect(const Tensor& out, const Tensor& weight, const Tensor& psw) {
  Result r;
  r.out = out.to_vector();
  const Grad* g = weight.impl().grad.get();
  REQUIRE(g != nullptr);
  r.sparse = g->is_sparse();
  if (r.sparse) {
    r.rows.assign(g->rows().begin(), g->rows().end());
    r.row_values.assign(g->row_values().begin(), g->row_values().end());
  }
  r.dense = g->dense().to_vector();
  if (psw.defined()) r.psw_grad = psw.grad().to_vector();
  return r;
}

// ---- embedding -------------------------------------------------------------------------------

struct EmbeddingCase {
  std::int64_t rows = 0;
  std::int64_t width = 0;
  bool two_d = false;
  EmbeddingOptions options;
};

Result run_embedding(const EmbeddingCase& c, const std::vector<float>& table, const Setting& setting) {
  set_kernel_path(setting.path);
  set_num_threads(setting.threads);
  Generator gen(11);
  const std::size_t n = 1200;
  const std::vector<std::int64_t> x = make_indices(n, c.rows, gen);
  const IndexTensor indices = c.two_d ? IndexTensor({40, 30}, x) : IndexTensor(x);
  Tensor weight(Shape{c.rows, c.width}, table);
  weight.requires_grad_();
  const Tensor out = embedding(indices, weight, c.options);
  Shape g_shape = indices.shape();
  g_shape.push_back(c.width);
  backward(out, Tensor(g_shape, normals(n * static_cast<std::size_t>(c.width), gen)));
  return collect(out, weight, {});
}

// ---- embedding_bag ---------------------------------------------------------------------------

enum class Form { offsets, include_last_offset, two_d };

struct BagCase {
  std::int64_t rows = 0;
  std::int64_t width = 0;
  Form form = Form::offsets;
  bool psw = false;
  EmbeddingBagOptions options;
};

Result run_bag(const BagCase& c, const std::vector<float>& table, const Setting& setting) {
  set_kernel_path(setting.path);
  set_num_threads(setting.threads);
  Generator gen(23);
  // 1-D forms: 160 bags of 0..12 positions; bag 0 and bag 7 empty, bag 3 all padding (when a
  // padding row is set: it is 2), bag 4 = two positions whose weights cancel (mean: Σ w = 0)
  // and bag 5 = positions of weight 0 (sqrtn: Σ w² = 0). include_last_offset: the last offset
  // ends the last bag 3 positions before the end of input (those are in no bag).
  std::vector<std::int64_t> lengths(160);
  for (auto& l : lengths) l = static_cast<std::int64_t>(gen.below(13));
  lengths[0] = lengths[7] = 0;
  lengths[3] = 3;
  lengths[4] = 2;
  lengths[5] = 3;
  std::vector<std::int64_t> offsets;
  std::int64_t total = 0;
  for (const std::int64_t l : lengths) {
    offsets.push_back(total);
    total += l;
  }
  if (c.form == Form::include_last_offset) {
    offsets.push_back(total);
    total += 3;
  }
  if (c.form == Form::two_d) total = 150 * 8;  // 150 bags of 8
  const auto n = static_cast<std::size_t>(total);
  std::vector<std::int64_t> x = make_indices(n, c.rows, gen);
  std::vector<float> w = normals(n, gen);
  if (c.form != Form::two_d) {
    const auto at = [&](std::size_t bag) { return static_cast<std::size_t>(offsets[bag]); };
    for (std::size_t k = 0; k < 3; ++k) x[at(3) + k] = 2;
    w[at(4) + 1] = -w[at(4)];
    for (std::size_t k = 0; k < 3; ++k) w[at(5) + k] = 0.0f;
  }
  Tensor weight(Shape{c.rows, c.width}, table);
  weight.requires_grad_();
  Tensor psw;
  if (c.psw) {
    psw = c.form == Form::two_d ? Tensor(Shape{150, 8}, w) : Tensor(w);
    psw.requires_grad_();
  }
  Tensor out;
  if (c.form == Form::two_d) {
    out = embedding_bag(IndexTensor({150, 8}, x), weight, c.options, psw);
  } else {
    EmbeddingBagOptions o = c.options;
    o.include_last_offset = c.form == Form::include_last_offset;
    out = embedding_bag(IndexTensor(x), IndexTensor(offsets), weight, o, psw);
  }
  backward(out, Tensor(out.shape(), normals(static_cast<std::size_t>(out.numel()), gen)));
  return collect(out, weight, psw);
}

// A table of > 2^18 floats (the fast path's grouped-by-row backward) for this width.
std::int64_t large_rows(std::int64_t width) { return ((std::int64_t{1} << 18) + 1000) / width + 1; }

}  // namespace

TEST_CASE("kernel paths: embedding, fast (1 and 2 threads) and reference give the same bits") {
  PathGuard guard;
  for (const std::int64_t width : {7, 16, 64}) {
    for (const bool large : {false, true}) {
      const std::int64_t rows = large ? large_rows(width) : 40;
      REQUIRE((rows * width > (std::int64_t{1} << 18)) == large);
      const std::vector<float> table = make_table(rows, width, true, 5);
      for (const bool pad : {false, true})
        for (const bool freq : {false, true})
          for (const bool sparse : {false, true})
            for (const bool two_d : {false, true}) {
              if (freq && sparse) continue;  // refused by embedding
              EmbeddingCase c{.rows = rows,
                              .width = width,
                              .two_d = two_d,
                              .options = {.padding_idx = pad ? std::optional<std::int64_t>(2) : std::nullopt,
                                          .scale_grad_by_freq = freq,
                                          .sparse = sparse}};
              CAPTURE(width);
              CAPTURE(rows);
              CAPTURE(pad);
              CAPTURE(freq);
              CAPTURE(sparse);
              CAPTURE(two_d);
              const Result ref = run_embedding(c, table, kReference);
              CHECK(ref.sparse == sparse);
              check_same(run_embedding(c, table, kFast1), ref, kFast1.name);
              check_same(run_embedding(c, table, kFast2), ref, kFast2.name);
            }
    }
  }
}

TEST_CASE("kernel paths: embedding_bag, every mode and option, fast (1 and 2 threads) and reference give the same bits") {
  PathGuard guard;
  for (const std::int64_t width : {7, 16, 64}) {
    for (const bool large : {false, true}) {
      const std::int64_t rows = large ? large_rows(width) : 40;
      const std::vector<float> plain_table = make_table(rows, width, false, 9);
      const std::vector<float> special_table = make_table(rows, width, true, 9);
      for (const BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Sqrtn, BagMode::Max})
        for (const bool psw : {false, true})
          for (const bool pad : {false, true})
            for (const bool sparse : {false, true})
              for (const bool freq : {false, true})
                for (const Form form : {Form::offsets, Form::include_last_offset, Form::two_d}) {
                  if (mode == BagMode::Max && (psw || sparse || freq)) continue;  // refused with max
                  if (sparse && freq) continue;                                   // refused
                  BagCase c{.rows = rows,
                            .width = width,
                            .form = form,
                            .psw = psw,
                            .options = {.mode = mode,
                                        .padding_idx = pad ? std::optional<std::int64_t>(2) : std::nullopt,
                                        .scale_grad_by_freq = freq,
                                        .sparse = sparse}};
                  CAPTURE(width);
                  CAPTURE(rows);
                  CAPTURE(to_string(mode));
                  CAPTURE(psw);
                  CAPTURE(pad);
                  CAPTURE(sparse);
                  CAPTURE(freq);
                  CAPTURE(static_cast<int>(form));
                  // max sees ties, -0 / +0 and a NaN; the sums see them only without NaN (a NaN
                  // sum hides the order of everything else in its bag).
                  const std::vector<float>& table = mode == BagMode::Max ? special_table : plain_table;
                  const Result ref = run_bag(c, table, kReference);
                  CHECK(ref.sparse == sparse);
                  check_same(run_bag(c, table, kFast1), ref, kFast1.name);
                  check_same(run_bag(c, table, kFast2), ref, kFast2.name);
                }
    }
  }
}

TEST_CASE("kernel paths: the max table's NaN, ties and signed zeros reach the outputs") {
  // Guards the test above against inputs that would hide a difference: the special table's rows
  // are used, so max's NaN rule and tie-breaking are exercised on both paths.
  PathGuard guard;
  const std::vector<float> table = make_table(40, 16, true, 9);
  BagCase c{.rows = 40, .width = 16, .form = Form::offsets, .psw = false, .options = {.mode = BagMode::Max}};
  const Result ref = run_bag(c, table, kReference);
  std::size_t nans = 0;
  for (const float v : ref.out) nans += std::isnan(v);
  CHECK(nans > 0);
  CHECK(std::isnan(ref.dense[5 * 16 + 1]) == false);  // the NaN row gets a finite gradient
  CHECK(ref.dense[5 * 16 + 1] != 0.0f);               // ... as the argmax of the bags it is in
}
