// Tensor storage allocation (core/tensor.h): 64-byte aligned values, and the per-thread cache of
// freed large blocks never hands back stale values or crosses threads wrongly.
#include <doctest/doctest.h>

#include <cstdint>
#include <thread>

#include <hitch/hitch.h>

using hitch::Tensor;

static bool aligned64(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

TEST_CASE("storage: small and large tensors start on a 64-byte boundary") {
  CHECK(aligned64(Tensor::zeros({3}).data()));
  CHECK(aligned64(Tensor::zeros({1000, 64}).data()));
  CHECK(aligned64(Tensor({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f}).data()));
}

TEST_CASE("storage: a recycled block is zero-filled again, and a block freed by another thread is fine") {
  // 256 KB (the large-block cache) and 512 bytes (the small-block cache).
  for (const auto& size : {std::pair<std::int64_t, std::int64_t>{1024, 64}, {8, 16}}) {
    const std::int64_t rows = size.first, width = size.second;
    CAPTURE(rows);
    for (int round = 0; round < 3; ++round) {
      Tensor a = Tensor::full({rows, width}, 7.0f);
      CHECK(a.at({rows - 1, width - 1}) == 7.0f);
      a = Tensor();  // freed into this thread's cache
      const Tensor z = Tensor::zeros({rows, width});
      float total = 0.0f;
      for (const float v : z.values()) total += v;
      CHECK(total == 0.0f);
    }
    Tensor made_elsewhere;
    std::thread([&] { made_elsewhere = Tensor::ones({rows, width}); }).join();  // its thread has exited
    CHECK(made_elsewhere.at({5, 5}) == 1.0f);
    made_elsewhere = Tensor();  // freed (and cached) on this thread
    const Tensor again = Tensor::full({rows, width}, 2.0f);
    CHECK(again.at({rows - 1, 0}) == 2.0f);
    std::thread([&] {
      const Tensor t = Tensor::zeros({rows, width});  // the other thread's own (empty) cache
      CHECK(t.at({0, 0}) == 0.0f);
    }).join();
  }
}
