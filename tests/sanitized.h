// tests/sanitized.h: whether this test binary runs under a sanitizer, for the few checks whose
// measure a sanitizer changes (resident memory: ASan's quarantine keeps freed blocks; huge
// allocations: its allocator reports them instead of throwing std::bad_alloc).
#pragma once

namespace hitch_test {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif
}  // namespace hitch_test
