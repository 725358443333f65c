#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/errors.h"

namespace lm {

void throw_errno(const std::string& what, const std::string& path) {
    const int code = errno;
    throw IoError(what + " " + path + ": " + std::strerror(code), code);
}

UniqueFd::~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.release();
    }
    return *this;
}

UniqueFd open_file(const std::string& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
    if (fd < 0) throw_errno("cannot open", path);
    return UniqueFd(fd);
}

uint64_t file_size(int fd, const std::string& path) {
    struct stat st{};
    if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
    return static_cast<uint64_t>(st.st_size);
}

size_t pread_some(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
    size_t done = 0;
    while (done < n) {
        const ssize_t r = ::pread(fd, static_cast<uint8_t*>(buf) + done, n - done,
                                  static_cast<off_t>(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw_errno("cannot read", path);
        if (r == 0) break;
        done += static_cast<size_t>(r);
    }
    return done;
}

void pwrite_all(int fd, const void* buf, size_t n, uint64_t offset, const std::string& path) {
    const auto* p = static_cast<const uint8_t*>(buf);
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw_errno("cannot write", path);
        p += w;
        n -= static_cast<size_t>(w);
        offset += static_cast<uint64_t>(w);
    }
}

void fsync_dir(const std::string& dir) {
    UniqueFd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    if (::fsync(fd.get()) != 0) throw_errno("cannot fsync directory", dir);
}

void make_private_dir(const std::string& dir) {
    if (dir.empty()) return;
    struct stat st{};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) throw IoError("not a directory: " + dir);
        return;
    }
    const std::string parent = parent_dir(dir);
    if (parent != dir) make_private_dir(parent);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("cannot create", dir);
}

std::vector<std::string> list_dir(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) throw_errno("cannot list", dir);
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    return names;
}

std::string parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

const uint8_t* ChunkReader::get(uint64_t offset, size_t n) {
    constexpr uint64_t kChunk = uint64_t{1} << 20;
    if (offset > limit_ || limit_ - offset < n) return nullptr;
    if (offset >= start_ && offset + n <= start_ + len_) return buf_.data() + (offset - start_);
    const size_t want =
        static_cast<size_t>(std::max<uint64_t>(n, std::min(kChunk, limit_ - offset)));
    if (buf_.size() < want) buf_.resize(want);
    start_ = offset;
    len_ = pread_some(fd_, buf_.data(), want, offset, path_);
    return len_ >= n ? buf_.data() : nullptr;
}

std::string base_name(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace lm
