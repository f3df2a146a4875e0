// hitch/core/runtime/parallel.cpp: a small fixed pool of std::threads that spin, then park (see parallel.h).
//
// One job at a time: the caller publishes (fn, chunk count); the caller and the workers claim
// chunks from the job word one by one (an atomic counter) and count them done. Which thread runs
// a chunk does not matter: its work is fixed by its number, so results do not depend on it.
// Jobs come from one thread at a time (a second caller waits on job_mutex_), nested calls run
// serially.
//
// Waking a thread parked on a condition variable costs ~50 us on a VM (the idle vCPU has to be
// interrupted and rescheduled), more than a whole embedding kernel at the benchmark's sizes. So
// after a job a worker spins on the job word for kSpin before it parks, and the caller spins on
// the finished count before it blocks: back-to-back kernels of one training step hand work over
// in well under a microsecond. The job word packs (generation, chunk count, next chunk) into one
// atomic, so a worker that wakes late can never claim a chunk of a job it did not see published.
//
// A busy machine (another process running on one of the cores) is the case spinning does not
// cover. With 2 cores, hitch's 2 threads and one busy neighbour, one of hitch's threads shares a
// core with something for whole scheduler time slices (milliseconds). When that is a worker, the
// caller waits for the chunk it holds; when it is the caller (measured: the more common case),
// its own chunks and the serial code between jobs run at half speed, and the worker spinning
// after a job is one of the things it shares its core with. Either way the caller is off its
// core during jobs: preempted, or parked waiting for a preempted worker. So the caller measures
// that, its thread CPU time against the wall time of its jobs and of its code between jobs while
// the workers still spin (gaps under kSpin), over windows of kWindow of such time. A
// window in which it lost more than kBusyShare switches parallel_for to one thread (the caller
// alone: the same bits, chunk boundaries do not matter; the workers park) for a quiet period;
// then the workers get one window again. The period doubles (kSerialFirst .. kSerialMax) after
// each busy window and halves after each quiet one, so one lucky window does not undo it.
// Measured on the 2-vCPU VM (docs/performance.md, "Busy machines"): beside a busy loop the
// caller lost 18-99 % of a window (median 55 %); alone, 1 % (median; 1.4 % of windows lost more
// than 25 %, each then costs one kSerialFirst on the caller alone).
#include <hitch/core/runtime/parallel.h>

#include <hitch/core/runtime/path.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <functional>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <hitch/core/error.h>

namespace hitch {

namespace {

thread_local bool inside_chunk = false;

constexpr auto kSpin = std::chrono::microseconds(200);
constexpr auto kWindow = std::chrono::milliseconds(2);
constexpr double kBusyShare = 0.25;
constexpr auto kSerialFirst = std::chrono::milliseconds(20);
constexpr auto kSerialMax = std::chrono::milliseconds(640);
using Clock = std::chrono::steady_clock;

// CPU time this thread has run (~0.7 us a call on a VM: a system call).
Clock::duration thread_cpu_time() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or kSpin has passed; true if ready. (Yielding the core between checks
// was tried: on an idle machine it took away most of the 2-thread gain.)
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

  // True while the machine looked busy (see the top of this file): run on the caller alone.
  bool serial_now() {
    const std::int64_t until = serial_until_.load(std::memory_order_relaxed);
    return until != 0 && Clock::now().time_since_epoch().count() < until;
  }

  void run(std::size_t chunks, const std::function<void(std::size_t)>& chunk) {
    std::lock_guard job(job_mutex_);  // one job at a time
    const auto start = Clock::now();
    const auto start_cpu = thread_cpu_time();
    // The caller's serial code since the last job ran while the workers still spun (kSpin): on a
    // busy machine it shares its core with one of them, so that gap counts as job time too (a
    // longer gap is the caller's own business: not counted).
    if (start - last_end_ < kSpin) note_job(start - last_end_, start_cpu - last_end_cpu_);
    ensure_workers(chunks - 1);
    job_ = &chunk;
    error_ = nullptr;
    finished_.store(0, std::memory_order_relaxed);
    std::uint64_t generation = 0;
    {
      // Under the mutex, so a worker about to park cannot miss the new word.
      std::lock_guard lock(mutex_);
      generation = (word_.load(std::memory_order_relaxed) >> kGenShift) + 1;
      word_.store(generation << kGenShift | chunks << kCountShift, std::memory_order_release);
    }
    wake_.notify_all();
    run_chunks(generation);
    auto all_done = [&] { return finished_.load(std::memory_order_acquire) == chunks; };
    if (!spin_until(all_done)) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, all_done);
    }
    job_ = nullptr;
    last_end_ = Clock::now();
    last_end_cpu_ = thread_cpu_time();
    note_job(last_end_ - start, last_end_cpu_ - start_cpu);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // The job word: generation (32 bits) | chunk count (16) | next unclaimed chunk (16).
  static constexpr int kGenShift = 32;
  static constexpr int kCountShift = 16;
  static constexpr std::uint64_t kField = 0xFFFF;

  // The busy-machine guard (top of this file), after each job: wall = the job's time, cpu = the
  // caller's CPU time in it (running chunks or spinning for the workers', not preempted or parked).
  void note_job(Clock::duration wall, Clock::duration cpu) {
    window_wall_ += wall;
    window_lost_ += std::max<Clock::duration>(wall - cpu, Clock::duration::zero());
    if (window_wall_ < kWindow) return;
    const bool busy = window_lost_ > kBusyShare * window_wall_;
    window_wall_ = window_lost_ = Clock::duration::zero();
    if (!busy) {
      serial_for_ = std::max<Clock::duration>(serial_for_ / 2, kSerialFirst);
      return;
    }
    serial_until_.store((Clock::now() + serial_for_).time_since_epoch().count(), std::memory_order_relaxed);
    serial_for_ = std::min<Clock::duration>(2 * serial_for_, kSerialMax);
  }

  // Never throws: a worker that cannot be created (no memory, no thread) is simply missing, and
  // the caller claims its chunks, so a job always runs to the end (an optimizer step relies on it).
  void ensure_workers(std::size_t n) noexcept {
    while (workers_.size() < n) {
      // The generation before the job being published: a new thread may start after it.
      const std::uint64_t seen = word_.load(std::memory_order_relaxed) >> kGenShift;
      try {
        workers_.emplace_back([this, seen] { work(seen); });
      } catch (...) {
        return;
      }
    }
  }

  // Claims chunks of job `generation` one at a time and runs them, until none is left (or a
  // newer job was published, for a worker that woke late). The caller runs this too, so a
  // worker that is slow to wake (its core busy with another process) costs nothing but the
  // chunks it never claimed: the caller takes them.
  void run_chunks(std::uint64_t generation) {
    std::uint64_t word = word_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t next = word & kField;
      if ((word >> kGenShift) != generation || next >= ((word >> kCountShift) & kField)) return;
      if (!word_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      run_chunk(static_cast<std::size_t>(next));
      const std::uint64_t chunks = (word >> kCountShift) & kField;
      if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard lock(mutex_);  // the caller checks finished_ under it before it blocks
        done_.notify_one();
      }
      word = word_.load(std::memory_order_acquire);
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

  void work(std::uint64_t seen) {
    for (;;) {
      std::uint64_t word = 0;
      auto fresh = [&] {
        word = word_.load(std::memory_order_acquire);
        return (word >> kGenShift) != seen;
      };
      if (!spin_until(fresh)) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, fresh);
      }
      seen = word >> kGenShift;
      run_chunks(seen);
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(std::size_t)>* job_ = nullptr;
  std::atomic<std::uint64_t> word_{0};
  std::atomic<std::uint64_t> finished_{0};
  std::exception_ptr error_;
  std::atomic<int> threads_{1};
  // Under job_mutex_: the current window's job time and the caller's lost part of it; the next quiet period.
  Clock::duration window_wall_{}, window_lost_{};
  Clock::time_point last_end_{};          // when the last job ended, and the caller's CPU time then
  Clock::duration last_end_cpu_{};
  Clock::duration serial_for_ = kSerialFirst;
  std::atomic<std::int64_t> serial_until_{0};     // run serially until then (Clock ticks; 0: never)
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
      inside_chunk || reference_kernels() ? 1 : std::max<std::size_t>(1, std::min(static_cast<std::size_t>(get_num_threads()), by_size));
  if (chunks == 1 || pool().serial_now()) {  // serial_now: the machine looked busy (see the top)
    fn(0, n);
    return;
  }
  // Passed by reference: a std::function holds a reference_wrapper without allocating.
  const auto chunk = [&](std::size_t c) { fn(n * c / chunks, n * (c + 1) / chunks); };
  pool().run(chunks, std::cref(chunk));
}

}  // namespace hitch
