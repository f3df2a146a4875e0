// An optimizer step is all-or-nothing under allocation failure (issue 12, finding 6): for every
// N, the (N+1)-th allocation of a step throws std::bad_alloc; the Parameters and the optimizer
// state must then be bitwise as before (values, storage versions, export_state, state_size), and
// the next step must equal the step of an optimizer that never failed. N runs from 0 until the
// step gets through, so every allocation a step makes is tried.
//
// Its own executable: it replaces the global operator new (each form that allocates) with one
// that counts down while armed. Sizes are above parallel_for's thresholds, so at 2 threads the
// update is really split (and the worker threads' allocations are counted too).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <hitch/hitch.h>
#include "reliability_model.h"
#include "optim_helpers.h"

namespace {

// < 0: not armed; otherwise the number of allocations that still succeed.
std::atomic<long> g_allocations_left{-1};

void* counted_alloc(std::size_t size, std::size_t align) {
  long left = g_allocations_left.load(std::memory_order_relaxed);
  while (left >= 0) {
    if (left == 0) throw std::bad_alloc();
    if (g_allocations_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) break;
  }
  if (size == 0) size = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    size = (size + align - 1) / align * align;  // aligned_alloc wants a multiple of the alignment
    p = std::aligned_alloc(align, size);
  }
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

struct Armed {  // arms the countdown for one scope
  explicit Armed(long n) { g_allocations_left.store(n); }
  ~Armed() { g_allocations_left.store(-1); }
};

}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n, alignof(std::max_align_t)); }
void* operator new[](std::size_t n) { return counted_alloc(n, alignof(std::max_align_t)); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_alloc(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_alloc(n, static_cast<std::size_t>(a)); }
// The replacements pair malloc with free by design; GCC's -Wmismatched-new-delete cannot see that
// operator new above is ours (it fires at -O1, the asan preset).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

using namespace hitch;
using optim::Optimizer;

namespace {

// Two dense Parameters [64, 300] (a has a gradient at step 1, b first at step 2, so step 2 both
// updates existing state and creates new state) and two tables [2000, 32] with sparse gradients
// from two tied lookups each (t1 at both steps, t2 first at step 2).
struct Model {
  Parameter a, b, t1, t2;
  explicit Model(std::uint64_t seed) {
    Generator gen(seed);
    a = Parameter("a", Tensor::randn({64, 300}, 0.0f, 0.1f, gen));
    b = Parameter("b", Tensor::randn({64, 300}, 0.0f, 0.1f, gen));
    t1 = Parameter("t1", Tensor::randn({2000, 32}, 0.0f, 0.1f, gen));
    t2 = Parameter("t2", Tensor::randn({2000, 32}, 0.0f, 0.1f, gen));
  }
};

std::vector<float> dense_values(std::uint64_t seed, std::int64_t n) {
  Generator gen(seed);
  return Tensor::randn({n}, gen).to_vector();
}

IndexTensor indices(std::uint64_t seed, std::int64_t count, std::int64_t rows) {
  Generator gen(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(count));
  for (auto& x : v) x = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(rows)));
  return IndexTensor({count}, std::move(v));
}

// A sparse gradient of two blocks with deferred row sums (an Embedding and an EmbeddingBag
// lookup of the same table), as a tied model leaves it.
void sparse_lookups(Parameter& t, std::uint64_t seed) {
  const IndexTensor singles = indices(seed, 700, 2000);
  const IndexTensor bags = indices(seed + 1, 1400, 2000);
  const IndexTensor offsets({700}, [] {
    std::vector<std::int64_t> o(700);
    for (std::size_t i = 0; i < o.size(); ++i) o[i] = static_cast<std::int64_t>(2 * i);
    return o;
  }());
  const Tensor x = embedding(singles, t, {.sparse = true});
  const Tensor y = embedding_bag(bags, offsets, t, {.mode = BagMode::Sum, .sparse = true});
  backward(sum(mul(add(x, y), x)));
}

struct Config {
  std::string name;
  bool dense;   // a and b take part (not for SparseAdam)
  bool sparse;  // t1 and t2 take part
  std::function<std::unique_ptr<Optimizer>(Model&)> make;
};

std::vector<Parameter> params_of(Model& m, const Config& c) {
  std::vector<Parameter> out;
  if (c.dense) out.insert(out.end(), {m.a, m.b});
  if (c.sparse) out.insert(out.end(), {m.t1, m.t2});
  return out;
}

void set_grads(Model& m, const Config& c, int step) {
  for (Parameter* p : {&m.a, &m.b, &m.t1, &m.t2}) p->zero_grad(true);
  if (c.dense) {
    optim_test::set_dense_grad(m.a, dense_values(10 + static_cast<std::uint64_t>(step), m.a.numel()));
    if (step == 2) optim_test::set_dense_grad(m.b, dense_values(20, m.b.numel()));
  }
  if (c.sparse) {
    sparse_lookups(m.t1, 30 + static_cast<std::uint64_t>(step));
    if (step == 2) sparse_lookups(m.t2, 40);
  }
}

// Everything a failed step must leave as it was.
struct Snapshot {
  std::vector<std::vector<float>> values;
  std::vector<std::uint64_t> versions;
  optim::StateRecords state;
  std::size_t state_size = 0;

  Snapshot(Model& m, const Optimizer& opt) {
    for (Parameter* p : {&m.a, &m.b, &m.t1, &m.t2}) {
      values.push_back(optim_test::values_of(*p));
      versions.push_back(p->impl().storage->version);
    }
    state = opt.export_state();
    state_size = opt.state_size();
  }

  static bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  }

  // versions_too: the same run (another run's Parameters have their own storage versions).
  void check_equal(const Snapshot& o, bool versions_too) const {
    for (std::size_t i = 0; i < values.size(); ++i) CHECK_MESSAGE(same_bits(values[i], o.values[i]), "Parameter " << i);
    if (versions_too) CHECK(versions == o.versions);
    CHECK(state_size == o.state_size);
    REQUIRE(state.size() == o.state.size());
    for (std::size_t r = 0; r < state.size(); ++r) {
      CHECK(state[r].first.name() == o.state[r].first.name());
      CHECK(state[r].second.counts == o.state[r].second.counts);
      REQUIRE(state[r].second.buffers.size() == o.state[r].second.buffers.size());
      for (const auto& [field, buffer] : state[r].second.buffers) {
        auto it = o.state[r].second.buffers.find(field);
        REQUIRE(it != o.state[r].second.buffers.end());
        CHECK_MESSAGE(same_bits(buffer, it->second), "record " << r << " field " << field);
      }
    }
  }
};

// The reference: both steps without any failure.
Snapshot reference(const Config& c) {
  Model m(1);
  auto opt = c.make(m);
  set_grads(m, c, 1);
  opt->step();
  set_grads(m, c, 2);
  opt->step();
  return Snapshot(m, *opt);
}

void sweep(const Config& c, int threads) {
  reliability::ThreadCount guard(threads);
  const Snapshot want = reference(c);
  long failures = 0;
  for (long n = 0; n < 100000; ++n) {
    Model m(1);
    auto opt = c.make(m);
    set_grads(m, c, 1);
    opt->step();
    set_grads(m, c, 2);
    const Snapshot before(m, *opt);
    bool failed = false;
    try {
      Armed armed(n);
      opt->step();
    } catch (const std::bad_alloc&) {
      failed = true;
    }
    if (!failed) {
      Snapshot(m, *opt).check_equal(want, false);
      break;
    }
    ++failures;
    INFO(c.name << " at " << threads << " threads: allocation " << n << " failed");
    Snapshot(m, *opt).check_equal(before, true);  // nothing changed
    opt->step();                                  // and the next step is the normal one
    Snapshot(m, *opt).check_equal(want, false);
  }
  MESSAGE(c.name << " at " << threads << " threads: " << failures << " allocation failures tried");
  CHECK(failures >= 1);  // the step does allocate (state, walks): the sweep was not empty
}

std::vector<Config> configs() {
  using namespace optim;
  return {
      {"Adam", true, true, [](Model& m) { return std::make_unique<Adam>(params_of(m, {"", true, true, {}}), AdamOptions{.lr = 0.01, .weight_decay = 0.1}); }},
      {"Adam amsgrad", true, false,
       [](Model& m) { return std::make_unique<Adam>(std::vector<Parameter>{m.a, m.b}, AdamOptions{.lr = 0.01, .amsgrad = true}); }},
      {"AdamW", true, true, [](Model& m) { return std::make_unique<AdamW>(params_of(m, {"", true, true, {}}), AdamWOptions{.lr = 0.01}); }},
      {"SGD momentum", true, true,
       [](Model& m) { return std::make_unique<SGD>(params_of(m, {"", true, true, {}}), SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1}); }},
      {"SGD", true, true, [](Model& m) { return std::make_unique<SGD>(params_of(m, {"", true, true, {}}), SGDOptions{.lr = 0.1}); }},
      {"Adagrad", true, true,
       [](Model& m) { return std::make_unique<Adagrad>(params_of(m, {"", true, true, {}}), AdagradOptions{.lr = 0.1, .lr_decay = 0.01}); }},
      {"SparseAdam", false, true,
       [](Model& m) { return std::make_unique<SparseAdam>(std::vector<Parameter>{m.t1, m.t2}, SparseAdamOptions{.lr = 0.01}); }},
  };
}

}  // namespace

TEST_CASE("optimizer all-or-nothing: a step that runs out of memory changes nothing, at 1 thread") {
  for (const Config& c : configs()) sweep(c, 1);
}

TEST_CASE("optimizer all-or-nothing: a step that runs out of memory changes nothing, at 2 threads") {
  for (const Config& c : configs()) sweep(c, 2);
}

TEST_CASE("optimizer all-or-nothing: the allocation hook really fails allocations") {
  bool threw = false;
  try {
    Armed armed(0);
    std::vector<float> v(10);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  CHECK(threw);
}
