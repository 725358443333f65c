// Small POSIX helpers shared by the on-disk formats: an owned file descriptor, whole-buffer
// pread/pwrite that retry on EINTR and short counts, directory fsync, 0700 directories.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lm {

// Throws IoError "<what> <path>: <strerror(errno)>".
[[noreturn]] void throw_errno(const std::string& what, const std::string& path);

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd();
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    int get() const { return fd_; }
    int release() {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }
    explicit operator bool() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// open(2) that throws; files are created 0600.
UniqueFd open_file(const std::string& path, int flags);
uint64_t file_size(int fd, const std::string& path);
// Reads up to n bytes at `offset`; returns how many (short only at end of file).
size_t pread_some(int fd, void* buf, size_t n, uint64_t offset, const std::string& path);
void pwrite_all(int fd, const void* buf, size_t n, uint64_t offset, const std::string& path);
void fsync_dir(const std::string& dir);
void make_private_dir(const std::string& dir);              // mkdir -p with mode 0700
std::vector<std::string> list_dir(const std::string& dir);  // names, without . and ..
std::string parent_dir(const std::string& path);

// Sequential reads of a file through a buffer, with pread (never mmap: a file another process
// truncates must give a short read, not SIGBUS). Bytes past `limit` are never read.
class ChunkReader {
public:
    ChunkReader(int fd, const std::string& path, uint64_t limit)
        : fd_(fd), path_(path), limit_(limit) {}
    // Pointer to [offset, offset + n), valid until the next call; nullptr if the file (or
    // the limit) ends first.
    const uint8_t* get(uint64_t offset, size_t n);

private:
    int fd_;
    const std::string& path_;
    uint64_t limit_;
    std::vector<uint8_t> buf_;
    uint64_t start_ = 0, len_ = 0;
};
std::string base_name(const std::string& path);

}  // namespace lm
