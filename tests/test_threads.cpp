// The threads contract (docs/reliability.md): the tape is per thread, so two threads may each
// record and backpropagate their own graphs at once; a graph is backpropagated on the thread
// that recorded it; an optimizer step must not overlap a forward or backward reading the same
// Parameters. CI runs these under ThreadSanitizer (the tsan preset), with hitch's own pool at 1
// and at 2 threads (two user threads then share the pool).
#include <doctest/doctest.h>

#include <thread>

#include "reliability_model.h"

using reliability::RecModel;
using reliability::Sizes;
using reliability::ThreadCount;

namespace {
// Small enough for ThreadSanitizer, large enough that 2 pool threads split the work.
const Sizes kSizes{.items = 2048, .dim = 32, .batch = 256, .history = 8};
constexpr int kSteps = 3;

void two_models_on_two_threads(int pool_threads) {
  ThreadCount threads(pool_threads);
  const auto alone_a = reliability::train(11, kSteps, kSizes);
  const auto alone_b = reliability::train(12, kSteps, kSizes);

  std::vector<std::vector<float>> a, b;
  std::size_t tape_a = 0, tape_b = 0;
  std::thread ta([&] {
    a = reliability::train(11, kSteps, kSizes);
    tape_a = hitch::tape_size();
  });
  std::thread tb([&] {
    b = reliability::train(12, kSteps, kSizes);
    tape_b = hitch::tape_size();
  });
  ta.join();
  tb.join();
  // Each thread got exactly what training alone gives, and left its own tape empty.
  CHECK(a == alone_a);
  CHECK(b == alone_b);
  CHECK(a != b);
  CHECK(tape_a == 0);
  CHECK(tape_b == 0);
}
}  // namespace

TEST_CASE("threads: two independent models train on two threads at once (hitch pool at 1 thread)") {
  two_models_on_two_threads(1);
}

TEST_CASE("threads: two independent models train on two threads at once (hitch pool at 2 threads)") {
  two_models_on_two_threads(2);
}

TEST_CASE("threads: one thread's graph is invisible to another thread's tape and backward") {
  hitch::Parameter w("w", hitch::Tensor({2}, {1, 2}));
  const hitch::Tensor loss = hitch::sum(w.value() * w.value());
  const std::size_t here = hitch::tape_size();
  std::size_t there = 99;
  std::string error;
  std::thread t([&] {
    there = hitch::tape_size();
    try {
      hitch::backward(loss);
    } catch (const hitch::Error& e) {
      error = e.what();
    }
  });
  t.join();
  CHECK(there == 0);
  CHECK(error.find("is not on this thread's tape: a graph must be backpropagated on the thread that recorded it") !=
        std::string::npos);
  CHECK_FALSE(w.has_grad());
  CHECK(hitch::tape_size() == here);
  hitch::backward(loss);  // on its own thread it runs
  CHECK(w.grad().to_vector() == std::vector<float>{2, 4});
}
