// examples/support/progress.h: a progress bar on stderr. On a terminal it redraws one line in
// place with the rate and the ETA; in a pipe or CI it prints a plain line every tenth of the way.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hitch::examples {

class Progress {
 public:
  Progress(std::string label, std::int64_t total);
  void update(std::int64_t done, const std::string& note = {});  // done in [0, total]
  void finish(const std::string& note = {});

 private:
  std::string label_;
  std::int64_t total_;
  bool tty_;
  std::int64_t next_plain_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace hitch::examples
