// hitch/core/parallel.cpp: a small fixed pool of parked std::threads (see parallel.h).
//
// One job at a time: the caller publishes (fn, chunk count) and runs chunk 0; worker w runs
// chunk w and counts itself done. Jobs come from one thread at a time (a second caller waits on
// job_mutex_), nested calls run serially.
//
// Waking a thread parked on a condition variable costs ~50 us on a VM (the idle vCPU has to be
// interrupted and rescheduled), more than a whole embedding kernel at the benchmark's sizes. So
// after a job a worker spins on the job word for kSpin before it parks, and the caller spins on
// the pending count before it blocks: back-to-back kernels of one training step hand work over
// in well under a microsecond. The job word packs (generation, chunk count) into one atomic, so a
// worker that is not part of a job can never pair one job's generation with another's count.
#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace hitch {

namespace {

thread_local bool inside_chunk = false;

constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or kSpin has passed; true if ready.
template <class Ready>
bool spin_until(Ready ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return ready();
  }
}

class Pool {
 public:
  Pool* previous = nullptr;  // the parent's pool in a forked child (see pool())

  void set_threads(int n) { threads_ = n; }
  int threads() const { return threads_; }

  void run(std::size_t chunks, const std::function<void(std::size_t)>& chunk) {
    std::lock_guard job(job_mutex_);  // one job at a time
    ensure_workers(chunks - 1);
    job_ = &chunk;
    error_ = nullptr;
    pending_.store(chunks - 1, std::memory_order_relaxed);
    {
      // Under the mutex, so a worker about to park cannot miss the new word.
      std::lock_guard lock(mutex_);
      const std::uint64_t generation = (word_.load(std::memory_order_relaxed) >> kChunkBits) + 1;
      word_.store(generation << kChunkBits | chunks, std::memory_order_release);
    }
    wake_.notify_all();
    run_chunk(0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr int kChunkBits = 16;  // chunks <= 256 threads

  void ensure_workers(std::size_t n) {
    while (workers_.size() < n) {
      const std::size_t id = workers_.size() + 1;
      // The generation before the job being published: a new thread may start after it.
      const std::uint64_t seen = word_.load(std::memory_order_relaxed) >> kChunkBits;
      workers_.emplace_back([this, id, seen] { work(id, seen); });
    }
  }

  void run_chunk(std::size_t id) {
    inside_chunk = true;
    try {
      (*job_)(id);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    inside_chunk = false;
  }

  void work(std::size_t id, std::uint64_t seen) {
    for (;;) {
      std::uint64_t word = 0;
      auto fresh = [&] {
        word = word_.load(std::memory_order_acquire);
        return (word >> kChunkBits) != seen;
      };
      if (!spin_until(fresh)) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, fresh);
      }
      seen = word >> kChunkBits;
      if (id >= (word & ((std::uint64_t{1} << kChunkBits) - 1))) continue;  // not in this job
      run_chunk(id);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard lock(mutex_);  // the caller checks pending_ under it before it blocks
        done_.notify_one();
      }
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(std::size_t)>* job_ = nullptr;
  std::atomic<std::uint64_t> word_{0};  // generation << kChunkBits | chunk count
  std::atomic<std::size_t> pending_{0};
  std::exception_ptr error_;
  std::atomic<int> threads_{1};
};

// The pool lives as long as the process (its workers are parked or spinning at exit, never
// joined). A child made by fork() has only the forking thread, so the handler below gives it a
// fresh pool with the parent's thread count; the parent's pool object stays reachable through
// previous, never used again.
std::atomic<Pool*> current_pool{nullptr};

void fresh_pool_after_fork() {
  Pool* old = current_pool.load();
  auto* p = new Pool;
  p->set_threads(old->threads());
  p->previous = old;
  current_pool.store(p);
}

Pool& pool() {
  static const bool created = [] {
    current_pool.store(new Pool);
    pthread_atfork(nullptr, nullptr, fresh_pool_after_fork);
    return true;
  }();
  (void)created;
  return *current_pool.load(std::memory_order_acquire);
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1 || n > 256) throw Error(fmt::format("set_num_threads: n = {} is out of range (valid: [1, 256])", n));
  pool().set_threads(n);
}

int get_num_threads() { return pool().threads(); }

void parallel_for(std::size_t n, std::size_t min_chunk, const std::function<void(std::size_t, std::size_t)>& fn) {
  if (n == 0) return;
  const std::size_t by_size = n / std::max<std::size_t>(min_chunk, 1);
  const std::size_t chunks =
      inside_chunk ? 1 : std::max<std::size_t>(1, std::min(static_cast<std::size_t>(get_num_threads()), by_size));
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  pool().run(chunks, [&](std::size_t c) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace hitch
