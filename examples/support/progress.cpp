// examples/support/progress.cpp: see progress.h.
#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

namespace hitch::examples {

Progress::Progress(std::string label, std::int64_t total)
    : label_(std::move(label)), total_(std::max<std::int64_t>(total, 1)), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::update(std::int64_t done, const std::string& note) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 30;
    const int filled = static_cast<int>(width * done / total_);
    fmt::print(stderr, "\r{} [{}{}] {}/{} {:.0f}/s ETA {:.1f}s {}\x1b[K", label_, std::string(static_cast<std::size_t>(filled), '#'),
               std::string(static_cast<std::size_t>(width - filled), '.'), done, total_, rate, eta, note);
  } else if (done >= next_plain_) {
    next_plain_ = done + std::max<std::int64_t>(1, total_ / 10);
    fmt::print(stderr, "{}: {}/{} ({:.0f}/s) {}\n", label_, done, total_, rate, note);
  }
  std::fflush(stderr);
}

void Progress::finish(const std::string& note) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) fmt::print(stderr, "\r\x1b[K");
  fmt::print(stderr, "{}: done {} in {:.2f}s {}\n", label_, total_, elapsed, note);
}

}  // namespace hitch::examples
