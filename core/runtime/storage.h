// hitch/core/runtime/storage.h: where tensor values live. Part of the runtime
// (docs/architecture.md): a Tensor only needs FloatStorage, a std::vector of float whose
// allocator is below; how it caches and aligns memory is invisible to the semantics.
#pragma once

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace hitch {

// Allocation of tensor values: 64-byte aligned (with [N, D] rows of 16k floats every row
// starts on a cache line), and large blocks freed by a thread are kept in a small per-thread
// cache (blocks of 128 KB - 32 MB, at most 8 blocks / 64 MB, exact sizes, released at thread
// exit; off under AddressSanitizer), so a training loop's
// same-sized outputs and gradients reuse memory instead of mapping and page-faulting fresh
// memory every step. Values are value-initialised (zeros) as with std::allocator. When the
// system allocator fails (std::bad_alloc), storage_allocate throws AllocationError naming the
// bytes instead, so a too large but legal tensor is a hitch::Error like every other failure.
void* storage_allocate(std::size_t bytes);
void storage_deallocate(void* p, std::size_t bytes) noexcept;

// Allocator mixin: vector(n) and resize(n) leave new elements default-initialised (floats
// unset) instead of zeroing them; vector(n, v) and copies construct as usual.
struct DefaultInitConstruct {
  template <class U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// FloatStorage(n) leaves the values unset (Tensor::empty); FloatStorage(n, v) fills them.
template <class T>
struct StorageAllocator : DefaultInitConstruct {
  using value_type = T;
  StorageAllocator() = default;
  template <class U>
  StorageAllocator(const StorageAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(storage_allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { storage_deallocate(p, n * sizeof(T)); }
  friend bool operator==(const StorageAllocator&, const StorageAllocator&) { return true; }
};
using FloatStorage = std::vector<float, StorageAllocator<float>>;

}  // namespace hitch
