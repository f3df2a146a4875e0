// hitch/ops/exp_kernel.h (internal): exp of a non-positive float, written so that a loop over
// it vectorises (no calls, no float comparisons: selections are integer masks on the bits), for
// the softmax family's inner loops.
//
// Cephes' expf (S. Moshier, Cephes Math Library 2.2, expf.c): x = n ln2 + r with |r| <= ln2/2
// (n rounded by adding 1.5 * 2^23), ln2 split in two constants so that r is exact, exp(r) by a
// degree-5 minimax polynomial, and 2^n built in the exponent bits. Relative error below 1e-7
// over [-87.3, 0] (checked against std::exp in double by tests/test_ops_loss.cpp). Only IEEE
// additions and multiplications in a fixed order (hitch builds with -ffp-contract=off), so every
// vector width and thread count gives the same bits. Domain: x <= 0, as in exp(x - max); below
// -87.33654 (where expf is subnormal or 0) and at -inf the result is exactly 0; NaN gives NaN.
#pragma once

#include <bit>
#include <cstdint>

namespace hitch::detail {

inline float exp_nonpositive(float x) {
  using u32 = std::uint32_t;
  constexpr u32 kLow = 0xC2AEAC4Fu;  // bits of -87.33654f; for negative floats, larger bits = smaller value
  const u32 bx = std::bit_cast<u32>(x);
  const u32 in_range = 0u - static_cast<u32>(bx <= kLow);  // all ones for x in [-87.33654, +0] (and +NaN)
  const u32 is_nan = 0u - static_cast<u32>((bx & 0x7FFFFFFFu) > 0x7F800000u);
  const float xc = std::bit_cast<float>((bx & in_range) | (kLow & ~in_range));
  const float shifted = xc * 1.44269504088896341f + 12582912.0f;  // + 1.5 * 2^23: rounds x log2e to an integer
  const float fx = shifted - 12582912.0f;
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const u32 n_plus_127 = std::bit_cast<u32>(shifted) - 0x4B400000u + 127u;  // n in [-126, 0] in range
  const float v = y * std::bit_cast<float>(n_plus_127 << 23);
  return std::bit_cast<float>((std::bit_cast<u32>(v) & in_range & ~is_nan) | (bx & is_nan));
}

}  // namespace hitch::detail
