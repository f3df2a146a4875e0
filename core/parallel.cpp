// hitch/core/parallel.cpp: a small fixed pool of parked std::threads (see parallel.h).
//
// One job at a time: the caller publishes (fn, chunk count) under the mutex, bumps the
// generation and runs chunk 0; worker w runs chunk w and counts itself done. Jobs come from
// one thread at a time (a second caller waits on the mutex), nested calls run serially.
#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace hitch {

namespace {

thread_local bool inside_chunk = false;

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void set_threads(int n) { threads_ = n; }
  int threads() const { return threads_; }

  void run(std::size_t chunks, const std::function<void(std::size_t)>& chunk) {
    std::lock_guard job(job_mutex_);  // one job at a time
    ensure_workers(chunks - 1);
    {
      std::lock_guard lock(mutex_);
      job_ = &chunk;
      chunks_ = chunks;
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void ensure_workers(std::size_t n) {
    while (workers_.size() < n) {
      const std::size_t id = workers_.size() + 1;
      workers_.emplace_back([this, id] { work(id); });
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

  void work(std::size_t id) {
    std::uint64_t seen = 0;
    for (;;) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= chunks_) continue;  // fewer chunks than workers this time
      lock.unlock();
      run_chunk(id);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(std::size_t)>* job_ = nullptr;
  std::size_t chunks_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
  std::atomic<int> threads_{1};
};

Pool& pool() {
  static Pool p;
  return p;
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
