// The thread pool on a busy machine (core/runtime/parallel.cpp): when every core also runs a
// busy loop, parallel_for gives up its workers and runs each job as one call on the caller; once
// the loops stop it splits jobs again. The same items are computed either way (checked), so the
// only visible difference is the number of fn calls per job, which is what these cases watch.
#include <doctest/doctest.h>

#include <hitch/core/runtime/parallel.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

// One job of ~100 us or more; returns how many fn calls it took (1: the caller alone).
int one_job(std::vector<float>& out) {
  std::atomic<int> calls{0};
  hitch::parallel_for(out.size(), 1000, [&](std::size_t b, std::size_t e) {
    ++calls;
    for (std::size_t i = b; i < e; ++i) out[i] = std::sqrt(static_cast<float>(i) + 0.5f) * 1.0001f;
  });
  return calls.load();
}

// Runs jobs until one took `want` calls (true) or `limit` passed (false); checks every result.
bool jobs_until(int want, std::chrono::seconds limit) {
  std::vector<float> out(200000);
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    std::fill(out.begin(), out.end(), -1.0f);
    const int calls = one_job(out);
    for (std::size_t i = 0; i < out.size(); i += 997) REQUIRE(out[i] == std::sqrt(static_cast<float>(i) + 0.5f) * 1.0001f);
    if (calls == want) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("threads: beside a busy loop on every core parallel_for runs on the caller alone, then splits again") {
  hitch::set_num_threads(2);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  {
    std::atomic<bool> stop{false};
    std::vector<std::thread> neighbours;
    for (unsigned c = 0; c < cores; ++c)
      neighbours.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
        }
      });
    const bool went_serial = jobs_until(1, 20s);
    stop = true;
    for (auto& t : neighbours) t.join();
    CHECK_MESSAGE(went_serial, "with ", cores, " busy loops beside 2 hitch threads, no job ran on the caller alone in 20 s");
  }
  if (cores < 2) {
    MESSAGE("1 core: 2 hitch threads alone already share it, so jobs rightly stay on the caller");
  } else {
    // The quiet period is at most 640 ms; 20 s leaves room for a machine busy with other tests.
    CHECK_MESSAGE(jobs_until(2, 20s), "the busy loops stopped 20 s ago, and parallel_for still runs every job on the caller");
  }
  hitch::set_num_threads(1);
}
