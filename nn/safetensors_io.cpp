// hitch/nn/safetensors_io.cpp: reading a whole file and the crash-safe write (see safetensors.h).
//
// The write follows the usual recipe for replacing a file so that a crash at any point leaves
// either the old or the new content under the name, never a mix: write a temporary file in the
// same folder (rename is atomic only within one file system), fsync it (its bytes are on disk
// before its name is), rename it over the target, fsync the folder (the rename itself is on disk).
// POSIX only, like the rest of hitch's tooling.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>

#include "nn/safetensors.h"

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

std::string parent_folder(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_file_atomically(std::string_view who, const std::string& path, std::string_view header,
                           const std::vector<SafetensorsTensor>& tensors) {
  static std::atomic<unsigned> counter{0};
  const std::string tmp = fmt::format("{}.tmp-{}-{}", path, ::getpid(), counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    throw Error(fmt::format("{}: cannot write '{}': creating the temporary file '{}' failed: {}", who, path, tmp,
                            os_error(errno)));
  // Every failure before the rename: drop the temporary file; path is untouched.
  auto fail = [&](std::string_view step, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(fmt::format("{}: cannot write '{}': {} the temporary file '{}' failed: {}; '{}' is unchanged", who,
                            path, step, tmp, os_error(err), path));
  };
  int err = write_all(fd, std::as_bytes(std::span<const char>(header.data(), header.size())));
  for (std::size_t i = 0; err == 0 && i < tensors.size(); ++i) err = write_all(fd, tensors[i].bytes);
  if (err != 0) fail("writing", err, true);
  while (::fsync(fd) != 0)
    if (errno != EINTR) fail("fsync of", errno, true);
  if (::close(fd) != 0) fail("closing", errno, false);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming", errno, false);

  const std::string folder = parent_folder(path);
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int dir_err = dir < 0 ? errno : 0;
  if (dir >= 0) {
    while (::fsync(dir) != 0)
      if (errno != EINTR) {
        dir_err = errno;
        break;
      }
    ::close(dir);
  }
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
