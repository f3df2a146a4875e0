// hitch/core/error.h: the two exception types of hitch.
//
// `Error` is a user mistake (bad shape, bad index, misuse of backward): its message names the
// op, the argument, the offending position and value and the valid range. It is always thrown
// before anything is changed. `AllocationError` is an `Error` too: the memory for a tensor's
// values could not be had (a legal but huge shape, or memory exhausted); hitch converts the
// allocator's std::bad_alloc so that every failure of a public call is a hitch::Error.
// `InternalError` is a broken invariant inside hitch: a bug report.
// Nothing here calls exit, abort or assert on user input.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace hitch {

using Shape = std::vector<std::int64_t>;

struct Error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Thrown by storage_allocate (core/tensor.h) in place of std::bad_alloc; names the bytes asked for.
struct AllocationError : Error {
  using Error::Error;
};

struct InternalError : std::logic_error {
  using std::logic_error::logic_error;
};

// "[2,3]": the way every message prints a shape.
std::string shape_str(const Shape& shape);

}  // namespace hitch
