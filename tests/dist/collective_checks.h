// tests/dist/collective_checks.h: checks shared by the MPI test programs (tests/dist/*.cpp).
// Every function here is collective: every rank calls it at the same point, and every rank gets
// the same answer, so a check that decides whether a test case goes on cannot leave some ranks
// waiting in a collective that the others skipped.
#pragma once

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <hitch/dist/dist.h>
#include <hitch/hitch.h>

namespace hitch_test {

// True on every rank iff ok on every rank.
inline bool everywhere(bool ok) {
  hitch::Tensor bad = hitch::Tensor::scalar(ok ? 0.0f : 1.0f);
  hitch::dist::all_reduce_sum(bad);
  return bad.item() == 0.0f;
}

// Not collective: the same length and bits.
inline bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// True on every rank iff v has rank 0's length and bits (rank 0's values are broadcast and every
// rank compares its own with them).
inline bool same_bits_everywhere(const std::vector<float>& v) {
  hitch::Tensor n = hitch::Tensor::scalar(static_cast<float>(v.size()));
  hitch::dist::broadcast(n, 0);
  if (!everywhere(n.item() == static_cast<float>(v.size()))) return false;
  if (v.empty()) return true;
  hitch::Tensor r0(hitch::Shape{static_cast<std::int64_t>(v.size())}, v);
  hitch::dist::broadcast(r0, 0);
  return everywhere(bits_equal(r0.to_vector(), v));
}

// True on every rank iff s is rank 0's string (an Error message, say).
inline bool same_string_everywhere(const std::string& s) {
  std::vector<float> v;
  for (const char c : s) v.push_back(static_cast<float>(static_cast<unsigned char>(c)));
  return same_bits_everywhere(v);
}

// Not collective: the message of the hitch::Error fn throws, or "(no error)".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const hitch::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The main() of an MPI doctest program (the including file defines DOCTEST_CONFIG_IMPLEMENT):
// every rank runs every case in the same order (so the collectives inside them meet), only rank
// 0 reports passes, and a failure on any rank fails every rank's exit code.
inline int run_doctest_on_every_rank(int argc, char** argv) {
  int result = 0;
  {
    hitch::dist::Session session(&argc, &argv);
    doctest::Context context(argc, argv);
    if (hitch::dist::rank() != 0) context.setOption("minimal", true);  // the other ranks: failures only
    result = context.run();
    hitch::Tensor failed = hitch::Tensor::scalar(result != 0 ? 1.0f : 0.0f);
    hitch::dist::all_reduce_sum(failed);
    if (failed.item() != 0.0f) result = 1;
  }
  return result;
}

}  // namespace hitch_test
