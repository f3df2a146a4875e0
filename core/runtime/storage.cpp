// hitch/core/runtime/storage.cpp: tensor value allocation (see storage.h): 64-byte alignment,
// per-thread caches of freed blocks, transparent huge pages for big tables.
#include <hitch/core/runtime/storage.h>

#include <algorithm>
#include <array>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <fmt/format.h>

#include <hitch/core/error.h>

namespace hitch {

namespace {
constexpr std::align_val_t kStorageAlign{64};
// Blocks of at least this size are cached (smaller ones are cheap in malloc's arenas; from
// 128 KB up glibc maps each one freshly by default).
constexpr std::size_t kCacheMin = std::size_t{128} << 10;
// Larger blocks (tables, a model's one-off temporaries) are never held: a freed 100 MB copy must
// not stay resident. 32 MB is glibc's own ceiling for reusing freed blocks (its largest mmap
// threshold); it covers a language model's [512, 10000] logits and their gradient (20 MB each).
constexpr std::size_t kCacheMax = std::size_t{32} << 20;
constexpr std::size_t kCacheBlocks = 8;
constexpr std::size_t kCacheBytes = std::size_t{64} << 20;
// Big storages (embedding tables, their optimizer state) start on a 2 MB boundary and ask for
// transparent huge pages: random rows of a 25 MB table otherwise miss the TLB on most lookups
// (a page walk per row). Linux with THP in "madvise" mode (Debian's default) honours it.
constexpr std::size_t kHugeMin = std::size_t{16} << 20;
constexpr std::align_val_t kHugeAlign{std::size_t{2} << 20};
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheOn = false;  // AddressSanitizer must see every free (use-after-free reports)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheOn = false;
#else
constexpr bool kCacheOn = true;
#endif
#else
constexpr bool kCacheOn = true;
#endif

// Freed blocks of this thread, oldest first. A Storage freed after the thread's cache was
// destroyed (static tensors at exit) goes straight to operator delete.
struct CachedBlock {
  void* p = nullptr;
  std::size_t bytes = 0;
};
thread_local bool cache_gone = false;
template <std::size_t kBlocks, std::size_t kBytes>
struct BlockCache {
  std::array<CachedBlock, kBlocks> blocks;
  std::size_t count = 0;
  std::size_t bytes = 0;
  void* take(std::size_t want) noexcept {
    for (std::size_t i = count; i-- > 0;)  // newest first: most likely still in cache
      if (blocks[i].bytes == want) {
        void* p = blocks[i].p;
        std::move(blocks.begin() + static_cast<std::ptrdiff_t>(i + 1), blocks.begin() + static_cast<std::ptrdiff_t>(count),
                  blocks.begin() + static_cast<std::ptrdiff_t>(i));
        --count;
        bytes -= want;
        return p;
      }
    return nullptr;
  }
  void keep(void* p, std::size_t size) noexcept {
    while (count > 0 && (count == kBlocks || bytes + size > kBytes)) drop_oldest();
    blocks[count++] = CachedBlock{p, size};
    bytes += size;
  }
  void drop_oldest() noexcept {
    // The size tells how the block was allocated (storage_allocate).
    ::operator delete(blocks[0].p, blocks[0].bytes >= kHugeMin ? kHugeAlign : kStorageAlign);
    bytes -= blocks[0].bytes;
    std::move(blocks.begin() + 1, blocks.begin() + static_cast<std::ptrdiff_t>(count), blocks.begin());
    --count;
  }
  ~BlockCache() {
    cache_gone = true;
    while (count > 0) drop_oldest();
  }
};
thread_local BlockCache<kCacheBlocks, kCacheBytes> block_cache;
// Small blocks too (a training step's shapes repeat every step): glibc's aligned allocation
// (_int_memalign) is several times slower than taking a block back from this list.
constexpr std::size_t kSmallBlocks = 32;
constexpr std::size_t kSmallBytes = std::size_t{1} << 20;
thread_local BlockCache<kSmallBlocks, kSmallBytes> small_cache;
}  // namespace

// The system allocator's std::bad_alloc becomes an AllocationError naming the request.
static void* new_block(std::size_t bytes, std::align_val_t align) {
  try {
    return ::operator new(bytes, align);
  } catch (const std::bad_alloc&) {
    throw AllocationError(fmt::format("storage_allocate: cannot allocate {} bytes for a tensor's values: out of memory",
                                      bytes));
  }
}

void* storage_allocate(std::size_t bytes) {
  if (kCacheOn && !cache_gone && bytes > 0 && bytes <= kCacheMax) {
    if (void* p = bytes >= kCacheMin ? block_cache.take(bytes) : small_cache.take(bytes)) return p;
  }
  if (bytes >= kHugeMin) {
    void* p = new_block(bytes, kHugeAlign);
#if defined(__linux__)
    madvise(p, bytes, MADV_HUGEPAGE);  // a hint: refused (no THP) changes nothing
#endif
    return p;
  }
  return new_block(bytes, kStorageAlign);
}

void storage_deallocate(void* p, std::size_t bytes) noexcept {
  if (kCacheOn && !cache_gone && bytes > 0 && bytes <= kCacheMax) {
    if (bytes >= kCacheMin) block_cache.keep(p, bytes);  // huge-page blocks of 16-32 MB too
    else small_cache.keep(p, bytes);
    return;
  }
  ::operator delete(p, bytes >= kHugeMin ? kHugeAlign : kStorageAlign);
}

}  // namespace hitch
