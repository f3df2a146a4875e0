// hitch/nn/safetensors_io.cpp: reading a whole file and the crash-safe write (see safetensors.h).
//
// The write follows the usual recipe for replacing a file so that a crash at any point leaves
// either the old or the new content under the name, never a mix: write a temporary file in the
// same folder (rename is atomic only within one file system), fsync it (its bytes are on disk
// before its name is), rename it over the target, fsync the folder (the rename itself is on disk).
// The temporary name is one no file or folder holds yet (O_EXCL, next candidate on EEXIST), so
// whatever a killed earlier save left behind never blocks a save, and it is at most NAME_MAX
// bytes long however long the target's name is.
// POSIX (Linux: O_PATH) only, like the rest of hitch's tooling.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <system_error>

#include <fmt/format.h>

#include <hitch/nn/safetensors.h>

static_assert(std::endian::native == std::endian::little,
              "hitch writes tensor bytes as they are in memory; safetensors is little-endian");

namespace hitch::nn {

namespace {

std::string os_error(int err) { return fmt::format("{} (errno {})", std::generic_category().message(err), err); }

// Writes all of bytes, resuming after partial writes and interruptions. Returns 0 or an errno.
int write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const std::size_t chunk = std::min<std::size_t>(bytes.size(), std::size_t{1} << 30);
    const ssize_t n = ::write(fd, bytes.data(), chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return 0;
}

// The folder part of path, as open() needs it, and the text before the file name (for messages:
// "<prefix><temporary name>" reads like path with a suffix).
std::string parent_folder(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
std::string folder_prefix(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A number no other save in this or another process is likely to draw: the clock, the pid, a
// process-wide counter and this call's stack address, mixed.
std::uint64_t fresh_nonce() {
  static std::atomic<std::uint64_t> counter{0};
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const int on_stack = 0;
  std::uint64_t x = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'007ull + static_cast<std::uint64_t>(ts.tv_nsec);
  x = splitmix64(x ^ (static_cast<std::uint64_t>(::getpid()) << 32));
  x = splitmix64(x ^ counter.fetch_add(1, std::memory_order_relaxed));
  return splitmix64(x ^ reinterpret_cast<std::uintptr_t>(&on_stack));
}

// O_CREAT | O_EXCL attempts before giving up: the fixed names, then random ones. Only a folder
// that already holds every candidate (or fails with another error) stops a save.
constexpr unsigned kFixedNames = 4;
constexpr unsigned kAttempts = kFixedNames + 60;

}  // namespace

std::string temporary_name(std::string_view base, unsigned attempt, std::size_t name_max) {
  const std::string suffix =
      attempt < kFixedNames ? fmt::format(".tmp-{}-{}", ::getpid(), attempt)
                            : fmt::format(".tmp-{}-{:016x}", ::getpid(), fresh_nonce());
  if (base.size() + suffix.size() <= name_max) return std::string(base) + suffix;
  // Too long for the folder: shorten base, never inside a UTF-8 sequence (so the name stays
  // valid text when base was), keeping the whole suffix if the limit allows.
  if (suffix.size() >= name_max) return suffix.substr(0, name_max);
  std::size_t keep = name_max - suffix.size();
  while (keep > 0 && (static_cast<unsigned char>(base[keep]) & 0xC0u) == 0x80u) --keep;
  return std::string(base.substr(0, keep)) + suffix;
}

void write_file_atomically(std::string_view who, const std::string& path, std::string_view header,
                           const std::vector<SafetensorsTensor>& tensors) {
  const std::string folder = parent_folder(path);
  const std::string prefix = folder_prefix(path);
  const std::string base = path.substr(prefix.size());
  // Everything happens relative to the folder: the temporary name is then bounded by NAME_MAX
  // alone (not by PATH_MAX too), and the rename and the folder fsync act on the same folder.
  // A folder we may write but not read (mode 0300) is opened with O_PATH: enough to create and
  // rename, not to fsync (reported at the end, as a failed open was before).
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int dir_err = dir < 0 ? errno : 0;
  if (dir < 0) dir = ::open(folder.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  const long name_max_conf = dir < 0 ? -1 : ::fpathconf(dir, _PC_NAME_MAX);
  const std::size_t name_max = name_max_conf > 0 ? static_cast<std::size_t>(name_max_conf) : NAME_MAX;

  // A name nobody holds: a stale file or folder of a killed earlier save (same pid, e.g. pid 1 in
  // a container) or a concurrent save just means the next candidate.
  std::string tmp = temporary_name(base, 0, name_max);
  int fd = -1;
  int open_err = dir < 0 ? dir_err : 0;
  for (unsigned attempt = 0; dir >= 0 && attempt < kAttempts; ++attempt) {
    tmp = temporary_name(base, attempt, name_max);
    fd = ::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    open_err = fd < 0 ? errno : 0;
    if (fd >= 0 || open_err != EEXIST) break;
  }
  const std::string tmp_path = prefix + tmp;
  if (fd < 0) {
    if (dir >= 0) ::close(dir);
    throw Error(fmt::format("{}: cannot write '{}': creating the temporary file '{}' failed: {}", who, path, tmp_path,
                            os_error(open_err)));
  }
  // Every failure before the rename: drop the temporary file; path is untouched.
  auto fail = [&](std::string_view step, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    ::unlinkat(dir, tmp.c_str(), 0);
    ::close(dir);
    throw Error(fmt::format("{}: cannot write '{}': {} the temporary file '{}' failed: {}; '{}' is unchanged", who,
                            path, step, tmp_path, os_error(err), path));
  };
  int err = write_all(fd, std::as_bytes(std::span<const char>(header.data(), header.size())));
  for (std::size_t i = 0; err == 0 && i < tensors.size(); ++i) err = write_all(fd, tensors[i].bytes);
  if (err != 0) fail("writing", err, true);
  while (::fsync(fd) != 0)
    if (errno != EINTR) fail("fsync of", errno, true);
  if (::close(fd) != 0) fail("closing", errno, false);
  // An empty base ("folder/") names no file: renaming onto "." fails like renaming onto the folder.
  if (::renameat(dir, tmp.c_str(), dir, base.empty() ? "." : base.c_str()) != 0) fail("renaming", errno, false);

  if (dir_err == 0) {
    while (::fsync(dir) != 0)
      if (errno != EINTR) {
        dir_err = errno;
        break;
      }
  }
  ::close(dir);
  if (dir_err != 0)
    throw Error(fmt::format("{}: wrote '{}', but fsync of its folder '{}' failed: {}; the new file may not survive "
                            "a power loss",
                            who, path, folder, os_error(dir_err)));
}

std::vector<std::byte> read_whole_file(std::string_view who, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open '{}': {}", who, path, os_error(errno)));
  std::vector<std::byte> out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  std::byte buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw Error(fmt::format("{}: cannot read '{}': {}", who, path, os_error(err)));
    }
    out.insert(out.end(), buffer, buffer + n);
  }
  ::close(fd);
  return out;
}

}  // namespace hitch::nn
